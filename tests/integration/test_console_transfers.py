"""The console's transfers pages between real nodes: starting a pull from a form, its live progress (server-sent
events) up to COMPLETED, suspend / resume / terminate, and what another participant's token gets."""

from __future__ import annotations

import asyncio
import html
import json
import os

import aiohttp
import pytest

from connector.http.console import transfers as page
from connector.http.console.api import segment
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
SIZE = 3 * 1024 * 1024 + 123  # four chunks of the default 1 MiB


async def agreed(provider, consumer, *, size: int = SIZE, title: str = "QI") -> str:
    """Publish a file on the provider and negotiate it (through the API); the consumer's agreement id."""
    folder = provider.data_dir / "files" / "acme"
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread((folder / "qi.bin").write_bytes, os.urandom(size))
    await provider.client.add_asset({"id": "qi-2026", "title": title,
                                     "dataAddress": {"type": "File", "path": "qi.bin"}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi-2026"])
    catalog = await consumer.client.catalog(provider.public_url)
    started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


async def console(node, token: str, method: str, path: str, data=None) -> tuple[int, str, dict]:
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.node.management_url}{path}", data=data,
                                                        headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


async def events(node, token: str, transfer_id: str) -> tuple[int, list[dict]]:
    """The live stream of a transfer, read to its end: its status and messages."""
    url = f"{node.node.management_url}/console/transfers/{transfer_id}/events"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(
            url, headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"}) as r:
        body = await r.text()
        if r.status != 200:
            return r.status, []
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-store"
    return r.status, [json.loads(line[len("data: "):]) for line in body.split("\n") if line.startswith("data: ")]


async def start(consumer, agreement_id: str, mode: str = "pull") -> str:
    status, _, headers = await console(consumer, consumer.token, "POST", "/console/transfers",
                                       {"agreement": agreement_id, "mode": mode})
    assert status == 303, status
    location = headers["Location"]
    assert location.startswith("/console/transfers/")
    [transfer] = await consumer.client.transfers()
    assert location == f"/console/transfers/{segment(transfer['id'])}"
    return str(transfer["id"])


async def started_and_held(consumer, transfer_id: str) -> None:
    async def started() -> bool:
        return bool((await consumer.client.transfer(transfer_id))["state"] == "STARTED")

    await eventually(started, 20, every_s=0.02, what="the transfer's start")


async def test_a_pull_started_from_the_form_completes_and_its_stream_ends_with_the_progress(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id = await agreed(provider, consumer)
    status, listing, _ = await console(consumer, consumer.token, "GET", "/console/transfers")
    assert status == 200 and f'value="{html.escape(agreement_id)}"' in listing  # offered in the start form
    transfer_id = await start(consumer, agreement_id)
    status, messages = await events(consumer, consumer.token, segment(transfer_id))
    assert status == 200 and messages
    last = messages[-1]
    assert last["final"] is True and last["id"] == page.LIVE_ID
    assert last["fields"]["state"] == "COMPLETED"
    assert last["progress"] == [SIZE, SIZE]
    assert last["fields"]["chunks"] == "4 of 4"
    assert all(not m["final"] for m in messages[:-1])
    final = await consumer.client.transfer(transfer_id)
    assert final["state"] == "COMPLETED" and final["received"] == SIZE
    status, detail, _ = await console(consumer, consumer.token, "GET", f"/console/transfers/{segment(transfer_id)}")
    assert status == 200 and "COMPLETED" in detail and "4 of 4" in detail and "data-live" not in detail
    status, listing, _ = await console(consumer, consumer.token, "GET", "/console/transfers")
    assert status == 200 and "qi-2026" in listing and provider.participant.did in listing


async def test_suspend_resume_and_terminate_from_the_buttons_and_another_participant_gets_404(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    other = await nodes.host(consumer, "sme-one")
    agreement_id = await agreed(provider, consumer, size=100_000)
    consumer.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None  # hold it STARTED
    transfer_id = await start(consumer, agreement_id)
    await started_and_held(consumer, transfer_id)
    path = f"/console/transfers/{segment(transfer_id)}"

    # another participant of the same node: no such transfer, whatever it tries
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/suspend"), ("POST", "/terminate")):
        status, body, _ = await console(consumer, other.token, method, path + suffix, {"reason": "x"})
        assert status == 404, (method, suffix)
        assert "no such transfer" in body and "<html" in body
    assert (await consumer.client.transfer(transfer_id))["state"] == "STARTED"

    status, detail, _ = await console(consumer, consumer.token, "GET", path)
    assert status == 200 and f'data-live="{path}/events"' in detail and "/suspend" in detail
    assert 'data-confirm="Terminate this transfer?' in detail

    status, _, headers = await console(consumer, consumer.token, "POST", f"{path}/suspend", {"reason": "maintenance"})
    assert status == 303 and headers["Location"] == path
    assert (await consumer.client.transfer(transfer_id))["state"] == "SUSPENDED"
    status, detail, _ = await console(consumer, consumer.token, "GET", path)
    assert "/resume" in detail and "/suspend" not in detail and "maintenance" in detail

    status, _, _ = await console(consumer, consumer.token, "POST", f"{path}/resume", {"reason": ""})
    assert status == 303
    assert (await consumer.client.transfer(transfer_id))["state"] == "STARTED"

    reason = "<script>alert(1)</script> no longer needed"
    status, _, _ = await console(consumer, consumer.token, "POST", f"{path}/terminate", {"reason": reason})
    assert status == 303
    done = await consumer.client.transfer(transfer_id)
    assert done["state"] == "TERMINATED" and reason in done["reason"]
    status, detail, _ = await console(consumer, consumer.token, "GET", path)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; no longer needed" in detail and "<script>alert" not in detail
    status, messages = await events(consumer, consumer.token, segment(transfer_id))
    assert status == 200 and len(messages) == 1 and messages[0]["final"] is True
    assert messages[0]["fields"]["state"] == "TERMINATED"

    # what a final transfer, a made-up action and a missing agreement get: readable 4xx pages
    status, body, _ = await console(consumer, consumer.token, "POST", f"{path}/suspend", {"reason": ""})
    assert status == 409 and "<html" in body
    status, body, _ = await console(consumer, consumer.token, "POST", f"{path}/explode", {"reason": ""})
    assert status == 400 and "no such action" in body
    status, body, _ = await console(consumer, consumer.token, "POST", "/console/transfers", {"agreement": ""})
    assert status == 400 and "Choose the agreement" in body
    status, body, _ = await console(consumer, consumer.token, "POST", "/console/transfers",
                                    {"agreement": "urn:uuid:nothing", "mode": "pull"})
    assert 400 <= status < 500 and "<html" in body


@pytest.mark.parametrize(("transfer", "expected"), [
    ({"role": "consumer", "state": "STARTED", "received": 2 * 1024 * 1024, "size": 3 * 1024 * 1024 + 5,
      "manifest": {"size": 3 * 1024 * 1024 + 5, "chunkSize": 1024 * 1024, "chunks": ["a", "b", "c", "d"]}},
     page.Progress(done=2 * 1024 * 1024, size=3 * 1024 * 1024 + 5, verified_chunks=2, chunks=4, counted=True)),
    ({"role": "consumer", "state": "COMPLETED", "received": 10, "size": 10,
      "manifest": {"size": 10, "chunkSize": 4096, "chunks": ["a"]}},
     page.Progress(done=10, size=10, verified_chunks=1, chunks=1, counted=True)),
    ({"role": "consumer", "state": "REQUESTED", "received": 0},
     page.Progress(done=0, size=None, verified_chunks=None, chunks=None, counted=True)),
    ({"role": "provider", "state": "STARTED", "received": 0, "size": 10,
      "manifest": {"size": 10, "chunkSize": 4096, "chunks": ["a"]}},
     page.Progress(done=0, size=10, verified_chunks=None, chunks=1, counted=False)),
])
def test_progress_counts_verified_chunks_from_the_manifest(transfer, expected):
    assert page.progress_of(transfer) == expected


def test_speed_is_the_difference_of_two_samples():
    speed = page.Speed()
    assert speed.sample(0, 10.0) is None
    assert speed.sample(2048, 12.0) == 1024.0
    assert speed.sample(2048, 12.0) == 1024.0  # no time passed: the last figure stands
    assert page.human_bytes(1536) == "1.5 KiB" and page.human_bytes(12) == "12 B"
