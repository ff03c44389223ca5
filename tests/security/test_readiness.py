"""``/healthz`` and ``/readyz`` on the public listener, for load balancers: alive, and able to serve. A node
that cannot write its store or is short of disk space answers 503 with the checks that fail, in words that
tell a stranger nothing more (free bytes and the store's error go to the log)."""

from __future__ import annotations

import json

import aiohttp

from connector.testing import eventually


async def _get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


ALL_OK = {"node": "ok", "store": "ok", "keys": "ok", "disk": "ok"}


async def test_a_running_node_is_alive_and_ready(nodes):
    node = await nodes.start("acme")
    assert await _get(f"{node.public_url}/healthz") == (200, {"status": "ok"})
    assert await _get(f"{node.public_url}/readyz") == (200, {"status": "ready", "checks": ALL_OK})


async def test_free_disk_space_below_the_threshold_is_not_ready(nodes, capfd):
    node = await nodes.start("acme", min_free_disk_bytes=2**62)
    capfd.readouterr()
    status, body = await _get(f"{node.public_url}/readyz")
    assert status == 503
    assert body == {"status": "not-ready", "checks": {**ALL_OK, "disk": "free space below the threshold"},
                    "reasons": ["disk: free space below the threshold"]}
    # the detail is the operator's, in the log
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line["event"] == "node not ready"]
    assert len(warned) == 1 and "node.min_free_disk_bytes" in warned[0]["disk"]
    # still alive
    assert (await _get(f"{node.public_url}/healthz"))[0] == 200


async def test_a_share_of_the_disk_as_threshold_is_checked_too(nodes):
    node = await nodes.start("acme", min_free_disk_bytes=0, min_free_disk_percent=100.0)
    status, body = await _get(f"{node.public_url}/readyz")
    assert status == 503 and body["reasons"] == ["disk: free space below the threshold"]


async def test_thresholds_turned_off_are_ready(nodes):
    node = await nodes.start("acme", min_free_disk_bytes=0, min_free_disk_percent=0.0)
    assert (await _get(f"{node.public_url}/readyz"))[0] == 200


async def test_a_store_that_cannot_commit_is_not_ready_until_it_can_again(nodes):
    node = await nodes.start("acme")
    assert (await _get(f"{node.public_url}/readyz"))[0] == 200

    def fail(_db) -> None:
        raise OSError("disk I/O error")

    node.node.store.batch_hooks.append(fail)  # every commit now fails, as on a broken disk
    try:
        async def refused():
            status, body = await _get(f"{node.public_url}/readyz")
            return body if status == 503 else None

        body = await eventually(refused, 10, what="a 503 from /readyz")
        assert body["checks"]["store"] == "not writable" and "store: not writable" in body["reasons"]
        assert "I/O" not in json.dumps(body)  # the store's own error stays in the log
    finally:
        node.node.store.batch_hooks.remove(fail)

    async def ready():
        return (await _get(f"{node.public_url}/readyz"))[0] == 200

    await eventually(ready, 10, what="a 200 from /readyz")
