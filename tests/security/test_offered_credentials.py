"""Attack: strangers flood a holder with credentials so that a legitimate issuer's delivery goes unnoticed.

Real nodes on 127.0.0.1. Strangers with fresh did:key identities deliver junk over signed requests until the
holder holds as many credentials of issuers it does not trust as it keeps unasked; the alliance's delivery that
follows is offered (its issuer's CLI says it waits for the holder's acceptance), shown to the holder's operator
(management API and CLI), never presented, and accepted or declined by that operator alone: another participant
hosted on the same node neither sees nor decides it, and an unknown id is a 404 and a one-line CLI error.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from attack_setup import post_signed
from click.testing import CliRunner

from connector.cli import main
from connector.client import ClientError
from connector.identity import did as dids
from connector.identity import vc
from connector.identity.claims import Membership
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services import credentials as service_module
from connector.store.repository import Participant

SPACE = "urn:tds:space:auto-parts"


async def cli(participant, *args: str) -> tuple[int, list[str]]:
    """``tds ARGS`` with *participant*'s token, on a thread of its own (the CLI runs its own event loop): the
    exit code and the lines it printed (the nodes in this process log to the same stream)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--node", participant.node.management_url,
                                                                "--token", participant.token])
    return result.exit_code, [line for line in result.output.splitlines() if not line.startswith("{")]


async def junk(holder_did: str, dsp_base: str) -> dict:
    """A stranger with a did:key made on the spot delivers a credential it signed itself about the holder."""
    keys = ParticipantKeys.generate()
    did = dids.did_key_for(bytes(keys.verify_key))
    stranger = ParticipantRuntime(Participant(id="x", name="x", did=did, legal_name="X", region="CN-GD",
                                              created_at="2026-01-01T00:00:00Z"), keys, "https://x.example")
    now = datetime.now(UTC).replace(microsecond=0)
    document = vc.issue(Membership(data_space=SPACE), holder=holder_did, signer=stranger.signer,
                        credential_id=f"urn:uuid:{uuid.uuid4()}", now=now, valid_until=now + timedelta(days=30))
    status, body = await post_signed(stranger, f"{dsp_base}/tds/credentials", {"credential": document})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_a_delivery_behind_a_flood_is_offered_and_decided_by_its_participant_alone(nodes, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_HELD_UNTRUSTED", 2)
    alliance, hub = await nodes.start("alliance"), await nodes.start("hub")
    sme = await nodes.host(hub, "sme")
    holder, dsp = sme.participant.did, sme.participant.dsp_base
    assert [(await junk(holder, dsp))["state"] for _ in range(3)] == ["held", "held", "offered"]

    code, out = await cli(alliance, "credential", "issue", holder, "--kind", "membership", "--space", SPACE)
    assert code == 0, out
    assert "waits for the holder's acceptance" in "\n".join(out)
    issued = (await alliance.client.credentials())["issued"][0]
    assert (issued["deliveredAs"], issued["deliveryError"]) == ("offered", "")
    code, out = await cli(alliance, "credential", "list")
    assert code == 0 and any(line.endswith("delivered, waits for the holder's acceptance") for line in out), out
    offered = await sme.client.offered_credentials()
    assert len(offered) == 2 and offered[1]["issuer"].startswith("did:key:")  # newest first
    assert (offered[0]["id"], offered[0]["state"], offered[0]["status"]) == (issued["id"], "offered", "valid")
    code, out = await cli(sme, "credential", "list")
    assert code == 0 and "offered (2), waiting for `tds credential accept ID` or `decline ID`:" in out
    assert any(issued["id"] in line and alliance.participant.did in line for line in out)
    assert issued["id"] not in [h["id"] for h in (await sme.client.credentials())["held"]]

    # another participant of the same node: sees nothing, decides nothing
    assert await hub.client.offered_credentials() == []
    assert (await hub.client.credentials())["offered"] == []
    for call in (hub.client.offered_credential, hub.client.accept_credential, hub.client.decline_credential):
        with pytest.raises(ClientError) as caught:
            await call(issued["id"])
        assert caught.value.status == 404
    assert [o["id"] for o in await sme.client.offered_credentials()] == [o["id"] for o in offered]

    for command in ("accept", "decline"):
        code, out = await cli(sme, "credential", command, "urn:uuid:nothing")
        assert (code, out) == (2, ["error: this participant has no such offered credential"])
    code, out = await cli(sme, "credential", "remove", offered[1]["id"])
    assert code == 2 and out == [f"error: credential {offered[1]['id']} is offered, not held: "
                                 f"`tds credential decline {offered[1]['id']}` drops it"]

    code, out = await cli(sme, "credential", "accept", issued["id"])
    assert code == 0 and out[0].startswith(f"credential {issued['id']} accepted: membership from "
                                           f"{alliance.participant.did}"), out
    code, out = await cli(sme, "credential", "decline", offered[1]["id"])
    assert (code, out) == (0, [f"credential {offered[1]['id']} declined"])
    code, out = await cli(sme, "credential", "offered")
    assert (code, out) == (0, ["no credentials offered"])
    held = (await sme.client.credentials())["held"]
    assert issued["id"] in [h["id"] for h in held] and len(held) == 3  # beyond the bound: the operator's choice
    code, out = await cli(sme, "credential", "remove", issued["id"])
    assert (code, out) == (0, [f"credential {issued['id']} removed"])
