"""The claims a credential can carry: identifiers with check digits, region codes, bounded fields."""

from __future__ import annotations

import msgspec
import pytest

from connector.identity import claims
from connector.identity.claims import (
    CREDIT_CODE_ALPHABET,
    Certification,
    ClaimError,
    Kind,
    LegalEntity,
    Membership,
    Region,
)

#: Published unified social credit codes (the second is a large Shenzhen manufacturer's).
CREDIT_CODES = ["91350100M000100Y43", "914403001922038216", "9144030071526726XG"]
#: Published LEIs (GLEIF records).
LEIS = ["5493001KJTIIGC8Y1R12", "7LTWFZYICNSX8D621K86", "HWUPKR0MPOU8FGXBT394"]
LEI_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize("code", CREDIT_CODES)
def test_published_credit_codes_are_accepted(code):
    claims.check_credit_code(code)
    assert claims.credit_code_check_character(code[:17]) == code[17]


@pytest.mark.parametrize("position", range(18))
def test_every_single_character_change_of_a_credit_code_is_refused(position):
    code = CREDIT_CODES[0]
    for replacement in CREDIT_CODE_ALPHABET:
        if replacement == code[position]:
            continue
        corrupted = code[:position] + replacement + code[position + 1 :]
        with pytest.raises(ClaimError, match="unified social credit code"):
            claims.check_credit_code(corrupted)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91350100M000100Y4", "not 18 characters"),
        ("91350100M000100Y433", "not 18 characters"),
        ("91350100m000100Y43", "not 18 characters"),  # lower case
        ("91350100I000100Y43", "not 18 characters"),  # I is not in the alphabet (nor O, S, V, Z)
        ("9135A100M000100Y43", "administrative division"),  # positions 3-8 are digits
        ("91350100M000100Y44", "check character is '4', expected '3'"),
    ],
)
def test_malformed_credit_codes_are_refused_with_the_reason(code, reason):
    with pytest.raises(ClaimError, match=reason):
        claims.check_credit_code(code)


@pytest.mark.parametrize("code", LEIS)
def test_published_leis_are_accepted(code):
    claims.check_lei(code)


@pytest.mark.parametrize("position", range(20))
def test_single_character_changes_of_an_lei_are_refused(position):
    # MOD 97-10 catches every change of a digit for a digit and of a letter for a letter.
    code = LEIS[0]
    same_class = "0123456789" if code[position].isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for replacement in same_class:
        if replacement != code[position]:
            with pytest.raises(ClaimError, match="LEI"):
                claims.check_lei(code[:position] + replacement + code[position + 1 :])


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("5493001KJTIIGC8Y1R1", "not 18 capital letters"),
        ("5493001KJTIIGC8Y1R1B", "not 18 capital letters"),  # the check digits are digits
        ("5493001kjtiigc8y1r12", "not 18 capital letters"),
        ("5493001KJTIIGC8Y1R21", "check digits"),  # swapped check digits
        ("5493001KJTIIGC8Y1R13", "check digits"),
    ],
)
def test_malformed_leis_are_refused_with_the_reason(code, reason):
    with pytest.raises(ClaimError, match=reason):
        claims.check_lei(code)


@pytest.mark.parametrize("code", ["CN", "CN-GD", "CN-44", "FR-75C", "US-CA"])
def test_region_codes_of_the_iso_3166_2_shape(code):
    assert Region(code).region == code


@pytest.mark.parametrize("code", ["", "cn-gd", "CHN", "CN-", "CN-GDXX", "CN_GD", "CN-GD "])
def test_other_region_codes_are_refused(code):
    with pytest.raises(ClaimError, match="ISO 3166-2"):
        Region(code)


def test_a_legal_entity_needs_a_code():
    with pytest.raises(ClaimError, match="credit code or an LEI"):
        LegalEntity(legal_name="ACME Co.")
    assert LegalEntity(legal_name="ACME Co.", lei_code=LEIS[0]).unified_social_credit_code is None


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (Membership(data_space="urn:tds:space:parts"), {"dataSpace": "urn:tds:space:parts", "role": "member"}),
        (LegalEntity(legal_name="ACME 有限公司", unified_social_credit_code=CREDIT_CODES[0]),
         {"legalName": "ACME 有限公司", "unifiedSocialCreditCode": CREDIT_CODES[0]}),
        (Region("CN-GD"), {"region": "CN-GD"}),
        (Certification(certification_level="2", software_name="TDS Connector", software_version="0.1.0"),
         {"certificationLevel": "2", "softwareName": "TDS Connector", "softwareVersion": "0.1.0"}),
    ],
    ids=["membership", "legal-entity", "region", "certification"],
)
def test_subjects_round_trip(value, wire):
    subject = claims.to_subject(value, "did:web:a.example")
    assert subject == {"id": "did:web:a.example", **wire}
    assert claims.from_subject(value.kind, {**subject, "type": "Ignored", "extra": 1}) == value


@pytest.mark.parametrize(
    ("kind", "subject", "reason"),
    [
        (Kind.MEMBERSHIP, {}, "missing required field `dataSpace`"),
        (Kind.MEMBERSHIP, {"dataSpace": "a b"}, "dataSpace"),
        (Kind.MEMBERSHIP, {"dataSpace": "x" * 257}, "length <= 256"),
        (Kind.MEMBERSHIP, {"dataSpace": "x", "role": "admin role"}, "role"),
        (Kind.LEGAL_ENTITY, {"legalName": "ACME", "leiCode": "5493001KJTIIGC8Y1R13"}, "check digits"),
        (Kind.LEGAL_ENTITY, {"legalName": "A\nB", "leiCode": LEIS[0]}, "legalName"),
        (Kind.REGION, {"region": "Guangdong"}, "ISO 3166-2"),
        (Kind.CERTIFICATION, {"certificationLevel": "2", "softwareName": "x"}, "softwareVersion"),
    ],
)
def test_bad_subjects_are_refused_naming_the_field(kind, subject, reason):
    with pytest.raises(ClaimError, match=reason):
        claims.from_subject(kind, subject)


def test_claim_types_cover_every_kind():
    assert set(claims.CLAIM_TYPES) == set(Kind)
    assert all(t.kind is kind for kind, t in claims.CLAIM_TYPES.items())
    assert all(issubclass(t, msgspec.Struct) for t in claims.CLAIM_TYPES.values())
