"""``tds transfer`` against a scripted management client (no node): it tells each state, each failed attempt
and each quiet spell on stderr as they come, exits 1 with the reason when the transfer is TERMINATED, and
stops waiting (exit 1, the transfer going on in the node) after ``--timeout`` seconds without progress."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner

from connector import cli

TRANSFER = "urn:uuid:t-1"
ERROR = ("could not store the received data: writing in vault/parts/urn_uuid_a-1 failed: No space left on device "
         "(ENOSPC); the partial file was removed; trying again in 0.4 s")


class Scripted:
    """The management client: ``start_transfer`` answers REQUESTED, then each ``transfer`` call the next of
    *views* (the last one again once they run out)."""

    def __init__(self, *views: dict[str, Any]) -> None:
        self.views = list(views)

    async def start_transfer(self, agreement_id: str, peer: str, *, push: bool = False) -> dict[str, Any]:
        return {"id": TRANSFER, "state": "REQUESTED", "received": 0}

    async def transfer(self, transfer_id: str, *, wait_s: float | None = None) -> dict[str, Any]:
        await asyncio.sleep(0)  # a poll: the event loop runs in between
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]


def view(state: str, *events: tuple[str, str], reason: str = "", received: int = 0) -> dict[str, Any]:
    return {"id": TRANSFER, "state": state, "received": received, "size": 1000, "reason": reason,
            "history": [{"at": "2026-01-01T00:00:00Z", "kind": kind, "detail": detail} for kind, detail in events]}


def run(monkeypatch: pytest.MonkeyPatch, client: Scripted, *args: str) -> Any:
    monkeypatch.setattr(cli, "_call", lambda data_dir, node_url, token, fn: asyncio.run(fn(client)))
    return CliRunner().invoke(cli.main, ["transfer", "http://acme.example", "urn:uuid:a-1", "--node",
                                         "http://127.0.0.1:1", "--token", "t", *args])


def test_each_state_and_failed_attempt_is_told_and_a_terminated_transfer_exits_1_with_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = ("message-in", "TransferStartMessage from did:web:acme.example")
    reason = f"no data could be stored for 60 s (0 of 1000 bytes received): {ERROR[:-42]}"
    client = Scripted(view("STARTED", started), view("STARTED", started, ("error", ERROR)),
                      view("TERMINATED", started, ("error", ERROR), reason=reason))
    result = run(monkeypatch, client)
    assert result.exit_code == 1
    assert result.stdout == f"transfer {TRANSFER}: TERMINATED\n  reason: {reason}\n"
    assert result.stderr.splitlines() == [f"transfer {TRANSFER}: REQUESTED", f"transfer {TRANSFER}: STARTED",
                                          f"  error: {ERROR}"]


def test_a_quiet_transfer_is_told_and_waited_for_only_until_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "QUIET_NOTE_S", 0.05)
    result = run(monkeypatch, Scripted(view("STARTED", received=200)), "--timeout", "0.3")
    assert result.exit_code == 1
    assert result.stdout == (f"transfer {TRANSFER}: STARTED\n  no progress for 0.3 s (--timeout); it goes on in "
                             f"the node: tds transfers show {TRANSFER}\n")
    quiet = [line for line in result.stderr.splitlines() if line.startswith("  no progress for ")]
    assert quiet and all(line.endswith("s (STARTED, 200 of 1000 bytes, waiting)") for line in quiet), result.stderr


def test_a_completed_transfer_prints_where_it_was_saved_and_its_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    done = {**view("COMPLETED", received=1000), "vaultPath": "vault/parts/a/x"}
    client = Scripted(done)

    async def bundle(transfer_id: str) -> dict[str, Any]:
        return {"manifest": "m"}

    client.transfer_bundle = bundle  # type: ignore[attr-defined]
    monkeypatch.setattr(cli, "manifest_lines", lambda b: ["manifest …"])
    result = run(monkeypatch, client)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"transfer {TRANSFER}: COMPLETED\n  saved to vault/parts/a/x (in the node's data "
                             "folder)\nmanifest …\n")
