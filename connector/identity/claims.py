"""What a credential about a participant can say: four kinds of claim, each a small typed struct.

Each kind is one W3C Verifiable Credentials 2.0 ``type`` (the :class:`Kind` values are the wire names), and
its claims are the ``credentialSubject`` beside the subject's ``id`` (the holder's DID):

============================== ============================================================================
``TdsMembershipCredential``    :class:`Membership`: member of the data space ``dataSpace`` in ``role``
``TdsLegalEntityCredential``   :class:`LegalEntity`: ``legalName`` and a unified social credit code
                               (``unifiedSocialCreditCode``, GB 32100-2015) and/or an LEI (``leiCode``,
                               ISO 17442)
``TdsRegionCredential``        :class:`Region`: the ISO 3166-2 code of the region of establishment
``TdsCertificationCredential`` :class:`Certification`: a certification ``certificationLevel`` of the
                               connector software ``softwareName`` ``softwareVersion``
============================== ============================================================================

Every field is bounded and checked where the struct is made, on issuing and on reading a peer's credential
alike (``msgspec.convert`` turns a failed check into a ``ValidationError``), so that a credential that
would not verify is never issued. Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, ClassVar

import msgspec

from connector.errors import pattern_rule, readable_validation


class Kind(enum.StrEnum):
    """The kinds of credential, valued by their VC ``type``."""

    MEMBERSHIP = "TdsMembershipCredential"
    LEGAL_ENTITY = "TdsLegalEntityCredential"
    REGION = "TdsRegionCredential"
    CERTIFICATION = "TdsCertificationCredential"


class ClaimError(ValueError):
    """A claim whose value breaks its format: a bad identifier, check digit or region code."""


# ---------------------------------------------------------------------------------------------------------
# Identifiers with check digits

#: GB 32100-2015 §4.2: the code's characters are the digits and the capital letters without I, O, Z, S, V;
#: a character's value is its position here (0-30).
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
#: §4.3 (Appendix: check character): the weight of position i (1-17) is 3^(i-1) mod 31.
_CREDIT_CODE_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
#: Registration authority (1), organisation category (1), administrative division (6 digits), the
#: organisation's own code (9), check character (1).
_CREDIT_CODE = re.compile(rf"^[{CREDIT_CODE_ALPHABET}]{{2}}[0-9]{{6}}[{CREDIT_CODE_ALPHABET}]{{10}}$")

#: ISO 17442-1:2020 §4: 18 alphanumerics (LOU prefix and entity part), then two check digits.
_LEI = re.compile(r"^[0-9A-Z]{18}[0-9]{2}$")

#: ISO 3166-1 alpha-2 country, optionally an ISO 3166-2 subdivision of one to three letters or digits.
_REGION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


def credit_code_check_character(first17: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters of a unified social credit code.

    C18 = 31 - (sum of value(Ci) * 3^(i-1) mod 31) mod 31, written with :data:`CREDIT_CODE_ALPHABET`
    (a result of 31 is written ``0``).
    """
    total = sum(CREDIT_CODE_ALPHABET.index(ch) * w for ch, w in zip(first17, _CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def check_credit_code(code: str) -> None:
    """Raise :class:`ClaimError` unless *code* is a well-formed unified social credit code (统一社会信用代码).

    Checks the shape (18 characters of the code's alphabet, positions 3-8 an administrative division in
    digits) and the check character (GB 32100-2015). Whether the code is registered is not knowable
    offline; that is what a trusted issuer's credential vouches for.
    """
    if not _CREDIT_CODE.match(code):
        raise ClaimError(
            f"unified social credit code {code[:40]!r} is not 18 characters of 0-9 and A-Y without I, O, S, V, Z "
            "with a 6-digit administrative division code at positions 3-8"
        )
    expected = credit_code_check_character(code[:17])
    if code[17] != expected:
        raise ClaimError(f"unified social credit code {code!r}: check character is {code[17]!r}, expected {expected!r}")


def check_lei(code: str) -> None:
    """Raise :class:`ClaimError` unless *code* is a well-formed Legal Entity Identifier (ISO 17442).

    Letters count as 10-35 and the whole number, read as decimal, must be 1 modulo 97 (ISO 7064 MOD 97-10).
    """
    if not _LEI.match(code):
        raise ClaimError(f"LEI {code[:40]!r} is not 18 capital letters or digits followed by two check digits")
    if int("".join(str(int(ch, 36)) for ch in code)) % 97 != 1:
        raise ClaimError(f"LEI {code!r}: the check digits do not match (ISO 7064 MOD 97-10)")


def check_region(code: str) -> None:
    """Raise :class:`ClaimError` unless *code* has the shape of an ISO 3166-2 code (``CN``, ``CN-GD``)."""
    if not _REGION.match(code):
        raise ClaimError(f"region {code[:40]!r} is not an ISO 3166-2 code such as CN-GD")


# ---------------------------------------------------------------------------------------------------------
# The claims of each kind

#: A line of text: not empty, bounded, and no control characters (they have no place in a name).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=pattern_rule(
    r"^[^\x00-\x1f\x7f]+$", "text without control characters"))]
#: An identifier: no white space.
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=pattern_rule(
    r"^\S+$", "text without white space"))]
Token = Annotated[str, msgspec.Meta(pattern=pattern_rule(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", "1-32 letters, digits, '.', '_' or '-', starting with a letter or digit"))]


class Membership(msgspec.Struct, frozen=True, rename="camel"):
    """The holder is a member of the data space ``data_space`` (an IRI or URN naming it) in ``role``."""

    kind: ClassVar[Kind] = Kind.MEMBERSHIP

    data_space: Identifier
    role: Token = "member"


class LegalEntity(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The holder is the legal entity ``legal_name``, registered under a credit code and/or an LEI."""

    kind: ClassVar[Kind] = Kind.LEGAL_ENTITY

    legal_name: Name
    unified_social_credit_code: str | None = None
    lei_code: str | None = None

    def __post_init__(self) -> None:
        if self.unified_social_credit_code is None and self.lei_code is None:
            raise ClaimError("a legal entity needs a unified social credit code or an LEI")
        if self.unified_social_credit_code is not None:
            check_credit_code(self.unified_social_credit_code)
        if self.lei_code is not None:
            check_lei(self.lei_code)


class Region(msgspec.Struct, frozen=True, rename="camel"):
    """The holder is established in ``region`` (ISO 3166-2, e.g. ``CN-GD``)."""

    kind: ClassVar[Kind] = Kind.REGION

    region: str

    def __post_init__(self) -> None:
        check_region(self.region)


class Certification(msgspec.Struct, frozen=True, rename="camel"):
    """The holder runs connector software ``software_name`` ``software_version``, certified at ``level``."""

    kind: ClassVar[Kind] = Kind.CERTIFICATION

    certification_level: Token
    software_name: Name
    software_version: Token


Claims = Membership | LegalEntity | Region | Certification

#: The short names operators use for the kinds (``tds trust add DID --claims membership,region``, the
#: ``claims`` of a ``[[trust]]`` entry, ``tds credential issue --kind legal-entity``).
KIND_NAMES: dict[str, Kind] = {
    "membership": Kind.MEMBERSHIP,
    "legal-entity": Kind.LEGAL_ENTITY,
    "region": Kind.REGION,
    "certification": Kind.CERTIFICATION,
}
#: The short name of each kind.
NAME_OF_KIND: dict[Kind, str] = {kind: name for name, kind in KIND_NAMES.items()}

#: The claim struct of each kind.
CLAIM_TYPES: dict[Kind, type[Claims]] = {
    Kind.MEMBERSHIP: Membership,
    Kind.LEGAL_ENTITY: LegalEntity,
    Kind.REGION: Region,
    Kind.CERTIFICATION: Certification,
}


def to_subject(claims: Claims, holder: str) -> dict[str, object]:
    """The ``credentialSubject`` of a credential stating *claims* about *holder*."""
    checked = from_subject(claims.kind, msgspec.to_builtins(claims))  # the checks a verifier will make
    return {"id": holder, **msgspec.to_builtins(checked)}


def from_subject(kind: Kind, subject: dict[str, object]) -> Claims:
    """The claims of a ``credentialSubject`` (its ``id`` and ``type`` and any other property are ignored).

    Raises :class:`ClaimError` naming the field that is missing or wrong.
    """
    try:
        return msgspec.convert({k: v for k, v in subject.items() if k not in ("id", "type")}, CLAIM_TYPES[kind])
    except msgspec.ValidationError as exc:
        raise ClaimError(readable_validation(str(exc))) from exc
