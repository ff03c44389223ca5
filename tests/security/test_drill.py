"""``tds drill`` against a fresh node: one line and one report entry per attack, every control holding, and
nothing of the drill's left behind (also when it is interrupted)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.bootstrap import init_node
from connector.cli import main
from connector.drill import CATALOGUE, OUTCOMES, DrillOptions, Target, run_drill
from connector.testing import store_connection

pytestmark = pytest.mark.slow
NAMES = [a.name for a in CATALOGUE]


async def drill(*args: str) -> Result:
    """``tds drill ARGS`` in a thread of its own (it runs its own event loop; the node serves in this one)."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["drill", *args], catch_exceptions=False)


def attack_lines(output: str) -> list[tuple[str, str]]:
    """(outcome, attack) of every output line that reports an attack."""
    found = []
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in OUTCOMES and words[1] in NAMES:
            found.append((words[0], words[1]))
    return found


async def drill_leftovers(node) -> dict[str, list[str]]:
    """Anything named drill-… still on the node: participants, folders, database rows."""
    admin = node.client.with_token(node.admin_token)  # the node's listener, its certificate checked as its client's
    try:
        participants = [p["name"] for p in await admin.participants() if p["name"].startswith("drill-")]
    finally:
        await admin.close()
    folders = [f"{root}/{p.name}" for root in ("files", "vault", "keys") if (node.data_dir / root).is_dir()
               for p in (node.data_dir / root).iterdir() if p.name.startswith("drill-")]
    with store_connection(node.data_dir) as db:
        rows = [f"{table}: {n}" for table, n in (
            (t, db.execute(f'SELECT COUNT(*) FROM "{t}" WHERE participant_id LIKE ?', ["drill-%"]).fetchone()[0])
            for t in db.tables_with_column("participant_id")) if n]
    return {"participants": participants, "folders": folders, "rows": rows}


async def test_the_drill_reports_every_attack_and_removes_what_it_created(nodes, tmp_path):
    node = await nodes.start("acme")
    report_path = tmp_path / "drill.json"
    result = await drill("--dir", str(node.data_dir), "--allow-tamper", "--report", str(report_path))
    assert result.exit_code in (0, 1), result.output
    assert [name for _, name in attack_lines(result.output)] == NAMES  # one line per attack, in order
    report = json.loads(report_path.read_text())
    assert report["node"] == {"management": node.node.management_url, "public": node.public_url}
    assert [a["name"] for a in report["attacks"]] == NAMES
    for entry in report["attacks"]:
        assert entry["outcome"] in OUTCOMES and entry["checks"] and entry["detail"], entry
        assert isinstance(entry["seconds"], float)
    assert sum(report["summary"][o] for o in OUTCOMES) == len(NAMES)
    assert report["summary"]["passed"] is (result.exit_code == 0)
    assert report["teardown"]["notRemoved"] == [] and not report["teardown"]["interrupted"]
    assert any(p in r for r in report["teardown"]["removed"] for p in report["participants"])
    assert "tampered" in report and report["allowTamper"] is True  # counter-reset says what it wrote
    assert await drill_leftovers(node) == {"participants": [], "folders": [], "rows": []}
    assert [p["name"] for p in await nodes.client(node, node.admin_token).participants()] == ["acme"]


async def test_a_fresh_node_holds_against_every_attack(nodes, tmp_path):
    node = await nodes.start("acme")
    result = await drill("--dir", str(node.data_dir), "--allow-tamper", "--report", str(tmp_path / "r.json"))
    outcomes = attack_lines(result.output)
    assert [(o, n) for o, n in outcomes if o not in ("refused", "skipped")] == [], result.output
    assert result.exit_code == 0, result.output


async def test_json_output_is_the_report_and_tampering_is_opt_in(nodes, tmp_path):
    node = await nodes.start("acme")
    result = await drill("--dir", str(node.data_dir), "--json", "--report", str(tmp_path / "r.json"),
                         "--attack", "counter-reset", "--attack", "bad-input")
    report = json.loads(result.stdout)  # progress went to stderr
    assert report == json.loads((tmp_path / "r.json").read_text())
    outcomes = {a["name"]: a for a in report["attacks"]}
    assert list(outcomes) == ["counter-reset", "bad-input"]
    assert outcomes["counter-reset"]["outcome"] == "skipped" and "--allow-tamper" in outcomes["counter-reset"]["detail"]
    assert "tampered" not in report
    assert await drill_leftovers(node) == {"participants": [], "folders": [], "rows": []}


async def test_an_interrupted_drill_still_removes_what_it_created(nodes, tmp_path):
    node = await nodes.start("acme")
    lines: list[str] = []

    def interrupt(_ctx) -> None:  # what Ctrl+C does to `asyncio.run`: cancel the drill's task
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    options = DrillOptions(Target.from_dir(node.data_dir), report=tmp_path / "r.json", emit=lines.append,
                           on_ready=interrupt)
    result = await run_drill(options)
    assert result.interrupted and result.exit_code == 130
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["teardown"]["interrupted"] and report["teardown"]["notRemoved"] == []
    assert {a["detail"] for a in report["attacks"]} == {"not run: interrupted"}
    assert any(line.startswith("removed everything the drill created") for line in lines)
    assert await drill_leftovers(node) == {"participants": [], "folders": [], "rows": []}


async def test_without_the_data_folder_the_file_attacks_are_errors_not_passes(nodes, tmp_path):
    node = await nodes.start("acme")
    result = await drill("--node", node.node.management_url, "--token", node.admin_token, "--report",
                         str(tmp_path / "r.json"), "--attack", "file-modes", "--attack", "bad-input")
    assert result.exit_code == 1, result.output
    assert attack_lines(result.output) == [("refused", "bad-input"), ("error", "file-modes")]  # catalogue order
    assert "needs --dir" in result.output
    assert await drill_leftovers(node) == {"participants": [], "folders": [], "rows": []}


def test_the_drill_refuses_a_node_outside_loopback_and_trusted_networks(tmp_path: Path):
    data_dir = tmp_path / "far"
    init_node(data_dir, name="far", port=18999, public_url="http://192.0.2.10:8181", dev_mode=True)
    result = CliRunner().invoke(main, ["drill", "--dir", str(data_dir), "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "192.0.2.10" in result.output and "neither loopback nor in the node's trusted_networks" in result.output
    assert not (tmp_path / "r.json").exists()


async def test_the_drill_reaches_a_management_listener_that_serves_https(nodes, tmp_path):
    """With --dir alone it checks the certificate the folder's config names; with --node, the CA given (for both
    listeners: it has no folder to read the public one's from)."""
    import trustme

    from connector.testing import write_tls

    tls = write_tls(trustme.CA(), tmp_path / "tls", "127.0.0.1")
    node = await nodes.start("acme", dev_mode=False, trusted_networks=("127.0.0.0/8",), https=True,
                             management_tls="node", management_ca=tls["tls_ca"], **tls)
    assert node.node.management_url.startswith("https://")
    result = await drill("--dir", str(node.data_dir), "--report", str(tmp_path / "r.json"), "--attack", "bad-input")
    assert result.exit_code == 0, result.output
    assert attack_lines(result.output) == [("refused", "bad-input")]
    result = await drill("--node", node.node.management_url, "--token", node.admin_token, "--ca", tls["tls_ca"],
                         "--report", str(tmp_path / "r2.json"), "--attack", "bad-input")
    assert attack_lines(result.output) == [("refused", "bad-input")], result.output
    assert await drill_leftovers(node) == {"participants": [], "folders": [], "rows": []}
