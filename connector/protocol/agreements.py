"""Agreements both parties sign (pure).

The provider signs the agreement it sends (ContractAgreementMessage); the consumer signs the same
agreement in its ContractAgreementVerificationMessage. Each proof is an ``eddsa-jcs-2022`` Data Integrity
proof over the agreement object, carried beside it under the full-IRI extension property
:data:`PROOF_PROPERTY`, which other DSP connectors ignore (the messages stay schema-valid). The node's JSON-LD
context defines that property as a JSON literal (``connector.protocol.contexts``), so a JSON-LD processor keeps
the proof exactly as signed. A peer that sends no proof is accepted; the agreement is then single-signed.

An *evidence bundle* is everything needed to check an agreement later without asking anyone: the
agreement, both proofs, and the DID documents of both parties as they were resolved when the proofs
were checked.
"""

from __future__ import annotations

from typing import Any

import msgspec
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.identity import proof as proofs
from connector.protocol import contexts

PROOF_PROPERTY = contexts.TDS_NS + "proof"
#: An evidence bundle's ``@context`` and ``@type`` (the term for ``https://w3id.org/tds/v1#AgreementEvidence``).
BUNDLE_CONTEXT = (contexts.TDS,)
BUNDLE_TYPE = "AgreementEvidence"


class AgreementProofError(ValueError):
    """A proof that does not verify, or was made by someone who is not the party it claims to be."""


def sign(agreement: dict[str, Any], key: SigningKey, *, key_id: str, created: str) -> dict[str, Any]:
    """The signer's proof over *agreement* (the proof object alone)."""
    signed = proofs.sign(agreement, key, verification_method=key_id, created=created, proof_property=PROOF_PROPERTY)
    return dict(signed[PROOF_PROPERTY])


def signer_did(proof: Any) -> str:
    if not isinstance(proof, dict) or not isinstance(proof.get("verificationMethod"), str):
        raise AgreementProofError("proof has no verificationMethod")
    try:
        return dids.split_did_url(proof["verificationMethod"])[0]
    except dids.DidError as exc:
        raise AgreementProofError(str(exc)) from exc


def verify(agreement: dict[str, Any], proof: Any, did_document: dict[str, Any], *, party: str) -> str:
    """Check *proof* over *agreement* by *party* (a DID) against its DID document; return the key id."""
    did = signer_did(proof)
    if did != party:
        raise AgreementProofError(f"the proof was made by {did}, not by {party}")
    key_id = str(proof["verificationMethod"])
    try:
        proofs.verify({**agreement, PROOF_PROPERTY: proof}, proofs.key_resolver(did_document),
                      proof_property=PROOF_PROPERTY)
    except proofs.ProofError as exc:
        raise AgreementProofError(f"proof by {party} does not verify: {exc}") from exc
    return key_id


class SignatureCheck(msgspec.Struct, frozen=True):
    role: str
    did: str
    status: str  # "valid", "invalid" or "missing"
    detail: str = ""


def bundle(agreement: dict[str, Any], provider_proof: dict[str, Any] | None, consumer_proof: dict[str, Any] | None,
           did_documents: dict[str, Any]) -> dict[str, Any]:
    """The evidence bundle, a JSON-LD document in the node's context: the agreement in the DSP ODRL profile's
    terms, the proofs and the DID documents as JSON literals, kept exactly as they were signed and resolved."""
    return {
        "@context": list(BUNDLE_CONTEXT),
        "@type": BUNDLE_TYPE,
        "agreement": agreement,
        "providerProof": provider_proof,
        "consumerProof": consumer_proof,
        "didDocuments": did_documents,
    }


def check_bundle(evidence: Any) -> list[SignatureCheck]:
    """Check both proofs of an evidence bundle offline; one result per party."""
    if not isinstance(evidence, dict) or not isinstance(evidence.get("agreement"), dict):
        raise AgreementProofError("not an agreement evidence bundle (no agreement object)")
    agreement = evidence["agreement"]
    raw_documents = evidence.get("didDocuments")
    documents: dict[str, Any] = raw_documents if isinstance(raw_documents, dict) else {}
    results = []
    for role, party_field, proof_field in (("provider", "assigner", "providerProof"),
                                           ("consumer", "assignee", "consumerProof")):
        party = str(agreement.get(party_field, ""))
        proof = evidence.get(proof_field)
        if not proof:
            results.append(SignatureCheck(role, party, "missing", "no proof was given"))
            continue
        document = documents.get(party)
        if document is None and party.startswith("did:key:"):
            document = dids.did_key_document(party)
        if not isinstance(document, dict):
            results.append(SignatureCheck(role, party, "invalid", "no DID document for the party in the bundle"))
            continue
        try:
            key_id = verify(agreement, proof, document, party=party)
        except AgreementProofError as exc:
            results.append(SignatureCheck(role, party, "invalid", str(exc)))
            continue
        results.append(SignatureCheck(role, party, "valid", f"key {key_id}, signed {proof.get('created')}"))
    return results
