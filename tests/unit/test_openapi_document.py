"""The management API's OpenAPI document as ``connector.http.openapi`` derives it from the route table and the
structs: how the processes' states and roles are described. No node, no socket."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from connector.http import management, openapi
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    # The handlers are not called: only the route table is read.
    site = management.ManagementSite(**{f.name: None for f in dataclasses.fields(management.ManagementSite)})
    components: dict[str, Any] = openapi.document(management.routes(site))["components"]["schemas"]
    return components


@pytest.mark.parametrize(("name", "kind"), [
    ("NegotiationState", NegotiationState), ("TransferState", TransferState), ("AgreementState", AgreementState),
    ("Role", Role),
])
def test_each_enum_is_documented_with_its_wire_values_under_a_readable_name(schemas, name, kind):
    assert sorted(schemas[name]["enum"]) == sorted(member.value for member in kind)


@pytest.mark.parametrize(("record", "state"), [
    ("NegotiationRecord", "NegotiationState"), ("TransferOut", "TransferState"), ("AgreementOut", "AgreementState"),
])
def test_a_records_state_and_role_refer_to_their_enums(schemas, record, state):
    properties = schemas[record]["properties"]
    assert properties["state"] == {"$ref": f"#/components/schemas/{state}"}
    assert properties["role"] == {"$ref": "#/components/schemas/Role"}


def test_no_reference_names_a_module(schemas):
    text = json.dumps(schemas)
    assert '"$ref": "#/components/schemas/' in text
    assert '"$ref": "#/components/schemas/connector.' not in text


def test_an_agreement_is_documented_with_its_revocation_and_data_deletion(schemas):
    properties = schemas["AgreementOut"]["properties"]
    assert {"revocation", "dataDeleted", "state", "assetId"} <= set(properties)
    assert set(schemas["RevocationOut"]["properties"]) == {"reason", "revokedAt", "status"}


def test_a_use_documents_the_dry_run_and_that_a_use_id_is_not_always_required(schemas):
    use = schemas["UseIn"]
    assert {"dryRun", "deliver", "useId"} <= set(use["properties"])
    assert use["required"] == ["agreementId"] and use["additionalProperties"] is False
