"""TLS contexts from the ``[node]`` settings: the public listener's certificate, the CAs trusted outbound.

The private key is a secret: it must not be readable by group or others (as the node's own keys), and its
path and contents never appear in a log line or an error beyond the file name.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from connector.errors import ConfigError


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the public listener (TLS 1.2 or later)."""
    key_path = Path(key)
    try:
        mode = key_path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"node.tls_key: cannot read {key_path.name}: {exc.strerror}", path="node.tls_key") from exc
    if mode & 0o077:
        raise ConfigError(f"node.tls_key: {key_path.name} is readable by others (mode {mode:o}); expected 0600",
                          path="node.tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"node.tls_cert / node.tls_key: cannot load the certificate and key: {exc}",
                          path="node.tls_cert") from exc
    return context


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
