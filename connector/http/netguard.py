"""The outbound guard: which URLs a node may call when a peer hands it one.

Every URL a peer supplies (a ``callbackAddress``, a ``did:web``, a data address) is untrusted. Only
http(s) is allowed; plain http only in dev mode or towards a trusted network; and targets in private,
loopback, link-local, multicast, reserved or unspecified ranges are refused unless the node runs in dev
mode or the address lies in one of its ``trusted_networks``. The address check runs on every address a
host name resolves to, at connect time (see ``connector.http.outbound``), so DNS cannot smuggle a private
address past it.

One exception: the node's own public origin (scheme, host and port of ``node.public_url``, exactly). The
participants a node hosts talk to each other over it, as they would to any peer, even when it lies on a
private or loopback address outside dev mode. Nothing else on that address is allowed (another port, or
the other scheme, is still refused). Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from connector.errors import OutboundRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def origin(parts: SplitResult) -> str:
    """``scheme://host:port`` with the default port made explicit and the host lower-cased (RFC 6454)."""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://[{host}]:{port}" if ":" in host else f"{parts.scheme}://{host}:{port}"


@dataclass(frozen=True)
class OutboundPolicy:
    dev_mode: bool = False
    trusted_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)
    #: The node's own public origin (see the module docstring), or None.
    own_origin: str | None = None

    @classmethod
    def build(cls, dev_mode: bool, trusted: Iterable[str], public_url: str | None = None) -> OutboundPolicy:
        own = origin(urlsplit(public_url)) if public_url else None
        return cls(dev_mode, tuple(ipaddress.ip_network(n, strict=False) for n in trusted), own)

    def is_own_origin(self, parts: SplitResult) -> bool:
        return self.own_origin is not None and origin(parts) == self.own_origin

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in net for net in self.trusted_networks)


def _is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_internal(address.ipv4_mapped)
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def check_address(address: str | IPAddress, policy: OutboundPolicy, *, plain_http: bool = False) -> None:
    """Raise :class:`OutboundRefused` if the node may not connect to *address*.

    Outside dev mode, plain http is allowed only towards a trusted network.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if policy.dev_mode or policy.is_trusted(ip):
        return
    if plain_http:
        raise OutboundRefused(
            f"refusing plain http to {ip}: allowed only in dev mode or towards node.trusted_networks"
        )
    if _is_internal(ip):
        raise OutboundRefused(
            f"refusing to connect to {ip}: private, loopback or link-local address "
            "(add its network to node.trusted_networks to allow it)"
        )


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str, policy: OutboundPolicy) -> SplitResult:
    """Check the scheme and, for an IP literal host, the address. Host names are checked on resolve."""
    if len(url) > 2048:
        raise OutboundRefused("URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"malformed URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http(s) URLs are allowed, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise OutboundRefused("URL has no host")
    if parts.username or parts.password:
        raise OutboundRefused("URLs with credentials are not allowed")
    if port == 0:
        raise OutboundRefused("port 0 is not allowed")
    literal = literal_address(parts.hostname)
    if literal is not None and not policy.is_own_origin(parts):
        check_address(literal, policy, plain_http=parts.scheme == "http")
    return parts
