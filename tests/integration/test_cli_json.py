"""``tds … --json`` against nodes in this process: every command that prints a result prints one JSON document
on stdout and nothing else there, with the exit codes of ``tds --help``; a refusal stays an error on stderr.
``tds catalog`` piped (not a terminal) prints JSON too; and the catalog entries are listed and deleted, a
deletion refused while something needs the entry, another participant's entries not found."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result

from connector.cli import main
from connector.testing import free_port

SPACE = "urn:tds:space:auto-parts"


async def invoke(*args: str) -> Result:
    """``tds ARGS`` on a thread of its own (the CLI runs its own event loop); the nodes in this process log to
    stderr, never to stdout."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def tds(node: Any, *args: str, code: int = 0, token: str | None = None) -> Any:
    """``tds ARGS --json`` with *node*'s token: exits *code*, and its stdout is one JSON document."""
    result = await invoke(*args, "--json", "--node", node.node.management_url, "--token", token or node.token)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


async def refused(node: Any, *args: str, code: int, token: str | None = None) -> str:
    """``tds ARGS --json`` refused: exits *code*, nothing on stdout, one ``error:`` line on stderr (returned)."""
    result = await invoke(*args, "--json", "--node", node.node.management_url, "--token", token or node.token)
    assert (result.exit_code, result.stdout) == (code, ""), (args, result.stdout, result.stderr)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


async def test_every_command_prints_one_json_document_with_the_usual_exit_codes(nodes, tmp_path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    files = provider.data_dir / "files" / "acme"
    files.mkdir(parents=True, exist_ok=True)
    (files / "qi.csv").write_text("part,defects\nA,0\n")

    info = json.loads((await invoke("info", "--dir", str(provider.data_dir), "--json")).stdout)
    assert info["did"] == provider.participant.did and set(info["fingerprints"]) == {"ed25519", "x25519"}
    assert info["databaseSchema"]["problem"] is None
    made = await invoke("init", "--dir", str(tmp_path / "new"), "--name", "new", "--port", str(free_port()), "--dev",
                        "--json")
    assert made.exit_code == 0 and json.loads(made.stdout)["participant"] == "new"

    # publish
    assert (await tds(provider, "asset", "add", "qi", "--title", "Quality", "--file", str(files / "qi.csv")))["id"] \
        == "qi"
    assert (await tds(provider, "policy", "add", "open"))["id"] == "open"
    assert (await tds(provider, "policy", "add", "rnd", "--purpose", "R&D", "--max-uses", "3"))["id"] == "rnd"
    offer = await tds(provider, "offer", "add", "qi", "--access", "open", "--contract", "rnd", "--asset", "qi")
    assert offer["contractPolicyId"] == "rnd"
    assert [a["id"] for a in await tds(provider, "asset", "list")] == ["qi"]
    assert [p["id"] for p in await tds(provider, "policy", "list")] == ["open", "rnd"]
    assert [o["id"] for o in await tds(provider, "offer", "list")] == ["qi"]

    # find, agree, pull
    verified = await tds(consumer, "peer", "verify", provider.public_url)
    assert verified["verified"] and verified["peer"]["id"] == provider.participant.did and verified["claims"] == []
    assert (await tds(consumer, "peer", "add", provider.public_url))["did"] == provider.participant.did
    assert [p["did"] for p in await tds(consumer, "peers")] == [provider.participant.did]
    assert provider.participant.did in [e["did"] for e in await tds(consumer, "peer", "list")]
    assert await tds(consumer, "peer", "claims") == []
    catalog = await tds(consumer, "catalog", provider.public_url)
    offer_id = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    assert (await tds(consumer, "search", "--crawl"))["total"] >= 0
    negotiated = await tds(consumer, "negotiate", provider.public_url, offer_id)
    assert negotiated["state"] == "FINALIZED" and negotiated["negotiation"]["id"] == negotiated["negotiationId"]
    agreement_id = negotiated["agreementId"]
    assert agreement_id == negotiated["negotiation"]["agreement"]["@id"]
    assert (await tds(consumer, "negotiation", "show", negotiated["negotiationId"]))["state"] == "FINALIZED"
    assert [a["id"] for a in await tds(consumer, "agreements")] == [agreement_id]
    checked = await tds(consumer, "agreement", "verify", agreement_id)
    assert checked["valid"] and checked["dualSigned"] and {p["status"] for p in checked["parties"]} == {"valid"}
    pulled = await tds(consumer, "transfer", provider.public_url, agreement_id)
    assert (pulled["state"], pulled["timedOut"], pulled["agreementId"]) == ("COMPLETED", False, agreement_id)
    assert pulled["manifest"]["verified"] and pulled["manifest"]["provider"] == provider.participant.did
    assert pulled["manifest"]["size"] == 17 and pulled["savedPath"] == pulled["transfer"]["vaultPath"]
    assert [t["id"] for t in await tds(consumer, "transfers")] == [pulled["transferId"]]
    assert (await tds(consumer, "transfers", "show", pulled["transferId"]))["state"] == "COMPLETED"

    # use
    check = await tds(consumer, "use", agreement_id, "--check", "--purpose", "R&D")
    assert (check["decision"], check["check"], check["usesLeft"], check["seq"]) == ("permit", True, 3, None)
    counted = await tds(consumer, "use", agreement_id, "--use-id", "u1", "--purpose", "R&D")
    assert (counted["decision"], counted["usesLeft"], counted["bytesWritten"]) == ("permit", 2, None)
    assert counted["seq"] >= 1 and counted["entryHash"]
    out = tmp_path / "qi.csv"
    written = await tds(consumer, "use", agreement_id, "--use-id", "u2", "--purpose", "R&D", "-o", str(out))
    assert (written["decision"], written["usesLeft"], written["bytesWritten"]) == ("permit", 1, 17)
    assert written["seq"] == counted["seq"] + 1 and written["output"] == str(out)
    denied = await tds(consumer, "use", agreement_id, "--use-id", "u3", "--purpose", "sales", code=1)
    assert denied["decision"] == "deny" and any("purpose" in r for r in denied["reasons"])
    assert (await tds(consumer, "usage", "show", agreement_id))["uses"] == 2
    logged = await tds(consumer, "log", "verify", agreement_id)
    assert logged["intact"] and logged["permittedUses"] == 2 and logged["broken"] is None
    bundle = consumer.data_dir / f"{pulled['savedPath']}.bundle.json"
    matched = await invoke("manifest", "verify", str(out), str(bundle), "--json")
    assert matched.exit_code == 0 and json.loads(matched.stdout)["manifest"]["agreementId"] == agreement_id
    assert (await tds(provider, "usage", "report", agreement_id))["consumer"] == consumer.participant.did

    # tokens, hosting, trust and credentials
    made_token = await tds(consumer, "token", "create", "erp")
    assert [t["application"] for t in await tds(consumer, "token", "list")].count("erp") == 1
    assert await tds(consumer, "token", "revoke", made_token["id"]) == {"id": made_token["id"], "revoked": True}
    hosted = await tds(provider, "participant", "add", "sme-one", "--legal-name", "SME One", "--region", "CN-GD",
                       token=provider.admin_token)
    assert hosted["name"] == "sme-one" and hosted["token"]
    assert "sme-one" in [p["name"] for p in await tds(provider, "participant", "list", token=provider.admin_token)]
    trusted = await tds(consumer, "trust", "add", provider.participant.did, "--claims", "membership")
    assert trusted["claims"] == ["membership"]
    assert provider.participant.did in [t["issuer"] for t in await tds(consumer, "trust", "list")]
    issued_file = tmp_path / "membership.json"
    issued = await tds(provider, "credential", "issue", consumer.participant.did, "--kind", "membership", "--space",
                       SPACE, "-o", str(issued_file))
    assert (issued["delivered"], issued["writtenTo"]) == (False, str(issued_file))
    held = await tds(consumer, "credential", "import", str(issued_file))
    assert held["id"] == issued["id"]
    assert [c["id"] for c in (await tds(consumer, "credential", "list"))["held"]] == [issued["id"]]
    assert await tds(consumer, "credential", "offered") == []
    assert (await tds(provider, "credential", "revoke", issued["id"]))["id"] == issued["id"]
    assert await tds(consumer, "credential", "remove", issued["id"]) == {"id": issued["id"], "removed": True}
    assert await tds(consumer, "trust", "remove", provider.participant.did) == {
        "issuer": provider.participant.did, "trusted": False}
    asked = await tds(consumer, "credential", "request", provider.public_url, "--kind", "membership", "--space", SPACE)
    [pending] = await tds(provider, "credential", "pending")
    assert (await tds(provider, "credential", "reject", pending["id"]))["state"] == "rejected"
    assert asked["state"] == "pending"
    rotated = await tds(provider, "keys", "rotate", "--participant", "sme-one", token=provider.admin_token)
    assert rotated["name"] == "sme-one" and rotated["retiredKeys"]
    admin = {"token": provider.admin_token}
    assert (await tds(provider, "participant", "suspend", "sme-one", **admin))["state"] == "suspended"
    assert (await tds(provider, "participant", "resume", "sme-one", **admin))["state"] == "active"
    removed = await tds(provider, "participant", "remove", "sme-one", "--yes", token=provider.admin_token)
    assert removed["name"] == "sme-one"

    # a refusal is an error on stderr with its exit code, nothing on stdout
    assert "no such agreement" in await refused(consumer, "agreement", "verify", "urn:uuid:nope", code=2)
    assert "still in use" in await refused(provider, "asset", "delete", "qi", code=1)
    revoked = await tds(provider, "agreement", "revoke", agreement_id, "--reason", "done")
    assert revoked["state"] == "REVOKED"
    assert await tds(provider, "offer", "delete", "qi") == {"id": "qi", "deleted": True}
    assert await tds(provider, "policy", "delete", "rnd") == {"id": "rnd", "deleted": True}
    assert await tds(provider, "asset", "delete", "qi") == {"id": "qi", "deleted": True}
    assert await tds(provider, "asset", "list") == []


async def test_catalog_piped_prints_json(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await provider.client.add_asset({"id": "qi", "title": "Quality"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("qi", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "catalog", provider.public_url, "--node", consumer.node.management_url,
        "--token", consumer.token, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=Path(__file__).parent)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    catalog = json.loads(out)  # not a Python repr, nothing else on stdout
    assert catalog["participantId"] == provider.participant.did
    assert catalog["dataset"][0]["dct:title"] == "Quality"


async def test_entries_are_listed_and_deleted_unless_needed_and_only_by_their_participant(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    other = await nodes.host(provider, "sme-one")
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("qi", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi"])
    for group, entry in (("asset", "qi"), ("policy", "open"), ("offer", "qi")):
        assert await tds(other, group, "list", token=other.token) == []
        assert f"no such {'contract definition' if group == 'offer' else group}" in await refused(
            other, group, "delete", entry, code=2, token=other.token)  # another participant's: not found
    assert await refused(provider, "policy", "delete", "open", code=1) == (
        "error: policy 'open' is still in use by offers qi: first delete those offers")
    assert await refused(provider, "asset", "delete", "qi", code=1) == (
        "error: asset 'qi' is still in use by offers qi: first delete those offers")
    result = await invoke("policy", "list", "--node", provider.node.management_url, "--token", provider.token)
    assert result.exit_code == 0 and result.stdout == "open  permission use\n"
    result = await invoke("offer", "delete", "qi", "--node", provider.node.management_url, "--token", provider.token)
    assert result.exit_code == 0 and result.stdout == "offer qi deleted\n"
    await consumer.client.verify_peer(provider.public_url)
    assert (await consumer.client.catalog(provider.public_url)).get("dataset", []) == []


def test_the_readme_gives_the_exit_codes_tds_help_gives():
    shown = CliRunner().invoke(main, ["--help"]).stdout
    block = shown.split("Exit codes (every command):\n")[1].split("\n\n")[0]
    codes: dict[str, str] = {}
    for line in block.splitlines():
        if line.split()[0].isdigit():
            code, text = line.split(maxsplit=1)
            codes[code] = text
        else:
            codes[code] += " " + line.strip()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Scripting")
    section = readme[start:readme.index("\n## ", start)]
    table = [line.strip("| ").split(" | ") for line in section.splitlines() if re.match(r"\| \d \|", line)]
    assert dict(table) == codes


#: Commands without --json: they print no result (serve, demo), print a JSON document already (the exports), or
#: are not covered yet (backup, restore: `tds --help` says so).
WITHOUT_JSON = {"serve", "demo", "agreement export", "credential export", "statement export", "backup", "backup keygen",
                "restore"}


def test_every_other_command_takes_json():
    def commands(group: click.Group, path: str = "") -> list[tuple[str, click.Command]]:
        found: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            full = f"{path} {name}".strip()
            if not isinstance(command, click.Group) or command.invoke_without_command:
                found.append((full, command))
            if isinstance(command, click.Group):
                found += commands(command, full)
        return found

    lacking = {name for name, command in commands(main) if "--json" not in
               {opt for param in command.params for opt in getattr(param, "opts", [])}}
    assert lacking == WITHOUT_JSON


async def test_an_explicit_token_acts_as_its_participant_even_with_the_hosts_folder(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    await host.client.add_asset({"id": "qi"})
    await sme.client.add_asset({"id": "sme-data"})
    folder = str(host.data_dir)
    for token, expected in ((None, ["qi"]), (sme.token, ["sme-data"])):
        args = ["asset", "list", "--json", "--dir", folder, *(["--token", token] if token else [])]
        result = await invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert [a["id"] for a in json.loads(result.stdout)] == expected
