"""deploy/: the compose file, the node configs, the entrypoint and the Dockerfile, checked without Docker.

- The compose file validates against the Compose Specification's JSON schema (``tests/data/compose-spec.json``,
  taken unchanged from ``compose/config/compose_spec.json`` in the ``docker-compose`` 1.29.2 package on
  PyPI, Apache-2.0), and against the rules the nodes rely on (own volume, config mount, subnet trusted).
- Every ``deploy/nodes/*.toml`` boots on loopback through ``deploy/entrypoint.sh`` itself, with certificates
  from ``deploy/certs.sh``: only host, ports and public URL are rewritten to loopback values, and the
  ``/certs`` paths to the folder the test made.
- The Dockerfile, ``.dockerignore`` and the compose file's build and ports are checked statically in
  ``tests/unit/test_container_image.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import jsonschema
import pytest
import yaml

from connector.config import parse_config
from connector.testing import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NODES = sorted((DEPLOY / "nodes").glob("*.toml"))


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def node_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name != "certs"}


def mounts(service: dict) -> dict[str, str]:
    """Container path → source of a service's volumes (short syntax)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


# -- (a) the compose file ------------------------------------------------------------------------------

def test_compose_file_validates_against_the_compose_spec():
    schema = json.loads((ROOT / "tests/data/compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    broken = compose()
    broken["services"]["acme"]["volumez"] = []
    assert any("volumez" in e.message for e in validator.iter_errors(broken))  # the schema is in force


def test_one_service_per_node_config_with_its_own_volume():
    services = node_services()
    assert {f"{name}.toml" for name in services} == {p.name for p in NODES}
    volumes = compose()["volumes"]
    data_volumes = []
    for name, service in services.items():
        found = mounts(service)
        assert found["/etc/tds/node.toml"] == f"./nodes/{name}.toml"
        assert found["/data"] in volumes
        data_volumes.append(found["/data"])
        hosted = found.get("/etc/tds/hosted.txt")
        if hosted is not None:
            assert (DEPLOY / hosted).is_file()
        assert service["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    assert len(set(data_volumes)) == len(data_volumes)
    certs = compose()["services"]["certs"]
    assert certs["entrypoint"][2:] == sorted(services, key=certs["entrypoint"].index)  # a certificate for each


def test_the_enterprise_hosts_two_smes_and_the_partner_is_in_another_region():
    hosted = [line for line in (DEPLOY / "nodes/acme.hosted").read_text().splitlines()
              if line and not line.startswith("#")]
    assert len(hosted) == 2 and all(len(line.split("|")) == 4 for line in hosted)
    regions = {p.stem: parse_config(p.read_text()).participant.region for p in NODES}
    assert regions.pop("isar-optics") == "DE-BY" and all(r.startswith("CN") for r in regions.values())


@pytest.mark.parametrize("path", NODES, ids=[p.stem for p in NODES])
def test_node_config_fits_the_compose_network(path):
    config = parse_config(path.read_text())
    [subnet] = [c["subnet"] for c in compose()["networks"]["dataspace"]["ipam"]["config"]]
    url = urlsplit(config.node.public_url)
    assert (url.scheme, url.hostname, url.port) == ("https", path.stem, config.node.port)
    assert config.participant.name == path.stem and subnet in config.node.trusted_networks
    assert not config.node.dev_mode and config.node.host == "0.0.0.0"
    assert config.node.management_host == "127.0.0.1"  # the management API stays inside the container
    assert (config.node.tls_cert, config.node.tls_key, config.node.tls_ca) == (
        f"/certs/{path.stem}/cert.pem", f"/certs/{path.stem}/key.pem", "/certs/ca.pem")


# -- (b) every node config boots on loopback, through the entrypoint -------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", str(DEPLOY / "certs.sh"), str(folder), *node_services()], check=True,
                   capture_output=True, timeout=60)
    return folder


def loopback(text: str, certs: Path, port: int, management_port: int) -> str:
    """The config with host, ports and public URL on loopback, and the certificates where the test made them."""
    text = re.sub(r'(?m)^public_url = "https://[^"]+"', f'public_url = "https://127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^host = "[^"]*"', 'host = "127.0.0.1"', text)
    text = re.sub(r"(?m)^port = \d+", f"port = {port}", text)
    text = re.sub(r"(?m)^management_port = \d+", f"management_port = {management_port}", text)
    return text.replace('"/certs/', f'"{certs}/')


class Entrypoint:
    """``deploy/entrypoint.sh`` as a container runs it (in its own process group, all of which is stopped)."""

    def __init__(self, data: Path, config: Path, hosted: Path) -> None:
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "TDS_DIR": str(data), "TDS_CONFIG": str(config), "TDS_HOSTED": str(hosted),
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.data = data
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log = (self.data.parent / f"{self.data.name}.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            "sh", str(DEPLOY / "entrypoint.sh"), env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        return (self.data.parent / f"{self.data.name}.log").read_text()


async def wait_serving(entry: Entrypoint, session: aiohttp.ClientSession, url: str, context: ssl.SSLContext,
                       server_hostname: str, deadline_s: float = 30.0) -> None:
    """Wait until the first start has finished and the node answers /healthz over HTTPS."""

    async def serving() -> bool:
        assert entry.proc is not None
        if entry.proc.returncode is not None:
            raise AssertionError(f"entrypoint exited with {entry.proc.returncode}:\n{entry.output()}")
        if not (entry.data / ".first-start-done").exists():
            return False
        try:
            async with session.get(f"{url}/healthz", ssl=context, server_hostname=server_hostname) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(serving, deadline_s, what="the node serving")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{entry.output()}") from None


async def healthcheck(entry: Entrypoint) -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(DEPLOY / "healthcheck.py"), env=entry.env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize("path", NODES, ids=[p.stem for p in NODES])
async def test_node_config_boots_through_the_entrypoint(path, certs, tmp_path):
    name = path.stem
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(loopback(path.read_text(), certs, port, free_port()))
    hosted_file = path.with_suffix(".hosted")
    hosted = [line.split("|")[0] for line in (hosted_file.read_text().splitlines() if hosted_file.exists() else [])
              if line and not line.startswith("#")]
    entry = Entrypoint(tmp_path / "data", config, hosted_file)
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))  # verified against the service name
    url = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for start in ("first", "second"):
            try:
                await entry.start()
                await wait_serving(entry, session, url, context, name)
                for participant in (name, *hosted):
                    async with session.get(f"{url}/participants/{participant}/did.json", ssl=context,
                                           server_hostname=name) as resp:
                        assert resp.status == 200, participant
                        assert (await resp.json())["id"] == f"did:web:127.0.0.1%3A{port}:participants:{participant}"
                assert await healthcheck(entry) == 0
            finally:
                code = await entry.stop()
            assert code == 0, f"{start} start: {entry.output()}"
    for participant in hosted:
        token = entry.data / "tokens" / f"{participant}.token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) > 20
        assert token.read_text().strip() not in entry.output()  # handed over in a file, never logged
    assert stat.S_IMODE((entry.data / "tds.toml").stat().st_mode) == 0o600


async def test_entrypoint_refuses_a_first_start_that_did_not_finish(certs, tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(loopback((DEPLOY / "nodes/parts.toml").read_text(), certs, free_port(), free_port()))
    entry = Entrypoint(tmp_path / "data", config, tmp_path / "none")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/tds.toml").write_text(config.read_text())  # as if the container died during its first start
    await entry.start()
    try:
        assert entry.proc is not None
        assert await asyncio.wait_for(entry.proc.wait(), 30) == 1
    finally:
        await entry.stop()
    assert "did not finish" in entry.output()

