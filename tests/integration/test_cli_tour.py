"""The CLI tour against running nodes: publish, browse, negotiate, list agreements."""

from __future__ import annotations

import asyncio
import json
import sys

from connector.cli import catalog_lines
from connector.testing import vault_plaintext


async def tds(node, *args: str) -> tuple[int, str]:
    return await offline(*args, "--node", node.node.management_url, "--token", node.token)


async def offline(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_publish_browse_negotiate(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    data = provider.data_dir / "files" / "acme" / "qi.csv"  # in the provider's own files
    data.parent.mkdir(exist_ok=True)
    data.write_text("part,defects\nA,0\n")
    code, out = await tds(provider, "asset", "add", "qi-2026", "--title", "Quality inspection", "--file", str(data),
                          "--data-class", "important", "--keyword", "quality")
    assert code == 0, out
    assert (await tds(provider, "policy", "add", "open"))[0] == 0
    code, out = await tds(provider, "policy", "add", "rnd", "--purpose", "R&D", "--max-uses", "3", "--log-uses")
    assert code == 0, out
    code, out = await tds(provider, "offer", "add", "qi", "--access", "open", "--contract", "rnd", "--asset", "qi-2026")
    assert code == 0 and "offer qi added" in out
    code, out = await tds(consumer, "catalog", provider.public_url)  # piped: the catalog as JSON
    qi = f"urn:tds:asset:{provider.participant.did}:qi-2026"  # the dataset's absolute id
    assert code == 0, out
    shown = catalog_lines(json.loads(out))  # what a terminal shows
    assert f"  dataset {qi}  Quality inspection" in shown
    assert "      permission use if odrl:purpose eq R&D, odrl:count lteq 3" in shown
    offer_id = next(line.split()[1] for line in shown if line.strip().startswith("offer "))
    code, out = await tds(consumer, "negotiate", provider.public_url, offer_id)
    assert code == 0, out
    assert ": FINALIZED" in out and f"for {qi}" in out
    code, out = await tds(consumer, "agreements")
    assert code == 0 and f"consumer  {qi}" in out
    negotiation_id = (await consumer.client.negotiations())[0]["id"]
    code, out = await tds(consumer, "negotiation", "show", negotiation_id)
    assert code == 0 and "FINALIZED" in out and "ContractAgreementMessage" in out
    # pull the agreed data (purpose and use counts are the consumer's to enforce on use, not on transfer)
    agreement_id = (await consumer.client.agreements())[0]["id"]
    code, out = await tds(consumer, "transfer", provider.public_url, agreement_id)
    assert code == 0, out
    assert ": COMPLETED" in out and "signed by the provider " + provider.participant.did in out
    saved = consumer.data_dir / out.split("saved to ")[1].split()[0]
    assert vault_plaintext(consumer.data_dir, saved) == b"part,defects\nA,0\n"
    assert b"defects" not in saved.read_bytes()  # sealed at rest
    code, out = await tds(consumer, "transfer", provider.public_url, agreement_id, "--push")  # sent by the provider
    assert code == 0, out
    assert ": COMPLETED" in out and "signed by the provider " + provider.participant.did in out
    assert vault_plaintext(consumer.data_dir, consumer.data_dir / out.split("saved to ")[1].split()[0]) == \
        b"part,defects\nA,0\n"
    code, out = await tds(consumer, "transfers")
    assert code == 0 and "pull  COMPLETED" in out and "push  COMPLETED" in out, out
    # use it through the usage API: decided, logged, counted, then written out
    target = consumer.data_dir.parent / "used.csv"
    code, out = await tds(consumer, "use", agreement_id, "--use-id", "tour-1", "--purpose", "R&D", "-o", str(target))
    assert code == 0 and out.startswith("permit: 17 bytes written"), out
    assert target.read_text() == "part,defects\nA,0\n"
    code, out = await tds(consumer, "use", agreement_id, "--use-id", "tour-2", "--purpose", "sales", "-o", str(target))
    assert code == 1 and out.startswith("deny") and "purpose is 'sales'" in out, out
    assert target.read_text() == "part,defects\nA,0\n"  # the earlier file is untouched
    bundle = f"{saved}.bundle.json"
    code, out = await offline("manifest", "verify", str(target), bundle)  # the data as released
    assert code == 0 and "OK: " in out, out
    code, out = await offline("manifest", "verify", str(saved), bundle, "--dir", str(consumer.data_dir))
    assert code == 0 and "OK: " in out, out
    code, out = await offline("manifest", "verify", str(saved), bundle)  # sealed, and no keys given
    assert code == 2 and out.startswith("error: ") and "--dir" in out and "Traceback" not in out, out
    target.write_text("part,defects\nA,9\n")
    code, out = await offline("manifest", "verify", str(target), bundle)
    assert code == 2 and "chunk 0" in out, out
    sealed = bytearray(saved.read_bytes())
    sealed[-1] ^= 1
    saved.write_bytes(bytes(sealed))
    code, out = await offline("manifest", "verify", str(saved), bundle, "--dir", str(consumer.data_dir))
    assert code == 2 and out.startswith("error: ") and "tampered" in out and "Traceback" not in out, out
    code, out = await tds(consumer, "usage", "show", agreement_id)
    assert code == 0 and "2 of 3 uses left" in out, out
    code, out = await tds(provider, "usage", "report", agreement_id)
    assert code == 0 and f"used by {consumer.participant.did}" in out, out
    code, out = await tds(provider, "agreement", "revoke", agreement_id, "--reason", "tour over")
    assert code == 0 and "REVOKED" in out, out


async def test_negotiate_unknown_offer_is_a_readable_error(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    code, out = await tds(consumer, "negotiate", provider.public_url, "nope:nothing")
    assert code == 2 and out.startswith("error: ") and "Traceback" not in out


async def test_bad_policy_file_names_the_field(nodes, tmp_path):
    provider = await nodes.start("acme")
    bad = tmp_path / "p.json"
    bad.write_text('{"@type": "Set", "permission": [{"action": "use", "constraint": [{"operator": "eq"}]}]}')
    code, out = await tds(provider, "policy", "add", "bad", "--file", str(bad))
    assert code == 2 and "field $.policy" in out


async def _tds(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connector", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_hosting_a_participant_and_its_tokens(nodes):
    host = await nodes.start("acme")
    code, out = await _tds("participant", "add", "sme-one", "--legal-name", "SME One Ltd.", "--region", "CN-GD",
                           "--dir", str(host.data_dir))  # the admin token from DIR/admin.token
    assert code == 0, out
    assert ":participants:sme-one" in out and "/participants/sme-one/api/dsp/2025-1" in out
    sme_token = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("token "))
    own = ("--node", host.node.management_url, "--token", sme_token)
    code, out = await _tds("token", "create", "erp-sync", *own)
    assert code == 0 and "for erp-sync" in out, out
    token_id, value = out.split()[1], out.strip().splitlines()[-1]
    code, out = await _tds("token", "list", *own)
    assert code == 0 and token_id in out and "erp-sync" in out and value not in out and sme_token not in out
    code, out = await _tds("token", "revoke", token_id, *own)
    assert code == 0 and "revoked" in out
    code, out = await _tds("token", "list", "--node", host.node.management_url, "--token", value)
    assert code == 2 and "revoked" in out
    code, out = await _tds("participant", "add", "sme-two", "--legal-name", "X", "--region", "CN", *own)
    assert code == 2 and "admin token" in out
