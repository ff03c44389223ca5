"""``tds demo``: a data space on loopback, told as a story from industry, one line per step with evidence.

Five nodes start in a temporary folder: ACME, a leading enterprise whose node also hosts two SMEs;
Pearl River Parts, an SME with its own node; Isar Optics, a partner in Germany; and the Guangdong Auto Parts
Alliance, whose node issues signed credentials: memberships of the data space ``gz-auto-parts`` and regions.
The alliance admits the hosted SMEs and Pearl River Parts, delivering their credentials to their nodes; ACME
trusts it for both. ACME publishes a quality-inspection dataset for members only (access policy
``tds:memberOf gz-auto-parts``) under a usage policy; a hosted SME presents its credentials in the handshake,
finds the dataset, agrees a contract both parties sign, pulls the data straight from ACME and verifies every
chunk, uses it three times and is refused the fourth time; ACME sees every use in signed receipts, then revokes
the agreement and gets a signed deletion receipt. Isar Optics states ``CN-GD`` in its own self-description but
holds no credential ACME trusts: it does not see the dataset and is refused, with what is missing as the reason.
Pearl River Parts agrees a contract too; then the alliance revokes its membership, and a new negotiation is
refused as soon as ACME's cached status list runs out. The command exits non-zero if any step did not behave as
expected.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.client import ClientError, ManagementClient
from connector.config import CredentialsSection
from connector.protocol.contexts import TDS_NS
from connector.testing import HostedParticipant, NodeFactory, RunningNode

Say = Callable[[str], None]
Member = RunningNode | HostedParticipant
DATASET = "qi-2026-q3"
#: The data space the alliance admits members to.
SPACE = "gz-auto-parts"
#: Every demo node reads a status list again after at most this long, so a revocation counts within it.
STATUS_CACHE_S = 1.0
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
    # Who may see and ask for the offer: members of the data space, by a credential from an issuer ACME trusts
    # for it. An access policy is about the offer, whatever its dataset: no target, no uid (as
    # `tds policy add members --member-of gz-auto-parts` writes it).
    members = templates.member_of(DATASET, SPACE)
    del members["target"], members["@id"]
    await acme.client.add_policy("members", members)
    await acme.client.add_policy("qi-terms", usage)
    await acme.client.add_contract_definition("qi", access_policy_id="members", contract_policy_id="qi-terms",
                                              assets=[DATASET])
    constraint = members["permission"][0]["constraint"][0]
    operand = constraint["leftOperand"].replace(TDS_NS, "tds:")
    say(f"ACME publishes '{DATASET}' (class core, {len(CSV)} bytes) for members only (access policy "
        f"{operand} {constraint['operator']} {constraint['rightOperand']}),")
    say("  under a usage policy: purpose R&D, at most 3 uses, within 30 days of the first, no export outside CN,")
    say("  log and inform each use.")


async def admit_members(alliance: RunningNode, acme: RunningNode, members: list[Member], say: Say
                        ) -> dict[str, str]:
    """The alliance issues each member a membership of :data:`SPACE` and a region credential and delivers both
    to the member's node; ACME trusts the alliance for memberships of the space and for regions, each member for
    regions (its own use of the data is checked against its own verified region). Returns each member's
    membership credential id, by DID."""
    memberships: dict[str, str] = {}
    for member in members:
        region = "-".join(member.participant.record.region.split("-")[:2])
        for kind, claims in (("membership", {"dataSpace": SPACE}), ("region", {"region": region})):
            issued = await alliance.client.issue_credential(member.participant.did, kind, claims)
            delivered = await alliance.client.deliver_credential(issued["id"])
            expect(not delivered["deliveryError"], f"credential not delivered: {delivered['deliveryError']}")
            if kind == "membership":
                memberships[member.participant.did] = issued["id"]
        held = (await member.client.credentials())["held"]
        expect(sorted(h["kind"] for h in held if h["status"] == "valid") == ["membership", "region"],
               f"{member.participant.name} does not hold its credentials: {held}")
    alliance_did = alliance.participant.did
    trusted = await acme.client.trust_issuer(alliance_did, ["membership", "region"], spaces=[SPACE])
    for member in members:
        await member.client.trust_issuer(alliance_did, ["region"])
    named = ", ".join(m.participant.record.legal_name.rstrip(".") for m in members)
    expect(trusted["claims"] == ["membership", "region"] and trusted["spaces"] == [SPACE], f"trusted: {trusted}")
    say(f"The alliance admits members to '{SPACE}' with signed credentials (membership and region, eddsa-jcs-2022),")
    say(f"  delivered to their nodes: {named}.")
    say(f"  ACME trusts the alliance for memberships of '{SPACE}' and for regions; the members trust it for regions.")
    return memberships


async def negotiate(consumer: ManagementClient, acme: RunningNode, say: Say, who: str, did: str
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """*who* presents its credentials, finds the offer and agrees; the negotiation as it ended, and the offer."""
    from connector.protocol.agreements import check_bundle

    # The offer is for members only, and core data goes only to participants whose region a credential by an
    # issuer ACME trusts for regions vouches for: the handshake presents both credentials to ACME.
    provider_url = acme.public_url
    await consumer.verify_peer(provider_url)
    counted = (await acme.client.peer_claims(did))[0]["counted"]
    shown = " and ".join(f"{c['kind']} {c['claims'].get('dataSpace') or c['claims'].get('region')}" for c in counted)
    expect(len(counted) == 2, f"ACME counts {shown or 'nothing'} of {who}")
    catalog = await consumer.catalog(provider_url)
    datasets = catalog.get("dataset", [])
    expect(bool(datasets), f"{who} sees nothing in ACME's catalog")
    policy = datasets[0]["hasPolicy"][0]
    offer = policy["@id"]
    say(f"{who} introduces itself to ACME (signed handshake) and presents its credentials;")
    say(f"  ACME counts {shown}, verified by {counted[0]['issuer']};")
    say(f"  the members' dataset is in its catalog: offer {offer}")
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
    return final, policy


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


async def ask_anyway(asker: Member, acme: RunningNode, offer: dict[str, Any]) -> dict[str, Any]:
    """*asker* requests *offer* (as ACME's catalog showed it to a member) although its own view of the catalog
    does not show it; the negotiation as it ended."""
    record = await asker.node.negotiations.request(asker.participant, acme.participant.dsp_base,
                                                   acme.participant.did, offer, offer["@id"], DATASET)
    return await asker.client.negotiation(record.id, wait_s=15)


async def foreign_partner(acme: RunningNode, isar: RunningNode, offer: dict[str, Any], say: Say) -> None:
    verified = await isar.client.verify_peer(acme.public_url)
    datasets = (await isar.client.catalog(acme.public_url)).get("dataset", [])
    expect(datasets == [], "the partner without credentials saw the members' dataset")
    final = await ask_anyway(isar, acme, offer)
    reason = final.get("reason") or ""
    expect(final["state"] == "TERMINATED" and "no verified region" in reason, f"not refused: {final}")
    say(f"Isar Optics states {verified['peer']['region']} in its own self-description but holds no credential "
        "ACME trusts: the dataset is not in its catalog;")
    say(f"  asking anyway, it is refused: {reason}")


async def member_agrees(member: RunningNode, acme: RunningNode, offer_id: str, say: Say) -> None:
    await member.client.verify_peer(acme.public_url)
    negotiation = await member.client.negotiate(acme.public_url, offer_id)
    final = await member.client.negotiation(negotiation["id"], wait_s=15)
    expect(final["state"] == "FINALIZED", f"the member's negotiation ended {final['state']}: {final.get('reason')}")
    say(f"Pearl River Parts, a member with its own node, agrees a contract too: {final['state']}, agreement "
        f"{final['agreement']['@id']}")


async def revoke_membership(alliance: RunningNode, acme: RunningNode, member: RunningNode, credential_id: str,
                            offer: dict[str, Any], say: Say) -> None:
    """The alliance revokes *member*'s membership; once ACME's copy of the status list runs out, the member no
    longer sees the offer, and a new negotiation is refused naming the missing membership."""
    revoked = await alliance.client.revoke_credential(credential_id)
    expect(revoked["status"] == "revoked", f"the membership is {revoked['status']}")
    started = time.perf_counter()
    say(f"The alliance revokes Pearl River Parts' membership ({credential_id}): its bit is set in the signed")
    say(f"  status list {revoked['statusListCredential']}")

    async def hidden() -> bool:
        return not (await member.client.catalog(acme.public_url)).get("dataset", [])

    # ACME reads the list again once its copy is older than STATUS_CACHE_S: then the membership stops counting,
    # and the offer is no longer shown to the former member.
    await wait_until(hidden, "ACME hiding the offer from the former member", deadline_s=STATUS_CACHE_S + 10)
    elapsed = time.perf_counter() - started
    claims = (await acme.client.peer_claims(member.participant.did))[0]
    why = next((n["reason"] for n in claims["notCounted"] if n["credentialId"] == credential_id), "")
    expect("revoked" in why, f"ACME does not say the membership is revoked: {claims}")
    say(f"  {elapsed * 1e3:.0f} ms later ACME no longer counts it (it reads a status list again after "
        f"{STATUS_CACHE_S:g} s): {why}")
    await member.client.verify_peer(acme.public_url)  # presenting the revoked credential again does not help
    final = await ask_anyway(member, acme, offer)
    reason = final.get("reason") or ""
    expect(final["state"] == "TERMINATED" and "no verified membership" in reason, f"not refused: {final}")
    say(f"  the offer is gone from its catalog; a new negotiation by Pearl River Parts is refused: {reason}")


async def run_demo(say: Say = print, keep_running: bool = False) -> None:
    from connector.logging import configure

    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-demo-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        fast = CredentialsSection(status_cache_s=STATUS_CACHE_S)
        try:
            say("A data space on loopback (dev mode, embedded SQLite in a temporary folder):")
            acme = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD",
                                     credentials=fast)
            parts = await nodes.start("parts", legal_name="Pearl River Parts Ltd.", region="CN-GD-GZ",
                                      credentials=fast)
            # It writes CN-GD into its own self-description: self-asserted, which no control counts.
            isar = await nodes.start("isar", legal_name="Isar Optics GmbH", region="CN-GD", credentials=fast)
            alliance = await nodes.start("alliance", legal_name="Guangdong Auto Parts Alliance", region="CN-GD",
                                         credentials=fast)
            for n, role in ((acme, "leading enterprise"), (parts, "SME, own node"),
                            (isar, "partner in Germany, states CN-GD"),
                            (alliance, f"issues memberships of '{SPACE}' and regions")):
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
            memberships = await admit_members(alliance, acme, [gz, fs, parts], say)

            await publish(acme, say)
            final, offer = await negotiate(gz.client, acme, say, "Guangzhou Sensor Works", gz.participant.did)
            agreement_id = final["agreement"]["@id"]
            await transfer(gz.client, acme.participant.did, agreement_id, say)
            await use(gz.client, agreement_id, say)
            await report_and_revoke(acme, gz.client, agreement_id, say)
            await foreign_partner(acme, isar, offer, say)
            await member_agrees(parts, acme, offer["@id"], say)
            await revoke_membership(alliance, acme, parts, memberships[parts.participant.did], offer, say)
            if keep_running:
                for n in (acme, parts, isar, alliance):
                    say(f"  {n.participant.name}: public {n.public_url}, management {n.node.management_url}, "
                        f"token {n.token}")
                say("Nodes keep running; press Ctrl+C to stop.")
                await asyncio.Event().wait()
            say("Demo finished: every step behaved as expected. Stopping the nodes.")
        finally:
            await nodes.close()
