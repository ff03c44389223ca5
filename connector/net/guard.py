"""The outbound guard: which URLs a node may call when a peer hands it one.

Every URL a peer supplies (a ``callbackAddress``, a ``did:web``, a data address) is untrusted. Only
http(s) is allowed; plain http only in dev mode or towards a trusted network; and targets in private,
loopback, link-local, multicast, reserved or unspecified ranges are refused unless the node runs in dev
mode or the address lies in one of its ``trusted_networks``. The address check runs on every address a
host name resolves to, at connect time (see ``connector.net.client``), so DNS cannot smuggle a private
address past it.

One exception: the node's own public origin (scheme, host and port of ``node.public_url``, exactly). The
participants a node hosts talk to each other over it, as they would to any peer, even when it lies on a
private or loopback address outside dev mode. Nothing else on that address is allowed (another port, or
the other scheme, is still refused).

The node's own listeners are a line no mode crosses: a connection to an address of this machine on the
port of the management listener (or any port of the node other than the public one) is refused in dev
mode and towards trusted networks too, so a peer cannot aim a callback or data address at the management
API. The public listener stays reachable (hosted participants talk to each other through it), except for
an HTTP backend of an asset, which may read from neither listener: its bytes would be published as data.
Whether an address is this machine's is a question for the shell (``connector.net.client``); the
answer is passed in. Pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

import msgspec

from connector.errors import OutboundRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def origin(parts: SplitResult) -> str:
    """``scheme://host:port`` with the default port made explicit and the host lower-cased (RFC 6454)."""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://[{host}]:{port}" if ":" in host else f"{parts.scheme}://{host}:{port}"


class OutboundPolicy(msgspec.Struct, frozen=True):
    dev_mode: bool = False
    trusted_networks: tuple[IPNetwork, ...] = msgspec.field(default_factory=tuple)
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


#: The listener that peers (and the participants a node hosts) reach; every other one is off limits.
PUBLIC = "public"


class Listener(msgspec.Struct, frozen=True):
    """One of the node's own listening sockets: what it serves, the host it is bound to, its port."""

    name: str
    host: str
    port: int


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:127.0.0.1`` is 127.0.0.1 to the kernel: judge it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def surely_local(address: IPAddress) -> bool:
    """Loopback, or unspecified (a connection to 0.0.0.0 or ``::`` reaches this machine)."""
    address = unmapped(address)
    return address.is_loopback or address.is_unspecified


def local_name(host: str) -> bool:
    """``localhost`` and names under it resolve to loopback (RFC 6761 §6.3)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def check_listener(target: str, port: int, listeners: Iterable[Listener], *, local: bool,
                   backend: bool = False) -> None:
    """Raise :class:`OutboundRefused` if *target* (an address of this machine when *local*) on *port* is
    one of the node's own *listeners*: any but the public one, or for an HTTP *backend* any at all.

    In every mode: dev mode and ``trusted_networks`` widen which addresses may be called, never this.
    """
    if not local:
        return
    for listener in listeners:
        if listener.port != port:
            continue
        if listener.name != PUBLIC:
            raise OutboundRefused(f"{target} (port {port}) is this node's own {listener.name} listener: refused")
        if backend:
            raise OutboundRefused(f"{target} (port {port}) is this node's own {listener.name} listener: refused "
                                  "(an HTTP backend may not read from this node's listeners)")


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


#: The characters of a URI (RFC 3986 §2: reserved, unreserved and percent-encoded octets).
_ENCODED_URL = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def check_url(url: str, policy: OutboundPolicy, *, backend: bool = False) -> SplitResult:
    """Check the scheme and, for an IP literal host, the address. Host names are checked on resolve.

    For an HTTP *backend* the node's own public origin is no exception but refused (see the module
    docstring)."""
    if len(url) > 2048:
        raise OutboundRefused("URL is longer than 2048 characters")
    if not _ENCODED_URL.fullmatch(url):
        # A peer's callbackAddress goes into the @target-uri of every signed request to it (RFC 9421 §2.2.2).
        raise OutboundRefused("URL must be ASCII and percent-encoded (RFC 3986 §2): no spaces, controls or "
                              "characters outside the URI syntax")
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
    own = policy.is_own_origin(parts)
    if own and backend:
        raise OutboundRefused(f"{origin(parts)} is this node's own public origin: refused "
                              "(an HTTP backend may not read from this node's listeners)")
    literal = literal_address(parts.hostname)
    if literal is not None and not own:
        check_address(literal, policy, plain_http=parts.scheme == "http")
    return parts
