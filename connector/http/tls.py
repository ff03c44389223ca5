"""TLS contexts from the ``[node]`` settings: the public listener's certificate, the CAs trusted outbound.

The private key is a secret: it must not be readable by group or others (as the node's own keys), and its
path and contents never appear in a log line or an error beyond the file name.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from connector.config import Config
from connector.errors import ConfigError


def server_context(cert: str, key: str, *, fields: tuple[str, str] = ("node.tls_cert", "node.tls_key")
                   ) -> ssl.SSLContext:
    """A server context for a listener (TLS 1.2 or later); *fields* name the settings the files come from
    (the public listener's by default), for the error."""
    cert_field, key_field = fields
    key_path = Path(key)
    try:
        mode = key_path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"{key_field}: cannot read {key_path.name}: {exc.strerror}", path=key_field) from exc
    if mode & 0o077:
        raise ConfigError(f"{key_field}: {key_path.name} is readable by others (mode {mode:o}); expected 0600",
                          path=key_field)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{cert_field} / {key_field}: cannot load the certificate and key: {exc}",
                          path=cert_field) from exc
    return context


def management_server_context(config: Config) -> ssl.SSLContext | None:
    """The management listener's server context (``node.management_tls``), or None for plain http."""
    files = config.management_tls_files
    if files is None:
        return None
    node = config.node
    own = node.management_tls_cert is not None and node.management_tls_key is not None
    fields = ("node.management_tls_cert", "node.management_tls_key") if own else ("node.tls_cert", "node.tls_key")
    return server_context(*files, fields=fields)


def client_context(ca: str | None) -> ssl.SSLContext | None:
    """The context for outbound HTTPS: the CAs in *ca* alone, or None (the system store, the default).

    Only those CAs, not the system store beside them: a closed data space names its own CA so that a peer is
    one its operators certified, and a certificate any public CA would issue for the peer's host name must not
    pass as one."""
    if ca is None:
        return None
    try:
        # With a CA file given, the default context loads no system certificates (ssl.create_default_context).
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"node.tls_ca: cannot load {Path(ca).name}: {exc}", path="node.tls_ca") from exc
    return context
