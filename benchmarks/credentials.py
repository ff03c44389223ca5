"""Credentials: verifying a presentation, and the handshake that carries them, each beside a baseline measured in
the same run.

Presentation verification:
(a) ``connector.identity.vc.verify_presentation`` on a presentation of 4 credentials (membership, region,
    legal entity, certification: 5 ``eddsa-jcs-2022`` proofs), bound to the verifier's DID and challenge,
    with the issuers' and holder's DID documents at hand (no network: resolution and status lists are the
    shell's and cached there), each time from scratch (the memos of verified credentials and proofs emptied
    before each; the figure with them warm, as when a holder shows the same credentials again, is printed
    too);
(b) the floor: RFC 8785 canonicalisation of the same 5 documents (each without its proof, and each proof
    configuration) and 5 bare Ed25519 verifications with PyNaCl: what any verifier of these proofs must do.
Goal: (a) >= 0.4x the floor.

Handshake latency: nodes on loopback in this process (an issuer and two pairs). In one pair the consumer
holds 4 credentials of the issuer's (membership, region, legal entity, certification) and both sides trust
the issuer for all four kinds: a handshake is one signed request and its answer carrying the
self-descriptions, each side's challenge and the presentations (the holder's in the request when it starts
the handshake, answering the challenge the previous answer handed it; in the answer otherwise), each side
verifying what it is shown (the issuer's status list fetched once and cached, as in operation). In the
other pair neither holds nor trusts anything: the self-descriptions only.
``FederationService.verify_peer`` is timed :data:`HANDSHAKES` times each way (consumer to provider, provider
to consumer) in each pair, the pairs taking turns. Goal: the p50 with credentials <= 1.5x the p50 without.

Run: ``python benchmarks/credentials.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import tempfile
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

#: Handshakes timed each way in each pair (after a warm-up of :data:`WARMUP` each way).
HANDSHAKES = 200
WARMUP = 20
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


def engine(presentation: dict[str, Any], holder: dict[str, Any], issuers: dict[str, dict[str, Any]], *,
           cold: bool = True) -> None:
    if cold:
        vc.forget_verified()
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


# -- handshakes between nodes -------------------------------------------------------------------------------

KINDS = ["membership", "legal-entity", "region", "certification"]
CREDENTIALS: list[tuple[str, dict[str, str]]] = [
    ("membership", {"dataSpace": "gz-auto-parts"}), ("region", {"region": "CN-GD"}),
    ("legal-entity", {"legalName": "Pearl River Parts Co., Ltd.", "unifiedSocialCreditCode": "91350100M000100Y43"}),
    ("certification", {"certificationLevel": "2", "softwareName": "tds-connector", "softwareVersion": "1.0"}),
]


async def handshakes() -> dict[str, dict[str, list[float]]]:
    """Handshake latencies (s) by pair ("with", "without") and way ("consumer", "provider": who starts it)."""
    from connector.config import DspSection
    from connector.logging import configure
    from connector.testing import NodeFactory, RunningNode

    configure("warning")
    # Peers without an agreement share a budget of 20 DSP requests/s on a node (fair use, README "Admission of
    # unknown peers"); timed back to back, the handshakes would be held up by it, not by their own cost.
    unlimited = DspSection(unknown_peer_rate_per_s=1e6, unknown_peer_burst=10**6)
    with tempfile.TemporaryDirectory(prefix="tds-bench-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            alliance = await nodes.start("alliance", dsp=unlimited)
            pairs = {"with": (await nodes.start("parts", dsp=unlimited), await nodes.start("acme", dsp=unlimited)),
                     "without": (await nodes.start("parts2", dsp=unlimited),
                                 await nodes.start("acme2", dsp=unlimited))}
            consumer, provider = pairs["with"]
            for kind, claims in CREDENTIALS:
                issued = await alliance.client.issue_credential(consumer.participant.did, kind, claims)
                delivered = await alliance.client.deliver_credential(issued["id"])
                assert not delivered["deliveryError"], delivered
            for side in (consumer, provider):
                await side.client.trust_issuer(alliance.participant.did, KINDS)

            def way(start: RunningNode, other: RunningNode) -> Any:
                async def one() -> float:
                    began = time.perf_counter()
                    await start.node.federation.verify_peer(start.participant, other.participant.dsp_base)
                    return time.perf_counter() - began
                return one

            runs = {(pair, name): way(*((c, p) if name == "consumer" else (p, c)))
                    for pair, (c, p) in pairs.items() for name in ("consumer", "provider")}
            for run in runs.values():
                for _ in range(WARMUP):
                    await run()
            # The provider counts the consumer's 4 claims; the consumer shows what it holds and counts none.
            counted = await provider.node.credentials.claims_of(provider.participant.id, consumer.participant.did)
            assert counted is not None and len(counted.memberships) == 1 and counted.region is not None, counted
            assert counted.legal_entity is not None and len(counted.certifications) == 1, counted
            times: dict[str, dict[str, list[float]]] = {"with": {}, "without": {}}
            for (pair, name) in runs:
                times[pair][name] = []
            for _ in range(HANDSHAKES):  # the pairs and ways take turns, so drift touches each alike
                for (pair, name), run in runs.items():
                    times[pair][name].append(await run())
            return times
        finally:
            await nodes.close()


def main() -> None:
    presentation, holder, issuers = setup()
    items = floor_inputs(presentation, holder, issuers)
    measured = rate(lambda: engine(presentation, holder, issuers))
    baseline = rate(lambda: floor(items))
    warm = rate(lambda: engine(presentation, holder, issuers, cold=False))
    ratio = measured / baseline
    print(f"presentations verified: {measured:.0f}/s from scratch, {warm:.0f}/s with the same credentials "
          f"verified before; floor (5 canonicalisations + 5 Ed25519 verifies): {baseline:.0f}/s")
    print(f"TARGET presentation_verify: {measured:.0f} presentations/s; baseline {baseline:.0f} presentations/s; "
          f"ratio {ratio:.2f}; goal >= 0.4x: {'met' if ratio >= 0.4 else 'missed'}")

    times = asyncio.run(handshakes())

    def p50(samples: list[float]) -> float:
        return statistics.median(samples) * 1000

    for pair, what in (("with", "consumer holds 4 credentials, both trust the issuer"),
                       ("without", "no credentials, no trust")):
        ways = times[pair]
        print(f"handshake {pair} credentials ({what}): p50 {p50(ways['consumer']):.2f} ms started by the "
              f"consumer, {p50(ways['provider']):.2f} ms by the provider ({HANDSHAKES} each way)")
    with_ms = p50([t for ways in times["with"].values() for t in ways])
    without_ms = p50([t for ways in times["without"].values() for t in ways])
    ratio = with_ms / without_ms
    print(f"TARGET handshake_p50: {with_ms:.2f} ms; baseline {without_ms:.2f} ms; ratio {ratio:.2f}; "
          f"goal <= 1.5x: {'met' if ratio <= 1.5 else 'missed'}")


if __name__ == "__main__":
    main()
