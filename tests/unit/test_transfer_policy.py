"""Which terms of an agreement decide a transfer (connector.protocol.policy.decide_transfer)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.protocol.policy import PeerFacts, decide_transfer, transfer_view
from usage_policies import templates

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PEER = PeerFacts("did:web:parts.example", region="CN-GD")


def policy(*constraints):
    return {"@id": "urn:p", "@type": "Agreement", "target": "qi",
            "permission": [{"action": "use", "constraint": list(constraints)}]}


def test_use_time_terms_are_left_to_usage_control():
    usage = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 3),
                              templates.for_duration("qi", "P30D"), templates.log_each_use("qi"))
    assert decide_transfer(usage, PEER, target="qi", now=NOW).permitted
    assert transfer_view(usage)["permission"][0]["constraint"] == []


@pytest.mark.parametrize(("constraint", "permitted"), [
    ({"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z"}, False),
    ({"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2027-01-01T00:00:00Z"}, True),
    ({"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN-BJ"}, False),
    ({"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN"}, True),
])
def test_dates_and_regions_decide_now(constraint, permitted):
    purpose = {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"}
    decision = decide_transfer(policy(constraint, purpose), PEER, target="qi", now=NOW)
    assert decision.permitted is permitted, decision.reasons
