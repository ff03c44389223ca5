"""Attacks on settlement: statements a consumer's node must refuse or dispute, answers a provider's node must
refuse, and tenants reaching for each other's statements.

A statement signed by anyone but the agreement's provider is refused (401) and not kept. A statement the provider
did sign but that does not match the consumer's own records — a count the receipts do not hold, a price the
agreement does not state, a receipt range that skips receipts, the id of another agreement's statement, a
statement received before signed again — is disputed at once, the dispute naming the rule; one for a stretch the
consumer accepted already is refused (409: double settlement). The statements are crafted here as a provider's
node would make them, from the consumer's own log, and signed with the provider's own key (the one its node folder
holds), so that only the change under test is wrong.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from attack_setup import post_signed
from nacl.signing import SigningKey

from connector.http.management import PREFIX
from connector.identity import did as dids
from connector.identity import proof
from connector.identity.keys import Signer
from connector.protocol import statements
from connector.testing import eventually
from usage_policies import ledger, parse_policy, pricing, templates

PRICED = {"@type": "Set", "permission": [{"action": "use", "duty": [templates.price_duty("2.50", "CNY")]}]}


async def api(who: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {who.token}"}) as s, s.request(
            method, f"{who.node.management_url}{PREFIX}{path}", json=body) as r:
        return r.status, await r.json(content_type=None)


async def negotiated(provider: Any, consumer: Any) -> str:
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


async def priced(provider: Any, consumer: Any, *, uses: int = 3) -> str:
    """A per-use priced agreement with *uses* uses logged on the consumer's node (and their receipts at the
    provider's)."""
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("priced", PRICED)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="priced",
                                                  assets=["qi"])
    agreement = await negotiated(provider, consumer)
    for i in range(uses):
        assert (await consumer.client.use(agreement, f"u{i}"))["decision"] == "permit"

    async def received() -> bool:
        return (await provider.client.usage_report(agreement))["receivedEntries"] == uses

    await eventually(received, what="the receipts at the provider")
    return agreement


async def crafted(provider: Any, consumer: Any, agreement: str, *, after: int = 0, **changes: Any
                  ) -> dict[str, Any]:
    """The statement a provider's node would issue for the agreement up to now (unsigned), from the receipts
    after entry *after*, with *changes* applied to the document."""
    record = await consumer.client.agreement(agreement)
    terms = pricing.postpaid_terms(parse_policy(record["agreement"]))
    start = datetime.fromisoformat(record["agreement"]["timestamp"].replace("Z", "+00:00"))
    entries = [msgspec.convert(e, ledger.Entry) for e in (await consumer.client.usage_log(agreement))["entries"]]
    now = datetime.now(UTC)
    document = statements.build(
        statement_id=f"urn:uuid:{uuid.uuid4()}", agreement=agreement, provider=provider.participant.did,
        consumer=consumer.participant.did, start=start, end=now, label=pricing.period_label(start), previous=None,
        terms=terms, evidence=statements.Evidence(
            receipts=statements.receipt_range(entries, after=after, before=statements.time_text(now))),
        issued=now)
    return {**document, **changes}


def signed(signer: Signer, document: dict[str, Any]) -> dict[str, Any]:
    unsigned = {k: v for k, v in document.items() if k != "proof"}
    return proof.sign(unsigned, signer.key, verification_method=signer.key_id,
                      created=statements.time_text(datetime.now(UTC)))


async def deliver(provider: Any, consumer: Any, document: dict[str, Any]) -> tuple[int, Any]:
    """POST *document* to the consumer's statements route as the provider (a request signed with its key)."""
    return await post_signed(provider.participant, f"{consumer.participant.dsp_base}/tds/statements", document)


async def received_statement(provider: Any, consumer: Any, agreement: str) -> dict[str, Any]:
    """A genuine statement, issued by the provider's node and received by the consumer's."""
    status, issued = await api(provider, "POST", "/statements", {"agreement": agreement, "until": "now"})
    assert status == 201, issued

    async def received() -> Any:
        status, body = await api(consumer, "GET", f"/statements/{issued['id']}")
        return body if status == 200 and body["state"] == "received" else None

    return dict(await eventually(received, what="the statement received"))


async def test_a_statement_signed_by_a_strangers_key_is_refused_and_not_kept(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    key = SigningKey.generate()
    stranger = Signer(key, dids.signing_key_id(dids.did_key_for(bytes(key.verify_key))))
    status, body = await deliver(provider, consumer, signed(stranger, await crafted(provider, consumer, agreement)))
    assert status == 401, body
    status, listed = await api(consumer, "GET", "/statements")
    assert status == 200 and listed["statements"] == []


@pytest.mark.parametrize(
    ("case", "rule"),
    [("count", "count"), ("price", "price"), ("gap", "gap")],
    ids=["wrong count", "price not in the agreement", "gap in the receipt range"],
)
async def test_a_statement_that_does_not_match_the_consumers_records_is_disputed_at_once(nodes, case, rule):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    document = await crafted(provider, consumer, agreement, after=1 if case == "gap" else 0)
    if case == "count":
        document["receipts"] = {**document["receipts"], "uses": 5}
    elif case == "price":
        document["prices"] = [{**document["prices"][0], "unitPrice": "0.25"}]
    status, body = await deliver(provider, consumer, signed(provider.participant.signer, document))
    assert status == 200 and body["state"] == "disputed", body
    assert rule in [p["rule"] for p in body["problems"]], body
    assert body["answer"]["@type"] == statements.DISPUTE_TYPE
    status, kept = await api(consumer, "GET", f"/statements/{document['id']}")
    assert status == 200 and kept["state"] == "disputed" and f"{rule}: " in kept["reason"]


async def test_another_agreements_statement_replayed_is_disputed(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    other = await negotiated(provider, consumer)
    genuine = await received_statement(provider, consumer, agreement)
    replay = await crafted(provider, consumer, other, id=genuine["id"])
    status, body = await deliver(provider, consumer, signed(provider.participant.signer, replay))
    assert status == 200 and body["state"] == "disputed", body
    assert "replay" in [p["rule"] for p in body["problems"]], body
    status, kept = await api(consumer, "GET", f"/statements/{genuine['id']}")
    assert status == 200 and kept["state"] == "received" and kept["agreement"] == agreement  # untouched


async def test_a_received_statement_signed_again_and_replayed_is_disputed(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    genuine = await received_statement(provider, consumer, agreement)
    status, body = await deliver(provider, consumer, signed(provider.participant.signer, genuine["document"]))
    assert status == 200 and body["state"] == "disputed", body
    assert "replay" in [p["rule"] for p in body["problems"]], body


async def test_a_statement_for_a_stretch_already_accepted_is_refused_as_double_settlement(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    genuine = await received_statement(provider, consumer, agreement)
    status, body = await api(consumer, "POST", f"/statements/{genuine['id']}/accept")
    assert status == 200 and body["state"] == "accepted", body
    again = await crafted(provider, consumer, agreement)
    status, body = await deliver(provider, consumer, signed(provider.participant.signer, again))
    assert status == 409 and "double settlement" in body["message"] and genuine["id"] in body["message"], body
    status, _ = await api(consumer, "GET", f"/statements/{again['id']}")
    assert status == 404


async def test_an_answer_from_someone_but_the_consumer_is_refused(nodes):
    provider, consumer, other = await nodes.start("acme"), await nodes.start("parts"), await nodes.start("x")
    agreement = await priced(provider, consumer)
    genuine = await received_statement(provider, consumer, agreement)
    forged = signed(other.participant.signer, {**statements.acceptance(genuine["document"], accepted=datetime.now(
        UTC)), "consumer": other.participant.did})
    status, body = await post_signed(other.participant, f"{provider.participant.dsp_base}/tds/statements/answers",
                                     forged)
    assert status == 401, body
    status, shown = await api(provider, "GET", f"/statements/{genuine['id']}")
    assert status == 200 and shown["state"] in ("issued", "delivered") and shown["answer"] is None


@pytest.mark.parametrize(("method", "path"), [("GET", ""), ("POST", "/accept")], ids=["show", "accept"])
async def test_a_hosted_tenant_cannot_reach_another_tenants_statement(nodes, method, path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    tenant = await nodes.host(consumer, "tenant")
    agreement = await priced(provider, consumer)
    genuine = await received_statement(provider, consumer, agreement)
    status, body = await api(tenant, method, f"/statements/{genuine['id']}{path}")
    assert status == 404, body
    status, listed = await api(tenant, "GET", "/statements")
    assert status == 200 and listed["statements"] == []
    status, kept = await api(consumer, "GET", f"/statements/{genuine['id']}")
    assert kept["state"] == "received"


async def test_a_provider_flooding_statements_is_refused_beyond_the_bound_kept_per_agreement(nodes, monkeypatch):
    from connector.services import settlement

    monkeypatch.setattr(settlement, "MAX_KEPT", 3)
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced(provider, consumer)
    for _ in range(3):  # each wrong (it bills no uses): disputed, and kept as evidence
        status, body = await deliver(provider, consumer, signed(provider.participant.signer,
                                                               await crafted(provider, consumer, agreement, after=3)))
        assert status == 200 and body["state"] == "disputed", body
    status, body = await deliver(provider, consumer, signed(provider.participant.signer,
                                                           await crafted(provider, consumer, agreement, after=3)))
    assert status == 409 and "keeps 3 statements" in body["message"], body
    status, listed = await api(consumer, "GET", f"/statements?agreement={agreement}")
    assert status == 200 and len(listed["statements"]) == 3
