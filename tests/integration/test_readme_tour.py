"""The README's five-minute tour, run as written: its shell block, taken from README.md, runs in bash in an
empty folder (only its ports changed to free ones), writes nothing outside its ``tour`` folder, and every
command succeeds. Its nodes are stopped when the block ends, however it ends. And the README's token rotation
for a hosted SME, step by step, leaves the SME with a working token."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from connector.client import ManagementClient

README = Path(__file__).resolve().parents[2] / "README.md"
GITIGNORE = README.with_name(".gitignore")


def tour_block() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("```sh\n", text.index("## A five-minute tour")) + len("```sh\n")
    return text[start:text.index("\n```\n", start) + 1]


def free_pair() -> int:
    """A port P with P and P+1 free (the public port, and the management port that defaults to P+1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports next to each other")


@pytest.mark.slow
def test_the_readme_tour_runs_as_written_in_a_scratch_folder(tmp_path):
    block = tour_block()
    assert block.startswith(". .venv/bin/activate\n"), block
    acme, parts = free_pair(), free_pair()
    script = block.replace(". .venv/bin/activate\n", "", 1)
    script = re.sub(r"\b8181\b", str(acme), re.sub(r"\b8281\b", str(parts), script))
    # Run as a reader pastes it: each command in turn, stopping at the first that fails; the nodes it started in
    # the background get SIGTERM when the script ends (the tour leaves them running for the sections after it).
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("TDS_DIR", None), env.pop("TDS_NODE", None), env.pop("TDS_TOKEN", None)
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tour"]  # nothing written beside the scratch folder
    tour = tmp_path / "tour"
    assert (tour / "acme" / "admin.token").exists() and (tour / "parts" / "management.token").exists()
    assert (tour / "qi.csv").read_text() == "part,defects\nA,0\n"
    out = run.stdout
    assert ": FINALIZED" in out and ": COMPLETED" in out, out
    assert "permit: 17 bytes written to qi.csv" in out and "OK: " in out and "2 of 3 uses left" in out, out
    assert "REVOKED (done)" in out, out
    for log in (tour / "acme.log", tour / "parts.log"):  # the nodes stopped cleanly when the script ended
        assert '"event": "node stopped"' in log.read_text(), log.read_text()[-2000:]


def test_the_tour_folder_is_ignored_by_git():
    assert "/tour/" in GITIGNORE.read_text(encoding="utf-8").splitlines()
    assert "mkdir -p tour && cd tour" in tour_block()


async def test_the_smes_token_rotation_in_the_readme_keeps_it_in(nodes):
    # README, "Hosting SMEs": create its own token, use it, then revoke the one the host handed over.
    host = await nodes.start("acme")

    async def tds(token: str, *args: str) -> tuple[int, str]:
        env = {**os.environ, "TDS_NODE": host.node.management_url, "TDS_TOKEN": token}
        env.pop("TDS_DIR", None)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connector", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        return proc.returncode or 0, out.decode()

    async with ManagementClient(host.node.management_url, host.admin_token) as admin:
        first = (await admin.add_participant("sme-one", legal_name="SME One Ltd.", region="CN-GD-SZ"))["token"]
    code, out = await tds(first, "token", "create", "sme-cli")
    assert code == 0, out
    own = out.strip().splitlines()[-1]
    assert (await tds(own, "token", "create", "erp-sync"))[0] == 0
    code, out = await tds(own, "token", "list")
    first_id = next(line.split()[0] for line in out.splitlines() if line.split()[1] == "cli")
    code, out = await tds(own, "token", "revoke", first_id)
    assert code == 0 and f"token {first_id} revoked" in out, out
    code, out = await tds(own, "token", "list")  # still in
    assert code == 0 and "sme-cli" in out and f"{first_id}  cli" in out and "revoked" in out, out
    code, out = await tds(first, "token", "list")
    assert code == 2 and "unknown or revoked token" in out, out
