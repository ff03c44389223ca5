"""``tds serve`` (``connector.launcher``): the plain command line starts the node without the rest of the command
line; anything else, help and mistakes included, is the full command line's to answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.bootstrap import init_node
from connector.launcher import serve_dir

#: What a node does not load to start: the rest of the command line, the routes and services built on their first
#: request or use, what only they need, and on SQLite the PostgreSQL driver and SQL translation.
NOT_LOADED_TO_START = (
    "click", "rich", "jinja2", "sqlglot", "http_sf", "importlib.metadata", "connector.cli", "connector.store.pg",
    "psycopg",
    "connector.http.console", "connector.http.openapi", "connector.http.management", "connector.http.dsp",
    "connector.http.credentials", "connector.http.sandbox", "connector.http.dataplane", "connector.services.sandbox",
    "connector.services.credentials", "connector.services.publishing", "connector.identity.vc",
)


@pytest.mark.parametrize(("argv", "environ", "found"), [
    (["serve", "--dir", "n"], {}, Path("n")),
    (["serve", "--dir=n"], {}, Path("n")),
    (["serve"], {"TDS_DIR": "/srv/tds"}, Path("/srv/tds")),
    (["serve", "--dir", "n"], {"TDS_DIR": "/srv/tds"}, Path("n")),
    (["serve"], {}, None),
    (["serve"], {"TDS_DIR": ""}, None),
    (["serve", "--help"], {}, None),
    (["serve", "--dir"], {}, None),
    (["serve", "--dir="], {}, None),
    (["serve", "--dir", "--help"], {}, None),
    (["serve", "--dir", "n", "--verbose"], {}, None),
    (["serve", "--directory", "n"], {}, None),
    (["info", "--dir", "n"], {}, None),
    ([], {}, None),
])
def test_only_a_plain_serve_command_line_starts_without_the_full_one(argv: list[str], environ: dict[str, str],
                                                                      found: Path | None) -> None:
    assert serve_dir(argv, environ) == found


def test_a_node_is_built_without_what_its_start_does_not_need(tmp_path: Path) -> None:
    init_node(tmp_path / "n", name="acme", port=1, management_port=2, dev_mode=True)
    script = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from connector import launcher\n"
        "from connector.node import Node\n"
        "async def build():\n"
        "    Node(Path(sys.argv[1]))\n"
        "asyncio.run(build())\n"
        f"print(json.dumps([m for m in {NOT_LOADED_TO_START!r} if m in sys.modules]))\n"
    )
    # A node on SQLite, its store in its folder (``make test-postgres`` sets TDS_STORE, which would put it on the
    # PostgreSQL server, whose driver it then needs).
    env = {k: v for k, v in os.environ.items() if k != "TDS_STORE"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "n")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(("args", "code", "stream", "text"), [
    (["serve", "--help"], 0, "stdout", "Run the node until SIGTERM or Ctrl+C."),
    (["serve", "--dir"], 2, "stderr", "Option '--dir' requires an argument."),
])
def test_any_other_serve_command_line_is_answered_by_the_full_one(args: list[str], code: int, stream: str,
                                                                   text: str) -> None:
    done = subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == code
    assert text in getattr(done, stream)


def test_a_node_that_cannot_start_ends_the_command_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    done = subprocess.run([sys.executable, "-m", "connector", "serve", "--dir", str(missing)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: no tds.toml in {missing} (run `tds init --dir {missing}` first)\n"
