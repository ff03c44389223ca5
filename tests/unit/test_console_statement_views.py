"""The statements pages' pure parts: a statement as the list shows it, the agreements a statement can be issued
for, the policy form's price fields, and a statement's page rendered for each side (buttons, the dispute's
problems escaped)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from connector.errors import BadRequest
from connector.http.console import i18n, publishing, statements
from connector.http.console.api import ManagementApi
from connector.http.console.view import BASE, Console
from usage_policies import templates

STATEMENT = "urn:uuid:s-1"
SUMMARY: dict[str, Any] = {
    "id": STATEMENT, "agreement": "urn:uuid:a-1", "role": "consumer", "state": "received",
    "counterparty": "did:web:acme", "period": {"label": "2026-11", "start": "2026-11-01T00:00:00Z",
                                               "end": "2026-11-20T00:00:00Z"},
    "currency": "CNY", "quantities": {"use": "12"}, "total": "30.00", "share": None, "reason": "",
    "lines": [{"basis": "use", "quantity": "12", "unitPrice": "2.50", "tiers": [], "amount": "30.00",
               "currency": "CNY"}],
    "issued": "2026-11-20T00:00:01Z", "updated": "2026-11-20T00:00:02Z",
    "document": {"receipts": {"first": 1, "last": 13, "head": "sha-256:" + "cd" * 32, "uses": 12}, "previous": None},
    "answer": None}


def t(key: str, **fields: object) -> str:
    return i18n.translate("en", key, **fields)


def test_a_statement_row_keeps_what_the_list_shows() -> None:
    row = statements.statement_row(SUMMARY)
    assert (row.id, row.period, row.role, row.counterparty, row.total, row.currency, row.state) == (
        STATEMENT, "2026-11", "consumer", "did:web:acme", "30.00", "CNY", "received")
    assert row.quantities == [("use", "12")]


def test_a_statement_row_of_odd_input_is_empty_not_an_error() -> None:
    row = statements.statement_row({"period": "x", "quantities": ["y"]})
    assert (row.id, row.period, row.quantities) == ("", "", [])


def agreement(role: str, policy: dict[str, Any], state: str = "FINALIZED") -> dict[str, Any]:
    return {"id": f"urn:uuid:{role}-{state}", "role": role, "state": state,
            "agreement": {**policy, "@id": "urn:uuid:p", "target": "urn:tds:asset:x"}}


PAID = templates.policy_from_options(price=templates.price_duty("2.50", "CNY"))
PREPAID = templates.policy_from_options(price=templates.price_duty("2.50", "CNY", prepaid=True))
FREE = templates.policy_from_options()


def test_a_statement_is_issued_only_for_a_post_paid_price_the_participant_provides_in_force() -> None:
    found = [agreement("provider", PAID), agreement("provider", PREPAID), agreement("provider", FREE),
             agreement("consumer", PAID), agreement("provider", PAID, "REVOKED"),
             agreement("provider", {"permission": "nonsense"})]
    assert [a["id"] for a in statements.priced_agreements(found)] == ["urn:uuid:provider-FINALIZED"]


def test_the_policy_forms_price_fields_make_the_duty() -> None:
    form = {"price": "0.80", "currency": "CNY", "price_per": "gigabyte", "billing_period": "P1W",
            "rounding": "0.1 half-even", "tiers": "100:0.50, 1000:0.30"}
    assert publishing.price_option(form, t) == templates.price_duty(
        "0.80", "CNY", per="gigabyte", period="P1W", rounding="0.1 half-even", tiers=["100:0.50", "1000:0.30"])
    assert publishing.price_option({"currency": "CNY"}, t) is None


@pytest.mark.parametrize(("form", "message"), [
    ({"price": "2.50"}, "A price needs its currency, a code such as CNY."),
    ({"price": "2.50", "currency": "C NY"}, "A price needs its currency, a code such as CNY."),
    ({"price": "-2", "currency": "CNY"}, "the price must be a plain non-negative decimal number"),
    ({"price": "2", "currency": "CNY", "price_per": "query"}, "a price here is per use, gigabyte, period, not 'query'"),
    ({"price": "2", "currency": "CNY", "billing_period": "P1Y"}, "the billing period is one of P1M, P1W, P1D"),
    ({"price": "2", "currency": "CNY", "tiers": "10"}, "a price tier is '<from>:<unit price>'"),
])
def test_a_bad_price_field_is_a_readable_refusal(form: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        publishing.price_option(form, t)
    assert message in refused.value.message


def render(template: str, **values: Any) -> str:
    console = Console(ManagementApi([]), None, None)  # type: ignore[arg-type]  # rendering needs neither
    return console.env.get_template(template).render(
        t=functools.partial(i18n.translate, "en"), lang="en", base=BASE, token=None, csrf="c-1", flashes=[],
        path=f"{BASE}/statements/x", nav=[], next_lang="zh", **values)


def statement_page(found: dict[str, Any]) -> str:
    answer = found.get("answer")
    return render("statement.html", s=statements.statement_row(found), found=found, document=found["document"],
                  answer=answer, disputed=answer is not None and "problems" in answer, period=found["period"],
                  max_reason=statements.MAX_REASON)


def test_a_received_statement_offers_the_consumer_accept_and_dispute() -> None:
    page = statement_page(SUMMARY)
    assert f'action="{BASE}/statements/urn%3Auuid%3As-1/accept" data-confirm=' in page
    assert f'action="{BASE}/statements/urn%3Auuid%3As-1/dispute"' in page and 'maxlength="1000"' in page
    assert page.count('name="csrf" value="c-1"') == 2 and 'id="issue-next"' not in page
    assert "entries 1 to 13 of the usage log (12 permitted uses), the last with hash sha-256:cdcdcdcdcdcdcdcd…" in page


def test_a_disputed_statement_shows_each_problem_escaped_and_no_buttons() -> None:
    found = {**SUMMARY, "role": "provider", "state": "disputed", "answer": {
        "problems": [{"rule": "count", "detail": "<b>11</b> uses, not 12", "contested": ["1-13"], "expected": "11"},
                     {"rule": "manual", "detail": "as the operator wrote"}],
        "consumerTotal": "27.50", "disputed": "2026-11-21T08:00:00Z"}}
    page = statement_page(found)
    assert 'data-answer="disputed"' in page and "the consumer&#39;s own total: 27.50" in page
    assert '<tr data-rule="count">' in page and "&lt;b&gt;11&lt;/b&gt; uses, not 12" in page and "<b>11" not in page
    assert '<tr data-rule="manual">' in page  # a problem without contested items or a figure of its own
    assert 'id="respond"' not in page and 'id="issue-next"' in page


def test_the_list_renders_quantities_in_words_and_the_issue_form() -> None:
    page = render("statements.html", statements=[statements.statement_row(SUMMARY)], period="", role="",
                  agreement="", roles=statements.ROLES, issuable=[{"id": "urn:uuid:a-2", "consumerDid": "did:web:p"}])
    assert f'<tr data-statement="{STATEMENT}">' in page and "12 uses" in page and "30.00 CNY" in page
    assert '<option value="urn:uuid:a-2">' in page and f'action="{BASE}/statements/issue"' in page
