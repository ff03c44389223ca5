"""The package's public API, and the layering rule: a pure core imports no I/O, clock or rdflib."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import usage_policies

PACKAGE = Path(usage_policies.__file__).resolve().parent
FORBIDDEN = {"asyncio", "aiohttp", "sqlite3", "time", "socket", "rdflib", "requests",
             "urllib", "http", "subprocess", "random", "threading"}


@pytest.mark.parametrize(
    "name",
    ["parse_policy", "to_dsp", "evaluate", "Decision", "Request", "World", "PolicySyntaxError", "plan_use",
     "templates", "Outcome", "UsageState", "UseDecision", "check_history", "events_from_log", "Event",
     "MonitoringResult", "Violation", "duty_key", "duties_by_path"],
)
def test_public_api(name):
    assert name in usage_policies.__all__
    assert getattr(usage_policies, name) is not None


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_module_imports_nothing_impure(module):
    tree = ast.parse((PACKAGE / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_no_clock_is_read(module):
    source = (PACKAGE / module).read_text()
    for call in ("datetime.now(", "datetime.utcnow(", "date.today(", "time.time("):
        assert call not in source


def test_decision_outcomes_are_wire_strings():
    assert [o.value for o in usage_policies.Outcome] == ["permit", "deny", "not-applicable"]
