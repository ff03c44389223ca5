"""Settlement statements (connector.protocol.statements): building one from evidence, the consumer's check
against its own records (every rule), the answers, and the offline check of an exported bundle."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.identity import proof as proofs
from connector.identity.multikey import ED25519_PUB, encode_multikey
from connector.protocol import statements as st
from usage_policies import ledger, pricing
from usage_policies import templates as t
from usage_policies.jsonld import parse_policy

AGREEMENT = "urn:uuid:0b7c1a52-6f0e-4a40-9a57-7d1f2f1c0001"
OTHER_AGREEMENT = "urn:uuid:0b7c1a52-6f0e-4a40-9a57-7d1f2f1c0002"
SID = "urn:uuid:5a0c3b9e-1d2f-4e5a-8b6c-000000000001"
PROVIDER_KEY = SigningKey(bytes(range(32)))
CONSUMER_KEY = SigningKey(bytes(range(1, 33)))
MALLORY_KEY = SigningKey(bytes(range(2, 34)))
PROVIDER = dids.did_key_for(bytes(PROVIDER_KEY.verify_key))
CONSUMER = dids.did_key_for(bytes(CONSUMER_KEY.verify_key))
MALLORY = dids.did_key_for(bytes(MALLORY_KEY.verify_key))
AGREED = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
NOV_END = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 2, tzinfo=UTC)
TERMS = pricing.postpaid_terms(parse_policy(t.offer("urn:asset:a", permissions=[{"action": "use", "duty": [
    t.price_duty("0.50", "CNY", tiers=["3:0.25"]), t.price_duty("2.00", "CNY", per="query"),
    t.price_duty("10", "CNY", per="gigabyte"), t.price_duty("100", "CNY", per="period")]}])))


def log(*kinds: str, start: int = 1) -> list[ledger.Entry]:
    """A usage log: 'p' a permitted use, 'd' a denied one, 'x' a duty carried out; one a day from November 11."""
    entries: list[ledger.Entry] = []
    for i, kind in enumerate(kinds):
        fields: dict[str, Any] = {"kind": "use", "decision": "permit" if kind == "p" else "deny"} if kind in "pd" \
            else {"kind": "inform"}
        entries.append(ledger.append(entries[-1] if entries else None, agreement=AGREEMENT, use_id=f"u{i}",
                                     at=f"2026-11-{11 + i:02d}T12:00:00Z", action="use", **fields))
    return entries


ENTRIES = log("p", "p", "d", "x", "p", "p")  # 4 permitted uses on November 11 … 16
EVIDENCE = st.Evidence(receipts=st.receipt_range(ENTRIES, after=0, before=st.time_text(NOV_END)),
                       queries=("q-1", "q-2"), transfers={"t-1": 1_500_000_000})


def statement(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "statement_id": SID, "agreement": AGREEMENT, "provider": PROVIDER, "consumer": CONSUMER, "start": AGREED,
        "end": NOV_END, "label": "2026-11", "previous": None, "terms": TERMS, "evidence": EVIDENCE,
        "issued": NOW}
    return st.build(**{**fields, **changes})


def own(**changes: Any) -> st.Own:
    fields: dict[str, Any] = {
        "agreement": AGREEMENT, "provider": PROVIDER, "consumer": CONSUMER, "terms": TERMS, "agreed": AGREED,
        "previous_id": None, "previous_end": None, "previous_last": 0, "receipts": EVIDENCE.receipts,
        "own_uses": 4, "queries": frozenset({"q-1", "q-2", "q-3"}), "transfers": {"t-1": 1_500_000_000},
        "now": NOW}
    return st.Own(**{**fields, **changes})


def sign(document: dict[str, Any], key: SigningKey, did: str) -> dict[str, Any]:
    return proofs.sign(document, key, verification_method=dids.signing_key_id(did), created="2026-12-02T00:00:00Z")


def rules(problems: list[st.Problem]) -> set[str]:
    return {p.rule for p in problems}


# -- evidence -----------------------------------------------------------------------------------------------------

def test_a_receipt_range_covers_the_entries_logged_before_the_end_counting_permitted_uses():
    got = st.receipt_range([*ENTRIES, *log(*"ppppppp")[6:]], after=0, before="2026-11-17T00:00:00Z")
    assert got == st.ReceiptRange(first=1, last=6, head=ENTRIES[5].hash, uses=4)


def test_a_receipt_range_continues_after_the_last_one_billed():
    assert st.receipt_range(ENTRIES, after=2, before="2026-12-01T00:00:00Z") == st.ReceiptRange(
        first=3, last=6, head=ENTRIES[5].hash, uses=2)


def test_a_receipt_range_stops_at_a_gap_in_the_log():
    got = st.receipt_range([*ENTRIES[:2], *ENTRIES[3:]], after=0, before="2026-12-01T00:00:00Z")
    assert got is not None and got.last == 2


@pytest.mark.parametrize(("after", "before"), [(6, "2026-12-01T00:00:00Z"), (0, "2026-11-11T12:00:00Z"),
                                               (7, "2026-12-01T00:00:00Z")])
def test_no_entries_in_the_stretch_is_no_receipt_range(after, before):
    assert st.receipt_range(ENTRIES, after=after, before=before) is None


def test_each_basis_has_its_quantity_from_the_evidence():
    evidence = msgspec.structs.replace(EVIDENCE, queries=("q-1", "q-2", "q-1"))
    assert st.quantities(evidence, TERMS) == {pricing.Basis.USE: 4, pricing.Basis.QUERY: 2,
                                              pricing.Basis.GIGABYTE: Decimal("1.5"), pricing.Basis.PERIOD: 1}


@pytest.mark.parametrize(("start", "previous", "begins"), [
    (AGREED, None, True),  # the agreement's first statement, mid-month
    (NOV_END, SID, True),  # a new month
    (datetime(2026, 11, 20, tzinfo=UTC), SID, False),  # the rest of a month closed early
])
def test_a_subscription_is_due_once_for_each_period_begun(start, previous, begins):
    assert st.begins_period(start, previous, "P1M") is begins
    period = st.quantities(st.Evidence(), TERMS, new_period=begins)[pricing.Basis.PERIOD]
    assert period == (1 if begins else 0)


# -- building ------------------------------------------------------------------------------------------------------

def test_a_statement_shows_its_stretch_evidence_lines_and_total():
    doc = statement()
    assert doc["period"] == {"label": "2026-11", "start": "2026-11-10T09:30:00.000000Z",
                             "end": "2026-12-01T00:00:00.000000Z"}
    assert doc["receipts"] == {"first": 1, "last": 6, "head": ENTRIES[5].hash, "uses": 4}
    assert [(x["basis"], x["quantity"], x["amount"]) for x in doc["lines"]] == [
        ("use", "4", "1.75"), ("query", "2", "4.00"), ("gigabyte", "1.500000000", "15.00"), ("period", "1", "100.00")]
    assert doc["total"] == "120.75" and doc["currency"] == "CNY" and doc["rounding"] == "0.01 half-up"


def test_a_platform_share_splits_the_total():
    doc = statement(share=st.Share(platform="did:web:host.example", percent=Decimal("12.5")))
    assert doc["share"] == {"platform": "did:web:host.example", "percent": "12.5", "platformAmount": "15.09",
                            "providerAmount": "105.66"}


def test_the_rest_of_a_period_closed_early_bills_no_second_subscription():
    doc = statement(start=datetime(2026, 11, 20, tzinfo=UTC), previous="urn:uuid:earlier", evidence=st.Evidence())
    assert [x["quantity"] for x in doc["lines"] if x["basis"] == "period"] == ["0"]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"terms": ()}, "no post-paid price"),
    ({"end": AGREED}, "end must come after its start"),
    ({"end": datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)}, "ends with its billing period"),
    ({"label": "2026-12"}, "period is 2026-11"),
    ({"evidence": st.Evidence(transfers={"t-1": -1})}, "cannot be billed"),
    ({"share": st.Share(platform="did:web:h", percent=Decimal(101))}, "between 0 and 100"),
])
def test_a_statement_the_node_cannot_issue_is_refused(changes, reason):
    with pytest.raises(st.StatementError, match=reason):
        statement(**changes)


# -- the consumer's check: every rule ----------------------------------------------------------------------------

def test_an_honest_statement_passes():
    assert st.check(sign(statement(), PROVIDER_KEY, PROVIDER), own()) == []


def test_an_honest_statement_after_an_earlier_one_passes():
    later = log("p", "p", "d", "x", "p", "p", "p", "d", "p")
    receipts = st.receipt_range(later, after=6, before="2027-01-01T00:00:00Z")
    doc = statement(start=NOV_END, end=datetime(2027, 1, 1, tzinfo=UTC), label="2026-12", previous=SID,
                    evidence=st.Evidence(receipts=receipts), statement_id=SID[:-1] + "2")
    mine = own(previous_id=SID, previous_end=NOV_END, previous_last=6, receipts=receipts, own_uses=2,
               queries=frozenset(), transfers={}, now=datetime(2027, 1, 2, tzinfo=UTC))
    assert st.check(doc, mine) == []


def test_the_rest_of_a_period_closed_early_passes_without_a_second_subscription():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    doc = statement(start=start, previous="urn:uuid:earlier", evidence=st.Evidence())
    mine = own(previous_id="urn:uuid:earlier", previous_end=start, previous_last=6, receipts=None, own_uses=0,
               queries=frozenset(), transfers={})
    assert st.check(doc, mine) == []


Tamper = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Tamper:
    def tamper(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return tamper


TAMPERED: dict[str, tuple[Tamper, st.Own, str]] = {
    "not a statement": (_set("@type", "https://w3id.org/tds/v1#UsageStatementAcceptance"), own(), "document"),
    "an id that is not a urn:uuid": (_set("id", "statement-1"), own(), "document"),
    "another agreement's statement": (_set("agreement", OTHER_AGREEMENT), own(), "replay"),
    "a statement received before": (lambda doc: None, own(seen_ids=frozenset({SID})), "replay"),
    "other parties": (_set("consumer", MALLORY), own(), "parties"),
    "an unreadable period": (_set("period.start", "November"), own(), "period"),
    "a period without its zone": (_set("period.start", "2026-11-10T09:30:00"), own(), "period"),
    "a period not starting at the agreement": (_set("period.start", "2026-11-01T00:00:00Z"), own(), "period"),
    "a period past its billing period": (_set("period.end", "2026-12-02T00:00:00Z"), own(), "period"),
    "a period ending before it starts": (_set("period.end", "2026-11-10T00:00:00Z"), own(), "period"),
    "a period ending in the future": (lambda doc: None, own(now=datetime(2026, 11, 30, tzinfo=UTC)), "period"),
    "a period with another label": (_set("period.label", "2026-12"), own(), "period"),
    "another previous statement": (_set("previous", "urn:uuid:nothing"), own(), "previous"),
    "no previous where there is one": (lambda doc: None, own(previous_id="urn:uuid:earlier"), "previous"),
    "a lower price quoted": (_set("prices.0.unitPrice", "0.40"), own(), "price"),
    "a price not in the agreement": (lambda doc: doc["prices"].append({**doc["prices"][0], "basis": "hour"}), own(),
                                     "price"),
    "another currency": (_set("currency", "USD"), own(), "price"),
    "another rounding": (_set("rounding", "1 up"), own(), "price"),
    "a gap before the receipts": (_set("receipts.first", 3), own(), "gap"),
    "an overlap with the receipts billed": (lambda doc: None, own(previous_last=2), "gap"),
    "a receipt range ending before it starts": (_set("receipts.last", 0), own(), "receipts"),
    "a head not in the log": (_set("receipts.head", "0" * 64), own(), "receipts"),
    "a last receipt not in the log": (_set("receipts.last", 5), own(), "receipts"),
    "receipts the consumer does not have": (lambda doc: None, own(receipts=None), "receipts"),
    "an unreadable receipt range": (_set("receipts", {"first": "one"}), own(), "receipts"),
    "a wrong count of uses": (_set("receipts.uses", 5), own(), "count"),
    "more uses billed than logged": (lambda doc: None, own(own_uses=3), "count"),
    "no receipts for uses logged": (_set("receipts", None), own(), "count"),
    "a query not answered": (_set("queries", ["q-1", "q-9"]), own(), "queries"),
    "unreadable queries": (_set("queries", "q-1"), own(), "queries"),
    "a transfer of another size": (_set("transfers.0.bytes", 2_000_000_000), own(), "transfers"),
    "a transfer not completed": (_set("transfers.0.providerPid", "t-9"), own(), "transfers"),
    "a transfer listed twice": (lambda doc: doc["transfers"].append(doc["transfers"][0]), own(), "transfers"),
    "an unreadable transfer": (_set("transfers.0", "t-1"), own(), "transfers"),
    "unreadable transfers": (_set("transfers", {"t-1": 1}), own(), "transfers"),
    "a line that does not add up": (_set("lines.0.amount", "1.76"), own(), "amount"),
    "a line at another price": (_set("lines.1.unitPrice", "2.50"), own(), "amount"),
    "a total that does not add up": (_set("total", "120.76"), own(), "amount"),
    "a quantity beyond any bill": (_set("receipts.uses", 10**20), own(receipts=st.ReceiptRange(
        first=1, last=6, head=ENTRIES[5].hash, uses=10**20), own_uses=10**20), "amount"),
    "a negative transfer": (_set("transfers.0.bytes", -1), own(transfers={"t-1": -1}), "amount"),
    "a share that does not add up": (_set("share", {"platform": "did:web:h", "percent": "10",
                                                    "platformAmount": "12.00", "providerAmount": "100.00"}), own(),
                                     "share"),
    "a share at another percentage": (_set("share", {"platform": "did:web:h", "percent": "10",
                                                     "platformAmount": "24.15", "providerAmount": "96.60"}), own(),
                                      "share"),
    "an unreadable share": (_set("share", {"platform": "did:web:h", "percent": "NaN", "platformAmount": "NaN",
                                           "providerAmount": "0"}), own(), "share"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_a_statement_that_does_not_match_the_consumers_records_is_disputed_under_its_rule(name):
    tamper, mine, rule = TAMPERED[name]
    doc = copy.deepcopy(statement())
    tamper(doc)
    problems = st.check(doc, mine)
    assert rule in rules(problems), problems


@pytest.mark.parametrize("name", ["another agreement's statement", "not a statement"])
def test_a_statement_for_something_else_is_not_checked_further(name):
    tamper, mine, rule = TAMPERED[name]
    doc = copy.deepcopy(statement())
    tamper(doc)
    assert rules(st.check(doc, mine)) == {rule}


@pytest.mark.parametrize(("first", "previous_last", "contested"), [
    (4, 1, ("2", "3")),  # a gap: receipts 2 and 3 never billed
    (3, 5, ("3", "4", "5")),  # an overlap: receipts 3 to 5 billed twice
])
def test_a_gap_or_overlap_names_the_receipts_it_contests(first, previous_last, contested):
    doc = statement()
    doc["receipts"]["first"] = first
    [gap] = [p for p in st.check(doc, own(previous_last=previous_last)) if p.rule == "gap"]
    assert gap.contested == contested and gap.expected == str(previous_last + 1)


def test_an_overlap_from_far_back_contests_a_bounded_list():
    doc = statement()
    doc["receipts"]["first"] = -(10**18)  # unbounded, the list of receipts contested would never be written
    [gap] = [p for p in st.check(doc, own()) if p.rule == "gap"]
    assert len(gap.contested) == st.MAX_CONTESTED and gap.contested[0] == str(-(10**18))


def test_a_wrong_count_gives_the_consumers_own_figure():
    doc = statement()
    doc["receipts"]["uses"] = 5
    [count] = [p for p in st.check(doc, own()) if p.rule == "count"]
    assert (count.contested, count.expected) == (("1-6",), "4")


def test_a_subscription_billed_twice_in_one_period_is_disputed():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    doc = statement(start=start, previous=None, evidence=st.Evidence())  # bills the period again
    doc["previous"] = "urn:uuid:earlier"
    mine = own(previous_id="urn:uuid:earlier", previous_end=start, previous_last=6, receipts=None, own_uses=0,
               queries=frozenset(), transfers={})
    assert rules(st.check(doc, mine)) == {"amount"}


def test_a_dispute_quotes_the_providers_text_cut_short():
    doc = statement()
    doc["period"]["label"] = "x" * 100_000
    [label] = [p for p in st.check(doc, own()) if "labelled" in p.detail]
    assert len(label.detail) < 200


# -- answers -------------------------------------------------------------------------------------------------

def test_an_acceptance_binds_the_exact_signed_statement():
    signed = sign(statement(), PROVIDER_KEY, PROVIDER)
    answer = st.acceptance(signed, accepted=NOW)
    assert answer["statementDigest"] == st.digest(signed) != st.digest(statement())
    assert (answer["statement"], answer["total"], answer["consumer"]) == (SID, "120.75", CONSUMER)


def test_a_dispute_names_each_problem_and_the_consumers_own_total():
    problems = [st.Problem(rule="count", detail="x", contested=tuple(map(str, range(2000))), expected="4")] * 150
    answer = st.dispute(statement(), problems, disputed=NOW, own_total=st.own_total(own()))
    assert len(answer["problems"]) == st.MAX_PROBLEMS
    assert len(answer["problems"][0]["contested"]) == st.MAX_CONTESTED and answer["problems"][0]["expected"] == "4"
    assert answer["consumerTotal"] == "122.75"  # its own figure counts q-3, which the statement left out


def test_the_consumers_own_figure_bills_no_second_subscription_in_a_period():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    mine = own(previous_id="urn:uuid:earlier", previous_end=start, previous_last=6, receipts=None, own_uses=0,
               queries=frozenset(), transfers={})
    assert st.own_total(mine) == "0.00"


# -- signatures ----------------------------------------------------------------------------------------------------

def test_a_statement_signed_by_its_provider_verifies():
    st.verify_signed(sign(statement(), PROVIDER_KEY, PROVIDER), dids.did_key_document(PROVIDER),
                     signer_field="provider")


@pytest.mark.parametrize(("document", "did_document", "reason"), [
    (sign(statement(), MALLORY_KEY, MALLORY), dids.did_key_document(PROVIDER), "does not verify"),
    (sign(statement(), MALLORY_KEY, MALLORY), dids.did_key_document(MALLORY), "not that of the document's provider"),
    ({**sign(statement(), PROVIDER_KEY, PROVIDER), "total": "1.00"}, dids.did_key_document(PROVIDER),
     "does not verify"),
    (statement(), dids.did_key_document(PROVIDER), "does not verify"),
])
def test_a_statement_not_signed_by_its_provider_is_refused(document, did_document, reason):
    with pytest.raises(st.StatementError, match=reason):
        st.verify_signed(document, did_document, signer_field="provider")


# -- exported bundles, checked offline ----------------------------------------------------------------------------

WEB = "did:web:provider.example"


def web_document(key: SigningKey = PROVIDER_KEY) -> dict[str, Any]:
    return dids.did_document(WEB, signing_multikey=encode_multikey(ED25519_PUB, bytes(key.verify_key)))


def signed_statement(**changes: Any) -> dict[str, Any]:
    return sign(statement(**changes), PROVIDER_KEY, PROVIDER)


def accepted(signed: dict[str, Any], key: SigningKey = CONSUMER_KEY, did: str = CONSUMER) -> dict[str, Any]:
    return sign({**st.acceptance(signed, accepted=NOW), "consumer": did}, key, did)


def test_an_accepted_statement_verifies_offline():
    signed = signed_statement()
    assert st.verify_bundle(st.bundle(signed, accepted(signed), {})) == st.Verified(
        statement=SID, agreement=AGREEMENT, total="120.75", answer="accepted")


def test_a_disputed_statement_verifies_offline_with_the_consumers_reasons():
    signed = signed_statement()
    answer = sign(st.dispute(signed, [st.Problem(rule="count", detail="5 uses, not 4")], disputed=NOW,
                             own_total="120.25"), CONSUMER_KEY, CONSUMER)
    got = st.verify_bundle(st.bundle(signed, answer, {}))
    assert (got.answer, got.notes) == ("disputed", ("count: 5 uses, not 4",))


def test_a_bare_statement_by_a_did_key_verifies_from_the_did_itself():
    assert st.verify_bundle(signed_statement()).answer == "none"


def test_a_did_web_statement_verifies_with_the_embedded_did_document():
    signed = sign(statement(provider=WEB), PROVIDER_KEY, WEB)
    assert st.verify_bundle(st.bundle(signed, None, {WEB: web_document()})).statement == SID


def _forged_did_key_bundle() -> dict[str, Any]:
    """Mallory signs as the provider's did:key and embeds a DID document that lists her key under that DID."""
    forged = sign(statement(), MALLORY_KEY, PROVIDER)
    fake = dids.did_document(PROVIDER, signing_multikey=encode_multikey(ED25519_PUB, bytes(MALLORY_KEY.verify_key)))
    return st.bundle(forged, None, {PROVIDER: fake})


def _add_line(doc: dict[str, Any]) -> None:
    doc["lines"].append(doc["lines"][0])
    doc["total"] = pricing.amount_text(Decimal(doc["total"]) + Decimal(doc["lines"][0]["amount"]))


def _bill_more_uses(doc: dict[str, Any]) -> None:
    doc["lines"][0] = {**doc["lines"][0], "quantity": "5", "amount": "2.00"}
    doc["total"] = "121.00"


def _resigned(change: Callable[[dict[str, Any]], None], **build: Any) -> dict[str, Any]:
    """The provider signs a statement whose arithmetic it changed."""
    doc = statement(**build)
    change(doc)
    return sign(doc, PROVIDER_KEY, PROVIDER)


BAD_BUNDLES: dict[str, tuple[Callable[[], Any], str]] = {
    "a tampered statement": (lambda: st.bundle({**signed_statement(), "total": "1.00"}, None, {}), "does not verify"),
    "a tampered answer": (lambda: st.bundle(signed_statement(), {**accepted(signed_statement()), "total": "1.00"}, {}),
                          "does not verify"),
    "an answer for another statement": (
        lambda: st.bundle(signed_statement(), accepted(signed_statement(label="2026-11", issued=AGREED)), {}),
        "another statement"),
    "an answer not by the consumer": (lambda: st.bundle(signed_statement(), accepted(
        signed_statement(), MALLORY_KEY, MALLORY), {}), "not by the statement's consumer"),
    "an answer by the provider for the consumer": (lambda: st.bundle(signed_statement(), sign(
        st.acceptance(signed_statement(), accepted=NOW), PROVIDER_KEY, PROVIDER), {}), "does not verify"),
    "an answer that is neither": (lambda: st.bundle(signed_statement(), {"@type": "Note"}, {}), "neither"),
    "no DID document for a did:web": (lambda: st.bundle(sign(statement(provider=WEB), PROVIDER_KEY, WEB), None, {}),
                                      "no DID document for did:web:provider.example"),
    "a did:web document with another key": (lambda: st.bundle(
        sign(statement(provider=WEB), PROVIDER_KEY, WEB), None, {WEB: web_document(MALLORY_KEY)}), "does not verify"),
    "a did:web document with a malformed key list": (lambda: st.bundle(
        sign(statement(provider=WEB), PROVIDER_KEY, WEB), None, {WEB: {**web_document(), "assertionMethod": [1]}}),
        "does not verify"),
    "a did:key document forged in the bundle": (_forged_did_key_bundle, "does not verify"),
    "lines that do not add up": (lambda: _resigned(_set("total", "99.00")), "add up to 120.75"),
    "a line at a price not quoted": (lambda: _resigned(_set("lines.1.amount", "5.00")), "comes to 4.00"),
    "a line billed twice": (lambda: _resigned(_add_line), "one line for each price"),
    "a line without its price": (lambda: _resigned(lambda d: d["prices"].pop()), "one line for each price"),
    "a line in another currency": (lambda: _resigned(_set("currency", "USD")), "currency"),
    "a quantity the evidence does not list": (lambda: _resigned(_bill_more_uses), "evidence lists 4"),
    "a share that does not add up": (lambda: _resigned(
        _set("share.providerAmount", "100.00"), share=st.Share(platform="did:web:h", percent=Decimal(10))), "10%"),
    "unreadable lines": (lambda: _resigned(_set("lines", "all of them")), "cannot be read"),
    "an unreadable quantity": (lambda: _resigned(_set("lines.0.quantity", "1e3")), "cannot be read"),
    "not a bundle": (lambda: {"@type": "Note"}, "not a usage statement"),
    "not an object": (lambda: ["statement"], "not a usage statement"),
    "a bundle without a statement": (lambda: {"@type": st.BUNDLE_TYPE, "statement": None}, "no usage statement"),
}


@pytest.mark.parametrize("name", BAD_BUNDLES)
def test_a_bundle_that_does_not_hold_up_is_refused_naming_why(name):
    make, reason = BAD_BUNDLES[name]
    with pytest.raises(st.StatementError, match=reason):
        st.verify_bundle(make())


def test_a_disputes_unreadable_problems_are_left_out_not_fatal():
    signed = signed_statement()
    answer = sign({**st.dispute(signed, [], disputed=NOW, own_total=None), "problems": 7}, CONSUMER_KEY, CONSUMER)
    assert st.verify_bundle(st.bundle(signed, answer, {})).notes == ()


# -- errors are the connector's ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "status"), [(st.StatementError, 400), (st.StatementStateError, 409)])
def test_statement_errors_render_as_client_errors(error, status):
    from connector.errors import TdsError

    assert issubclass(error, TdsError) and error("x").status == status
