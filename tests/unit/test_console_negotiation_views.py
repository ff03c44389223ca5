"""The discover and negotiations pages' pure parts: steps and their states, the live message, a catalog read for
the page, and a negotiation still under way rendered with its live element and buttons."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from connector.http.console import i18n, negotiations
from connector.http.console.api import ManagementApi
from connector.http.console.discover import MAX_DATASETS, catalog_view
from connector.http.console.negotiations import live_message, progress_text, state_after, steps_of
from connector.http.console.view import BASE, Console


@pytest.mark.parametrize(("detail", "state"), [
    ("ContractRequestMessage (opening)", "REQUESTED"),
    ("ContractOfferMessage (opening) from did:web:p", "OFFERED"),
    ("ContractNegotiationEventMessage:ACCEPTED", "ACCEPTED"),
    ("ContractAgreementMessage from did:web:p (signed by the provider)", "AGREED"),
    ("ContractAgreementVerificationMessage", "VERIFIED"),
    ("ContractNegotiationEventMessage:FINALIZED from did:web:p", "FINALIZED"),
    ("ContractNegotiationTerminationMessage: no budget", "TERMINATED"),
    ("refused ContractAgreementMessage: not allowed", ""),
    ("", ""),
])
def test_the_state_a_message_moved_to(detail: str, state: str) -> None:
    assert state_after(detail) == state


def negotiation(state: str, *events: tuple[str, str], reason: str = "") -> dict[str, Any]:
    history = [{"seq": i, "at": f"2026-01-01T00:00:0{i}Z", "kind": k, "detail": d} for i, (k, d) in enumerate(events)]
    return {"id": "urn:uuid:n-1", "role": "consumer", "state": state, "reason": reason, "history": history,
            "counterpartyDid": "did:web:p", "assetId": "urn:a", "offerId": "urn:o", "offer": {},
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:01Z"}


def test_steps_and_progress() -> None:
    n = negotiation("AGREED", ("message-out", "ContractRequestMessage (opening)"),
                    ("error", "refused ContractOfferMessage: wrong state"),
                    ("message-in", "ContractAgreementMessage from did:web:p"), ("retry", "delivery failed"))
    steps = steps_of("en", n)
    assert [(s.label, s.state) for s in steps] == [("Sent", "REQUESTED"), ("Refused", ""), ("Received", "AGREED"),
                                                   ("retry", "")]
    assert progress_text(steps) == "REQUESTED → AGREED"


def test_the_live_message_is_final_only_in_a_final_state() -> None:
    under_way = live_message("en", negotiation("REQUESTED", ("message-out", "ContractRequestMessage (opening)")))
    assert under_way["id"] == negotiations.LIVE_ID and under_way["final"] is False
    assert under_way["fields"]["state"] == "REQUESTED" and under_way["fields"]["steps"] == "REQUESTED"
    ended = live_message("zh", negotiation("TERMINATED", reason="no budget"))
    assert ended["final"] is True and ended["fields"]["reason"] == "no budget"
    assert ended["fields"]["note"] == i18n.translate("zh", "negotiations.live.final")


def test_a_catalog_is_read_for_the_page_and_bounded() -> None:
    datasets = [{"@id": f"urn:d{i}", "dct:title": [{"@value": f"T{i}", "@language": "en"}],
                 "hasPolicy": {"@id": f"urn:o{i}", "@type": "Offer", "permission": [{"action": "use"}]}}
                for i in range(MAX_DATASETS + 3)]
    view = catalog_view({"@type": "Catalog", "participantId": "did:web:p", "dataset": datasets,
                         "service": [{"endpointURL": "https://p.example/dsp"}]}, "en")
    assert view.provider == "did:web:p" and view.endpoint == "https://p.example/dsp"
    assert len(view.datasets) == MAX_DATASETS and view.more == 3
    first = view.datasets[0]
    assert first.title == "T0" and first.offers[0].id == "urn:o0"
    assert first.offers[0].sentences == ["Use is allowed"]
    assert catalog_view("not a catalog", "en").datasets == []


def render(template: str, **values: Any) -> str:
    console = Console(ManagementApi([]), None, None)  # type: ignore[arg-type]  # rendering needs neither
    return console.env.get_template(template).render(
        t=functools.partial(i18n.translate, "en"), lang="en", base=BASE, token=None, csrf="c-1", flashes=[],
        path=f"{BASE}/negotiations/x", nav=[], next_lang="zh", **values)


def test_a_negotiation_under_way_follows_itself_and_offers_its_buttons() -> None:
    n = negotiation("OFFERED", ("message-in", "ContractOfferMessage (opening) from did:web:p"),
                    reason="<b>counter</b>")
    live = live_message("en", n)
    page = render("negotiation.html", n=n, steps=steps_of("en", n), earlier=0, live=live["fields"], final=False,
                  live_id=negotiations.LIVE_ID, sentences=["Use is allowed"], raw="{}", agreement_id="", proofs=[],
                  unavailable="", can_accept=True, max_reason=negotiations.MAX_REASON)
    assert f'data-live="{BASE}/negotiations/urn%3Auuid%3An-1/events"' in page
    assert f'action="{BASE}/negotiations/urn%3Auuid%3An-1/accept"' in page
    assert f'action="{BASE}/negotiations/urn%3Auuid%3An-1/terminate" data-confirm=' in page
    assert page.count('name="csrf" value="c-1"') == 2
    assert "&lt;b&gt;counter&lt;/b&gt;" in page and "<b>counter" not in page
    assert 'data-field="note"' in page and 'id="agreement"' not in page
