"""The management API from another machine: HTTPS on the management listener (the public certificate or its
own), the CLI with ``--node https://… --token … --ca FILE``, ``--dir`` checking the certificate its config
names, a ``--node`` that is not the folder's node refused, and ``tds whoami`` for every kind of token."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result

from connector.cli import main
from connector.client import ClientError, ManagementClient
from connector.errors import ConfigError
from connector.testing import write_tls


async def invoke(*args: str) -> Result:
    """``tds ARGS`` on a thread of its own (the CLI runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


def one_error_line(result: Result, code: int) -> str:
    """The command failed with *code*, printed nothing on stdout and one ``error:`` line on stderr (returned;
    the nodes in this process log their JSON lines to stderr too)."""
    assert (result.exit_code, result.stdout) == (code, ""), (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith("error: ")
    return line


async def https_node(nodes: Any, tmp_path: Path, ca: trustme.CA | None = None) -> tuple[Any, dict[str, str]]:
    """A node outside dev mode whose public and management listeners serve the same certificate (from *ca*, a
    test CA, for 127.0.0.1): ``management_tls = "node"``."""
    name = "acme"
    tls = write_tls(ca or trustme.CA(), tmp_path / f"tls-{name}", "127.0.0.1")
    node = await nodes.start(name, dev_mode=False, trusted_networks=("127.0.0.0/8",), https=True,
                             management_tls="node", management_ca=tls["tls_ca"], **tls)
    return node, tls


async def test_management_api_serves_https_with_the_public_certificate(nodes, tmp_path):
    node, _ = await https_node(nodes, tmp_path)
    assert node.node.management_url.startswith("https://127.0.0.1:")
    assert node.public_url.startswith("https://")
    assert (await node.client.participant())["name"] == "acme"  # the client checks it against the test CA
    plain = ManagementClient(node.node.management_url.replace("https://", "http://"), node.token)
    try:
        with pytest.raises(ClientError) as info:
            await plain.participant()
    finally:
        await plain.close()
    assert info.value.status == 0 and "https://" in str(info.value)


async def test_management_api_serves_https_with_its_own_certificate(nodes, tmp_path):
    # A dev node (public listener in plain http) whose management listener has a certificate of its own.
    own = write_tls(trustme.CA(), tmp_path / "management-tls", "127.0.0.1")
    node = await nodes.start("acme", management_tls_cert=own["tls_cert"], management_tls_key=own["tls_key"],
                             management_ca=own["tls_ca"])
    assert node.public_url.startswith("http://") and node.node.management_url.startswith("https://")
    assert (await node.client.participant())["did"] == node.participant.did
    other_ca = write_tls(trustme.CA(), tmp_path / "other", "127.0.0.1")["tls_ca"]
    stranger = ManagementClient(node.node.management_url, node.token, ca=other_ca)
    try:
        with pytest.raises(ClientError, match="certificate not trusted"):
            await stranger.participant()
    finally:
        await stranger.close()


async def test_a_management_key_readable_by_others_fails_the_start(nodes, tmp_path):
    own = write_tls(trustme.CA(), tmp_path / "management-tls", "127.0.0.1")
    os.chmod(own["tls_key"], 0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        await nodes.start("acme", management_tls_cert=own["tls_cert"], management_tls_key=own["tls_key"])
    assert info.value.path == "node.management_tls_key" and "BEGIN" not in str(info.value)
    assert nodes.nodes == []


async def test_cli_reaches_an_https_management_api_with_the_ca_and_explains_without_it(nodes, tmp_path):
    node, tls = await https_node(nodes, tmp_path)
    url = node.node.management_url
    await node.client.add_asset({"id": "qi"})
    listed = await invoke("asset", "list", "--json", "--node", url, "--token", node.token, "--ca", tls["tls_ca"])
    assert listed.exit_code == 0, listed.stderr
    assert [a["id"] for a in json.loads(listed.stdout)] == ["qi"]

    line = one_error_line(await invoke("asset", "list", "--node", url, "--token", node.token), code=3)
    assert "certificate not trusted" in line and "--ca" in line and node.token not in line

    other_ca = write_tls(trustme.CA(), tmp_path / "other", "127.0.0.1")["tls_ca"]
    line = one_error_line(await invoke("whoami", "--node", url, "--token", node.token, "--ca", other_ca), code=3)
    assert "certificate not trusted" in line and "other" in line


async def test_ca_from_the_environment(nodes, tmp_path, monkeypatch):
    node, tls = await https_node(nodes, tmp_path)
    monkeypatch.setenv("TDS_CA", tls["tls_ca"])
    result = await invoke("whoami", "--json", "--node", node.node.management_url, "--token", node.token)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["participant"]["name"] == "acme"


async def test_a_ca_file_that_is_not_pem_is_a_usage_error(nodes, tmp_path):
    node, _ = await https_node(nodes, tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    line = one_error_line(await invoke("whoami", "--node", node.node.management_url, "--token", node.token,
                                       "--ca", str(junk)), code=2)
    assert "junk.pem" in line


async def test_the_folder_alone_checks_the_certificate_its_config_names(nodes, tmp_path):
    ca = trustme.CA()
    node, tls = await https_node(nodes, tmp_path, ca)
    result = await invoke("whoami", "--json", "--dir", str(node.data_dir))
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["managementApi"] == node.node.management_url and shown["participant"]["name"] == "acme"

    # The file names another certificate than the listener presents (another server on that port, or one renewed
    # since the node started): refused, although the same CA issued both.
    other = b"".join(blob.bytes() for blob in ca.issue_cert("127.0.0.1").cert_chain_pems)
    await asyncio.to_thread(Path(tls["tls_cert"]).write_bytes, other)
    line = one_error_line(await invoke("whoami", "--dir", str(node.data_dir)), code=3)
    assert "a certificate other than the one node.tls_cert names" in line and "--ca" in line


async def test_a_node_url_that_is_not_the_folders_node_needs_its_own_token(nodes):
    acme, parts = await nodes.start("acme"), await nodes.start("parts")
    await parts.client.add_asset({"id": "parts-data"})
    folder, other = str(acme.data_dir), parts.node.management_url

    line = one_error_line(await invoke("asset", "list", "--dir", folder, "--node", other), code=2)
    assert f"--node {other} is not this folder's node" in line
    assert f"its management API is {acme.node.management_url}" in line and "--token" in line
    assert "drop --dir" in line and acme.token not in line

    with_token = await invoke("asset", "list", "--json", "--dir", folder, "--node", other, "--token", parts.token)
    assert with_token.exit_code == 0, with_token.stderr
    assert [a["id"] for a in json.loads(with_token.stdout)] == ["parts-data"]

    # The folder's own node, however it is written, is no conflict.
    port = acme.node.management_port
    for same in (acme.node.management_url, f"http://localhost:{port}/", f"http://127.0.0.1:{port}/api/management/v1"):
        result = await invoke("whoami", "--json", "--dir", folder, "--node", same)
        assert result.exit_code == 0, (same, result.stderr)
        assert json.loads(result.stdout)["participant"]["name"] == "acme"


async def test_whoami_with_the_participants_token_names_it_and_its_keys(nodes):
    node = await nodes.start("acme")
    result = await invoke("whoami", "--dir", str(node.data_dir))
    assert result.exit_code == 0, result.stderr
    participant = node.participant
    fingerprints = participant.keys.fingerprints()
    for expected in ("acme (Acme Co., CN-GD)", participant.did, participant.dsp_base,
                     f"{participant.base_url}/did.json", fingerprints["ed25519"], fingerprints["x25519"],
                     "application     cli", node.node.management_url):
        assert expected in result.stdout, (expected, result.stdout)


async def test_whoami_with_an_application_token_names_the_application(nodes):
    node = await nodes.start("acme")
    app = await node.client.create_token("erp-sync")
    result = await invoke("whoami", "--json", "--node", node.node.management_url, "--token", app["token"])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["admin"] is False
    assert (shown["participant"]["name"], shown["participant"]["application"]) == ("acme", "erp-sync")


async def test_whoami_with_the_admin_token_says_it_has_no_participant(nodes):
    node = await nodes.start("acme")
    result = await invoke("whoami", "--dir", str(node.data_dir), "--token", node.admin_token)
    assert result.exit_code == 0, result.stderr
    assert "the node's admin token (no participant)" in result.stdout and node.participant.did not in result.stdout
    as_json = await invoke("whoami", "--json", "--node", node.node.management_url, "--token", node.admin_token)
    assert json.loads(as_json.stdout) == {"managementApi": node.node.management_url, "admin": True,
                                          "participant": None}


async def test_whoami_with_a_hosted_participants_token_sees_that_participant_only(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    for args in (("--node", host.node.management_url, "--token", sme.token),
                 ("--dir", str(host.data_dir), "--token", sme.token)):
        result = await invoke("whoami", "--json", *args)
        assert result.exit_code == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["admin"] is False and shown["participant"]["name"] == "sme-one"
        assert shown["participant"]["did"] == sme.participant.did
        assert host.participant.did not in result.stdout


async def test_whoami_with_an_unknown_token_is_refused(nodes):
    node = await nodes.start("acme")
    line = one_error_line(await invoke("whoami", "--node", node.node.management_url, "--token", "tds_stranger"),
                          code=2)
    assert "tds_stranger" not in line


async def test_whoami_after_a_suspension_says_why(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    await nodes.client(host, host.admin_token).suspend_participant("sme-one", "hosting contract ended")
    line = one_error_line(await invoke("whoami", "--node", host.node.management_url, "--token", sme.token), code=2)
    assert "hosting contract ended" in line


async def test_the_folder_alone_takes_the_certificate_whatever_name_it_carries(nodes, tmp_path):
    # A certificate for the host's public name, not for the loopback address the folder's client connects to.
    own = write_tls(trustme.CA(), tmp_path / "management-tls", "tds.acme.example")
    node = await nodes.start("acme", management_tls_cert=own["tls_cert"], management_tls_key=own["tls_key"],
                             management_ca=own["tls_ca"])
    result = await invoke("whoami", "--json", "--dir", str(node.data_dir))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["participant"]["name"] == "acme"
    # By URL, the name is checked: the CA alone does not make 127.0.0.1 the certificate's host.
    line = one_error_line(await invoke("whoami", "--node", node.node.management_url, "--token", node.token,
                                       "--ca", own["tls_ca"]), code=3)
    assert "127.0.0.1" in line and "certificate not trusted" in line
