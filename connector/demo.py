"""``tds demo``: a data space on loopback, told as a story from industry, one line per step with evidence.

Five nodes start in a temporary folder: ACME, a leading enterprise whose node also hosts two SMEs;
Pearl River Parts, an SME with its own node; Isar Optics, a partner in Germany; and an enterprise registry
that vouches for each company's region with a signed credential, which ACME trusts for regions (export
control counts no region a company merely states about itself). ACME publishes a
quality-inspection dataset under a usage policy; a hosted SME finds it, agrees a contract both parties
sign, pulls the data straight from ACME and verifies every chunk, uses it three times and is refused the
fourth time; ACME sees every use in signed receipts, then revokes the agreement and gets a signed
deletion receipt; the German partner is refused by export control. The command exits non-zero if any
step did not behave as expected.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.client import ClientError, ManagementClient
from connector.testing import NodeFactory, RunningNode

Say = Callable[[str], None]
DATASET = "qi-2026-q3"
CSV = "part,line,inspected,defects,defect_rate\n" + "".join(
    f"P-{i:04d},{1 + i % 7},{400 + (i * 37) % 200},{(i * 13) % 9},{((i * 13) % 9) / (400 + (i * 37) % 200):.4f}\n"
    for i in range(2000)
)


class DemoFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


async def wait_until(check: Callable[[], Any], what: str, deadline_s: float = 20.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > end:
            raise DemoFailed(f"{what} did not happen within {deadline_s:.0f} s")
        await asyncio.sleep(0.05)


async def publish(acme: RunningNode, say: Say) -> None:
    from usage_policies import templates

    files = acme.data_dir / "files" / acme.participant.name  # the participant's own files
    files.mkdir(parents=True, exist_ok=True)
    (files / f"{DATASET}.csv").write_text(CSV)
    await acme.client.add_asset({
        "id": DATASET, "title": "Quality inspection results, 2026 Q3", "contentType": "text/csv",
        "dataClass": "core", "keywords": ["quality", "inspection"],
        "dataAddress": {"type": "File", "path": str(files / f"{DATASET}.csv")},
    })
    usage = templates.combine(
        templates.purpose(DATASET, "R&D"), templates.max_uses(DATASET, 3), templates.for_duration(DATASET, "P30D"),
        templates.no_export_outside(DATASET, "CN"), templates.log_each_use(DATASET), templates.inform_on_use(DATASET),
    )
    await acme.client.add_policy("members", {"@type": "Set", "permission": [{"action": "use"}]})
    await acme.client.add_policy("qi-terms", usage)
    await acme.client.add_contract_definition("qi", access_policy_id="members", contract_policy_id="qi-terms",
                                              assets=[DATASET])
    say(f"ACME publishes '{DATASET}' (class core, {len(CSV)} bytes) under a usage policy: purpose R&D, at most")
    say("  3 uses, within 30 days of the first, no export outside CN, log and inform each use.")


async def vouch_regions(registry: RunningNode, acme: RunningNode, companies: list[tuple[Any, str]], say: Say) -> None:
    """The registry issues region credentials and delivers them; ACME and the companies trust it for regions."""
    for company, region in companies:
        issued = await registry.client.issue_credential(company.participant.did, "region", {"region": region})
        delivered = await registry.client.deliver_credential(issued["id"])
        expect(not delivered["deliveryError"], f"credential not delivered: {delivered['deliveryError']}")
    for verifier in (acme, *(company for company, _ in companies)):
        await verifier.client.trust_issuer(registry.participant.did, ["region"])
    named = ", ".join(f"{c.participant.record.legal_name} {r}" for c, r in companies)
    say(f"The registry vouches for regions with signed credentials: {named}.")
    say("  ACME and the companies trust it for regions; export control counts no region a company only states.")


async def negotiate(consumer: ManagementClient, provider_url: str, say: Say, who: str) -> dict[str, Any]:
    from connector.protocol.agreements import check_bundle

    # Core data goes only to participants whose region a credential by an issuer ACME trusts for regions
    # vouches for: the handshake presents it.
    await consumer.verify_peer(provider_url)
    catalog = await consumer.catalog(provider_url)
    datasets = catalog.get("dataset", [])
    expect(bool(datasets), f"{who} sees nothing in ACME's catalog")
    offer = datasets[0]["hasPolicy"][0]["@id"]
    say(f"{who} introduces itself to ACME (signed handshake) and finds it in the catalog: offer {offer}")
    started = time.perf_counter()
    negotiation = await consumer.negotiate(provider_url, offer)
    final: dict[str, Any] = await consumer.negotiation(negotiation["id"], wait_s=15)
    expect(final["state"] == "FINALIZED", f"negotiation ended {final['state']}: {final.get('reason')}")
    agreement = final["agreement"]
    checks = check_bundle(await consumer.agreement_evidence(agreement["@id"]))
    expect([c.status for c in checks] == ["valid", "valid"], f"agreement not signed by both: {checks}")
    say(f"  DSP negotiation REQUESTED -> AGREED -> VERIFIED -> FINALIZED in {(time.perf_counter() - started) * 1e3:.0f}"
        f" ms; agreement {agreement['@id']}")
    say("  signed by both parties (eddsa-jcs-2022): " + ", ".join(f"{c.role} {c.did}" for c in checks))
    return final


async def transfer(consumer: ManagementClient, provider_did: str, agreement_id: str, say: Say) -> None:
    from connector.payload import manifest as manifests

    started = time.perf_counter()
    record = await consumer.start_transfer(agreement_id)
    final = await consumer.transfer(record["id"], wait_s=30)
    expect(final["state"] == "COMPLETED", f"transfer ended {final['state']}: {final.get('reason')}")
    manifest, envelope, binding = manifests.read_bundle(await consumer.transfer_bundle(record["id"]))
    expect(binding.provider == provider_did and binding.agreement_id == agreement_id, "manifest bound elsewhere")
    say(f"  pulls it straight from ACME (HttpData-PULL, no broker) in {(time.perf_counter() - started) * 1e3:.0f} ms: "
        f"{manifest.size} bytes, {len(manifest.chunks)} chunk(s) verified ({manifest.algorithm}) before writing")
    say(f"  manifest {manifests.digest(manifest)}, signed by ACME ({envelope['proof']['cryptosuite']}) and bound")
    say("  to this agreement and this consumer; kept in the consumer's vault.")
    sealed = [e for e in final["history"] if e["kind"] == "sealed"]
    expect(bool(sealed), "core data travelled without end-to-end encryption")
    say("  core data travels sealed end to end: a fresh X25519 key for this transfer, HKDF-SHA256,")
    say("  AES-256-GCM per chunk; the SME's node decrypted each chunk, verified it, then stored it.")
    started = time.perf_counter()
    record = await consumer.start_transfer(agreement_id, push=True)
    final = await consumer.transfer(record["id"], wait_s=30)
    expect(final["state"] == "COMPLETED", f"push transfer ended {final['state']}: {final.get('reason')}")
    pushed, _, _ = manifests.read_bundle(await consumer.transfer_bundle(record["id"]))
    expect(pushed == manifest and any(e["kind"] == "sealed" for e in final["history"]), "the push differs")
    say(f"  the same data pushed by ACME to the SME's inbox instead (HttpData-PUSH, sealed, verified) in "
        f"{(time.perf_counter() - started) * 1e3:.0f} ms")


async def use(consumer: ManagementClient, agreement_id: str, say: Say) -> None:
    for i in range(1, 4):
        size = 0
        async for chunk in consumer.use_data(agreement_id, f"rnd-report-{i}", purpose="R&D"):
            size += len(chunk)
        expect(size == len(CSV), f"use {i} returned {size} bytes")
        say(f"  use {i} (purpose R&D): permitted, {size} bytes released after the decision was logged")
    try:
        async for _ in consumer.use_data(agreement_id, "rnd-report-4", purpose="R&D"):
            raise DemoFailed("the fourth use was permitted")
    except ClientError as exc:
        expect(exc.status == 403, f"the fourth use failed otherwise: {exc}")
        say(f"  use 4: refused — {exc.message}")
    summary = await consumer.usage(agreement_id)
    log = await consumer.usage_log(agreement_id)
    from connector.services.usage import check_log

    expect(check_log(log["entries"], log["heads"], log["didDocument"]) is None, "the usage log does not verify")
    say(f"  usage log: {len(log['entries'])} entries, hash chain and {len(log['heads'])} signed head(s) verify; "
        f"head {log['entries'][-1]['hash'][:16]}…; {summary['allowance'].get('usesLeft')} uses left")


async def report_and_revoke(acme: RunningNode, consumer: ManagementClient, agreement_id: str, say: Say) -> None:
    async def receipts() -> Any:
        report = await acme.client.usage_report(agreement_id)
        return report if report["receivedEntries"] >= 4 else None

    report = await wait_until(receipts, "the usage receipts")
    day, purposes = next(iter(report["usesPerDay"].items()))
    say(f"ACME's usage report: {report['receivedEntries']} signed entries received ({report['signedHeads']} signed "
        f"heads), {report['uses']} uses on {day} for {', '.join(purposes)}, {report['denied']} refused, "
        f"{len(report['anomalies'])} anomalies")
    await acme.client.revoke(agreement_id, "quarterly data refresh: this copy is superseded")

    async def acknowledged() -> Any:
        r = await acme.client.usage_report(agreement_id)
        return r if (r["revocation"] or {}).get("status") == "acknowledged" else None

    report = await wait_until(acknowledged, "the deletion receipt")
    receipt = report["revocation"]["deletionReceipt"]
    say("ACME revokes the agreement: the SME's node deletes its copy and answers with a signed deletion receipt,")
    say(f"  log entry #{receipt['entry']['seq']} ({receipt['entry']['reasons'][0]}), hash "
        f"{receipt['entry']['hash'][:16]}…")
    try:
        await consumer.use(agreement_id, "after-revocation", purpose="R&D")
        raise DemoFailed("a use after revocation was accepted")
    except ClientError as exc:
        expect(exc.status == 409, f"unexpected answer after revocation: {exc}")
        say(f"  a further use is refused: {exc.message}")


async def foreign_partner(acme: RunningNode, isar: RunningNode, say: Say) -> None:
    await isar.client.verify_peer(acme.public_url)
    datasets = (await isar.client.catalog(acme.public_url)).get("dataset", [])
    expect(datasets == [], "the foreign partner saw the core dataset")
    participant = isar.participant
    dsp = f"{acme.public_url}/participants/acme/api/dsp/2025-1"
    record = await isar.node.negotiations.request(
        participant, dsp, acme.participant.did, {"@id": "qi:x", "@type": "Offer", "permission": [{"action": "use"}]},
        f"qi:{DATASET}", DATASET)
    final = await isar.client.negotiation(record.id, wait_s=15)
    expect(final["state"] == "TERMINATED" and "export control" in final["reason"], f"not refused: {final}")
    say(f"Isar Optics (DE-BY) does not see the dataset; asking anyway, it is refused: {final['reason']}")


async def run_demo(say: Say = print, keep_running: bool = False) -> None:
    from connector.logging import configure

    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-demo-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            say("A data space on loopback (dev mode, embedded SQLite in a temporary folder):")
            acme = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD")
            parts = await nodes.start("parts", legal_name="Pearl River Parts Ltd.", region="CN-GD-GZ")
            isar = await nodes.start("isar", legal_name="Isar Optics GmbH", region="DE-BY")
            registry = await nodes.start("registry", legal_name="Pearl River Delta Enterprise Registry", region="CN-GD")
            for n, role in ((acme, "leading enterprise"), (parts, "SME, own node"), (isar, "partner in Germany"),
                            (registry, "issuer of region credentials")):
                say(f"  {n.participant.record.legal_name} ({role}): {n.participant.did}")
            gz = await nodes.host(acme, "gz-sensors", region="CN-GD-GZ", legal_name="Guangzhou Sensor Works")
            fs = await nodes.host(acme, "fs-molds", region="CN-GD-FS", legal_name="Foshan Mould Studio")
            for hosted in (gz, fs):
                info = await hosted.client.participant()
                say(f"  {info['legalName']} (SME hosted on ACME's node, own DID and keys): {info['did']}")
            verified = await parts.client.verify_peer(acme.public_url)
            say(f"Pearl River Parts verifies ACME over a signed handshake: {verified['peer']['legalName']}, "
                f"{verified['peer']['region']} (self-asserted; the self-description's proof checked against the DID "
                "document)")
            await vouch_regions(registry, acme, [(gz, "CN-GD"), (isar, "DE-BY")], say)

            await publish(acme, say)
            final = await negotiate(gz.client, acme.public_url, say, "Guangzhou Sensor Works")
            agreement_id = final["agreement"]["@id"]
            await transfer(gz.client, acme.participant.did, agreement_id, say)
            await use(gz.client, agreement_id, say)
            await report_and_revoke(acme, gz.client, agreement_id, say)
            await foreign_partner(acme, isar, say)
            if keep_running:
                for n in (acme, parts, isar):
                    say(f"  {n.participant.name}: public {n.public_url}, management {n.node.management_url}, "
                        f"token {n.token}")
                say("Nodes keep running; press Ctrl+C to stop.")
                await asyncio.Event().wait()
            say("Demo finished: every step behaved as expected. Stopping the nodes.")
        finally:
            await nodes.close()
