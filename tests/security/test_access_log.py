"""The access log: one JSON line per request answered, naming the route template (never the path as sent),
the status, the duration and who asked (a verified peer DID, or the management token's application), and
nothing a reader could take: no header, token, query or body. And the start-up line names the software and
schema versions."""

from __future__ import annotations

import json

import aiohttp
from attack_setup import agreement_with_data
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import logging as logging_module
from connector.metrics import software_version
from connector.store.migrations import MIGRATIONS

FIELDS = {"component", "listener", "method", "route", "status", "ms", "event", "level", "timestamp"}


def access_lines(err: str) -> list[dict]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("component") == "access"]


async def test_a_management_call_is_one_line_with_the_route_template_and_the_application(nodes, capfd):
    node = await nodes.start("acme")
    capfd.readouterr()
    secret_id = "urn:uuid:0f3c1d0e-negotiation-id-from-the-path"
    url = f"{node.node.management_url}/api/management/v1/negotiations/{secret_id}?token=query-secret-value"
    async with aiohttp.ClientSession() as s, s.get(url, headers={"Authorization": f"Bearer {node.token}",
                                                                 "X-Custom": "header-secret-value"}) as r:
        assert r.status == 404
    err = capfd.readouterr().err
    [line] = access_lines(err)
    assert line == {**line, "listener": "management", "method": "GET", "status": 404, "application": "cli",
                    "route": "/api/management/v1/negotiations/{id}", "event": "request", "level": "info"}
    assert set(line) == FIELDS | {"application"}
    text = json.dumps(line)
    for secret in (node.token, secret_id, "query-secret-value", "header-secret-value"):
        assert secret not in text
    assert node.token not in err


async def test_a_peer_request_names_the_verified_peer(nodes, capfd):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    capfd.readouterr()
    await consumer.client.catalog(provider.public_url)
    lines = [line for line in access_lines(capfd.readouterr().err) if line["listener"] == "public"]
    catalog = [line for line in lines if line["route"] == "/participants/{name}/api/dsp/2025-1/catalog/request"]
    assert len(catalog) == 1 and catalog[0]["peer"] == consumer.participant.did and catalog[0]["status"] == 200


async def test_a_pull_of_data_names_the_verified_consumer(nodes, capfd):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    capfd.readouterr()
    await agreement_with_data(provider, consumer, {"@type": "Set", "permission": [{"action": "use"}]})
    lines = access_lines(capfd.readouterr().err)
    [pulled] = [line for line in lines if line["route"] == "/participants/{name}/data/{pid}"]
    assert pulled["peer"] == consumer.participant.did and pulled["status"] == 200 and pulled["method"] == "GET"


async def test_a_path_that_matches_no_route_is_not_logged_as_sent(nodes, capfd):
    node = await nodes.start("acme")
    capfd.readouterr()
    async with aiohttp.ClientSession() as s, s.get(f"{node.public_url}/no-such/Rmc3vbLzh1tcQRVRMOojq") as r:
        assert r.status == 404
    [line] = access_lines(capfd.readouterr().err)
    assert line["route"] == "(no route)" and line["status"] == 404 and "Rmc3vb" not in json.dumps(line)
    assert set(line) == FIELDS


async def test_the_start_up_line_names_the_software_and_schema_version(nodes, capfd):
    await nodes.start("acme")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    [started] = [line for line in lines if line["event"] == "node started"]
    assert started["version"] == software_version() and started["schema"] == len(MIGRATIONS)


_PIECES = ["authorization", "Authorization: ", "Bearer ", "basic ", "token=", "sig1=:", "sha-256=:", '"token": "',
           "'secret': '", "https://user:pw@host/", "://", "@", "=", ":", " ", "\n",
           "Rmc3vbLzh1tcQRVRMOojqUYiPnIqukvXTE6R", "vAr9srY", "abc", "A" * 20, "_-", "+/", "==",
           "did:web:127.0.0.1%3A8181:participants:acme"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_text_the_fast_path_leaves_alone_holds_no_credential(text):
    """The log's redaction skips text with none of the marks a credential pattern needs (so that an access
    line costs little): such text must be text that no pattern would have changed."""
    if not logging_module._maybe_secret(text):
        assert all(pattern.sub(replacement, text) == text for pattern, replacement in logging_module._SECRET_TEXT)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(st.sampled_from([*_PIECES, "AUTHORIZATION", "bEaReR", "BASIC", "\u017f", "\u212a", "\u0130"]),
                          max_size=12).map("".join), st.text(max_size=80)))
def test_the_fast_path_finds_what_its_pattern_finds(text):
    """The marks are looked for one by one in ASCII text: exactly where the pattern would find one."""
    assert logging_module._maybe_secret(text) is (logging_module._MAYBE_SECRET.search(text) is not None)
