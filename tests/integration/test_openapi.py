"""The management API's OpenAPI document: complete, valid examples, and no server errors under fuzzing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import jsonschema
import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.http.management import PREFIX
from connector.testing import eventually, free_port

#: Operations that call a peer: fuzzing them would send the node to hosts off this machine (the stateful phase
#: delivers the credentials it issued to the holders it made up).
CALLS_PEERS = (r"^/api/management/v1/(peers/verify|peers|catalog/query|negotiations|credentials/ask"
               r"|credentials/issued/\{id\}/deliver)$")


async def _doc(node) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{node.node.management_url}{PREFIX}/openapi.json") as r:
        assert r.status == 200
        return await r.json()


async def test_every_route_is_documented(nodes):
    a = await nodes.start("acme")
    doc = await _doc(a)
    served = set()
    for runner in a.node._runners:
        for route in runner.app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter")
            if path and path.startswith(PREFIX) and route.method != "HEAD" and not path.endswith(
                ("/openapi.json", "/docs")
            ):
                served.add((route.method.lower(), path))
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["openapi"] == "3.1.0"


async def test_examples_validate_against_their_schemas(nodes):
    a = await nodes.start("acme")
    doc = await _doc(a)
    components = {"components": doc["components"]}
    checked = 0
    for ops in doc["paths"].values():
        for op in ops.values():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content and "example" in content:
                schema = {**content["schema"], **components}
                jsonschema.validate(content["example"], schema)
                checked += 1
    assert checked >= 6


async def test_responses_match_the_documented_schemas(nodes):
    a = await nodes.start("acme")
    doc = await _doc(a)
    await a.client.add_asset({"id": "a1", "title": "t"})
    components = {"components": doc["components"]}
    for path, getter in ((f"{PREFIX}/assets", a.client.entries("assets")), (f"{PREFIX}/participant",
                                                                             a.client.participant())):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(await getter, {**schema, **components})


async def test_docs_page_is_offline(nodes):
    a = await nodes.start("acme")
    async with aiohttp.ClientSession() as s, s.get(f"{a.node.management_url}{PREFIX}/docs") as r:
        html = await r.text()
    assert r.status == 200 and 'fetch("openapi.json")' in html
    assert "http://" not in html.replace('href="openapi.json"', "") and "https://" not in html


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path: Path):
    data, port, mport = tmp_path / "node", free_port(), free_port()
    result = CliRunner().invoke(main, ["init", "--dir", str(data), "--name", "fuzz", "--port", str(port),
                                       "--management-port", str(mport), "--dev"])
    assert result.exit_code == 0, result.output
    token = (data / "management.token").read_text().strip()
    with subprocess.Popen([sys.executable, "-m", "connector", "serve", "--dir", str(data)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as node:
        try:
            url = f"http://127.0.0.1:{mport}{PREFIX}/openapi.json"

            async def answers() -> bool:
                def probe() -> bool:
                    try:
                        with urllib.request.urlopen(url, timeout=1):
                            return True
                    except OSError:
                        return False

                return await asyncio.to_thread(probe)

            asyncio.run(eventually(answers, 20, what="the node's management listener"))
            st = Path(sys.executable).with_name("st")
            run = subprocess.run(
                [str(st), "run", url, "-H", f"Authorization: Bearer {token}",
                 "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                             "response_schema_conformance",
                 "--exclude-path-regex", CALLS_PEERS, "-n", "15", "--generation-deterministic",
                 "--request-timeout", "10"],
                capture_output=True, text=True, timeout=240, env={**os.environ, "NO_COLOR": "1"},
            )
        finally:
            node.terminate()
            node.wait(timeout=10)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "generated" in run.stdout
