"""Verifying a presentation of credentials, beside the bare cryptography it cannot avoid, in the same run.

(a) ``connector.identity.vc.verify_presentation`` on a presentation of 4 credentials (membership, region,
    legal entity, certification: 5 ``eddsa-jcs-2022`` proofs), bound to the verifier's DID and challenge,
    with the issuers' and holder's DID documents at hand (no network: resolution and status lists are the
    shell's and cached there);
(b) the floor: RFC 8785 canonicalisation of the same 5 documents (each without its proof, and each proof
    configuration) and 5 bare Ed25519 verifications with PyNaCl: what any verifier of these proofs must do.

Goal (membership issue): (a) >= 0.4x the floor.

Run: ``python benchmarks/credentials.py``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rfc8785  # noqa: E402
from nacl.signing import VerifyKey  # noqa: E402

from connector.identity import did as dids  # noqa: E402
from connector.identity import vc  # noqa: E402
from connector.identity.claims import Certification, LegalEntity, Membership, Region  # noqa: E402
from connector.identity.keys import ParticipantKeys, Signer  # noqa: E402
from connector.identity.multikey import decode_multibase  # noqa: E402

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
VERIFIER = "did:web:tds.acme.example:participants:acme"
CHALLENGE = "c-5f1d2e7a9b"


class Party:
    def __init__(self, name: str) -> None:
        self.did = f"did:web:{name}.example:participants:{name}"
        self.keys = ParticipantKeys.generate()
        self.signer = Signer(self.keys.signing, dids.signing_key_id(self.did))
        self.document = dids.did_document(self.did, signing_multikey=self.keys.signing_multikey)


def setup() -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    alliance, authority, holder = Party("alliance"), Party("authority"), Party("parts")
    claims = [(Membership(data_space="gz-auto-parts"), alliance), (Region(region="CN-GD"), authority),
              (LegalEntity(legal_name="Pearl River Parts Co., Ltd.", unified_social_credit_code="91350100M000100Y43"),
               authority),
              (Certification(certification_level="2", software_name="tds-connector", software_version="1.0"),
               alliance)]
    credentials = [vc.issue(c, holder=holder.did, signer=issuer.signer, credential_id=f"urn:uuid:00000000-0000-4000"
                            f"-8000-00000000000{i}", now=NOW, valid_until=NOW + timedelta(days=30))
                   for i, (c, issuer) in enumerate(claims)]
    presentation = vc.present(credentials, holder=holder.signer, domain=VERIFIER, challenge=CHALLENGE, now=NOW)
    issuers = {alliance.did: alliance.document, authority.did: authority.document}
    return presentation, holder.document, issuers


def engine(presentation: dict[str, Any], holder: dict[str, Any], issuers: dict[str, dict[str, Any]]) -> None:
    result = vc.verify_presentation(presentation, holder, issuer_documents=issuers, expected_domain=VERIFIER,
                                    expected_challenge=CHALLENGE, now=NOW + timedelta(seconds=1),
                                    max_age=timedelta(minutes=5))
    assert len(result.accepted) == 4 and not result.refused


def floor_inputs(presentation: dict[str, Any], holder: dict[str, Any], issuers: dict[str, dict[str, Any]]
                 ) -> list[tuple[dict[str, Any], dict[str, Any], VerifyKey]]:
    """Each signed document with its proof config and the key that verifies it (found once, outside the loop)."""
    def key_of(document: dict[str, Any], method: str) -> VerifyKey:
        for entry in document["verificationMethod"]:
            if entry["id"] == method:
                return VerifyKey(decode_multibase(entry["publicKeyMultibase"])[2:])
        raise LookupError(method)

    out = []
    for document in [presentation, *presentation["verifiableCredential"]]:
        proof = document["proof"]
        config = {k: v for k, v in proof.items() if k != "proofValue"}
        unsecured = {k: v for k, v in document.items() if k != "proof"}
        did = proof["verificationMethod"].split("#")[0]
        out.append((unsecured, {**config, "proofValue": proof["proofValue"]},
                    key_of(holder if did == holder["id"] else issuers[did], proof["verificationMethod"])))
    return out


def floor(items: list[tuple[dict[str, Any], dict[str, Any], VerifyKey]]) -> None:
    for unsecured, proof, key in items:
        config = {k: v for k, v in proof.items() if k != "proofValue"}
        data = hashlib.sha256(rfc8785.dumps(config)).digest() + hashlib.sha256(rfc8785.dumps(unsecured)).digest()
        key.verify(data, decode_multibase(proof["proofValue"]))


def rate(run: Callable[[], None], seconds: float = 3.0) -> float:
    run()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            run()
        done += 20
    return done / (time.perf_counter() - started)


def main() -> None:
    presentation, holder, issuers = setup()
    items = floor_inputs(presentation, holder, issuers)
    measured = rate(lambda: engine(presentation, holder, issuers))
    baseline = rate(lambda: floor(items))
    ratio = measured / baseline
    print(f"presentations verified: {measured:.0f}/s; floor (5 canonicalisations + 5 Ed25519 verifies): "
          f"{baseline:.0f}/s")
    print(f"TARGET presentation_verify: {measured:.0f} presentations/s; baseline {baseline:.0f} presentations/s; "
          f"ratio {ratio:.2f}; goal >= 0.4x: {'met' if ratio >= 0.4 else 'missed'}")


if __name__ == "__main__":
    main()
