"""DSP messages: decoding (open, strict on required fields) and encoding (schema-valid)."""

from __future__ import annotations

import json

import pytest

from connector.protocol import messages as m
from connector.protocol.errors import MessageError
from connector.testing import dsp_validator, shared_dir

SHARED = shared_dir() / "dsp-2025-1"
EXAMPLES = sorted((SHARED / "negotiation" / "example").glob("*.json")) + sorted(
    (SHARED / "catalog" / "example").glob("*request*.json")
) + sorted((SHARED / "transfer" / "example").glob("*.json"))
TYPES = {t.__name__: t for t in (
    m.ContractRequestMessage, m.ContractOfferMessage, m.ContractAgreementMessage,
    m.ContractAgreementVerificationMessage, m.ContractNegotiationEventMessage,
    m.ContractNegotiationTerminationMessage, m.ContractNegotiation, m.ContractNegotiationError,
    m.CatalogRequestMessage, m.DatasetRequestMessage,
    m.TransferRequestMessage, m.TransferStartMessage, m.TransferSuspensionMessage, m.TransferCompletionMessage,
    m.TransferTerminationMessage, m.TransferProcess, m.TransferError,
)}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_spec_examples_decode_and_reencode_schema_valid(path):
    raw = json.loads(path.read_text())
    kind = TYPES[raw["@type"]]
    message = m.decode(raw, kind)
    out = m.encode(message)
    dsp_validator().validate(out)
    for key, value in out.items():
        assert raw.get(key, value) == value


def test_unknown_properties_are_accepted():
    raw = {"@context": [m.DSP_CONTEXT], "@type": "ContractAgreementVerificationMessage", "providerPid": "p",
           "consumerPid": "c", "https://example.com/extension": {"x": 1}}
    assert m.decode(raw, m.ContractAgreementVerificationMessage).providerPid == "p"


def test_prefixed_terms_are_read():
    raw = {"@context": [m.DSP_CONTEXT], "@type": "dspace:ContractNegotiationEventMessage",
           "dspace:providerPid": "p", "dspace:consumerPid": "c", "dspace:eventType": "dspace:ACCEPTED"}
    assert m.decode(raw, m.ContractNegotiationEventMessage).eventType == "ACCEPTED"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"@type": "ContractAgreementVerificationMessage", "providerPid": "p", "consumerPid": "c"}, "@context"),
        ({"@context": [m.DSP_CONTEXT], "@type": "Other", "providerPid": "p", "consumerPid": "c"}, "@type"),
        ({"@context": [m.DSP_CONTEXT], "@type": "ContractAgreementVerificationMessage", "consumerPid": "c"},
         "providerPid"),
        ({"@context": [m.DSP_CONTEXT], "@type": "ContractAgreementVerificationMessage", "providerPid": 5,
          "consumerPid": "c"}, "providerPid"),
    ],
)
def test_missing_or_wrong_fields_name_the_field(raw, path):
    with pytest.raises(MessageError) as info:
        m.decode(raw, m.ContractAgreementVerificationMessage)
    assert info.value.path == path and info.value.status == 400


def test_event_type_is_checked():
    raw = {"@context": [m.DSP_CONTEXT], "@type": "ContractNegotiationEventMessage", "providerPid": "p",
           "consumerPid": "c", "eventType": "DONE"}
    with pytest.raises(MessageError, match="eventType"):
        m.decode(raw, m.ContractNegotiationEventMessage)
