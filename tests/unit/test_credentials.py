from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from connector.identity import credentials
from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
DID = "did:web:tds.example.com:participants:acme"


def _subject(keys: ParticipantKeys, did: str = DID) -> credentials.Subject:
    return credentials.Subject(
        id=did, legal_name="ACME Co.", region="CN-GD", dsp_endpoint="https://tds.example.com/x/api/dsp/2025-1",
        dsp_version="2025-1", industry="manufacturing", signing_key=keys.signing_multikey,
        agreement_key=keys.agreement_multikey,
    )


def _document(keys: ParticipantKeys, did: str = DID) -> dict:
    return dids.did_document(did, signing_multikey=keys.signing_multikey, agreement_multikey=keys.agreement_multikey)


def test_issue_and_verify_round_trip():
    keys = ParticipantKeys.generate()
    sd = credentials.issue(_subject(keys), keys.signing, now=NOW)
    assert sd["type"] == ["VerifiableCredential", "TdsSelfDescription"]
    assert sd["proof"]["cryptosuite"] == "eddsa-jcs-2022"
    assert sd["proof"]["verificationMethod"] == f"{DID}#key-1"
    subject = credentials.verify(sd, _document(keys), now=NOW + timedelta(days=1))
    assert subject == _subject(keys)


def test_did_key_self_description():
    keys = ParticipantKeys.generate()
    did = dids.did_key_for(bytes(keys.verify_key))
    sd = credentials.issue(_subject(keys, did), keys.signing, now=NOW)
    assert credentials.verify(sd, dids.did_key_document(did), now=NOW).id == did


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda sd: sd["credentialSubject"].__setitem__("region", "US"), "proof"),
        (lambda sd: sd["credentialSubject"].__setitem__("id", "did:web:evil"), "self-issued"),
        (lambda sd: sd.__setitem__("type", ["VerifiableCredential"]), "type"),
        (lambda sd: sd.__setitem__("validUntil", "2026-05-01T07:00:00Z"), "not valid now"),
        (lambda sd: sd.__setitem__("validFrom", "yesterday"), "dateTime"),
        (lambda sd: sd.pop("proof"), "proof"),
    ],
    ids=["tampered", "other-subject", "type", "expired", "bad-time", "no-proof"],
)
def test_bad_self_descriptions_are_refused(mutate, reason):
    keys = ParticipantKeys.generate()
    sd = copy.deepcopy(credentials.issue(_subject(keys), keys.signing, now=NOW))
    mutate(sd)
    with pytest.raises(credentials.SelfDescriptionError, match=reason):
        credentials.verify(sd, _document(keys), now=NOW + timedelta(hours=1))


def test_signed_by_another_key_is_refused():
    keys, other = ParticipantKeys.generate(), ParticipantKeys.generate()
    sd = credentials.issue(_subject(keys), other.signing, now=NOW)
    with pytest.raises(credentials.SelfDescriptionError, match="does not verify"):
        credentials.verify(sd, _document(keys), now=NOW)


def test_keys_repr_never_shows_secrets():
    keys = ParticipantKeys.generate()
    assert bytes(keys.signing).hex() not in repr(keys)
    assert "ed25519=" in repr(keys)
