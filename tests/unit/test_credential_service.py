"""The credential service on in-memory nodes: issuing, delivering, requests, revocation and the published status
list; holding and importing; presentations in the handshake, what counts and what is refused and why; status
lists that cannot be read; bounds; hosted participants kept apart. Real signatures and SQLite, no sockets."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import timedelta

import pytest
from credentials_setup import SPACE, START, Network, runtime

from connector.config import CredentialsSection, TrustEntry
from connector.errors import BadRequest, Conflict, NotFound, PeerError, TooManyRequests
from connector.identity import status_list, vc
from connector.identity.claims import Membership, Region
from connector.identity.credentials import utc_text
from connector.services import credentials as service_module
from connector.services.credentials import MAX_HELD_PER_ISSUER, MAX_HELD_UNTRUSTED, MAX_PENDING_PER_REQUESTER
from connector.testing import Reply

MEMBER = Membership(data_space=SPACE)
MAX_AGE = timedelta(seconds=120)


@pytest.fixture
async def net(tmp_path):
    network = Network(tmp_path)
    yield network
    await network.close()


@pytest.fixture
async def world(net):
    """An alliance (issuer), acme (a member) and a buyer that trusts the alliance for memberships, each on its
    own node."""
    alliance, acme, buyer = (runtime("alliance", "alliance.example"), runtime("acme", "acme.example"),
                             runtime("buyer", "buyer.example"))
    issuer = await net.node("alliance", alliance)
    holder = await net.node("acme", acme)
    verifier = await net.node("buyer", buyer, trust=[TrustEntry(alliance.did, ["membership"])])
    return net, (alliance, issuer), (acme, holder), (buyer, verifier)


async def member(world, claims=MEMBER, **kwargs):
    """The alliance issues *claims* about acme and delivers it; the record."""
    _, (alliance, issuer), (acme, _), _ = world
    record = await issuer.issue(alliance, acme.did, claims, **kwargs)
    return await issuer.deliver(alliance, record.id)


async def present(world, *, challenge=None, domain=None):
    """Acme's presentation to the buyer, answering a challenge the buyer handed it: (challenge, presentation)."""
    _, _, (acme, holder), (buyer, verifier) = world
    challenge = challenge or verifier.challenge(buyer.id, acme.did)
    return challenge, await holder.presentation_for(acme, domain=domain or buyer.did, challenge=challenge)


async def refused_presentation(world, body, caller=None) -> str:
    _, _, (acme, _), (buyer, verifier) = world
    with pytest.raises(BadRequest) as caught:
        await verifier.on_presentation(buyer, caller or acme.did, body)
    return caught.value.message


# ---------------------------------------------------------------------------------------------------------
# Issuer


async def test_an_issued_credential_is_signed_by_the_issuer_and_has_its_own_place_in_the_status_list(world):
    _, (alliance, issuer), (acme, _), _ = world
    first = await issuer.issue(alliance, acme.did, MEMBER)
    second = await issuer.issue(alliance, acme.did, Region("CN-GD"))
    verified = vc.verify_credential(first.document, alliance.did_document(), now=START)
    assert (verified.issuer, verified.holder, verified.claims) == (alliance.did, acme.did, MEMBER)
    assert verified.valid_until == START + timedelta(days=365)
    url = f"{alliance.base_url}/credentials/status/1"
    assert verified.status == (vc.StatusEntry(url, 0),)
    assert [(r.status_list, r.status_index) for r in (first, second)] == [(1, 0), (1, 1)]
    assert {r.id for r in await issuer.issued(alliance)} == {first.id, second.id}


@pytest.mark.parametrize(("holder", "until", "path"), [
    ("acme", None, "holder"),
    ("did:example:acme", None, "holder"),
    ("did:web:acme.example:participants:acme", START - timedelta(days=1), "validUntil"),
])
async def test_issuing_refuses_a_holder_that_is_no_did_and_an_end_in_the_past(world, holder, until, path):
    _, (alliance, issuer), _, _ = world
    with pytest.raises(BadRequest) as caught:
        await issuer.issue(alliance, holder, MEMBER, valid_until=until)
    assert caught.value.path == path
    assert await issuer.issued(alliance) == []


async def test_a_delivered_credential_is_kept_by_the_holder(world):
    net, (alliance, _), (acme, holder), _ = world
    record = await member(world)
    assert record.delivered_at == utc_text(START) and record.delivery_error == ""
    delivery = net.client.requests("POST", f"{acme.dsp_base}/tds/credentials")[0]
    assert delivery.caller == alliance.did and delivery.body == {"credential": record.document}
    held = await holder.held(acme)
    assert [(h.id, h.kind, h.issuer, h.source) for h in held] == [(record.id, "membership", alliance.did,
                                                                   "delivered")]


async def test_a_holder_holds_a_credential_to_present_only_while_one_is_valid(world):
    net, _, (acme, holder), (buyer, verifier) = world
    assert await holder.holds_any(acme) is False
    await member(world, valid_until=START + timedelta(seconds=40))
    assert await holder.holds_any(acme) is True
    assert await verifier.holds_any(buyer) is False  # trusting an issuer is not holding a credential
    net.clock.advance(41)
    assert await holder.holds_any(acme) is False


async def test_a_delivery_the_holder_refuses_is_kept_as_the_reason(world):
    net, (alliance, issuer), _, (buyer, _) = world
    record = await issuer.issue(alliance, buyer.did, Region("XX-99"))
    net.client.answer("POST", f"{buyer.dsp_base}/tds/credentials", {"message": "not today"}, status=403)
    with pytest.raises(PeerError) as caught:
        await issuer.deliver(alliance, record.id)
    assert "is issued but was not delivered" in caught.value.message and "not today" in caught.value.message
    stored = await issuer.issued_one(alliance, record.id)
    assert stored.delivered_at is None and "403" in stored.delivery_error


async def test_only_the_issuer_may_deliver_its_credential(world):
    _, (alliance, issuer), (acme, holder), (buyer, _) = world
    record = await issuer.issue(alliance, acme.did, MEMBER)
    with pytest.raises(BadRequest) as caught:  # the buyer hands acme a credential the alliance issued
        await holder.receive_credential(acme, buyer.did, {"credential": record.document})
    assert caught.value.message.startswith("issuer-key: the credential was issued by ")
    assert await holder.held(acme) == []


async def test_revoking_sets_the_bit_and_publishes_a_re_signed_list(world):
    _, (alliance, issuer), _, _ = world
    kept, gone = await member(world), await member(world)
    before = await issuer.status_list_document(alliance, 1)
    revoked = await issuer.revoke(alliance, gone.id)
    assert revoked.revoked_at == utc_text(START)
    published = await issuer.status_list_document(alliance, 1)
    assert published != before
    checked = status_list.verify_status_list(published, alliance.did_document(), url=f"{alliance.base_url}"
                                             "/credentials/status/1", now=START)
    assert checked.bits[gone.status_index] and not checked.bits[kept.status_index]
    assert checked.fresh_until == START + timedelta(minutes=5)
    assert (await issuer.revoke(alliance, gone.id)).revoked_at == utc_text(START)  # once
    with pytest.raises(NotFound):
        await issuer.revoke(alliance, "urn:uuid:" + str(uuid.uuid4()))


async def test_the_published_list_is_re_signed_when_half_its_validity_has_passed(world):
    net, (alliance, issuer), _, _ = world
    await member(world)
    first = await issuer.status_list_document(alliance, 1)
    net.clock.advance(1799)
    assert await issuer.status_list_document(alliance, 1) is first
    net.clock.advance(2)
    later = await issuer.status_list_document(alliance, 1)
    assert later["validFrom"] == utc_text(START + timedelta(seconds=1801))
    assert later["validUntil"] == utc_text(START + timedelta(seconds=1801 + 3600))
    with pytest.raises(NotFound):
        await issuer.status_list_document(alliance, 2)


async def test_a_holder_asks_and_the_issuer_approves(world):
    _, (alliance, issuer), (acme, holder), _ = world
    asked = await holder.request_credential(acme, alliance.did, "region", Region("CN-GD"))
    [pending] = await issuer.requests(alliance)
    assert (pending.id, pending.requester, pending.kind, pending.claims) == (asked["id"], acme.did, "region",
                                                                           {"region": "CN-GD"})
    record = await issuer.approve(alliance, pending.id, valid_until=START + timedelta(days=10))
    assert record.delivery_error == "" and record.holder == acme.did
    assert [h.id for h in await holder.held(acme)] == [record.id]
    assert await issuer.requests(alliance) == []
    [approved] = await issuer.requests(alliance, state=None)
    assert (approved.state, approved.credential_id) == ("approved", record.id)
    with pytest.raises(Conflict):
        await issuer.approve(alliance, pending.id)
    with pytest.raises(Conflict):
        await issuer.reject(alliance, pending.id, "too late")


async def test_requests_name_a_kind_and_its_claims_and_are_bounded_per_holder(world):
    _, (alliance, issuer), (acme, _), _ = world
    for body, fragment in (({"kind": "passport", "claims": {}}, "kind"),
                           ({"kind": "region", "claims": {"region": "Guangdong"}}, "region"),
                           ({"kind": "region", "claims": {"dataSpace": SPACE}}, "dataSpace is not a claim")):
        with pytest.raises(BadRequest) as caught:
            await issuer.receive_request(alliance, acme.did, body)
        assert fragment in caught.value.message
    for _ in range(MAX_PENDING_PER_REQUESTER):
        await issuer.receive_request(alliance, acme.did, {"kind": "region", "claims": {"region": "CN-GD"}})
    with pytest.raises(TooManyRequests):
        await issuer.receive_request(alliance, acme.did, {"kind": "region", "claims": {"region": "CN-GD"}})
    rejected = await issuer.reject(alliance, (await issuer.requests(alliance))[0].id, "no")
    assert rejected.state == "rejected"
    await issuer.receive_request(alliance, acme.did, {"kind": "region", "claims": {"region": "CN-GD"}})


# ---------------------------------------------------------------------------------------------------------
# Holder


def _signed(world, claims=MEMBER, *, holder=None, valid_from=None, days=30, issuer=None):
    """A credential signed directly (outside the issuer's service): no status entry."""
    _, (alliance, _), (acme, _), _ = world
    signer = issuer or alliance
    return vc.issue(claims, holder=holder or acme.did, signer=signer.signer, credential_id=f"urn:uuid:{uuid.uuid4()}",
                    now=START, valid_from=valid_from, valid_until=(valid_from or START) + timedelta(days=days))


async def test_importing_checks_the_credential_and_names_the_check_that_failed(world):
    net, (alliance, issuer), (acme, holder), (buyer, _) = world
    tampered = _signed(world)
    tampered["credentialSubject"]["role"] = "board"
    future = _signed(world, valid_from=START + timedelta(days=2))
    expired = _signed(world, days=1)
    revoked = await issuer.issue(alliance, acme.did, MEMBER)
    await issuer.revoke(alliance, revoked.id)
    about_buyer = _signed(world, holder=buyer.did)
    for document, check in ((tampered, "signature"), (future, "not-yet-valid"), (about_buyer, "wrong-holder"),
                            (revoked.document, "status-entry")):
        with pytest.raises(BadRequest) as caught:
            await holder.import_credential(acme, document)
        assert caught.value.message.startswith(f"{check}: "), caught.value.message
    assert "revoked" in caught.value.message
    net.clock.advance(2 * 86400)
    with pytest.raises(BadRequest) as caught:
        await holder.import_credential(acme, expired)
    assert caught.value.message.startswith("expired: ")
    assert await holder.held(acme) == []
    assert buyer.did not in net.resolver.asked  # junk about someone else costs no lookup


async def test_a_holder_keeps_a_bounded_number_of_credentials_of_one_issuer(world):
    _, _, (acme, holder), _ = world
    for _ in range(MAX_HELD_PER_ISSUER):
        await holder.import_credential(acme, _signed(world))
    with pytest.raises(Conflict):
        await holder.import_credential(acme, _signed(world))
    first = (await holder.held(acme))[0]
    await holder.remove_held(acme, first.id)
    await holder.import_credential(acme, _signed(world))
    with pytest.raises(NotFound):
        await holder.remove_held(acme, first.id)


async def test_strangers_with_fresh_keys_neither_fill_the_store_nor_crowd_out_a_trusted_issuers_credential(world):
    net, (alliance, _), (acme, holder), _ = world
    await holder.add_trust(acme, alliance.did, ["membership"])
    real = await member(world)
    strangers = [runtime(f"stranger{i}", f"stranger{i}.example") for i in range(MAX_HELD_UNTRUSTED // 4 + 1)]
    for stranger in strangers:
        net.resolver.documents[stranger.did] = stranger.did_document()
    junk = iter(_signed(world, issuer=s) for s in strangers for _ in range(4))
    for _ in range(MAX_HELD_UNTRUSTED):
        document = next(junk)
        await holder.receive_credential(acme, document["issuer"], {"credential": document})
    document = next(junk)
    with pytest.raises(Conflict, match="issuers it does not trust"):
        await holder.receive_credential(acme, document["issuer"], {"credential": document})
    await member(world)  # the trusted issuer still delivers
    _, shown = await present(world)
    issuers = [c["issuer"] for c in shown["verifiableCredential"]]
    assert issuers[:2] == [alliance.did, alliance.did]  # newest junk after, never before, the chosen issuer's
    assert real.id in [c["id"] for c in shown["verifiableCredential"]]


# ---------------------------------------------------------------------------------------------------------
# Verifier: the exchange after a handshake


async def test_the_exchange_shows_each_side_the_others_claims(world):
    net, (alliance, issuer), (acme, holder), (buyer, verifier) = world
    record = await member(world)
    await issuer.issue(alliance, buyer.did, Region("CN-GD"))  # not delivered: the buyer holds nothing
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)  # the buyer handshook with acme
    assert claims is not None and claims.holder == acme.did
    assert [(m.value, m.issuer, m.credential_id) for m in claims.memberships] == [(MEMBER, alliance.did, record.id)]
    assert claims.until == START + timedelta(minutes=5)  # the status list's answer holds this long (its ttl)
    assert await verifier.claims_of(buyer.id, acme.did) is claims
    # acme learnt the buyer's claims too (none), from the buyer's presentation to it
    mine = await holder.claims_of(acme.id, buyer.did)
    assert mine is not None and mine.memberships == () and mine.not_counted == ()
    # the status list was fetched without a signature (by acme, as it kept the credential, then by the buyer)
    fetches = net.client.requests("GET", f"{alliance.base_url}/credentials/status/1")
    assert len(fetches) == 2 and {f.caller for f in fetches} == {None}


async def test_a_participant_that_holds_nothing_and_trusts_no_one_skips_the_exchange(world):
    net, _, (acme, holder), (buyer, _) = world
    assert await holder.exchange(acme, buyer.did, buyer.dsp_base) is None
    assert net.client.sent == []


async def test_a_peer_that_does_not_know_the_exchange_is_left_without_claims(world):
    net, _, _, (buyer, verifier) = world
    old = runtime("old", "old.example")
    net.client.answer("POST", f"{old.dsp_base}/tds/credentials/challenge", {"message": "no such route"}, status=404)
    assert await verifier.exchange(buyer, old.did, old.dsp_base) is None
    assert await verifier.claims_of(buyer.id, old.did) is None


async def test_an_untrusted_issuer_is_shown_not_counted_and_never_resolved(world):
    net, _, (acme, holder), (buyer, verifier) = world
    stranger = runtime("stranger", "stranger.example")
    document = _signed(world, issuer=stranger)
    net.resolver.documents[stranger.did] = stranger.did_document()
    await holder.import_credential(acme, document)
    net.resolver.asked.clear()
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)
    assert claims.memberships == ()
    assert [(n.credential_id, n.reason) for n in claims.not_counted] == [
        (document["id"], f"shown, not counted: the issuer {stranger.did} is not trusted")]
    assert stranger.did not in net.resolver.asked


async def test_an_issuer_trusted_for_another_kind_is_not_believed_for_this_one(world):
    _, (alliance, _), (acme, _), (buyer, verifier) = world
    await member(world, Region("CN-GD"))
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)
    assert claims.region is None
    assert claims.not_counted[0].reason == (f"shown, not counted: the issuer {alliance.did} is not trusted for "
                                            "TdsRegionCredential")


async def test_credentials_that_fail_their_checks_do_not_count_and_say_why(world):
    net, _, (acme, _), (buyer, verifier) = world
    good = await member(world)
    expiring = await member(world, valid_until=START + timedelta(seconds=30))
    net.clock.advance(31)  # acme still holds it; it expired on the way
    tampered = _signed(world)
    tampered["credentialSubject"]["role"] = "board"
    future = _signed(world, valid_from=START + timedelta(days=1))
    challenge = verifier.challenge(buyer.id, acme.did)
    presentation = vc.present([good.document, expiring.document, tampered, future], holder=acme.signer,
                              domain=buyer.did, challenge=challenge, now=net.clock.utc())
    answer = await verifier.on_presentation(buyer, acme.did, {"challenge": challenge, "presentation": presentation})
    assert [c["credentialId"] for c in answer["counted"]] == [good.id]
    reasons = [n["reason"].split(":")[1].strip() for n in answer["notCounted"]]
    assert reasons == ["expired", "signature", "not-yet-valid"]


@pytest.mark.parametrize("case", ["reused challenge", "other domain", "too old", "another peer's challenge",
                                  "wrong holder", "wrongly signed", "not made for a challenge of ours"])
async def test_a_presentation_that_could_be_a_replay_is_refused_as_a_whole(world, case):
    net, _, (acme, holder), (buyer, verifier) = world
    await member(world)
    seller = runtime("seller", "seller.example")
    challenge, presentation = await present(world)
    body = {"challenge": challenge, "presentation": presentation}
    caller = acme.did
    expected = {"reused challenge": "challenge", "other domain": "domain", "too old": "too-old",
                "another peer's challenge": "challenge", "wrong holder": "wrong-holder",
                "wrongly signed": "signature", "not made for a challenge of ours": "challenge"}[case]
    if case == "reused challenge":
        await verifier.on_presentation(buyer, acme.did, body)
    elif case == "other domain":  # made for the seller, shown to the buyer with the buyer's own fresh challenge
        fresh = verifier.challenge(buyer.id, acme.did)
        made = await holder.presentation_for(acme, domain=seller.did, challenge=fresh)
        body = {"challenge": fresh, "presentation": made}
    elif case == "too old":
        net.clock.advance(MAX_AGE.total_seconds() + 1)
    elif case == "another peer's challenge":
        body = {"challenge": verifier.challenge(buyer.id, seller.did), "presentation": presentation}
    elif case == "wrong holder":  # the seller signs the request and hands over acme's presentation
        body = {"challenge": verifier.challenge(buyer.id, seller.did), "presentation": presentation}
        caller = seller.did
    elif case == "wrongly signed":
        body["presentation"] = copy.deepcopy(presentation)
        body["presentation"]["verifiableCredential"] = []
    else:  # a challenge the buyer never handed out, answered correctly
        made = await holder.presentation_for(acme, domain=buyer.did, challenge="x" * 43)
        body = {"challenge": "x" * 43, "presentation": made}
    message = await refused_presentation(world, body, caller)
    assert message.startswith(f"presentation refused: {expected}: "), message
    kept = await verifier.claims_of(buyer.id, caller)
    assert kept is not None and kept.memberships == ()
    assert kept.not_counted[0].reason.startswith(f"presentation refused: {expected}: ")


async def test_a_presentation_older_than_the_limit_is_too_old_even_with_an_open_challenge(world):
    net, _, (acme, _), (buyer, verifier) = world
    challenge = verifier.challenge(buyer.id, acme.did)
    made = vc.present([], holder=acme.signer, domain=buyer.did, challenge=challenge,
                      now=net.clock.utc() - MAX_AGE - timedelta(seconds=1))
    message = await refused_presentation(world, {"challenge": challenge, "presentation": made})
    assert message.startswith("presentation refused: too-old: ")


async def test_challenges_are_bounded_per_peer_and_in_all(world, monkeypatch):
    _, _, (acme, _), (buyer, verifier) = world
    first, *rest = [verifier.challenge(buyer.id, acme.did) for _ in range(service_module.MAX_CHALLENGES_PER_PEER + 1)]
    _, presentation = await present(world, challenge=first)
    message = await refused_presentation(world, {"challenge": first, "presentation": presentation})
    assert message.startswith("presentation refused: challenge: the challenge is unknown")  # pushed out
    monkeypatch.setattr(service_module, "MAX_CHALLENGES", len(rest) + 1)
    verifier.challenge(buyer.id, "did:web:other.example")
    with pytest.raises(TooManyRequests):
        verifier.challenge(buyer.id, "did:web:third.example")


# ---------------------------------------------------------------------------------------------------------
# Status lists and the claims kept


async def test_claims_are_kept_until_the_status_list_is_due_then_a_revocation_counts(world):
    net, (alliance, issuer), (acme, _), (buyer, verifier) = world
    record = await member(world)
    await verifier.exchange(buyer, acme.did, acme.dsp_base)
    fetched = len(net.client.requests("GET", f"{alliance.base_url}/credentials/status/1"))
    await issuer.revoke(alliance, record.id)
    net.clock.advance(59)
    assert (await verifier.claims_of(buyer.id, acme.did)).memberships  # the list in hand is still fresh
    net.clock.advance(1)
    claims = await verifier.claims_of(buyer.id, acme.did)
    assert claims.memberships == ()
    assert claims.not_counted[0].reason == (f"status revoked: revoked in {alliance.base_url}/credentials/status/1 "
                                            f"(index {record.status_index})")
    assert len(net.client.requests("GET", f"{alliance.base_url}/credentials/status/1")) == fetched + 1


async def test_a_claim_stops_counting_when_its_credential_expires(world):
    net, _, (acme, _), (buyer, verifier) = world
    await member(world, valid_until=START + timedelta(seconds=40))
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)
    assert claims.until == START + timedelta(seconds=40)
    net.clock.advance(41)
    later = await verifier.claims_of(buyer.id, acme.did)
    assert later.memberships == () and later.not_counted[0].reason.startswith("refused: expired: ")


async def test_removing_an_issuer_from_the_trust_list_stops_its_claims_counting(net):
    alliance, acme, buyer = (runtime("alliance", "alliance.example"), runtime("acme", "acme.example"),
                             runtime("buyer", "buyer.example"))
    issuer = await net.node("alliance", alliance)
    await net.node("acme", acme)
    verifier = await net.node("buyer", buyer)
    record = await issuer.issue(alliance, acme.did, MEMBER)
    await issuer.deliver(alliance, record.id)
    with pytest.raises(NotFound):
        await verifier.remove_trust(buyer, alliance.did)
    await verifier.add_trust(buyer, alliance.did, ["membership"], [SPACE])
    assert (await verifier.exchange(buyer, acme.did, acme.dsp_base)).memberships
    await verifier.remove_trust(buyer, alliance.did)
    claims = await verifier.claims_of(buyer.id, acme.did)
    assert claims.memberships == () and "is not trusted" in claims.not_counted[0].reason
    assert await verifier.trusted(buyer) == []


async def test_the_nodes_trust_list_cannot_be_removed_by_a_participant(world):
    _, (alliance, _), _, (buyer, verifier) = world
    assert [(t["issuer"], t["source"]) for t in await verifier.trusted(buyer)] == [(alliance.did, "node")]
    with pytest.raises(Conflict) as caught:
        await verifier.remove_trust(buyer, alliance.did)
    assert "[[trust]]" in caught.value.message


def _unreadable(net, url, reply_or_route):
    if isinstance(reply_or_route, Reply):
        net.client.answers[("GET", url)] = reply_or_route
    else:
        net.client.route(url, reply_or_route)


@pytest.mark.parametrize(("answer", "reason"), [
    (Reply(200, b"{not json"), "the answer is not JSON"),
    (Reply(200, {"issuer": "did:web:alliance.example:participants:alliance"}), "context: "),
    (Reply(503, {"message": "down"}), "answered 503"),
    (Reply(200, b"x" * (service_module.MAX_STATUS_LIST_BYTES + 1)), "larger than"),
    (Reply(200, pieces=[b'{"issuer": ', PeerError("GET … failed: connection reset")]), "connection reset"),
    ("hang", "no answer within 0.05 s"),
])
async def test_a_status_list_that_cannot_be_read_leaves_the_claim_uncounted_with_the_reason(world, answer, reason):
    net, (alliance, _), (acme, _), (buyer, verifier) = world
    verifier.settings = CredentialsSection(status_fetch_timeout_s=0.05)
    await member(world)
    url = f"{alliance.base_url}/credentials/status/1"
    if answer == "hang":
        async def hang(_):
            await asyncio.Event().wait()

        net.client.route(url, hang)
    else:
        _unreadable(net, url, answer)
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)
    assert claims.memberships == ()
    [why] = claims.not_counted
    assert why.reason.startswith(f"status unknown: the status list {url} could not be read: "), why.reason
    assert reason in why.reason


async def test_a_status_list_signed_by_someone_else_is_not_believed(world):
    net, (alliance, _), (acme, _), (buyer, verifier) = world
    await member(world)
    url = f"{alliance.base_url}/credentials/status/1"
    forged = status_list.issue_status_list(status_list.Bitstring(), url=url, signer=buyer.signer, now=START,
                                           valid_until=START + timedelta(hours=1))
    net.client.answer("GET", url, forged)
    claims = await verifier.exchange(buyer, acme.did, acme.dsp_base)
    assert claims.memberships == ()
    assert f"the list is issued by '{buyer.did}', not a trusted issuer" in claims.not_counted[0].reason


# ---------------------------------------------------------------------------------------------------------
# Hosted participants


async def test_hosted_participants_never_reach_each_others_credentials(net):
    hub, sme = runtime("hub", "hub.example"), runtime("sme", "hub.example")
    service = await net.node("hub", hub, sme)
    record = await service.issue(hub, sme.did, MEMBER)
    await service.deliver(hub, record.id)
    asked = await service.request_credential(sme, hub.did, "region", Region("CN-GD"))
    assert await service.issued(sme) == [] and await service.requests(sme, state=None) == []
    assert await service.held(hub) == []
    for call in (service.revoke(sme, record.id), service.issued_one(sme, record.id),
                 service.deliver(sme, record.id), service.approve(sme, asked["id"]),
                 service.reject(sme, asked["id"], "no"), service.held_one(hub, record.id),
                 service.remove_held(hub, record.id)):
        with pytest.raises(NotFound):
            await call
    assert (await service.issued_one(hub, record.id)).revoked_at is None
    assert [r.state for r in await service.requests(hub)] == ["pending"]
    await service.add_trust(hub, "did:web:alliance.example:participants:alliance", ["region"])
    assert await service.trusted(sme) == []
    # each participant keeps the claims shown to it, not to another
    await service.add_trust(sme, hub.did, ["membership"])
    await service.exchange(hub, sme.did, sme.dsp_base)
    assert (await service.claims_of(sme.id, hub.did)) is not None
    assert await service.claims_of(hub.id, hub.did) is None
    service.forget(sme.id)
    assert await service.claims_of(sme.id, hub.did) is None
