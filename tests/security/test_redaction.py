"""Getting a credential into the node's log or an error body, where whoever reads either can take it.

The first attack pads a valid bearer token past aiohttp's header limit (8190 bytes), so that the request
is refused by the HTTP parser before any of the node's middleware sees it: the refusal must quote nothing
of it. The others hide credentials in log fields and in library log records.
"""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
from aiohttp.http_exceptions import LineTooLong

from connector.logging import configure, get_logger

#: A real token: 32 random bytes in base64url, as the node makes them (management, admin, transfer).
TOKEN = "Rmc3vbLzh1tcQRVRMOojqUYiPnIqukvXTE6RvAr9srY"


@pytest.fixture(autouse=True)
def json_logs():
    """JSON lines down to debug, whatever an earlier test configured (the CLI's demo logs warnings only)."""
    configure("debug")


def leaks(text: str, secret: str) -> list[str]:
    """The pieces of *secret* (16 characters or more) found in *text*."""
    return sorted({secret[i:i + 16] for i in range(len(secret) - 15)} & {text[i:i + 16] for i in
                                                                         range(len(text) - 15)})


def json_lines(err: str) -> list[dict]:
    """Every line written to stderr, each of which must be one JSON object."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("size", [9000, 20000])
@pytest.mark.parametrize("listener", ["management", "public"])
async def test_a_token_padded_past_the_header_limit_is_neither_logged_nor_echoed(nodes, capfd, listener, size):
    node = await nodes.start("acme")
    url = (f"{node.node.management_url}/api/management/v1/participants" if listener == "management"
           else f"{node.public_url}/participants/acme/api/dsp/2025-1/catalog/request")
    value = "Bearer " + node.token + "A" * (size - len(node.token))
    capfd.readouterr()
    async with aiohttp.ClientSession() as session, session.get(url, headers={"Authorization": value}) as resp:
        status, content_type, body = resp.status, resp.content_type, await resp.text()
    assert status == 400 and content_type == "application/json", (status, body)
    assert json.loads(body) == {"error": "bad-request",
                                "message": "the request line or a header field is longer than 8190 bytes"}
    err = capfd.readouterr().err
    lines = json_lines(err)
    assert [line["listener"] for line in lines if line["event"] == "request refused before routing"] == [listener]
    assert leaks(err, node.token) == []


async def test_credentials_inside_log_fields_are_redacted(capfd):
    get_logger(component="test").warning(
        f"peer sent Authorization: Bearer {TOKEN}", error=f"b'Bearer {TOKEN}AAAA...'",
        request={"headers": {"Authorization": f"Bearer {TOKEN}", "Signature": "sig1=:" + TOKEN + "==:",
                             "Accept": "application/json"}, "url": f"https://backend.example/data?token={TOKEN}"},
        tried=[f"token {TOKEN}", ("secret", f"https://user:{TOKEN}@backend.example/")],
        management_token=TOKEN)
    err = capfd.readouterr().err
    [line] = json_lines(err)
    assert leaks(err, TOKEN) == []
    assert line["request"]["headers"] == {"Authorization": "[redacted]", "Signature": "[redacted]",
                                          "Accept": "application/json"}
    assert line["event"] == "peer sent Authorization: [redacted]" and line["management_token"] == "[redacted]"


async def test_library_log_records_come_out_as_redacted_json_lines(capfd):
    # What aiohttp's server logs for a request its parser refuses, and asyncio for a lost task's error.
    error = LineTooLong(f"Bearer {TOKEN}".encode(), 8190)
    logging.getLogger("aiohttp.server").error("Error handling request from %s", "127.0.0.1", exc_info=error)
    logging.getLogger("asyncio").error("Task exception was never retrieved\nfuture: <Task exception=%r>", error)
    err = capfd.readouterr().err
    lines = json_lines(err)
    assert [line["logger"] for line in lines] == ["aiohttp.server", "asyncio"]
    assert lines[0]["error"] == "LineTooLong" and leaks(err, TOKEN) == []
