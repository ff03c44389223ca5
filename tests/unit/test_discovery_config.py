"""``[discovery]`` in tds.toml: read, checked field by field, written back only when set."""

from __future__ import annotations

import pytest

from connector.config import DiscoverySection, parse_config, render_config
from connector.errors import ConfigError

BASE = ('[node]\npublic_url = "http://127.0.0.1:8181"\ndev_mode = true\n'
        '[participant]\nname = "acme"\nlegal_name = "ACME"\n')


def test_defaults_and_a_round_trip():
    assert parse_config(BASE).discovery == DiscoverySection()
    assert "[discovery]" not in render_config(parse_config(BASE))
    config = parse_config(BASE + '[discovery]\nbootstrap = ["http://127.0.0.1:8281", "did:web:parts.example"]\n'
                                  'gossip_interval_s = 2.0\ndiscoverable = false\n')
    assert config.discovery.bootstrap == ["http://127.0.0.1:8281", "did:web:parts.example"]
    assert config.discovery.crawl_interval_s == 300.0 and not config.discovery.discoverable
    assert parse_config(render_config(config)) == config


@pytest.mark.parametrize(("text", "path"), [
    ('bootstrap = ["ftp://x"]', "discovery.bootstrap[0]"),
    ('bootstrap = ["did:key:z6Mk"]', "discovery.bootstrap[0]"),
    ("gossip_interval_s = 0", "discovery.gossip_interval_s"),
    ("fanout = 0", "discovery.fanout"),
    ('hidden = ["Not A Name"]', "discovery.hidden[0]"),
    ("gossip_every = 3", "discovery"),
])
def test_bad_settings_name_their_field(text, path):
    with pytest.raises(ConfigError) as raised:
        parse_config(BASE + "[discovery]\n" + text + "\n")
    assert path in str(raised.value) or raised.value.path == path or (raised.value.path or "").startswith(path)
