"""Bitstring Status List v1.0: the encoded bits, the signed list credential, and a credential's status."""

from __future__ import annotations

import base64
import copy
import gzip
from datetime import timedelta

import pytest
from vc_setup import MEMBERSHIP, NOW, credential, party

from connector.identity import proof, status_list, vc
from connector.identity.credentials import VC_CONTEXT, utc_text
from connector.identity.keys import ParticipantKeys, Signer
from connector.identity.status_list import (
    MIN_ENTRIES,
    Bitstring,
    Status,
    StatusListError,
    StatusState,
)
from connector.identity.vc import Check

ISSUER = party("alliance")
HOLDER = party("acme")
URL = "https://alliance.example/participants/alliance/status/1"
LATER = NOW + timedelta(minutes=1)

#: The example status list of Bitstring Status List v1.0 §2.2: 16 KB of zeros.
SPEC_EXAMPLE = "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA"


def _encoded(raw: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: 16 MB of zeros in 16 KB of GZIP: sixteen times what a list may inflate to.
ZIP_BOMB = _encoded(gzip.compress(bytes(16 * 1024 * 1024)))


# ---------------------------------------------------------------------------------------------------------
# The bits


def test_the_specifications_example_decodes_to_16_kb_of_zeros():
    bits = Bitstring.decode(SPEC_EXAMPLE)
    assert len(bits) == MIN_ENTRIES == 131_072
    assert not any(bits[i] for i in range(len(bits)))


def test_index_0_is_the_left_most_bit():
    bits = Bitstring()
    bits.set(0)
    bits.set(15)
    raw = gzip.decompress(base64.urlsafe_b64decode(bits.encode()[1:] + "=="))
    assert raw[:2] == b"\x80\x01"
    assert len(raw) == 16 * 1024


def test_set_get_and_clear():
    bits = Bitstring()
    assert not bits[94567]
    bits.set(94567)
    assert bits[94567] and not bits[94566] and not bits[94568]
    bits.set(94567, False)
    assert not bits[94567]
    with pytest.raises(IndexError):
        bits.set(MIN_ENTRIES)
    with pytest.raises(IndexError):
        bits[-1]


def test_encode_decode_round_trip():
    bits = Bitstring(MIN_ENTRIES * 2)
    for index in (0, 7, 8, 131_071, 262_143):
        bits.set(index)
    encoded = bits.encode()
    assert encoded.startswith("u") and "=" not in encoded and "+" not in encoded and "/" not in encoded
    assert encoded == bits.encode()  # no time stamp in the GZIP header
    decoded = Bitstring.decode(encoded)
    assert len(decoded) == 262_144
    assert [i for i in range(len(decoded)) if decoded[i]] == [0, 7, 8, 131_071, 262_143]


def test_a_list_below_the_minimum_cannot_be_made():
    with pytest.raises(ValueError, match="at least 131072"):
        Bitstring(MIN_ENTRIES - 8)


@pytest.mark.parametrize(
    ("encoded", "check"),
    [
        (SPEC_EXAMPLE[1:], Check.STATUS_LIST_GARBAGE),  # no multibase prefix
        ("z" + SPEC_EXAMPLE[1:], Check.STATUS_LIST_GARBAGE),  # base58btc
        (SPEC_EXAMPLE + "==", Check.STATUS_LIST_GARBAGE),  # padding
        (SPEC_EXAMPLE[:20] + "+/" + SPEC_EXAMPLE[22:], Check.STATUS_LIST_GARBAGE),  # base64, not base64url
        (SPEC_EXAMPLE + "A", Check.STATUS_LIST_GARBAGE),  # a length base64 cannot have
        (_encoded(b"not gzip at all"), Check.STATUS_LIST_GARBAGE),
        (_encoded(gzip.compress(bytes(16384))[:-12]), Check.STATUS_LIST_GARBAGE),  # cut short
        (_encoded(gzip.compress(bytes(16384)) + b"more"), Check.STATUS_LIST_GARBAGE),  # trailing bytes
        (_encoded(gzip.compress(bytes(16384)) * 2), Check.STATUS_LIST_GARBAGE),  # a second GZIP member
        (_encoded(gzip.compress(bytes(16383))), Check.STATUS_LIST_TOO_SHORT),
        (ZIP_BOMB, Check.STATUS_LIST_TOO_LARGE),
        ("u" + "A" * (status_list.max_encoded_length(status_list.MAX_LIST_BYTES) + 4), Check.STATUS_LIST_TOO_LARGE),
        (None, Check.STATUS_LIST_GARBAGE),
    ],
    ids=["no-prefix", "base58", "padding", "base64", "bad-length", "not-gzip", "cut-short", "trailing",
         "two-members", "too-short", "zip-bomb", "too-long", "none"],
)
def test_garbage_and_oversized_lists_are_refused(encoded, check):
    with pytest.raises(StatusListError) as caught:
        Bitstring.decode(encoded)
    assert caught.value.check is check, str(caught.value)


def test_the_inflation_bound_can_be_lowered():
    encoded = Bitstring(MIN_ENTRIES * 4).encode()
    assert len(Bitstring.decode(encoded)) == MIN_ENTRIES * 4
    with pytest.raises(StatusListError, match="status-list-too-large"):
        Bitstring.decode(encoded, max_bytes=32 * 1024)


# ---------------------------------------------------------------------------------------------------------
# The signed list


def _list(bits: Bitstring | None = None, *, signer: Signer = ISSUER.signer, days: int = 1, ttl=None, **kwargs):
    return status_list.issue_status_list(
        bits or Bitstring(), url=URL, signer=signer, now=NOW, valid_until=NOW + timedelta(days=days), ttl=ttl, **kwargs
    )


def _verified(document, *, now=LATER, url=URL, issuer=ISSUER):
    return status_list.verify_status_list(document, issuer.document, url=url, now=now)


def _refused(document, check: Check, **kwargs) -> StatusListError:
    with pytest.raises(StatusListError) as caught:
        _verified(document, **kwargs)
    assert caught.value.check is check, str(caught.value)
    return caught.value


def _resigned(document, signer: Signer = ISSUER.signer):
    return proof.sign(document, signer.key, verification_method=signer.key_id, created=utc_text(NOW))


def test_the_list_credential_round_trips():
    bits = Bitstring()
    bits.set(42)
    document = _list(bits)
    assert document["@context"] == [VC_CONTEXT]
    assert document["id"] == URL
    assert document["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    subject = document["credentialSubject"]
    assert subject["type"] == "BitstringStatusList"
    assert subject["statusPurpose"] == "revocation"
    assert subject["encodedList"] == bits.encode()
    verified = _verified(document)
    assert (verified.url, verified.issuer, verified.purpose) == (URL, ISSUER.did, "revocation")
    assert verified.bits[42] and not verified.bits[41]
    assert verified.fresh_until == LATER + status_list.DEFAULT_TTL


def test_a_list_holds_for_its_ttl_but_never_past_its_validity():
    document = _list(ttl=timedelta(hours=2))
    assert document["credentialSubject"]["ttl"] == 7_200_000
    assert _verified(document).fresh_until == LATER + timedelta(hours=2)
    assert _verified(document, now=NOW + timedelta(hours=23)).fresh_until == NOW + timedelta(days=1)


def test_a_tampered_list_is_refused_as_wrongly_signed():
    document = copy.deepcopy(_list())
    revoked = Bitstring()
    revoked.set(3)
    document["credentialSubject"]["encodedList"] = revoked.encode()
    _refused(document, Check.SIGNATURE)


def test_a_list_signed_by_a_key_not_in_the_issuers_document_is_refused():
    stranger = ParticipantKeys.generate()
    _refused(_list(signer=Signer(stranger.signing, f"{ISSUER.did}#key-7")), Check.ISSUER_KEY)
    _refused(_list(signer=party("mallory").signer), Check.ISSUER_KEY)


def test_a_list_fetched_from_another_url_is_refused():
    _refused(_list(), Check.STATUS_LIST_ID, url="https://alliance.example/participants/alliance/status/2")


def test_an_expired_list_is_refused():
    _refused(_list(days=1), Check.EXPIRED, now=NOW + timedelta(days=1, seconds=1))


@pytest.mark.parametrize(
    ("encoded", "check"),
    [
        ("u" + "not-gzip", Check.STATUS_LIST_GARBAGE),
        (ZIP_BOMB, Check.STATUS_LIST_TOO_LARGE),
        (_encoded(gzip.compress(bytes(1024))), Check.STATUS_LIST_TOO_SHORT),
    ],
    ids=["garbage", "zip-bomb", "too-short"],
)
def test_a_signed_list_of_garbage_is_refused(encoded, check):
    document = _list()
    document["credentialSubject"]["encodedList"] = encoded
    _refused(_resigned(document), check)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda s: s.__setitem__("statusPurpose", "message"), Check.STATUS_PURPOSE),
        (lambda s: s.__setitem__("type", "StatusList2021"), Check.TYPE),
        (lambda s: s.__setitem__("ttl", "soon"), Check.MALFORMED),
        (lambda s: s.__setitem__("ttl", -1), Check.MALFORMED),
    ],
    ids=["purpose", "subject-type", "ttl-text", "ttl-negative"],
)
def test_a_signed_list_with_a_bad_subject_is_refused(change, check):
    document = _list()
    change(document["credentialSubject"])
    _refused(_resigned(document), check)


def test_an_encoded_list_longer_than_any_list_is_refused_before_it_is_checked():
    document = _list()
    document["credentialSubject"]["encodedList"] = "u" + "A" * (4 * 1024 * 1024)
    _refused(document, Check.TOO_LARGE)


# ---------------------------------------------------------------------------------------------------------
# A credential's status


def _credential(index: int = 94567, *, purpose: str = "revocation", url: str = URL) -> vc.VerifiedCredential:
    document = credential(MEMBERSHIP, ISSUER, HOLDER, status=vc.StatusEntry(url, index, purpose))
    return vc.verify_credential(document, ISSUER.document, now=LATER)


def _lists(*revoked: int, purpose: str = "revocation", by=ISSUER):
    bits = Bitstring()
    for index in revoked:
        bits.set(index)
    document = _list(bits, signer=by.signer, purpose=purpose)
    return {URL: status_list.verify_status_list(document, by.document, url=URL, now=LATER)}


def test_a_credential_whose_bit_is_clear_is_valid_until_the_list_goes_stale():
    status = status_list.check(_credential(), _lists(1, 2, 3), now=LATER)
    assert status == Status(StatusState.VALID, until=LATER + status_list.DEFAULT_TTL)


def test_a_credential_whose_bit_is_set_is_revoked():
    status = status_list.check(_credential(94567), _lists(94567), now=LATER)
    assert status.state is StatusState.REVOKED
    assert "94567" in status.reason


def test_a_suspension_list_suspends():
    status = status_list.check(_credential(5, purpose="suspension"), _lists(5, purpose="suspension"), now=LATER)
    assert status.state is StatusState.SUSPENDED


def test_a_credential_without_status_entry_is_valid_without_bound():
    document = credential(MEMBERSHIP, ISSUER, HOLDER)
    verified = vc.verify_credential(document, ISSUER.document, now=LATER)
    assert status_list.check(verified, {}, now=LATER) == Status(StatusState.VALID)


@pytest.mark.parametrize(
    ("credential_of", "lists_of", "now", "reason"),
    [
        (lambda: _credential(), lambda: {}, LATER, "is not at hand"),
        (lambda: _credential(), lambda: _lists(by=party("mallory")), LATER, "not by the issuer"),
        (lambda: _credential(), lambda: _lists(purpose="suspension"), LATER, "is for suspension"),
        (lambda: _credential(), lambda: _lists(), LATER + timedelta(minutes=6), "is stale"),
        (lambda: _credential(MIN_ENTRIES), lambda: _lists(), LATER, "outside the status list"),
    ],
    ids=["missing", "other-issuer", "other-purpose", "stale", "range"],
)
def test_a_status_that_cannot_be_told_is_unknown(credential_of, lists_of, now, reason):
    status = status_list.check(credential_of(), lists_of(), now=now)
    assert status.state is StatusState.UNKNOWN
    assert reason in status.reason


def test_checker_binds_lists_and_time():
    status_of = status_list.checker(_lists(94567), now=LATER)
    assert status_of(_credential(94567)).state is StatusState.REVOKED
    assert status_of(_credential(94566)).state is StatusState.VALID
