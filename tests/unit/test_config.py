from __future__ import annotations

import pytest

from connector.config import parse_config, render_config
from connector.errors import ConfigError

GOOD = """
[node]
public_url = "https://tds.example.com"
port = 8181
trusted_networks = ["10.0.0.0/8"]

[participant]
name = "acme"
legal_name = "ACME Co."
region = "CN-GD"
"""


def test_good_config_round_trips():
    config = parse_config(GOOD)
    assert config.node.port == 8181 and config.participant.region == "CN-GD"
    assert config.node.dev_mode is False and config.node.management_host == "127.0.0.1"
    assert parse_config(render_config(config)) == config


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("port = 8181", 'port = "x"'), "node.port"),
        (("port = 8181", "prot = 8181"), "node.prot"),
        (("port = 8181", "port = 70000"), "node.port"),
        (('region = "CN-GD"', 'region = "china"'), "participant.region"),
        (('name = "acme"', 'name = "ACME Co"'), "participant.name"),
        (('"https://tds.example.com"\nport = 8181\ntrusted_networks = ["10.0.0.0/8"]',
          '"http://tds.example.com"'), "node.public_url"),
        (('"https://tds.example.com"', '"ftp://x"'), "node.public_url"),
        (('["10.0.0.0/8"]', '["10.0.0.0/33"]'), "node.trusted_networks[0]"),
        (('legal_name = "ACME Co."\n', ""), "participant.legal_name"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[dsp]\nunknown_peer_burst = 0'), "dsp.unknown_peer_burst"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[dsp]\nunknown_peer_rate_per_s = -1.0'),
         "dsp.unknown_peer_rate_per_s"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[dsp]\nunknown_peers_open = 5'), "dsp.unknown_peers_open"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[settlement]\ngrace_s = -1.0'), "settlement.grace_s"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[settlement]\ngrace_s = nan'), "settlement.grace_s"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[settlement]\nauto = "yes"'), "settlement.auto"),
        (('region = "CN-GD"', 'region = "CN-GD"\n[settlement]\ngrace = 60.0'), "settlement.grace"),
    ],
)
def test_errors_name_the_field(change, field):
    text = GOOD.replace(*change)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.path == field
    assert field.split("[")[0] in str(info.value)
    assert "\n" not in str(info.value)


def test_settlement_settings_round_trip_and_defaults_are_left_out():
    config = parse_config(GOOD + "\n[settlement]\nauto = false\ngrace_s = 600.0\n")
    assert config.settlement.auto is False and config.settlement.grace_s == 600.0
    assert parse_config(render_config(config)) == config
    assert "[settlement]" not in render_config(parse_config(GOOD))


def test_http_public_url_needs_dev_mode():
    text = GOOD.replace('"https://tds.example.com"', '"http://127.0.0.1:8181"').replace(
        "port = 8181", "port = 8181\ndev_mode = true"
    )
    assert parse_config(text).node.dev_mode


def test_not_toml():
    with pytest.raises(ConfigError, match="TOML"):
        parse_config("[node\n")


DEV = GOOD.replace("port = 8181", "port = 8181\ndev_mode = true")
CONFORMANCE = '\n[conformance]\nauthorization = "static-kit-value"\nagent_id = "TCK_PARTICIPANT"\n'


def test_conformance_section_is_optional_and_round_trips():
    assert parse_config(DEV).conformance is None
    config = parse_config(DEV + CONFORMANCE)
    assert config.conformance is not None and config.conformance.agent_id == "TCK_PARTICIPANT"
    assert config.conformance.seed is True
    assert parse_config(render_config(config)) == config


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD + CONFORMANCE, "conformance"),  # a test fixture: never without dev_mode
        (DEV + CONFORMANCE.replace("agent_id", "agent"), "conformance.agent"),
        (DEV + CONFORMANCE.replace('"static-kit-value"', '"short"'), "conformance.authorization"),
        (DEV + CONFORMANCE.replace('"TCK_PARTICIPANT"', '" "'), "conformance.agent_id"),
        (DEV + "\n[conformance]\n", "conformance.authorization"),
    ],
)
def test_conformance_errors_name_the_field(text, field):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.path == field


@pytest.mark.parametrize(("given", "missing"), [("tls_cert", "node.tls_key"), ("tls_key", "node.tls_cert")])
def test_tls_cert_and_key_go_together(given, missing):
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace("port = 8181", f'port = 8181\n{given} = "/etc/tds/x.pem"'))
    assert info.value.path == missing


def test_tls_settings_round_trip_and_unset_ones_are_left_out():
    text = GOOD.replace("port = 8181", 'port = 8181\ntls_cert = "/c.pem"\ntls_key = "/k.pem"\ntls_ca = "/ca.pem"')
    config = parse_config(text)
    assert (config.node.tls_cert, config.node.tls_key, config.node.tls_ca) == ("/c.pem", "/k.pem", "/ca.pem")
    assert parse_config(render_config(config)) == config
    assert "tls_" not in render_config(parse_config(GOOD))


TRUST = """
[credentials]
status_cache_s = 30.0

[[trust]]
issuer = "did:web:alliance.example:participants:alliance"
claims = ["membership"]
spaces = ["urn:tds:space:auto-parts"]

[[trust]]
issuer = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
claims = ["region", "legal-entity"]
"""


def test_trust_list_and_credentials_settings_round_trip():
    config = parse_config(GOOD + TRUST)
    assert [(t.issuer.split(":")[1], t.claims, t.spaces) for t in config.trust] == [
        ("web", ["membership"], ["urn:tds:space:auto-parts"]), ("key", ["region", "legal-entity"], None)]
    assert config.credentials.status_cache_s == 30.0 and config.credentials.status_fetch_timeout_s == 5.0
    assert parse_config(render_config(config)) == config
    assert "[credentials]" not in render_config(parse_config(GOOD))  # defaults: no section written


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('issuer = "did:web:alliance.example:participants:alliance"', 'issuer = "alliance"'), "trust[0].issuer"),
        (('issuer = "did:web:alliance.example:participants:alliance"', 'issuer = "did:web:a.example#key-1"'),
         "trust[0].issuer"),
        (('claims = ["membership"]', 'claims = ["passport"]'), "trust[0].claims"),
        (('claims = ["membership"]', "claims = []"), "trust[0].claims"),
        (('claims = ["region", "legal-entity"]', 'claims = ["region"]\nspaces = ["x"]'), "trust[1].spaces"),
        (('spaces = ["urn:tds:space:auto-parts"]', "spaces = []"), "trust[0].spaces"),
        (('spaces = ["urn:tds:space:auto-parts"]', 'spaces = ["two words"]'), "trust[0].spaces"),
        (("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "did:web:alliance.example:participants:alliance"),
         "trust[1].issuer"),
        (("status_cache_s = 30.0", "status_cache_s = 0.0"), "credentials.status_cache_s"),
        (("status_cache_s = 30.0", "status_cache = 30.0"), "credentials.status_cache"),
        (('claims = ["membership"]', 'claims = ["membership"]\ntrusted = true'), "trust[0].trusted"),
    ],
)
def test_trust_list_errors_name_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        parse_config((GOOD + TRUST).replace(*change))
    assert info.value.path == field, str(info.value)
    assert "\n" not in str(info.value)


def _node(text: str, settings: str) -> str:
    return text.replace("port = 8181", f"port = 8181\n{settings}")


@pytest.mark.parametrize("host", ["0.0.0.0", "", "10.1.2.3", "::", "tds.example.com"])
def test_management_listener_off_loopback_needs_tls(host):
    with pytest.raises(ConfigError) as info:
        parse_config(_node(GOOD, f'management_host = "{host}"'))
    assert info.value.path == "node.management_host"
    assert "management_tls" in str(info.value) and "dev_mode" in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_management_listener_on_loopback_may_be_plain_http(host):
    assert parse_config(_node(GOOD, f'management_host = "{host}"')).management_tls_files is None


def test_management_listener_off_loopback_in_plain_http_is_allowed_in_dev_mode():
    config = parse_config(_node(DEV, 'management_host = "0.0.0.0"'))
    assert config.node.management_host == "0.0.0.0" and config.management_tls_files is None


def test_management_tls_node_serves_the_public_certificate():
    config = parse_config(_node(GOOD, 'management_host = "0.0.0.0"\nmanagement_tls = "node"\n'
                                      'tls_cert = "/c.pem"\ntls_key = "/k.pem"'))
    assert config.management_tls_files == ("/c.pem", "/k.pem")
    assert parse_config(render_config(config)) == config
    assert 'management_tls = "node"' in render_config(config)


def test_management_tls_node_needs_the_public_certificate():
    with pytest.raises(ConfigError) as info:
        parse_config(_node(GOOD, 'management_tls = "node"'))
    assert info.value.path == "node.management_tls" and "node.tls_cert" in str(info.value)


def test_own_management_certificate_is_used_before_the_public_one():
    config = parse_config(_node(GOOD, 'management_host = "0.0.0.0"\ntls_cert = "/c.pem"\ntls_key = "/k.pem"\n'
                                      'management_tls_cert = "/mc.pem"\nmanagement_tls_key = "/mk.pem"'))
    assert config.management_tls_files == ("/mc.pem", "/mk.pem")
    assert parse_config(render_config(config)) == config


@pytest.mark.parametrize(("given", "missing"), [("management_tls_cert", "node.management_tls_key"),
                                                ("management_tls_key", "node.management_tls_cert")])
def test_management_tls_cert_and_key_go_together(given, missing):
    with pytest.raises(ConfigError) as info:
        parse_config(_node(GOOD, f'{given} = "/etc/tds/x.pem"'))
    assert info.value.path == missing


def test_management_tls_value_is_checked():
    with pytest.raises(ConfigError) as info:
        parse_config(_node(GOOD, 'management_tls = "on"'))
    assert info.value.path == "node.management_tls"


def test_management_url_says_https_when_the_listener_serves_tls():
    from connector.config import management_url_of

    plain = parse_config(_node(DEV, 'management_host = "0.0.0.0"'))
    assert management_url_of(plain, 9000) == "http://0.0.0.0:9000"
    assert management_url_of(plain, to_connect=True) == "http://127.0.0.1:8182"
    own = parse_config(_node(GOOD, 'management_host = "::"\nmanagement_tls_cert = "/mc.pem"\n'
                                   'management_tls_key = "/mk.pem"'))
    assert management_url_of(own, 9000) == "https://[::]:9000"
    assert management_url_of(own, to_connect=True) == "https://[::1]:8182"
