"""The ``tds`` command as a user runs it: init, info, serve (as a subprocess, stopped with SIGTERM), demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.testing import eventually, free_port

TDS = [sys.executable, "-m", "connector"]


def _init(tmp_path: Path, *extra: str) -> tuple[Path, int]:
    port = free_port()
    data = tmp_path / "node"
    result = CliRunner().invoke(main, ["init", "--dir", str(data), "--name", "acme", "--legal-name", "ACME Co.",
                                       "--port", str(port), "--management-port", str(free_port()),
                                       "--region", "CN-GD", "--dev", *extra])
    assert result.exit_code == 0, result.output
    return data, port


def test_init_writes_config_keys_and_token_with_private_modes(tmp_path):
    data, port = _init(tmp_path)
    for path in (data / "keys/acme/ed25519.key", data / "keys/acme/x25519.key", data / "management.token",
                 data / "admin.token", data / "keys/node.key", data / "tds.toml"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert f'public_url = "http://127.0.0.1:{port}"' in (data / "tds.toml").read_text()


def test_init_twice_is_a_readable_error(tmp_path):
    data, _ = _init(tmp_path)
    result = CliRunner().invoke(main, ["init", "--dir", str(data), "--name", "acme", "--dev"])
    assert result.exit_code == 2 and "already" in result.output and "Traceback" not in result.output


CONFIG = """# a node's settings, kept as written
[node]
public_url = "https://tds.example.com"
trusted_networks = ["10.20.0.0/16"]

[participant]
name = "acme"
legal_name = "ACME Co."
region = "DE-BY"
"""


def test_init_from_a_config_file_keeps_it_as_written(tmp_path):
    (tmp_path / "acme.toml").write_text(CONFIG)
    data = tmp_path / "node"
    result = CliRunner().invoke(main, ["init", "--dir", str(data), "--config", str(tmp_path / "acme.toml")])
    assert result.exit_code == 0, result.output
    assert "did:web:tds.example.com:participants:acme" in result.output
    assert (data / "tds.toml").read_text() == CONFIG
    for path in (data / "tds.toml", data / "admin.token", data / "keys/acme/ed25519.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "acme"], "leave out --name"),
        ([], "node.public_url"),
    ],
)
def test_init_from_a_config_file_refuses_other_settings_and_bad_files(tmp_path, args, message):
    (tmp_path / "acme.toml").write_text(CONFIG if args else CONFIG.replace("https", "ftp"))
    result = CliRunner().invoke(main, ["init", "--dir", str(tmp_path / "n"), "--config", str(tmp_path / "acme.toml"),
                                       *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "n" / "tds.toml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad Name", "--dev"], "participant.name"),
        (["--name", "a", "--region", "china", "--dev"], "participant.region"),
        (["--name", "a"], "pass --dev"),
    ],
)
def test_init_errors_name_the_field(tmp_path, args, message):
    result = CliRunner().invoke(main, ["init", "--dir", str(tmp_path / "n"), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_info_prints_dids_endpoints_and_fingerprints_without_secrets(tmp_path):
    data, port = _init(tmp_path)
    result = CliRunner().invoke(main, ["info", "--dir", str(data)])
    assert result.exit_code == 0
    assert f"did:web:127.0.0.1%3A{port}:participants:acme" in result.output
    assert f"http://127.0.0.1:{port}/participants/acme/api/dsp/2025-1" in result.output
    seed = (data / "keys/acme/ed25519.key").read_bytes()
    token = (data / "management.token").read_text().strip()
    assert seed.hex() not in result.output and token not in result.output


def test_bad_config_file_is_one_line(tmp_path):
    data, _ = _init(tmp_path)
    cfg = data / "tds.toml"
    cfg.write_text(cfg.read_text().replace("port = ", "prot = ", 1))
    for command in (["info", "--dir", str(data)], ["serve", "--dir", str(data)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2
        assert result.output.strip() == "error: node.prot: unknown field"


def test_unreadable_json_files_are_one_line_errors(tmp_path):
    data, _ = _init(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a":')
    for command, message in (
        (["policy", "add", "p", "--file", str(deep), "--dir", str(data)], "is not JSON: JSON nested deeper than 64"),
        (["policy", "add", "p", "--file", str(broken), "--dir", str(data)], "is not JSON: Expecting value"),
        (["manifest", "verify", str(broken), str(deep)], "the bundle does not verify: JSON nested deeper than 64"),
    ):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and message in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("options", "message"), [
    (["--for-duration", "30 days"], "not an xsd:duration: '30 days'"),
    (["--max-uses", "0"], "max_uses needs n >= 1"),
])
def test_a_bad_template_option_is_a_one_line_error(tmp_path, options, message):
    data, _ = _init(tmp_path)
    result = CliRunner().invoke(main, ["policy", "add", "p", *options, "--dir", str(data)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output


BY_PLANT = {"id": "by-plant", "sql": "SELECT region, count(*) FROM data WHERE plant_id = :plant GROUP BY region",
            "parameters": {"plant": "integer"}}


@pytest.mark.parametrize(("options", "message"), [
    (["--sandbox"], "without a privacy budget (--epsilon-per-query, --epsilon-total) only query templates run: "
                    "give --query-template FILE.json"),
    (["--sandbox", "--epsilon-total", "1"], "a privacy budget needs both --epsilon-per-query and --epsilon-total"),
    (["--sandbox", "--epsilon-per-query", "2", "--epsilon-total", "1"],
     "--epsilon-total must be at least --epsilon-per-query"),
    (["--sandbox", "--epsilon-per-query", "0", "--epsilon-total", "1"],
     "--epsilon-per-query and --epsilon-total must each be a positive number"),
    (["--sandbox", "--epsilon-per-query", "1", "--epsilon-total", "2", "--aggregates", "median"],
     "--aggregates must be some of count, sum, avg, min, max, stddev"),
    (["--sandbox", "--query-template", "{good}", "--query-columns", " , "], "--query-columns names no column"),
    (["--sandbox", "--query-template", "{good}", "--min-group-size", "0"],
     "--min-group-size must be a whole number of at least 1"),
    (["--sandbox", "--query-template", "{good}", "--max-queries", "0"],
     "--max-queries must be a whole number of at least 1"),
    (["--sandbox", "--query-template", "{good}", "--query-template", "{good}"],
     "--query-template: two templates have the id 'by-plant'"),
    (["--sandbox", "--query-template", "{good}", "--query-template", "{no_sql}"],
     "--query-template {no_sql}: a query template needs an id and its sql"),
    (["--sandbox", "--query-template", "{bad_type}"],
     "--query-template {bad_type}: a query template's parameters map names to one of"),
    (["--sandbox", "--query-template", "{a_list}"], "--query-template {a_list}: a query template is a JSON object"),
    (["--sandbox", "--query-template", "{not_json}"], "--query-template {not_json}: not a JSON file"),
    (["--sandbox", "--query-template", "{good}", "--max-uses", "3", "--purpose", "research"],
     "--sandbox makes a computation-only policy: leave out --purpose, --max-uses (for queries: --max-queries)"),
    (["--sandbox", "--query-template", "{good}", "--file", "{good}"], "give --file or --sandbox"),
    (["--epsilon-total", "3", "--max-queries", "2"],
     "--epsilon-total, --max-queries describe a computation-only policy: add --sandbox"),
])
def test_a_bad_sandbox_policy_is_a_one_line_error(tmp_path, options, message):
    """What ``templates.sandbox`` refuses, in the options' words, before the node is asked (it is not running)."""
    data, _ = _init(tmp_path)
    files = {"good": json.dumps(BY_PLANT), "no_sql": json.dumps({"id": "other"}),
             "bad_type": json.dumps({**BY_PLANT, "parameters": {"plant": "date"}}), "a_list": "[]",
             "not_json": "{"}
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    names = {name: str(tmp_path / f"{name}.json") for name in files}
    result = CliRunner().invoke(main, ["policy", "add", "p", *(o.format(**names) for o in options),
                                       "--dir", str(data)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message.format(**names)}"), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def _wait_for(url: str, proc: subprocess.Popen, deadline_s: float = 20.0) -> dict:
    """The JSON *url* answers once the node process *proc* listens (it must not exit meanwhile)."""

    def get() -> dict | None:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    async def answered() -> dict | None:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "node exited"
        return await asyncio.to_thread(get)

    return asyncio.run(eventually(answered, deadline_s, what=f"an answer from {url}"))


def test_serve_answers_and_stops_gracefully_on_sigterm(tmp_path):
    data, port = _init(tmp_path)
    with subprocess.Popen([*TDS, "serve", "--dir", str(data)], stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert _wait_for(f"http://127.0.0.1:{port}/healthz", proc) == {"status": "ok"}
            env = {**os.environ, "TDS_DIR": str(data)}
            out = subprocess.run([*TDS, "peers"], env=env, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0 and "no verified peers" in out.stdout
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        finally:
            if proc.poll() is None:
                proc.kill()
    events = [e["event"] for e in logs]
    assert "node started" in events and "shutting down" in events and "node stopped" in events
    token = (data / "management.token").read_text().strip()
    assert all(token not in json.dumps(e) for e in logs)


@pytest.mark.parametrize("command", [["peers"], ["agreements"], ["use", "urn:uuid:a", "--check"],
                                     ["use", "urn:uuid:a", "--use-id", "u1"], ["usage", "show", "urn:uuid:a"]])
def test_commands_on_a_stopped_node_say_so_with_exit_code_3(tmp_path, command):
    data, _ = _init(tmp_path)
    result = CliRunner().invoke(main, [*command, "--dir", str(data)])
    assert result.exit_code == 3 and "cannot reach" in result.output, result.output


def test_use_with_o_on_a_stopped_node_says_so_with_exit_code_3(tmp_path):
    data, _ = _init(tmp_path)
    out = tmp_path / "data.csv"
    result = CliRunner().invoke(main, ["use", "urn:uuid:a", "--use-id", "u1", "-o", str(out), "--dir", str(data)])
    assert result.exit_code == 3 and "cannot reach" in result.output, result.output
    assert not out.exists() and not out.with_name("data.csv.part").exists()


@pytest.mark.parametrize(("status", "code"), [(0, 3), (409, 1), (429, 1), (500, 1), (502, 1), (503, 1), (400, 2),
                                              (401, 2), (403, 2), (404, 2), (413, 2)])
def test_an_answer_of_the_node_maps_to_one_exit_code(status, code):
    from connector.cli import exit_code_of

    assert exit_code_of(status) == code


async def test_demo_runs_and_every_step_behaves():
    from connector.demo import run_demo

    lines: list[str] = []
    await run_demo(say=lines.append)
    text = "\n".join(lines)
    for evidence in ("Guangdong Auto Parts Alliance", "admits members to 'gz-auto-parts' with signed credentials",
                     "delivered to their nodes: Guangzhou Sensor Works, Foshan Mould Studio, Pearl River Parts",
                     "for members only (access policy tds:memberOf eq gz-auto-parts)",
                     "ACME counts membership gz-auto-parts and region CN-GD, verified by did:",
                     "signed by both parties", "verified (", "manifest ", "use 3 (purpose R&D): permitted",
                     "use 4: refused", "count is 4",
                     "sealed end to end", "signed entries received", "signed deletion receipt",
                     "a further use is refused",
                     "Isar Optics states CN-GD in its own self-description but holds no credential ACME trusts",
                     "the dataset is not in its catalog",
                     "the recipient has no verified region: no credential from an issuer trusted for regions",
                     "agrees a contract too: FINALIZED",
                     "The alliance revokes Pearl River Parts' membership",
                     "ACME no longer counts it (it reads a status list again after 1 s): status revoked",
                     "a new negotiation by Pearl River Parts is refused",
                     "no verified membership: no membership credential from an issuer trusted for it",
                     "every step behaved as expected"):
        assert evidence in text, (evidence, text)
