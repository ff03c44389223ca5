"""The outbound guard refuses what a peer must not make the node call."""

from __future__ import annotations

import ipaddress

import pytest

from connector.errors import OutboundRefused
from connector.net.guard import (
    PUBLIC,
    Listener,
    OutboundPolicy,
    check_address,
    check_listener,
    check_url,
    local_name,
    surely_local,
)

STRICT = OutboundPolicy.build(False, [])
DEV = OutboundPolicy.build(True, [])
TRUSTING = OutboundPolicy.build(False, ["10.20.0.0/16", "fd00::/8"])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x", "https://localhost.localdomain.invalid@127.0.0.1/", "https://10.0.0.5/",
        "https://192.168.1.1/", "https://172.16.0.1/", "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/", "https://[fe80::1]/", "https://[::ffff:127.0.0.1]/", "https://0.0.0.0/",
        "https://100.64.0.1/", "https://224.0.0.1/",
    ],
)
def test_internal_targets_are_refused_outside_dev_mode(url):
    with pytest.raises(OutboundRefused):
        check_url(url, STRICT)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x/", "ftp://a/b", "//x/y", "javascript:alert(1)"])
def test_only_http_and_https(url):
    with pytest.raises(OutboundRefused, match=r"http|host"):
        check_url(url, DEV)


def test_dev_mode_allows_loopback_and_plain_http():
    assert check_url("http://127.0.0.1:8181/x", DEV).port == 8181


def test_plain_http_to_public_address_is_refused_outside_dev_mode():
    with pytest.raises(OutboundRefused, match="plain http"):
        check_url("http://93.184.216.34/", STRICT)
    assert check_url("https://93.184.216.34/", STRICT).hostname == "93.184.216.34"


def test_trusted_networks_are_allowed_even_over_http():
    check_url("http://10.20.3.4:8181/", TRUSTING)
    check_address("fd00::1", TRUSTING)
    with pytest.raises(OutboundRefused):
        check_url("https://10.21.0.1/", TRUSTING)


def test_host_names_are_left_to_resolve_time_checks():
    assert check_url("https://partner.example.com/x", STRICT).hostname == "partner.example.com"
    with pytest.raises(OutboundRefused):
        check_address("127.0.0.1", STRICT)


@pytest.mark.parametrize("url", ["https://user:pw@example.com/", "https://example.com:0/", "https://x" + "a" * 3000])
def test_other_bad_urls(url):
    with pytest.raises(OutboundRefused):
        check_url(url, STRICT)


OWN = OutboundPolicy.build(False, [], "http://127.0.0.1:8181/")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8181/participants/sme/api/dsp/2025-1/catalog/request",
                                 "HTTP://127.0.0.1:8181/x"])
def test_the_nodes_own_public_origin_is_allowed(url):
    check_url(url, OWN)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8182/", "https://127.0.0.1:8181/", "http://127.0.0.2:8181/",
                                 "http://127.0.0.1/", "http://[::1]:8181/"])
def test_only_exactly_the_own_origin(url):
    with pytest.raises(OutboundRefused):
        check_url(url, OWN)


def test_own_origin_default_ports():
    policy = OutboundPolicy.build(False, [], "https://10.0.0.7")
    check_url("https://10.0.0.7:443/participants/a", policy)
    with pytest.raises(OutboundRefused):
        check_url("https://10.0.0.7:8443/", policy)


LISTENERS = (Listener(PUBLIC, "0.0.0.0", 8181), Listener("management", "127.0.0.1", 8182))


def test_the_management_listener_is_refused_on_a_local_address():
    with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 \(port 8182\) is this node's own management listener"):
        check_listener("127.0.0.1", 8182, LISTENERS, local=True)


def test_the_public_listener_stays_reachable_for_peer_calls():
    check_listener("127.0.0.1", 8181, LISTENERS, local=True)


def test_an_http_backend_may_reach_neither_listener():
    for port in (8181, 8182):
        with pytest.raises(OutboundRefused, match=r"own (public|management) listener"):
            check_listener("localhost", port, LISTENERS, local=True, backend=True)


@pytest.mark.parametrize(("local", "port"), [(False, 8182), (True, 8183), (True, 80)])
def test_other_machines_and_other_ports_are_not_the_nodes_own(local, port):
    check_listener("10.0.0.9", port, LISTENERS, local=local, backend=True)


def test_before_the_listeners_are_bound_nothing_is_own():
    check_listener("127.0.0.1", 8182, (), local=True, backend=True)


@pytest.mark.parametrize(("address", "local"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("0.0.0.0", True), ("::", True),
    ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("93.184.216.34", False), ("fe80::1", False),
])
def test_surely_local(address, local):
    assert surely_local(ipaddress.ip_address(address)) is local


@pytest.mark.parametrize(("host", "local"), [
    ("localhost", True), ("LOCALHOST.", True), ("api.localhost", True), ("localhost.example", False),
    ("mylocalhost", False), ("example.com", False),
])
def test_local_names(host, local):
    assert local_name(host) is local


def test_a_backend_may_not_read_the_nodes_own_public_origin():
    with pytest.raises(OutboundRefused, match="own public origin"):
        check_url("http://127.0.0.1:8181/healthz", OWN, backend=True)
    assert check_url("http://127.0.0.1:8181/healthz", OWN).port == 8181  # a peer call may
