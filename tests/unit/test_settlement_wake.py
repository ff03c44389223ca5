"""Which finalized agreements make the settlement look for statements due: only those the node is paid for."""

from __future__ import annotations

from typing import Any

import pytest

from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.services.settlement import owes_statements
from connector.store.records import AgreementRecord

PRICED = {"@type": "Agreement", "permission": [{"action": "use", "duty": [{
    "action": "compensate", "constraint": [{"leftOperand": "payAmount", "operator": "eq", "rightOperand": "0.10",
                                            "unit": "http://dbpedia.org/resource/Euro"}]}]}]}
FREE = {"@type": "Agreement", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]}


def record(role: Role, agreement: dict[str, Any]) -> AgreementRecord:
    return AgreementRecord(id="urn:uuid:a", negotiation_id="n", role=role, provider_did="did:web:p",
                           consumer_did="did:web:c", asset_id="x", agreement=agreement,
                           state=AgreementState.FINALIZED)


@pytest.mark.parametrize(("role", "agreement", "owes"), [
    (Role.PROVIDER, PRICED, True),
    (Role.PROVIDER, FREE, False),  # nothing to bill: no read of every priced agreement on each negotiation
    (Role.CONSUMER, PRICED, False),  # the consumer is billed, it issues nothing
    (Role.CONSUMER, FREE, False),
])
def test_only_a_priced_agreement_held_as_provider_makes_statements_fall_due(role, agreement, owes):
    assert owes_statements(record(role, agreement)) is owes
