"""Memberships and verified attributes between real nodes on 127.0.0.1: an alliance issues, a member holds and
presents in the handshake, a buyer trusts the alliance and counts the claim; revocation, requests, the CLI,
and hosted participants kept apart."""

from __future__ import annotations

import asyncio
import json
import sys

import msgspec
import pytest
from aiohttp import web

from connector.client import ClientError
from connector.testing import eventually, free_port

SPACE = "urn:tds:space:auto-parts"


async def tds(node, *args: str, token: str | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, "--node", node.node.management_url, "--token", token or node.token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


def status_due_at_once(running) -> None:
    """The verifier fetches status lists again whenever it counts claims (instead of after 60 s): a list is
    stale as soon as it is fetched, however quickly the next count comes."""
    service = running.node.credentials
    service.settings = msgspec.structs.replace(service.settings, status_cache_s=0.0)


@pytest.fixture
async def space(nodes):
    alliance = await nodes.start("alliance")
    acme = await nodes.start("acme")
    buyer = await nodes.start("buyer")
    return alliance, acme, buyer


async def test_a_delivered_membership_counts_for_a_verifier_that_trusts_its_issuer(space):
    alliance, acme, buyer = space
    issued = await alliance.client.issue_credential(acme.participant.did, "membership", {"dataSpace": SPACE})
    delivered = await alliance.client.deliver_credential(issued["id"])
    assert delivered["deliveredAt"] and delivered["deliveryError"] == ""
    held = (await acme.client.credentials())["held"]
    assert [(h["id"], h["kind"], h["issuer"], h["source"], h["status"]) for h in held] == [
        (issued["id"], "membership", alliance.participant.did, "delivered", "valid")]

    await buyer.client.trust_issuer(alliance.participant.did, ["membership"])
    await acme.client.verify_peer(buyer.public_url)  # the handshake, with presentations both ways

    claims = await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did)
    assert claims is not None
    assert [(m.value.data_space, m.value.role, m.issuer) for m in claims.memberships] == [
        (SPACE, "member", alliance.participant.did)]
    assert claims.not_counted == ()
    shown = await buyer.client.peer_claims(acme.participant.did)
    assert shown[0]["counted"][0]["kind"] == "membership" and shown[0]["counted"][0]["claims"]["dataSpace"] == SPACE
    # the buyer holds nothing, so it showed nothing: acme learnt no claims
    assert await acme.node.credentials.claims_of(acme.participant.id, buyer.participant.did) is None


async def test_a_revoked_membership_stops_counting(space):
    alliance, acme, buyer = space
    issued = await alliance.client.issue_credential(acme.participant.did, "membership", {"dataSpace": SPACE})
    await alliance.client.deliver_credential(issued["id"])
    await buyer.client.trust_issuer(alliance.participant.did, ["membership"])
    status_due_at_once(buyer)
    await acme.client.verify_peer(buyer.public_url)
    assert (await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did)).memberships

    revoked = await alliance.client.revoke_credential(issued["id"])
    assert revoked["status"] == "revoked"
    claims = await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did)
    assert claims.memberships == ()
    assert [n.reason.split(" in ")[0] for n in claims.not_counted] == ["status revoked: revoked"]
    # a new handshake does not bring it back
    await acme.client.verify_peer(buyer.public_url)
    again = await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did)
    assert again.memberships == () and "revoked" in again.not_counted[0].reason


async def test_the_status_list_is_public_signed_and_short_lived(space, nodes):
    import aiohttp

    alliance, acme, _ = space
    issued = await alliance.client.issue_credential(acme.participant.did, "region", {"region": "CN-GD"})
    url = issued["statusListCredential"]
    assert url == f"{alliance.participant.base_url}/credentials/status/1"
    async with aiohttp.ClientSession() as session, session.get(url) as response:  # no signature needed
        assert response.status == 200
        document = json.loads(await response.read())
    assert document["issuer"] == alliance.participant.did and document["proof"]["cryptosuite"] == "eddsa-jcs-2022"
    assert document["credentialSubject"]["statusPurpose"] == "revocation"
    assert document["credentialSubject"]["ttl"] == 300_000
    async with aiohttp.ClientSession() as session, session.get(url[:-1] + "2") as response:
        assert response.status == 404


async def test_an_untrusted_issuer_is_shown_not_counted(space):
    alliance, acme, buyer = space
    issued = await alliance.client.issue_credential(acme.participant.did, "membership", {"dataSpace": SPACE})
    await alliance.client.deliver_credential(issued["id"])
    await buyer.client.trust_issuer("did:web:registry.example:participants:registry", ["region"])
    await acme.client.verify_peer(buyer.public_url)
    claims = await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did)
    assert claims.memberships == ()
    assert [(n.credential_id, n.reason) for n in claims.not_counted] == [
        (issued["id"], f"shown, not counted: the issuer {alliance.participant.did} is not trusted")]


async def test_a_holder_asks_and_the_issuer_approves_or_rejects(space):
    alliance, acme, _ = space
    sent = await acme.client.ask_credential(alliance.public_url, "region", {"region": "CN-GD"})
    pending = await alliance.client.credential_requests()
    assert [(r["id"], r["requester"], r["kind"], r["claims"], r["state"]) for r in pending] == [
        (sent["id"], acme.participant.did, "region", {"region": "CN-GD"}, "pending")]
    issued = await alliance.client.approve_credential_request(sent["id"], valid_until="2099-12-31")
    assert issued["deliveryError"] == "" and issued["validUntil"] == "2099-12-31T23:59:59Z"
    held = (await acme.client.credentials())["held"]
    assert [(h["id"], h["kind"]) for h in held] == [(issued["id"], "region")]
    with pytest.raises(ClientError) as again:
        await alliance.client.approve_credential_request(sent["id"])
    assert again.value.status == 409

    other = await acme.client.ask_credential(alliance.participant.did, "membership", {"dataSpace": SPACE})
    rejected = await alliance.client.reject_credential_request(other["id"], "not a member")
    assert (rejected["state"], rejected["reason"]) == ("rejected", "not a member")
    assert await alliance.client.credential_requests() == []
    assert {r["state"] for r in await alliance.client.credential_requests("all")} == {"approved", "rejected"}


async def test_hosted_participants_cannot_touch_each_others_credentials(nodes):
    host = await nodes.start("alliance")
    sme = await nodes.host(host, "sme-one")
    other = await nodes.host(host, "sme-two")
    issued = await host.client.issue_credential(other.participant.did, "membership", {"dataSpace": SPACE})
    await host.client.deliver_credential(issued["id"])
    asked = await other.client.ask_credential(host.participant.did, "region", {"region": "CN-GD"})

    assert (await sme.client.credentials()) == {"issued": [], "held": [], "offered": []}
    assert await sme.client.credential_requests("all") == []
    for call in (sme.client.revoke_credential(issued["id"]), sme.client.deliver_credential(issued["id"]),
                 sme.client.issued_credential(issued["id"]), sme.client.held_credential(issued["id"]),
                 sme.client.remove_credential(issued["id"]), sme.client.approve_credential_request(asked["id"]),
                 sme.client.reject_credential_request(asked["id"])):
        with pytest.raises(ClientError) as refused:
            await call
        assert refused.value.status == 404, refused.value.message
    admin = nodes.client(host, host.admin_token)
    with pytest.raises(ClientError) as refused:
        await admin.credentials()
    assert refused.value.status == 404
    # nothing changed for the owners
    assert (await host.client.issued_credential(issued["id"]))["status"] == "valid"
    assert [h["id"] for h in (await other.client.credentials())["held"]] == [issued["id"]]
    assert [r["state"] for r in await host.client.credential_requests()] == ["pending"]


async def test_trust_list_from_the_api_and_the_node_config(nodes):
    buyer = await nodes.start("buyer")
    alliance = "did:web:alliance.example:participants:alliance"
    added = await buyer.client.trust_issuer(alliance, ["membership", "region"], spaces=[SPACE])
    assert (added["claims"], added["spaces"], added["source"]) == (["membership", "region"], [SPACE], "own")
    assert [(t["issuer"], t["source"]) for t in await buyer.client.trust_list()] == [(alliance, "own")]
    with pytest.raises(ClientError) as refused:
        await buyer.client.trust_issuer(alliance, ["region"], spaces=[SPACE])
    assert refused.value.status == 400 and refused.value.path == "spaces"
    await buyer.client.distrust_issuer(alliance)
    assert await buyer.client.trust_list() == []
    with pytest.raises(ClientError) as refused:
        await buyer.client.distrust_issuer(alliance)
    assert refused.value.status == 404


async def _none_in_flight(service) -> bool:
    return not service._in_flight


async def test_a_status_list_that_hangs_or_is_garbage_leaves_the_claim_uncounted(space):
    """The issuer's list is fetched from a server that never answers, then from one that answers garbage."""
    alliance, acme, buyer = space
    issued = await alliance.client.issue_credential(acme.participant.did, "membership", {"dataSpace": SPACE})
    await alliance.client.deliver_credential(issued["id"])
    await buyer.client.trust_issuer(alliance.participant.did, ["membership"])
    status_due_at_once(buyer)
    service = buyer.node.credentials
    service.settings = msgspec.structs.replace(service.settings, status_fetch_timeout_s=0.3)
    await acme.client.verify_peer(buyer.public_url)
    assert (await service.claims_of(buyer.participant.id, acme.participant.did)).memberships

    # From now on the buyer reaches the list's URL on a server of the test's.
    hang, answered = asyncio.Event(), []

    async def handler(request: web.Request) -> web.Response:
        answered.append(request.path)
        if len(answered) == 1:
            await hang.wait()
        return web.Response(body=b'{"not": "a status list"', content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    real = issued["statusListCredential"]
    stream = buyer.node.client.stream

    def redirected(url: str, **kwargs):
        return stream(f"http://127.0.0.1:{port}/list" if url == real else url, **kwargs)

    buyer.node.client.stream = redirected
    # A fetch of the real list still under way (a count the node began on its own, e.g. after a handshake of its
    # directory) would be shared by the next count, which is by design: wait until none is, so that the counts
    # below fetch through the test's server.
    await eventually(lambda: _none_in_flight(service), what="no status list fetch under way")
    try:
        slow = await service.claims_of(buyer.participant.id, acme.participant.did)
        assert slow.memberships == ()
        assert "could not be read: no answer within 0.3 s" in slow.not_counted[0].reason
        garbage = await service.claims_of(buyer.participant.id, acme.participant.did)
        assert garbage.memberships == ()
        assert "could not be read: the answer is not JSON" in garbage.not_counted[0].reason
    finally:
        hang.set()
        buyer.node.client.stream = stream
        await runner.cleanup()
    back = await service.claims_of(buyer.participant.id, acme.participant.did)
    assert back.memberships


async def test_a_peer_without_credentials_is_verified_as_before(space):
    alliance, acme, buyer = space
    await buyer.client.trust_issuer(alliance.participant.did, ["membership"])
    verified = await buyer.client.verify_peer(acme.public_url)  # acme holds nothing and trusts no one
    assert verified["verified"] is True
    # neither holds anything, so neither showed anything: no claims either way
    assert await acme.node.credentials.claims_of(acme.participant.id, buyer.participant.did) is None
    assert await buyer.node.credentials.claims_of(buyer.participant.id, acme.participant.did) is None
    assert await buyer.client.peer_claims(acme.participant.did) == []


async def test_the_cli_issues_imports_requests_revokes_and_lists(space, tmp_path):
    alliance, acme, buyer = space
    file = tmp_path / "membership.json"
    code, out = await tds(alliance, "credential", "issue", acme.participant.did, "--kind", "membership", "--space",
                          SPACE, "--valid-until", "2099-01-31", "-o", str(file))
    assert code == 0, out
    credential_id = out.split()[1]
    assert "until 2099-01-31T23:59:59Z" in out and "written to" in out
    code, out = await tds(acme, "credential", "import", str(file))
    assert code == 0 and f"credential {credential_id} imported: membership from {alliance.participant.did}" in out
    code, out = await tds(buyer, "credential", "import", str(file))  # not about the buyer
    assert code == 2 and out.startswith("error: wrong-holder: ") and "Traceback" not in out, out

    code, out = await tds(buyer, "trust", "add", alliance.participant.did, "--claims", "membership,region")
    assert code == 0 and "for membership, region" in out, out
    code, out = await tds(buyer, "trust", "list")
    assert code == 0 and f"{alliance.participant.did}  membership, region  (own)" in out
    code, out = await tds(acme, "peer", "verify", buyer.public_url)
    assert code == 0 and "verified" in out, out
    code, out = await tds(buyer, "peer", "claims", acme.participant.did)
    assert code == 0 and f"counts: membership dataSpace={SPACE}, role=member" in out, out

    code, out = await tds(acme, "credential", "request", alliance.public_url, "--kind", "legal-entity",
                          "--legal-name", "ACME Co.", "--credit-code", "91350100M000100Y43")
    assert code == 0 and "sent to" in out, out
    code, out = await tds(alliance, "credential", "pending")
    assert code == 0 and "legal-entity" in out and acme.participant.did in out, out
    request_id = out.split()[0]
    code, out = await tds(alliance, "credential", "approve", request_id)
    assert code == 0 and "delivered to the holder's node" in out, out

    code, out = await tds(alliance, "credential", "revoke", credential_id)
    assert code == 0 and f"credential {credential_id} revoked" in out, out
    code, out = await tds(alliance, "credential", "list")
    assert code == 0 and "revoked" in out and "legal-entity" in out, out
    code, out = await tds(acme, "credential", "list")
    assert code == 0 and "held (2):" in out, out
    code, out = await tds(alliance, "credential", "issue", acme.participant.did, "--kind", "membership")
    assert code == 2 and out == "error: --space is required for --kind membership\n", out
    code, out = await tds(alliance, "credential", "issue", acme.participant.did, "--kind", "region", "--region",
                          "Guangdong")
    assert code == 2 and out.startswith("error: region: ") and "Traceback" not in out, out
    code, out = await tds(buyer, "trust", "remove", alliance.participant.did)
    assert code == 0, out


async def test_a_credential_for_a_holder_without_a_node_is_issued_but_not_delivered(space):
    alliance, _, _ = space
    holder = "did:web:127.0.0.1%3A1:participants:nobody"
    issued = await alliance.client.issue_credential(holder, "membership", {"dataSpace": SPACE})
    with pytest.raises(ClientError) as refused:
        await alliance.client.deliver_credential(issued["id"])
    assert refused.value.status == 502 and "is issued but was not delivered" in refused.value.message
    row = (await alliance.client.credentials())["issued"][0]
    assert row["deliveredAt"] is None and row["deliveryError"]


async def test_a_hosted_member_presents_to_another_participant_of_the_same_node(nodes):
    host = await nodes.start("alliance")
    member = await nodes.host(host, "sme-one")
    issued = await host.client.issue_credential(member.participant.did, "membership", {"dataSpace": SPACE})
    await host.client.deliver_credential(issued["id"])
    await host.client.trust_issuer(host.participant.did, ["membership"])
    await member.client.verify_peer(str(host.participant.base_url))
    claims = await eventually(lambda: host.node.credentials.claims_of(host.participant.id, member.participant.did))
    assert [m.value.data_space for m in claims.memberships] == [SPACE]
