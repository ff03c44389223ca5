"""Node configuration: a TOML file (``tds.toml``) in the node's data folder.

Unknown keys are errors (a typo should not be silently ignored); every error names the field.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from connector.errors import ConfigError, pattern_rule, validation_error_path
from connector.identity.claims import KIND_NAMES
from connector.protocol.export_control import ExportRule

CONFIG_FILE = "tds.toml"
#: A participant's name (it is part of its URLs, DID and folders).
NAME_RULE = "1-63 lowercase letters (a-z), digits or '-', starting with a letter or digit"
NAME_RE = re.compile(pattern_rule(r"^[a-z0-9][a-z0-9-]{0,62}$", NAME_RULE))
REGION_RULE = "an ISO 3166 code in capitals such as CN or CN-GD"
REGION_RE = re.compile(pattern_rule(r"^[A-Z]{2}(-[A-Z0-9]{1,3})*$", REGION_RULE))
#: A DID an issuer can be named by in the trust list (did:web or did:key; no fragment, query or white space).
ISSUER_DID_RE = re.compile(pattern_rule(r"^did:(web|key):[^\s#?/]{1,500}$",
                                        "a did:web or did:key DID without '#', '?', '/' or white space"))
#: Issuers in the ``[[trust]]`` list, and data spaces named for one issuer.
MAX_TRUSTED_ISSUERS = 256
MAX_TRUSTED_SPACES = 64


class NodeSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    public_url: str
    host: str = "127.0.0.1"
    port: int = 8181
    management_host: str = "127.0.0.1"
    management_port: int = 8182
    dev_mode: bool = False
    trusted_networks: list[str] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Bounds on what the node accepts from peers and fetches from them.
    max_request_bytes: int = 4 * 1024 * 1024
    outbound_timeout_s: float = 10.0
    outbound_max_redirects: int = 3
    outbound_max_response_bytes: int = 4 * 1024 * 1024
    # Negotiations: how long a message is retried before the negotiation is terminated, and how long the
    # node waits for the peer's (or its operator's) next move.
    delivery_timeout_s: float = 60.0
    negotiation_timeout_s: float = 300.0
    # Usage receipts: a provider flags an agreement with no receipt for this long (after it was agreed, or
    # after the last receipt).
    receipts_overdue_s: float = 86400.0
    # Several processes of one node on a PostgreSQL store: how long a process's heartbeat keeps it alive (it is
    # renewed every third of that); the work of a process that died is taken over after at most about this long.
    process_alive_s: float = 10.0
    # Fair use between the participants a node hosts (token buckets): management API requests per
    # participant (the admin token counts as one more), and DSP requests per calling peer.
    management_rate_per_s: float = 100.0
    management_burst: int = 1000
    dsp_rate_per_s: float = 100.0
    dsp_burst: int = 500
    # HTTPS on the public listener: a PEM certificate chain and its private key (both or neither; the key
    # file must not be readable by others). Without them the node serves plain http, e.g. behind a proxy.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: HTTPS on the management listener: "off" (plain http, for 127.0.0.1 or behind a proxy) or "node" (the
    #: public listener's tls_cert / tls_key). management_tls_cert / management_tls_key (both or neither), when
    #: given, are used instead, whatever management_tls says. Binding management_host to anything but loopback
    #: needs one of them unless dev_mode is true: tokens must not cross a network in clear.
    management_tls: Literal["off", "node"] = "off"
    management_tls_cert: str | None = None
    management_tls_key: str | None = None
    #: PEM file of the CAs trusted for HTTPS to peers, alone: not the system store beside them (a closed data
    #: space's private CA). Assets' HTTP backends, the provider's own systems, are checked against the system store.
    tls_ca: str | None = None
    # Transfers: how long a transfer token lives; how often a chunk that
    # fails verification is fetched again before the transfer is terminated; how long a pull may go
    # without a verified chunk (the provider unreachable or its stream breaking off) before it is; how long
    # a consumer waits for the provider to start a requested transfer.
    #: The most a provider fetches from its own HTTP backend into one asset snapshot.
    max_snapshot_bytes: int = 10 * 1024**3
    #: Encrypt every transfer end to end (those of data classed important or core always are).
    encrypt_transfers: bool = False
    #: Fair use: the most a hosted participant may keep in the vault (a pull that would pass it is refused).
    vault_quota_bytes: int = 10 * 1024**3
    transfer_token_ttl_s: float = 900.0
    transfer_chunk_retries: int = 3
    transfer_stall_timeout_s: float = 60.0
    transfer_start_timeout_s: float = 300.0
    # Readiness (``/readyz``): not ready while the data folder's disk has less free space than this many bytes,
    # or than this share of the disk (0 turns either check off).
    min_free_disk_bytes: int = 1024**3
    min_free_disk_percent: float = 0.0


class DspSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Admission of unknown peers (``connector.services.admission``).

    A peer is *unknown* to a hosted participant while it has no FINALIZED (or since REVOKED) agreement with
    it. All unknown peers of all participants together share one budget, apart from the per-peer budgets
    of known peers (``node.dsp_rate_per_s``, ``node.dsp_burst``): fresh identities cost nothing to make, so
    a budget per unknown DID would not bound anything.
    """

    #: DSP requests per second that all unknown peers together may make (token bucket) ...
    unknown_peer_rate_per_s: float = 20.0
    #: ... and the burst it allows (a first negotiation takes about ten requests).
    unknown_peer_burst: int = 40
    #: Negotiations opened by unknown peers that may be under way at once on the node.
    unknown_peer_open_negotiations: int = 50
    #: TERMINATED negotiations without agreement with peers that are still unknown are deleted this long
    #: after their last change, so that rejected strangers leave no rows behind for ever.
    unknown_peer_retention_s: float = 7 * 86400.0


class UsageSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[usage]``: how the usage API treats a retried use id (README "Security")."""

    #: How often a permitted use may be delivered again to the application that made it, with the same
    #: action and purpose (a retry after a lost answer), counted once.
    redeliveries: int = 3
    #: For how long after the use such a retry is accepted.
    redelivery_window_s: float = 300.0


class SettlementSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[settlement]``: statements of the post-paid prices of agreements (``connector.services.settlement``)."""

    #: Issue each agreement's statement by itself once its billing period has ended (and *grace_s* has passed).
    auto: bool = True
    #: Seconds after a period's end before its statement is issued: receipts of uses made just before the end,
    #: still on their way, arrive first.
    grace_s: float = 3600.0


class CredentialsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[credentials]``: memberships and verified attributes (``connector.services.credentials``)."""

    #: Verifier: how long a fetched status list is used before it is fetched again (also bounded by the
    #: list's own ``ttl`` and ``validUntil``).
    status_cache_s: float = 60.0
    #: Verifier: the longest a status list fetch may take; one that takes longer leaves the status unknown.
    status_fetch_timeout_s: float = 5.0
    #: Verifier: the oldest presentation accepted (how long before it is shown it was made; the challenge it
    #: answers stays open longer: ``connector.services.credentials.CHALLENGE_LIFETIME``).
    presentation_max_age_s: float = 120.0
    #: Issuer: how long a published status list credential is valid (re-signed when half of it has passed).
    status_list_validity_s: float = 3600.0
    #: Issuer: how long an issued credential is valid unless the issuer says otherwise.
    credential_validity_days: int = 365


class TrustEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[[trust]]``: an issuer every participant of the node believes, for the kinds of claim named."""

    #: The issuer's DID.
    issuer: str
    #: Short names of the kinds: membership, legal-entity, region, certification.
    claims: list[str]
    #: For memberships: only of these data spaces (left out: any data space).
    spaces: list[str] | None = None


class DiscoverySection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[discovery]``: the peer directory and its gossip (``connector.services.directory``, ``…gossip``)."""

    #: Peers to start from: node URLs, participant URLs or did:web DIDs (verified by handshake, then listed).
    bootstrap: list[str] = []
    #: False: this node's participants stay out of every other node's directory (none is gossiped).
    discoverable: bool = True
    #: Names of hosted participants kept out of gossip, when the node is discoverable otherwise.
    hidden: list[str] = []
    #: Seconds between gossip rounds (each participant exchanges with ``fanout`` peers per round).
    gossip_interval_s: float = 30.0
    #: Seconds between crawls of known peers' catalogs (the catalog cache).
    crawl_interval_s: float = 300.0
    #: Crawls (``connector.services.search``): offers kept of one provider's catalog (the rest is left out and
    #: counted) and in one participant's cache; the longest one provider's catalog and one participant's whole
    #: crawl may take; providers whose catalogs are read at the same time.
    crawl_max_offers_per_provider: int = 5000
    crawl_max_offers: int = 100_000
    crawl_provider_timeout_s: float = 30.0
    crawl_timeout_s: float = 120.0
    crawl_concurrency: int = 4
    fanout: int = 3
    #: A self-description not re-issued within this long of its issuance leaves the directory.
    item_ttl_s: float = 3600.0
    #: Participants one hosted participant's directory holds at most.
    max_entries: int = 10_000
    #: Self-descriptions in one gossip message, and bytes of one (either way).
    max_items_per_message: int = 256
    max_message_bytes: int = 1024 * 1024
    #: Canonical bytes of one self-description.
    max_item_bytes: int = 16 * 1024
    #: Gossip messages one peer may send one participant (token bucket).
    peer_rate_per_s: float = 1.0
    peer_burst: int = 20


class ParticipantSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    legal_name: str
    region: str = "CN"
    industry: str = ""
    contact: str = ""
    did_method: Literal["web", "key"] = "web"


class ConformanceSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Conformance mode (``connector.conformance``): a test fixture for the DSP compatibility kit, never
    for production. Present only when the ``[conformance]`` section is; needs ``node.dev_mode``."""

    #: The exact ``Authorization`` header value the kit sends (``…http.headers.authorization``).
    authorization: str
    #: The kit's own participant id (``TCK_PARTICIPANT`` in the kit), i.e. who a request with that header is.
    #: Not the kit's ``dataspacetck.dsp.connector.agent.id``, which names the node under test.
    agent_id: str = "TCK_PARTICIPANT"
    #: Seed the kit's assets, policy ``P123`` and contract definition ``CD123`` for the first participant.
    seed: bool = True


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: NodeSection
    participant: ParticipantSection
    dsp: DspSection = DspSection()
    conformance: ConformanceSection | None = None
    usage: UsageSection = UsageSection()
    #: ``[data_roots]``: further folders (absolute, or relative to the data folder) whose files one
    #: participant alone may publish, by participant name; each participant has ``files/NAME/`` anyway.
    data_roots: dict[str, list[str]] = {}
    #: ``[[export_control]]`` rules: data of these classes held in this region may not leave it.
    export_control: list[ExportRule] = []
    credentials: CredentialsSection = CredentialsSection()
    #: ``[[trust]]``: issuers every hosted participant believes (each may add its own: ``tds trust add``).
    trust: list[TrustEntry] = []
    discovery: DiscoverySection = DiscoverySection()
    settlement: SettlementSection = SettlementSection()
    #: Where the node keeps its data: empty for the SQLite file ``tds.db`` in the data folder, or a PostgreSQL
    #: URL (``postgresql://user@host:5432/db?schema=tds``; the schema defaults to ``tds``). Several node
    #: processes may share one PostgreSQL store (and the data folder, for keys and the vault).
    store: str = ""

    @property
    def public_url(self) -> str:
        return self.node.public_url.rstrip("/")

    @property
    def management_tls_files(self) -> tuple[str, str] | None:
        """The certificate chain and key the management listener serves HTTPS with, or None (plain http)."""
        node = self.node
        if node.management_tls_cert and node.management_tls_key:
            return node.management_tls_cert, node.management_tls_key
        if node.management_tls == "node" and node.tls_cert and node.tls_key:
            return node.tls_cert, node.tls_key
        return None


def management_url_of(config: Config, port: int | None = None, *, to_connect: bool = False) -> str:
    """The management listener's URL (https when it serves TLS) on *port* (default: the configured one). With
    *to_connect*, a wildcard bind address (``0.0.0.0``, ``::``, empty) becomes the loopback one, for a client on
    the same machine."""
    host = config.node.management_host
    if to_connect:
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if config.management_tls_files is not None else "http"
    return f"{scheme}://{host}:{config.node.management_port if port is None else port}"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``; an empty host means every interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(config: Config) -> None:
    node, part = config.node, config.participant
    if config.store and not config.store.lower().startswith(("postgresql://", "postgres://")):
        raise ConfigError("store must be empty (the SQLite file tds.db in the data folder) or a PostgreSQL URL "
                          "(postgresql://user@host:5432/database)", path="store")
    url = urlsplit(node.public_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("node.public_url must be an http(s) URL with a host", path="node.public_url")
    if url.query or url.fragment:
        raise ConfigError("node.public_url must not have a query or fragment", path="node.public_url")
    if url.scheme == "http" and not node.dev_mode and not node.trusted_networks:
        raise ConfigError(
            "node.public_url must be https unless node.dev_mode is true or peers are on node.trusted_networks",
            path="node.public_url",
        )
    for field, port in (("node.port", node.port), ("node.management_port", node.management_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{field} must be between 0 and 65535", path=field)
    for field, value in (("node.management_rate_per_s", node.management_rate_per_s),
                         ("node.management_burst", node.management_burst),
                         ("node.dsp_rate_per_s", node.dsp_rate_per_s), ("node.dsp_burst", node.dsp_burst),
                         ("node.process_alive_s", node.process_alive_s)):
        if not value > 0:
            raise ConfigError(f"{field} must be greater than 0", path=field)
    dsp = config.dsp
    for field, value in (("dsp.unknown_peer_rate_per_s", dsp.unknown_peer_rate_per_s),
                         ("dsp.unknown_peer_burst", dsp.unknown_peer_burst),
                         ("dsp.unknown_peer_open_negotiations", dsp.unknown_peer_open_negotiations),
                         ("dsp.unknown_peer_retention_s", dsp.unknown_peer_retention_s)):
        if not value > 0:
            raise ConfigError(f"{field} must be greater than 0", path=field)
    if not node.min_free_disk_bytes >= 0:
        raise ConfigError("node.min_free_disk_bytes must be 0 or more", path="node.min_free_disk_bytes")
    if not 0 <= node.min_free_disk_percent <= 100:
        raise ConfigError("node.min_free_disk_percent must be from 0 to 100", path="node.min_free_disk_percent")
    if (node.tls_cert is None) != (node.tls_key is None):
        missing = "node.tls_key" if node.tls_key is None else "node.tls_cert"
        raise ConfigError("node.tls_cert and node.tls_key go together: give both or neither", path=missing)
    if (node.management_tls_cert is None) != (node.management_tls_key is None):
        missing = "node.management_tls_key" if node.management_tls_key is None else "node.management_tls_cert"
        raise ConfigError("node.management_tls_cert and node.management_tls_key go together: give both or neither",
                          path=missing)
    for field, path in (("node.tls_cert", node.tls_cert), ("node.tls_key", node.tls_key),
                        ("node.tls_ca", node.tls_ca), ("node.management_tls_cert", node.management_tls_cert),
                        ("node.management_tls_key", node.management_tls_key)):
        if path is not None and not path.strip():
            raise ConfigError(f"{field} must be a file path (leave it out for none)", path=field)
    _check_management_listener(config)
    for i, net in enumerate(node.trusted_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"node.trusted_networks[{i}]: {exc}", path=f"node.trusted_networks[{i}]") from exc
    if not NAME_RE.match(part.name):
        raise ConfigError(
            f"participant.name must be {NAME_RULE}", path="participant.name"
        )
    if not part.legal_name.strip():
        raise ConfigError("participant.legal_name must not be empty", path="participant.legal_name")
    if not REGION_RE.match(part.region):
        raise ConfigError(
            f"participant.region must be {REGION_RULE}", path="participant.region"
        )
    for i, rule in enumerate(config.export_control):
        if not REGION_RE.match(rule.region):
            raise ConfigError("export_control region must be an ISO 3166 code such as CN",
                              path=f"export_control[{i}].region")
        for c in rule.data_classes:
            if c not in ("general", "important", "core", "personal"):
                raise ConfigError(f"unknown data class {c!r} (general, important, core, personal)",
                                  path=f"export_control[{i}].data_classes")
    for name, folders in config.data_roots.items():
        if not NAME_RE.match(name):
            raise ConfigError("data_roots keys are participant names", path=f"data_roots.{name}")
        for i, folder in enumerate(folders):
            if not folder.strip():
                raise ConfigError("a data root must be a folder path", path=f"data_roots.{name}[{i}]")
    _check_credentials(config)
    _check_discovery(config.discovery)
    disc = config.discovery
    for field, value in (("discovery.crawl_max_offers_per_provider", disc.crawl_max_offers_per_provider),
                         ("discovery.crawl_max_offers", disc.crawl_max_offers),
                         ("discovery.crawl_provider_timeout_s", disc.crawl_provider_timeout_s),
                         ("discovery.crawl_timeout_s", disc.crawl_timeout_s),
                         ("discovery.crawl_concurrency", disc.crawl_concurrency)):
        if not value > 0:
            raise ConfigError(f"{field} must be greater than 0", path=field)
    if not 0 <= config.settlement.grace_s <= 31 * 86400:
        raise ConfigError("settlement.grace_s must be from 0 to 2678400 seconds (31 days)", path="settlement.grace_s")
    if config.usage.redeliveries < 0:
        raise ConfigError("usage.redeliveries must be 0 or more", path="usage.redeliveries")
    if not config.usage.redelivery_window_s >= 0:
        raise ConfigError("usage.redelivery_window_s must be 0 or more", path="usage.redelivery_window_s")
    if config.conformance is not None:
        if not node.dev_mode:
            raise ConfigError("conformance mode is a test fixture and needs node.dev_mode = true",
                              path="conformance")
        if len(config.conformance.authorization.strip()) < 8:
            raise ConfigError("conformance.authorization must be at least 8 characters",
                              path="conformance.authorization")
        if not config.conformance.agent_id.strip():
            raise ConfigError("conformance.agent_id must not be empty", path="conformance.agent_id")


def _check_management_listener(config: Config) -> None:
    node = config.node
    if node.management_tls == "node" and node.management_tls_cert is None and not (node.tls_cert and node.tls_key):
        raise ConfigError('node.management_tls = "node" serves the public listener\'s certificate: give '
                          "node.tls_cert and node.tls_key (or node.management_tls_cert and node.management_tls_key)",
                          path="node.management_tls")
    if config.management_tls_files is None and not is_loopback_host(node.management_host) and not node.dev_mode:
        # Management tokens (the admin token among them) would cross the network in clear.
        raise ConfigError(f"node.management_host {node.management_host!r} is not a loopback address: the management "
                          'API needs HTTPS there (node.management_tls = "node", or node.management_tls_cert and '
                          "node.management_tls_key), or node.dev_mode = true", path="node.management_host")


def _check_credentials(config: Config) -> None:
    section = config.credentials
    for field, value in (("credentials.status_cache_s", section.status_cache_s),
                         ("credentials.status_fetch_timeout_s", section.status_fetch_timeout_s),
                         ("credentials.presentation_max_age_s", section.presentation_max_age_s),
                         ("credentials.status_list_validity_s", section.status_list_validity_s),
                         ("credentials.credential_validity_days", section.credential_validity_days)):
        if not value > 0:
            raise ConfigError(f"{field} must be greater than 0", path=field)
    if len(config.trust) > MAX_TRUSTED_ISSUERS:
        raise ConfigError(f"at most {MAX_TRUSTED_ISSUERS} trusted issuers", path="trust")
    seen: set[str] = set()
    for i, entry in enumerate(config.trust):
        where = f"trust[{i}]"
        if not ISSUER_DID_RE.match(entry.issuer):
            raise ConfigError("trust issuer must be a did:web or did:key", path=f"{where}.issuer")
        if entry.issuer in seen:
            raise ConfigError(f"issuer {entry.issuer} is listed twice; give it one entry", path=f"{where}.issuer")
        seen.add(entry.issuer)
        if not entry.claims:
            raise ConfigError(f"name the claims it is trusted for ({', '.join(KIND_NAMES)})", path=f"{where}.claims")
        for name in entry.claims:
            if name not in KIND_NAMES:
                raise ConfigError(f"unknown kind of claim {name[:40]!r} ({', '.join(KIND_NAMES)})",
                                  path=f"{where}.claims")
        if entry.spaces is not None:
            if "membership" not in entry.claims:
                raise ConfigError("spaces limit memberships: the issuer must be trusted for membership",
                                  path=f"{where}.spaces")
            if not entry.spaces or len(entry.spaces) > MAX_TRUSTED_SPACES:
                raise ConfigError(f"spaces must name 1 to {MAX_TRUSTED_SPACES} data spaces (leave it out for any)",
                                  path=f"{where}.spaces")
            for space in entry.spaces:
                if not space or len(space) > 256 or any(c.isspace() for c in space):
                    raise ConfigError("a data space is an IRI or URN without white space", path=f"{where}.spaces")


def _check_discovery(section: DiscoverySection) -> None:
    for field, value in (("discovery.gossip_interval_s", section.gossip_interval_s),
                         ("discovery.crawl_interval_s", section.crawl_interval_s),
                         ("discovery.item_ttl_s", section.item_ttl_s),
                         ("discovery.peer_rate_per_s", section.peer_rate_per_s)):
        if not value > 0:
            raise ConfigError(f"{field} must be greater than 0", path=field)
    for field, count in (("discovery.fanout", section.fanout), ("discovery.max_entries", section.max_entries),
                         ("discovery.max_items_per_message", section.max_items_per_message),
                         ("discovery.max_message_bytes", section.max_message_bytes),
                         ("discovery.max_item_bytes", section.max_item_bytes),
                         ("discovery.peer_burst", section.peer_burst)):
        if count < 1:
            raise ConfigError(f"{field} must be 1 or more", path=field)
    if len(section.bootstrap) > 64:
        raise ConfigError("at most 64 bootstrap peers", path="discovery.bootstrap")
    for i, peer in enumerate(section.bootstrap):
        if not peer.startswith(("http://", "https://", "did:web:")) or len(peer) > 2048 or any(
                c.isspace() for c in peer):
            raise ConfigError("a bootstrap peer is an http(s) URL or a did:web", path=f"discovery.bootstrap[{i}]")
    for i, name in enumerate(section.hidden):
        if not NAME_RE.match(name):
            raise ConfigError("a hidden participant is named like in [participant] name",
                              path=f"discovery.hidden[{i}]")


def parse_config(text: str) -> Config:
    """Parse and check configuration text; raise :class:`ConfigError` naming the field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    node = raw.get("node")
    # Folders once shared by every participant: an empty list (as `tds init` wrote it) is dropped; any folder
    # would hand one tenant's files to all, so it must be given to a participant instead.
    if isinstance(node, dict) and node.pop("data_roots", None):
        raise ConfigError("node.data_roots (folders shared by every participant) is no longer read: each "
                          "participant has files/NAME/ in the data folder; give further folders to one "
                          'participant in a [data_roots] section, e.g. acme = ["/srv/acme"]', path="node.data_roots")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        path, text_part = validation_error_path(str(exc))
        raise ConfigError(f"{path}: {text_part}" if path else text_part, path=path) from exc
    _check(config)
    return config


def load_config(data_dir: Path) -> Config:
    path = data_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"no {CONFIG_FILE} in {data_dir} (run `tds init --dir {data_dir}` first)") from exc
    return parse_config(text)


def render_config(config: Config) -> str:
    """TOML text for a config (written by ``tds init``)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = [f"store = {value(config.store)}", ""] if config.store else []
    for section in ("node", "participant", "dsp", "usage", "conformance", "credentials", "discovery", "settlement"):
        if getattr(config, section) is None:
            continue
        if section == "credentials" and config.credentials == CredentialsSection():
            continue  # all defaults: `tds init` writes no section for it
        if section == "discovery" and config.discovery == DiscoverySection():
            continue
        if section == "settlement" and config.settlement == SettlementSection():
            continue
        lines.append(f"[{section}]")
        for key, v in msgspec.structs.asdict(getattr(config, section)).items():
            if v is None:  # optional and unset: TOML has no null
                continue
            if section == "node" and key == "management_tls" and v == "off":
                continue  # the default, as for the other TLS settings: `tds init` writes none
            lines.append(f"{key} = {value(v)}")
        lines.append("")
    if config.data_roots:
        lines.append("[data_roots]")
        lines += [f"{name} = {value(folders)}" for name, folders in config.data_roots.items()]
        lines.append("")
    for rule in config.export_control:
        lines.append("[[export_control]]")
        for key, v in msgspec.structs.asdict(rule).items():
            lines.append(f"{key} = {value(v)}")
        lines.append("")
    for entry in config.trust:
        lines.append("[[trust]]")
        lines += [f"{key} = {value(v)}" for key, v in msgspec.structs.asdict(entry).items() if v is not None]
        lines.append("")
    return "\n".join(lines)
