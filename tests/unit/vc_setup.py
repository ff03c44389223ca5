"""Shared set-up of the credential tests: parties with did:web documents, credentials of each kind, and a
presentation signer that signs whatever it is given (as a dishonest holder would)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.identity import did as dids
from connector.identity import proof, vc
from connector.identity.claims import Certification, Claims, LegalEntity, Membership, Region
from connector.identity.credentials import VC_CONTEXT, utc_text
from connector.identity.keys import ParticipantKeys, Signer

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
SPACE = "urn:tds:space:auto-parts"
CREDIT_CODE = "91350100M000100Y43"
LEI = "5493001KJTIIGC8Y1R12"

MEMBERSHIP = Membership(data_space=SPACE)
LEGAL_ENTITY = LegalEntity(legal_name="ACME 精密零件有限公司", unified_social_credit_code=CREDIT_CODE, lei_code=LEI)
REGION = Region("CN-GD")
CERTIFICATION = Certification(certification_level="2", software_name="TDS Connector", software_version="0.1.0")
ALL_CLAIMS: list[Claims] = [MEMBERSHIP, LEGAL_ENTITY, REGION, CERTIFICATION]


@dataclass
class Party:
    """A participant with its own keys and did:web document."""

    did: str
    keys: ParticipantKeys = field(default_factory=ParticipantKeys.generate)

    @property
    def signer(self) -> Signer:
        return Signer(self.keys.signing, dids.signing_key_id(self.did))

    @property
    def document(self) -> dict[str, Any]:
        return dids.did_document(self.did, signing_multikey=self.keys.signing_multikey)


def party(name: str) -> Party:
    return Party(f"did:web:{name}.example:participants:{name}")


def credential(
    claims: Claims,
    issuer: Party,
    holder: Party | str,
    *,
    now: datetime = NOW,
    days: int = 30,
    status: vc.StatusEntry | None = None,
) -> dict[str, Any]:
    return vc.issue(
        claims, holder=holder if isinstance(holder, str) else holder.did, signer=issuer.signer,
        credential_id=f"urn:uuid:{uuid.uuid4()}", now=now, valid_until=now + timedelta(days=days), status=status,
    )


def sign_presentation(
    credentials: Sequence[dict[str, Any]],
    holder: Party,
    *,
    domain: str,
    challenge: str,
    created: datetime = NOW,
    holder_did: str | None = None,
) -> dict[str, Any]:
    """A presentation signed as :func:`vc.present` does, of any credentials at all."""
    document = {
        "@context": [VC_CONTEXT],
        "type": [vc.PRESENTATION_TYPE],
        "holder": holder_did or holder.did,
        "verifiableCredential": list(credentials),
    }
    return proof.sign(document, holder.keys.signing, verification_method=holder.signer.key_id,
                      created=utc_text(created), proof_purpose="authentication",
                      options={"domain": domain, "challenge": challenge})
