"""The credential service on in-memory nodes: issuing, delivering, requests, revocation and the published status
list; holding and importing; presentations in the handshake, what counts and what is refused and why; status
lists that cannot be read; bounds; hosted participants kept apart. Real signatures and SQLite, no sockets."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import timedelta

import pytest
from credentials_setup import SPACE, START, Network, exchange, runtime

from connector.config import CredentialsSection, TrustEntry
from connector.errors import BadRequest, Conflict, NotFound, PeerError, TooManyRequests
from connector.identity import did as dids
from connector.identity import status_list, vc
from connector.identity.claims import Membership, Region
from connector.identity.credentials import utc_text
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services import credentials as service_module
from connector.services.credentials import (
    MAX_HELD_PER_ISSUER,
    MAX_HELD_UNTRUSTED,
    MAX_OFFERED,
    MAX_OFFERED_KEYS,
    MAX_OFFERED_PER_ISSUER,
    MAX_PENDING_PER_REQUESTER,
)
from connector.store.credentials import HeldCredential, OfferedCredential
from connector.store.repository import Participant
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
    kept = await holder.receive_credential(acme, document["issuer"], {"credential": document})
    assert isinstance(kept, OfferedCredential)  # beyond the bound: offered to the operator, not held
    assert len(await holder.held(acme)) == MAX_HELD_UNTRUSTED + 1
    await member(world)  # the trusted issuer still delivers
    _, shown = await present(world)
    issuers = [c["issuer"] for c in shown["verifiableCredential"]]
    assert issuers[:2] == [alliance.did, alliance.did]  # newest junk after, never before, the chosen issuer's
    assert real.id in [c["id"] for c in shown["verifiableCredential"]]
    assert document["id"] not in [c["id"] for c in shown["verifiableCredential"]]


def fresh_key(net, n: int) -> ParticipantRuntime:
    """A stranger behind a did:key made on the spot (it costs nothing to make)."""
    keys = ParticipantKeys.generate()
    did = dids.did_key_for(bytes(keys.verify_key))
    record = Participant(id=f"key{n}", name=f"key{n}", did=did, legal_name="Stranger", region="CN-GD",
                         created_at="2026-01-01T00:00:00Z")
    stranger = ParticipantRuntime(record, keys, f"https://key{n}.example")
    net.resolver.documents[did] = stranger.did_document()
    return stranger


async def junk(world, stranger: ParticipantRuntime) -> HeldCredential | OfferedCredential:
    """*stranger* delivers acme a credential it signed itself, about acme."""
    _, _, (acme, holder), _ = world
    return await holder.receive_credential(acme, stranger.did, {"credential": _signed(world, issuer=stranger)})


async def test_a_flood_from_fresh_keys_does_not_hide_a_legitimate_issuers_delivery(world):
    net, (alliance, issuer), (acme, holder), _ = world  # acme does not trust the alliance (it need not)
    for n in range(MAX_HELD_UNTRUSTED):
        assert isinstance(await junk(world, fresh_key(net, n)), HeldCredential)
    record = await member(world)
    assert record.delivered_as == "offered"  # the issuer learns that it waits for acme's acceptance
    assert (await issuer.issued_one(alliance, record.id)).delivered_as == "offered"
    for n in range(MAX_OFFERED + 10):  # more fresh keys than there are offers kept
        assert isinstance(await junk(world, fresh_key(net, 100 + n)), OfferedCredential)
    offered = await holder.offered(acme)
    assert record.id in [o.id for o in offered]  # did:key offers push out only each other
    assert len(offered) == MAX_OFFERED_KEYS + 1
    net.clock.advance(1)
    accepted = await holder.accept_offered(acme, record.id)
    assert (accepted.id, accepted.issuer, accepted.source) == (record.id, alliance.did, "delivered")
    assert record.id not in [o.id for o in await holder.offered(acme)]
    assert len(await holder.held(acme)) == MAX_HELD_UNTRUSTED + 1  # the operator's choice, beyond the bound
    _, shown = await present(world)
    assert shown["verifiableCredential"][0]["id"] == record.id


async def test_offered_credentials_are_never_presented(world, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_HELD_UNTRUSTED", 0)  # every unasked delivery of an untrusted issuer
    _, _, (acme, holder), _ = world
    record = await member(world)
    assert record.delivered_as == "offered"
    assert [o.id for o in await holder.offered(acme)] == [record.id]
    assert await holder.held(acme) == [] and await holder.holds_any(acme) is False
    _, shown = await present(world)
    assert shown.get("verifiableCredential", []) == []
    await holder.accept_offered(acme, record.id)
    _, shown = await present(world)
    assert [c["id"] for c in shown["verifiableCredential"]] == [record.id]


async def test_the_offered_list_stays_bounded_per_issuer_and_in_all(world, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_HELD_UNTRUSTED", 0)
    net, _, (acme, holder), _ = world
    one_host = [runtime(f"mask{n}", "evil.example") for n in range(MAX_OFFERED_PER_ISSUER + 3)]
    hosts = [runtime(f"web{n}", f"web{n}.example") for n in range(MAX_OFFERED)]
    for stranger in [*one_host, *hosts]:
        net.resolver.documents[stranger.did] = stranger.did_document()
    sent = [(await junk(world, s)).id for s in one_host]  # every did:web of one host is one issuer
    assert [o.id for o in await holder.offered(acme)] == sent[::-1][:MAX_OFFERED_PER_ISSUER]  # newest first
    key = fresh_key(net, 0)
    mine = [(await junk(world, key)).id for _ in range(MAX_OFFERED_PER_ISSUER + 1)]
    assert [o.id for o in await holder.offered(acme) if o.issuer == key.did] == mine[::-1][:MAX_OFFERED_PER_ISSUER]
    keys = [fresh_key(net, n) for n in range(1, MAX_OFFERED_KEYS // MAX_OFFERED_PER_ISSUER + 1)]
    by_keys = [*mine, *[(await junk(world, k)).id for k in keys for _ in range(MAX_OFFERED_PER_ISSUER)]]
    by_hosts = [(await junk(world, s)).id for s in hosts]
    offered = await holder.offered(acme)
    assert len(offered) == MAX_OFFERED  # the oldest dropped first, on each side
    assert [o.id for o in offered if o.issuer.startswith("did:key:")] == by_keys[::-1][:MAX_OFFERED_KEYS]
    assert [o.id for o in offered if o.issuer.startswith("did:web:")] == by_hosts[::-1][:MAX_OFFERED - MAX_OFFERED_KEYS]


async def test_a_credential_the_holder_asked_for_is_held_when_delivered(world, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_HELD_UNTRUSTED", 0)
    _, (alliance, issuer), (acme, holder), _ = world
    await holder.request_credential(acme, alliance.base_url, "region", Region("CN-GD"))  # by URL: its node names it
    [pending] = await issuer.requests(alliance)
    record = await issuer.approve(alliance, pending.id)
    assert record.delivered_as == "held"
    assert [h.id for h in await holder.held(acme)] == [record.id] and await holder.offered(acme) == []
    again = await member(world, Region("CN-GD"))  # the request was answered: this one is unasked
    other = await member(world)  # acme asked for a region, not a membership
    assert (again.delivered_as, other.delivered_as) == ("offered", "offered")


async def test_the_operator_accepts_or_declines_an_offer_and_learns_why_not(world, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_HELD_UNTRUSTED", 0)
    net, (alliance, issuer), (acme, holder), _ = world
    kept, declined, revoked, full = [await member(world) for _ in range(4)]
    for call in (holder.accept_offered(acme, "urn:uuid:nothing"), holder.decline_offered(acme, "urn:uuid:nothing"),
                 holder.offered_one(acme, "urn:uuid:nothing")):
        with pytest.raises(NotFound, match="no such offered credential"):
            await call
    await holder.decline_offered(acme, declined.id)
    with pytest.raises(NotFound):
        await holder.accept_offered(acme, declined.id)
    await issuer.revoke(alliance, revoked.id)
    net.clock.advance(61)  # acme's copy of the status list is due
    with pytest.raises(BadRequest) as caught:
        await holder.accept_offered(acme, revoked.id)
    assert caught.value.message.startswith("status-entry: ") and "decline it" in caught.value.message
    assert (await holder.accept_offered(acme, kept.id)).id == kept.id
    with pytest.raises(NotFound):
        await holder.accept_offered(acme, kept.id)  # held now
    for _ in range(MAX_HELD_PER_ISSUER - 1):  # the operator imports: not bound by the issuers acme trusts
        await holder.import_credential(acme, _signed(world))
    with pytest.raises(Conflict, match=f"already holds {MAX_HELD_PER_ISSUER} credentials of {alliance.did}"):
        await holder.accept_offered(acme, full.id)
    assert full.id in [o.id for o in await holder.offered(acme)]  # still offered: remove one, then accept
    await holder.remove_held(acme, kept.id)
    await holder.accept_offered(acme, full.id)
    assert {o.id for o in await holder.offered(acme)} == {revoked.id}


async def test_a_stranger_cannot_replace_a_held_credential_by_reusing_its_id(world):
    net, (alliance, _), (acme, holder), _ = world
    real = await member(world)  # its id is shown to every verifier acme presents to
    stranger = fresh_key(net, 0)
    forged = vc.issue(MEMBER, holder=acme.did, signer=stranger.signer, credential_id=real.id, now=START,
                      valid_until=START + timedelta(days=30))
    with pytest.raises(Conflict, match="of another issuer"):
        await holder.receive_credential(acme, stranger.did, {"credential": forged})
    assert [(h.id, h.issuer) for h in await holder.held(acme)] == [(real.id, alliance.did)]


# ---------------------------------------------------------------------------------------------------------
# Verifier: the exchange after a handshake


async def test_the_exchange_shows_each_side_the_others_claims(world):
    net, (alliance, issuer), (acme, holder), (buyer, verifier) = world
    record = await member(world)
    await issuer.issue(alliance, buyer.did, Region("CN-GD"))  # not delivered: the buyer holds nothing
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)  # the buyer handshook with acme
    assert claims is not None and claims.holder == acme.did
    assert [(m.value, m.issuer, m.credential_id) for m in claims.memberships] == [(MEMBER, alliance.did, record.id)]
    assert claims.until == START + timedelta(minutes=5)  # the status list's answer holds this long (its ttl)
    assert await verifier.claims_of(buyer.id, acme.did) is claims
    assert await holder.claims_of(acme.id, buyer.did) is None  # the buyer holds nothing, and showed nothing
    assert len(net.client.requests("POST", f"{acme.dsp_base}/tds/handshake")) == 1
    assert net.client.requests("POST", f"{acme.dsp_base}/tds/credentials/presentation") == []
    # the status list was fetched without a signature (by acme, as it kept the credential, then by the buyer)
    fetches = net.client.requests("GET", f"{alliance.base_url}/credentials/status/1")
    assert len(fetches) == 2 and {f.caller for f in fetches} == {None}


async def test_the_holders_presentation_travels_in_the_handshake_once_it_was_handed_a_challenge(world):
    net, (alliance, _), (acme, holder), (buyer, verifier) = world
    await member(world)
    shown = f"{buyer.dsp_base}/tds/credentials/presentation"
    assert await exchange(holder, acme, buyer.did, buyer.dsp_base) is None  # the buyer holds nothing to show
    assert len(net.client.requests("POST", shown)) == 1  # first contact: acme answers the challenge handed it
    assert [m.issuer for m in (await verifier.claims_of(buyer.id, acme.did)).memberships] == [alliance.did]
    for _ in range(3):  # later: in the handshake itself, answering the challenge the previous answer handed over
        net.clock.advance(60)
        await exchange(holder, acme, buyer.did, buyer.dsp_base)
        assert len(net.client.requests("POST", shown)) == 1
        claims = await verifier.claims_of(buyer.id, acme.did)
        assert [m.issuer for m in claims.memberships] == [alliance.did] and claims.not_counted == ()
    # the last handshake, replayed as it was sent, is refused: its challenge is used up
    last = net.client.requests("POST", f"{buyer.dsp_base}/tds/handshake")[-1]
    fields = {k: v for k, v in last.body.items() if k != "selfDescription"}
    answer = await verifier.on_handshake(buyer, acme.did, fields)
    assert answer["presentationResult"]["refused"].startswith("presentation refused: challenge: the challenge is "
                                                              "unknown or was answered already")


async def test_a_challenge_no_longer_open_costs_one_more_request_not_the_claims(world):
    net, (alliance, _), (acme, holder), (buyer, verifier) = world
    await member(world)
    shown = f"{buyer.dsp_base}/tds/credentials/presentation"
    await exchange(holder, acme, buyer.did, buyer.dsp_base)
    verifier.forget(buyer.id)  # as after the buyer's node restarted: the challenge it handed acme is gone
    net.clock.advance(60)
    await exchange(holder, acme, buyer.did, buyer.dsp_base)
    assert len(net.client.requests("POST", shown)) == 2
    assert [m.issuer for m in (await verifier.claims_of(buyer.id, acme.did)).memberships] == [alliance.did]
    net.clock.advance(service_module.CHALLENGE_LIFETIME.total_seconds() + 1)  # the next one expired unused
    await exchange(holder, acme, buyer.did, buyer.dsp_base)
    assert len(net.client.requests("POST", shown)) == 3
    assert [m.issuer for m in (await verifier.claims_of(buyer.id, acme.did)).memberships] == [alliance.did]


async def test_a_presentation_in_a_handshake_is_bound_to_the_challenge_handed_to_that_caller(world):
    _, _, (acme, holder), (buyer, verifier) = world
    await member(world)
    seller = runtime("seller", "seller.example")
    handed = verifier.challenge(buyer.id, seller.did)  # handed to the seller, answered by acme
    made = await holder.presentation_for(acme, domain=buyer.did, challenge=handed)
    answer = await verifier.on_handshake(buyer, acme.did, {"presentation": made})
    assert answer["presentationResult"]["refused"].startswith("presentation refused: challenge: the challenge was "
                                                              "handed to another peer")
    made["proof"].pop("challenge")
    answer = await verifier.on_handshake(buyer, acme.did, {"presentation": made})
    assert answer["presentationResult"]["refused"] == ("presentation refused: challenge: the presentation answers "
                                                       "no challenge")
    assert "presentation" not in answer  # the buyer holds nothing; and acme asked for nothing
    with pytest.raises(BadRequest):
        await verifier.on_handshake(buyer, acme.did, {"challenge": "short"})


async def test_a_participant_that_holds_nothing_and_trusts_no_one_skips_the_exchange(world):
    net, _, (acme, holder), (buyer, _) = world
    assert await exchange(holder, acme, buyer.did, buyer.dsp_base) is None
    assert net.client.sent == []


async def test_a_peer_that_answers_with_its_self_description_alone_is_left_without_claims(world):
    net, _, _, (buyer, verifier) = world
    old = runtime("old", "old.example")
    opening = await verifier.opening(buyer, old.dsp_base)
    assert await verifier.closing(buyer, old.did, old.dsp_base, opening, None) is None
    assert await verifier.claims_of(buyer.id, old.did) is None
    assert net.client.sent == []


async def test_an_untrusted_issuer_is_shown_not_counted_and_never_resolved(world):
    net, _, (acme, holder), (buyer, verifier) = world
    stranger = runtime("stranger", "stranger.example")
    document = _signed(world, issuer=stranger)
    net.resolver.documents[stranger.did] = stranger.did_document()
    await holder.import_credential(acme, document)
    net.resolver.asked.clear()
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)
    assert claims.memberships == ()
    assert [(n.credential_id, n.reason) for n in claims.not_counted] == [
        (document["id"], f"shown, not counted: the issuer {stranger.did} is not trusted")]
    assert stranger.did not in net.resolver.asked


async def test_an_issuer_trusted_for_another_kind_is_not_believed_for_this_one(world):
    _, (alliance, _), (acme, _), (buyer, verifier) = world
    await member(world, Region("CN-GD"))
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)
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
    other = verifier.challenge(buyer.id, "did:web:other.example")
    verifier.challenge(buyer.id, "did:web:third.example")  # the node-wide bound pushes the oldest out
    _, presentation = await present(world, challenge=rest[0])
    message = await refused_presentation(world, {"challenge": rest[0], "presentation": presentation})
    assert message.startswith("presentation refused: challenge: the challenge is unknown")
    assert other in verifier._challenges


# ---------------------------------------------------------------------------------------------------------
# Status lists and the claims kept


async def test_claims_are_kept_until_the_status_list_is_due_then_a_revocation_counts(world):
    net, (alliance, issuer), (acme, _), (buyer, verifier) = world
    record = await member(world)
    await exchange(verifier, buyer, acme.did, acme.dsp_base)
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


async def test_verifiers_counting_claims_at_the_same_time_share_one_fetch_of_a_status_list(world):
    net, (alliance, issuer), (acme, _), (buyer, verifier) = world
    await member(world)
    await exchange(verifier, buyer, acme.did, acme.dsp_base)
    url = f"{alliance.base_url}/credentials/status/1"
    before = len(net.client.requests("GET", url))
    gate, asked = asyncio.Event(), asyncio.Event()
    fetching, asks = verifier._fetching, []

    def ask(at):  # every count asks for the list before the first answer comes
        asks.append(at)
        if len(asks) == 3:
            asked.set()
        return fetching(at)

    async def slow(sent):
        await gate.wait()
        return Reply(200, await issuer.status_list_document(alliance, 1))

    verifier._fetching = ask
    net.client.route(url, slow)
    net.clock.advance(60)  # the list in hand is due: every count fetches it again
    counting = [asyncio.create_task(verifier.claims_of(buyer.id, acme.did)) for _ in range(3)]
    await asked.wait()
    gate.set()
    for claims in await asyncio.gather(*counting):
        assert [m.issuer for m in claims.memberships] == [alliance.did]
    assert len(net.client.requests("GET", url)) == before + 1


async def test_a_claim_stops_counting_when_its_credential_expires(world):
    net, _, (acme, _), (buyer, verifier) = world
    await member(world, valid_until=START + timedelta(seconds=40))
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)
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
    assert (await exchange(verifier, buyer, acme.did, acme.dsp_base)).memberships
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
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)
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
    claims = await exchange(verifier, buyer, acme.did, acme.dsp_base)
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
    await service.add_trust(hub, hub.did, ["membership"])
    await exchange(service, sme, hub.did, hub.dsp_base)
    assert (await service.claims_of(hub.id, sme.did)).memberships
    assert await service.claims_of(sme.id, sme.did) is None
    service.forget(hub.id)
    assert await service.claims_of(hub.id, sme.did) is None


async def test_a_credential_revoked_by_its_issuer_no_longer_counts_for_its_holders_own_uses(net):
    """The holder's usage control (a policy's tds:memberOf on each use) reads its held credentials' status as a
    verifier does: once the issuer revokes a membership, the holder's own uses no longer count it."""
    from connector.services.usage import held_claims_of

    alliance, parts = runtime("alliance", "alliance.example"), runtime("parts", "parts.example")
    trust = [TrustEntry(issuer=alliance.did, claims=["membership"])]
    issuer = await net.node("issuer", alliance)
    holder = await net.node("holder", parts, trust=trust)
    issued = await issuer.issue(alliance, parts.did, Membership(SPACE, "member"))
    await holder.import_credential(parts, issued.document)
    own = held_claims_of(holder.held, holder.trust_of, net.clock.utc, statuses=holder.statuses)
    assert [m.value.data_space for m in (await own(parts)).memberships] == [SPACE]
    await issuer.revoke(alliance, issued.id)
    net.clock.advance(3600)  # past the status list's cache
    counted = await own(parts)
    assert counted.memberships == () and any("revoked" in n.reason for n in counted.not_counted)
