"""``node.tls_ca``: outbound HTTPS to peers trusts the CAs in that file alone, not the system store beside them
(README, Configuration). Handshakes run through memory BIOs: no socket."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from connector.errors import ConfigError
from connector.http.tls import client_context


def _handshake(client: ssl.SSLContext, ca: trustme.CA, host: str = "peer.example",
               certified: str = "peer.example") -> None:
    """A TLS handshake between *client*, calling *host*, and a server whose certificate *ca* issued for
    *certified*; raises ``ssl.SSLCertVerificationError`` if the client does not trust it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified).configure_cert(server)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=host)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def space_ca(tmp_path: Path) -> tuple[trustme.CA, str]:
    """The data space's own CA, written where ``node.tls_ca`` names it."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "space-ca.pem"))
    return ca, str(tmp_path / "space-ca.pem")


@pytest.fixture
def public_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A CA in the system store (OpenSSL reads ``SSL_CERT_FILE`` for it when a context loads the defaults)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "system.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return ca


def test_a_peer_certified_by_the_data_space_ca_is_trusted(space_ca, public_ca):
    ca, path = space_ca
    context = client_context(path)
    assert context is not None
    _handshake(context, ca)


def test_a_certificate_from_a_ca_of_the_system_store_is_not_trusted_when_tls_ca_is_set(space_ca, public_ca):
    _, path = space_ca
    context = client_context(path)
    assert context is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, public_ca)
    # ... while the system store does trust it: the refusal is tls_ca's doing
    _handshake(ssl.create_default_context(), public_ca)


def test_the_context_checks_host_names_and_needs_tls_1_2(space_ca):
    ca, path = space_ca
    context = client_context(path)
    assert context is not None and context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, ca, certified="someone-else.example")


def test_without_tls_ca_the_system_store_is_used():
    assert client_context(None) is None


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_a_missing_or_unreadable_ca_file_is_a_config_error_naming_the_setting(tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        client_context(str(path))
    assert refused.value.path == "node.tls_ca" and "ca.pem" in refused.value.message
