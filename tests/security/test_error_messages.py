"""Errors an operator meets first, said so that they know what to do: the management API asked on the public
port, a peer or node that does not answer in time, a name that breaks its rule, an entry that exists already.

Each is checked where it is said (the API's answer, the client's error, the CLI's one line), against real nodes
and listeners on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from connector.client import ClientError, ManagementClient
from connector.errors import PeerError
from connector.net.client import PeerClient
from connector.net.guard import OutboundPolicy
from connector.testing import free_port


async def tds(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connector", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


@pytest.fixture
async def hung() -> AsyncIterator[str]:
    """A listener that accepts connections and never answers (a peer or node that hangs); its base URL."""
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    release.set()
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


# -- the management API asked on the public port ----------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_the_public_port_says_it_is_not_the_management_api(nodes, method):
    node = await nodes.start("acme")
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.public_url}/api/management/v1/peers",
                                                       headers={"Authorization": f"Bearer {node.token}"}) as r:
        assert r.status == 404
        body = await r.json()
    assert "this is the node's public (DSP) port" in body["message"] and "node.management_port" in body["message"]
    assert str(node.node.management_port) not in body["message"]  # the peers are not told where it listens


async def test_the_cli_pointed_at_the_public_port_says_which_port_to_use(nodes):
    node = await nodes.start("acme")
    code, out = await tds("peers", "--node", node.public_url, "--token", node.token)
    assert code == 2 and out.startswith("error: this is the node's public (DSP) port"), out
    assert "tds info" in out and "Traceback" not in out


async def test_the_management_url_as_tds_info_prints_it_works_too(nodes):
    node = await nodes.start("acme")
    async with ManagementClient(f"{node.node.management_url}/api/management/v1/", node.token) as client:
        assert await client.participant()


async def test_a_port_that_is_no_tds_node_is_named_with_its_answer():
    unused_tcp_port = free_port()
    app = web.Application()  # answers every path with aiohttp's plain-text 404
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        async with ManagementClient(f"http://127.0.0.1:{unused_tcp_port}", "t") as client:
            with pytest.raises(ClientError) as refused:
                await client.peers()
    finally:
        await runner.cleanup()
    assert refused.value.status == 404
    assert f"404 Not Found from http://127.0.0.1:{unused_tcp_port}/api/management/v1/peers" in str(refused.value)
    assert "management URL" in str(refused.value)


# -- time limits --------------------------------------------------------------------------------------------


async def test_a_hung_peer_is_named_with_the_time_limit(hung):
    client = PeerClient(OutboundPolicy.build(True, []), timeout_s=0.3)
    try:
        with pytest.raises(PeerError) as failed:
            await client.request("GET", f"{hung}/.well-known/dspace-version")
    finally:
        await client.close()
    message = failed.value.message
    assert message == (f"GET {hung}/.well-known/dspace-version: the peer did not answer within 0.3 s "
                       "(node.outbound_timeout_s)"), message


async def test_a_hung_stream_is_named_with_the_stall_limit(hung):
    client = PeerClient(OutboundPolicy.build(True, []), timeout_s=5)
    try:
        with pytest.raises(PeerError, match=r"^GET .*/data: the peer sent nothing for 0.2 s \(the stall limit\)$"):
            async with client.stream(f"{hung}/data", read_timeout_s=0.2) as answer:
                await answer.read()
    finally:
        await client.close()


async def test_verifying_a_hung_peer_through_the_cli_names_the_peer_and_the_limit(nodes, hung):
    node = await nodes.start("acme", outbound_timeout_s=0.5)
    code, out = await tds("peer", "verify", hung, "--node", node.node.management_url, "--token", node.token)
    assert code == 1, out
    assert f"error: GET {hung}/.well-known/dspace-version: the peer did not answer within 0.5 s" in out, out
    assert "TimeoutError" not in out


async def test_a_node_that_does_not_answer_in_time_is_a_client_error_naming_the_limit(hung):
    async with ManagementClient(hung, "t", timeout_s=0.3) as client:
        with pytest.raises(ClientError) as failed:
            await client.peers()
    assert failed.value.status == 0
    assert str(failed.value) == (f"no answer from the node's management API within 0.3 s (GET {hung}"
                                 "/api/management/v1/peers); the node may still be working on the request")


# -- names and entries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("name", "Bad Name", "must be 1-63 lowercase letters (a-z), digits or '-', starting with a letter or digit"),
    ("region", "china", "must be an ISO 3166 code in capitals such as CN or CN-GD"),
    ("did", "did:key:z6Mk", "must be a did:web DID"),
])
async def test_participant_add_states_the_rule_in_words(nodes, field, value, rule):
    node = await nodes.start("acme")
    args = {"name": "sme-one", "legal_name": "SME One", "region": "CN-GD", field: value}
    name = args.pop("name")
    async with ManagementClient(node.node.management_url, node.admin_token) as admin:
        with pytest.raises(ClientError) as refused:
            await admin.add_participant(name, **args)
    assert refused.value.status == 400 and refused.value.path == f"$.{field}"
    assert refused.value.message == f"{field}: {rule}" or refused.value.message.startswith(f"{field}: {rule}")
    assert "regex" not in refused.value.message and "^" not in refused.value.message


async def test_the_cli_says_the_participant_name_rule_in_one_line(nodes):
    node = await nodes.start("acme")
    code, out = await tds("participant", "add", "Bad Name", "--legal-name", "X", "--region", "CN",
                          "--node", node.node.management_url, "--token", node.admin_token)
    assert code == 2, out
    assert out.strip() == ("error: name: must be 1-63 lowercase letters (a-z), digits or '-', starting with a "
                           "letter or digit (field $.name)")


@pytest.mark.parametrize(("kind", "noun"), [("assets", "asset"), ("policies", "policy"),
                                            ("contract-definitions", "contract definition")])
async def test_a_catalog_entry_is_named_in_the_singular(nodes, kind, noun):
    node = await nodes.start("acme")
    await node.client.add_asset({"id": "qi"})
    await node.client.add_policy("rnd", {"@type": "Set", "permission": [{"action": "use"}]})
    await node.client.add_contract_definition("cd", access_policy_id="rnd", contract_policy_id="rnd", assets=["qi"])
    entry = {"assets": "qi", "policies": "rnd", "contract-definitions": "cd"}[kind]
    with pytest.raises(ClientError) as missing:
        await node.client.delete_entry(kind, "nope")
    assert missing.value.message == f"no such {noun}"
    again = {"assets": lambda: node.client.add_asset({"id": "qi"}),
             "policies": lambda: node.client.add_policy("rnd", {"@type": "Set", "permission": [{"action": "use"}]}),
             "contract-definitions": lambda: node.client.add_contract_definition(
                 "cd", access_policy_id="rnd", contract_policy_id="rnd", assets=["qi"])}[kind]
    with pytest.raises(ClientError) as exists:
        await again()
    assert exists.value.status == 409 and exists.value.message == f"{noun} {entry!r} already exists"
