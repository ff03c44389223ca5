"""Upgrades as an operator meets them: ``tds serve`` and ``tds info`` on a data folder whose database a later
release wrote (or whose schema version is no release's) say so in one readable line and exit 1; the node logs
it as one JSON line; nothing in the database changes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.store.migrations import MIGRATIONS
from connector.testing import free_port

TDS = [sys.executable, "-m", "connector"]
LATEST = len(MIGRATIONS)
#: The schema version is SQLite's ``PRAGMA user_version`` in tds.db, and nothing in the file may change.
pytestmark = pytest.mark.sqlite_store


def _node_with_schema(tmp_path: Path, version: int) -> tuple[Path, bytes]:
    data = tmp_path / "node"
    result = CliRunner().invoke(main, ["init", "--dir", str(data), "--name", "acme", "--port", str(free_port()),
                                       "--management-port", str(free_port()), "--dev"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(data / "tds.db") as db:
        db.execute(f"PRAGMA user_version = {version}")
    db.close()
    return data, (data / "tds.db").read_bytes()


def test_serve_refuses_a_database_of_a_later_release_in_one_line_and_one_log_line(tmp_path):
    data, before = _node_with_schema(tmp_path, LATEST + 2)
    run = subprocess.run([*TDS, "serve", "--dir", str(data)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    said = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1, run.stderr
    assert f"schema version {LATEST + 2}" in said[0] and f"newest schema this software knows is {LATEST}" in said[0]
    assert f"Install a release that knows schema {LATEST + 2} or newer" in said[0]
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    refused = [e for e in logged if e["event"] == "cannot open the database"]
    assert len(refused) == 1 and refused[0]["level"] == "error", logged
    assert (refused[0]["schema"], refused[0]["known_schema"]) == (LATEST + 2, LATEST)
    assert "node started" not in [e["event"] for e in logged]
    assert (data / "tds.db").read_bytes() == before


@pytest.mark.parametrize("version", [-1, 2**31 - 1])
def test_serve_refuses_a_schema_version_no_release_writes(tmp_path, version):
    data, before = _node_with_schema(tmp_path, version)
    run = subprocess.run([*TDS, "serve", "--dir", str(data)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"error: {data / 'tds.db'} has schema version {version}, which no release" in run.stderr
    assert (data / "tds.db").read_bytes() == before


def test_info_names_the_schema_and_refuses_one_it_does_not_know(tmp_path):
    data, _ = _node_with_schema(tmp_path, LATEST)
    result = CliRunner().invoke(main, ["info", "--dir", str(data)])
    assert result.exit_code == 0 and f"database schema   {LATEST} (current)" in result.output, result.output
    data, _ = _node_with_schema(tmp_path / "later", LATEST + 1)
    result = CliRunner().invoke(main, ["info", "--dir", str(data)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"database schema   {LATEST + 1} (this software knows up to {LATEST})" in result.output
    assert f"error: {data / 'tds.db'} has schema version {LATEST + 1}" in result.output
    assert f"knows schema {LATEST + 1} or newer" in result.output


def test_info_says_when_the_node_will_migrate(tmp_path):
    data, _ = _node_with_schema(tmp_path, LATEST)
    with sqlite3.connect(data / "tds.db") as db:  # as if left by the release before the newest migration
        db.execute(f"PRAGMA user_version = {LATEST - 1}")
    db.close()
    result = CliRunner().invoke(main, ["info", "--dir", str(data)])
    assert result.exit_code == 0
    assert f"database schema   {LATEST - 1} (migrated to {LATEST} when the node starts)" in result.output
