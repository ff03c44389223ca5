"""The container image's recipe, checked without Docker: ``deploy/Dockerfile``, ``.dockerignore`` and the build
and ports sections of ``deploy/docker-compose.yml``.

- The build context holds what the image is built from and nothing else: no node folder (keys, tokens,
  database) whatever its name, no ``.venv``, no ``.git``, no test or tool output. ``.dockerignore`` is read
  with Docker's rules (Go ``filepath.Match`` patterns, ``**``, a pattern also matching a file's parent
  folders, ``!`` exceptions, the last matching line wins).
- Every stage starts from the ``BASE_IMAGE`` build argument, and the compose file passes the same default.
- Only the first stage may reach a package index; the image installs from that stage's wheels alone
  (``pip --no-index --find-links``), with no apt, no download, nothing fetched by URL.
- The node runs as a non-root user with a health check; its ports are published on loopback by default.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from connector.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


# -- reading the files -----------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, each list starting with its FROM."""
    found: list[list[tuple[str, str]]] = []
    for op, args in dockerfile():
        if op == "FROM":
            found.append([])
        if found:
            found[-1].append((op, args))
    return found


def shell_commands(args: str) -> list[list[str]]:
    """The simple commands of a RUN line, as words."""
    return [command.split() for command in re.split(r"&&|;|\|\|", args) if command.strip()]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def node_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name != "certs"}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over a slash-separated relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> tuple[tuple[bool, int, re.Pattern[str]], ...]:
    """(is an exception, path components, regex) for each pattern of a .dockerignore text."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, pattern.count("/") + 1, _pattern_regex(pattern)))
    return tuple(rules)


@cache
def repository_rules() -> tuple[tuple[bool, int, re.Pattern[str]], ...]:
    return ignore_rules((ROOT / ".dockerignore").read_text())


def in_context(path: str, rules: tuple[tuple[bool, int, re.Pattern[str]], ...] | None = None) -> bool:
    """Whether Docker sends the file at this path (relative to the context's root) to the build."""
    parts = path.split("/")
    sent = True
    for negate, depth, regex in repository_rules() if rules is None else rules:
        if regex.match(path) or (len(parts) > depth and regex.match("/".join(parts[:depth]))):
            sent = negate
    return sent


def test_the_ignore_file_reader_follows_dockers_rules():
    assert _pattern_regex("**/keys").match("a/b/keys") and _pattern_regex("**/keys").match("keys")
    assert _pattern_regex("*.py[cod]").match("x.pyc") and not _pattern_regex("*").match("a/b")
    rules = ignore_rules("# a comment\n*\n!src\n/src/secret\n")
    assert in_context("src/a/b.py", rules) and not in_context("setup.py", rules)  # a folder's pattern, its files
    assert not in_context("src/secret/x", rules)  # the last matching line wins


# -- .dockerignore ---------------------------------------------------------------------------------------

LEFT_OUT = [
    # node folders, wherever `tds init --dir` put them, and the demo's
    "acme/tds.toml", "acme/keys/node.key", "acme/keys/acme/ed25519.key", "acme/admin.token",
    "acme/management.token", "acme/tds.db", "parts/vault/parts/x", "demo-data/acme/keys/node.key",
    "nodes/isar-optics/tds.db-wal", "tour/parts/keys/parts/x25519.key",
    # what looks like a node's secrets inside the folders that are sent
    "connector/keys/node.key", "connector/tds.toml", "usage_policies/key.pem", "deploy/wheelhouse/admin.token",
    # the environment and the repository
    ".venv/bin/python", ".venv/lib/python3.11/site-packages/aiohttp/__init__.py", "venv/bin/python", ".git/config",
    # test and tool output
    ".pytest_cache/v/cache/nodeids", ".hypothesis/examples/0/1", ".schemathesis/report.json", ".coverage",
    "htmlcov/index.html", "junit.xml", ".mypy_cache/3.11/x.json", ".ruff_cache/x", "build/lib/connector/cli.py",
    "tds_connector.egg-info/PKG-INFO", "connector/__pycache__/cli.cpython-311.pyc", "tests/unit/test_config.py",
]


@pytest.mark.parametrize("path", LEFT_OUT)
def test_the_build_context_leaves_out_node_folders_the_venv_and_test_output(path):
    assert not in_context(path)


def copied_sources() -> list[str]:
    """The context paths the Dockerfile copies (COPY without --from)."""
    sources = []
    for op, args in dockerfile():
        if op == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def test_the_build_context_holds_every_file_the_image_is_built_from():
    sources = copied_sources()
    assert {"pyproject.toml", "README.md", "connector", "usage_policies", "deploy/entrypoint.sh"} <= set(sources)
    files = []
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        if source == "deploy":  # the first stage copies deploy/ for its optional wheelhouse/ alone
            continue
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p.relative_to(ROOT).as_posix() for p in found if "__pycache__" not in p.parts
                  and "wheelhouse" not in p.parts]
    assert [f for f in files if not in_context(f)] == []
    assert in_context("deploy/wheelhouse/aiohttp-3.14.5-cp311-cp311-manylinux_2_17_x86_64.whl")


# -- the Dockerfile --------------------------------------------------------------------------------------

def test_every_stage_starts_from_the_base_image_build_argument():
    op, args = dockerfile()[0]
    name, _, default = args.partition("=")
    assert (op, name) == ("ARG", "BASE_IMAGE") and default
    froms = [args.split() for op, args in dockerfile() if op == "FROM"]
    assert len(froms) == 2 and all(words[0] == "${BASE_IMAGE}" for words in froms)
    for service in compose()["services"].values():  # compose builds it with the same default
        assert service["build"]["args"] == {"BASE_IMAGE": f"${{TDS_BASE_IMAGE:-{default}}}"}


def test_the_image_installs_only_from_the_first_stages_wheels():
    wheels, final = stages()
    assert wheels[0][1].split()[1:] == ["AS", "wheels"]
    [(_, copy)] = [(op, args) for op, args in final if op == "COPY" and args.startswith("--from")]
    source, target = copy.split()[1:]
    assert copy.split()[0] == "--from=wheels" and any(f"--wheel-dir {source}" in args for _, args in wheels)
    installs = [words for op, args in final if op == "RUN" for words in shell_commands(args)
                if "pip" in " ".join(words) and "install" in words]
    assert installs
    for words in installs:
        assert "--no-index" in words and words[words.index("--find-links") + 1] == target
    for _, args in final:
        assert not re.search(r"\bpip\S* (wheel|download)\b", args), args


def test_nothing_is_fetched_but_through_pip_in_the_first_stage():
    instructions = dockerfile()
    assert not [args for op, args in instructions if op == "ADD"]  # ADD can fetch URLs; COPY cannot
    for op, args in instructions:
        if op == "RUN":
            assert not re.search(r"\b(curl|wget|apt-get|apt|apk|dnf|yum)\b|https?://|git\+", args), args


def test_the_image_runs_as_a_non_root_user_with_a_health_check():
    instructions = dockerfile()
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    [check] = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert "/app/deploy/healthcheck.py" in check
    assert "/healthz" in (DEPLOY / "healthcheck.py").read_text()
    [entry] = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["/app/deploy/entrypoint.sh"]
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK) and os.access(DEPLOY / "certs.sh", os.X_OK)
    [volume] = [args for op, args in instructions if op == "VOLUME"]
    assert json.loads(volume) == ["/data"]  # the node's folder: keys, database, tokens


# -- the compose file's ports ----------------------------------------------------------------------------

def test_each_node_publishes_its_public_port_on_loopback_by_default():
    host_ports = []
    for name, service in node_services().items():
        node = parse_config((DEPLOY / "nodes" / f"{name}.toml").read_text()).node
        [published] = service["ports"]
        address, host_port, container_port = published.rsplit(":", 2)
        assert address == "${TDS_PUBLISH_ADDRESS:-127.0.0.1}"
        assert int(container_port) == node.port != node.management_port  # never the management API
        host_ports.append(int(host_port))
    assert len(set(host_ports)) == len(host_ports)
    assert "ports" not in compose()["services"]["certs"]


# -- make image, make test-docker ------------------------------------------------------------------------

def test_the_compose_project_is_named_and_test_docker_always_cleans_up():
    script = (DEPLOY / "test-docker.sh").read_text()
    assert os.access(DEPLOY / "test-docker.sh", os.X_OK)
    assert "COMPOSE_PROJECT_NAME" in script and "COMPOSE_PROJECT_NAME=tds" in (ROOT / "Makefile").read_text()
    assert "trap cleanup EXIT" in script and "down -v" in script and '"$docker_local" stop' in script
    assert "test-docker" not in (ROOT / ".ci" / "run").read_text()
