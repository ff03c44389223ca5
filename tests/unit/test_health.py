"""Readiness checks (``connector.services.health``) against fakes: each failing check, the public words and
the logged detail, and the reuse of a check for a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import parse_config
from connector.errors import ConfigError
from connector.services.health import DiskUsage, Health, disk_problem

GIB = 1024**3


class Facts:
    """What the checks read, set by each test."""

    def __init__(self) -> None:
        self.phase = "running"
        self.store: str | None = None
        self.keys = True
        self.disk: DiskUsage | OSError = DiskUsage(100 * GIB, 50 * GIB, 50 * GIB)
        self.store_checks = 0
        self.now = 1000.0

    async def store_problem(self) -> str | None:
        self.store_checks += 1
        return self.store

    def usage(self, _: Path) -> DiskUsage:
        if isinstance(self.disk, OSError):
            raise self.disk
        return self.disk


def health(facts: Facts, *, min_free_bytes: int = GIB, min_free_percent: float = 0.0) -> Health:
    return Health(Path("/data"), phase=lambda: facts.phase, store_problem=facts.store_problem,
                  keys_loaded=lambda: facts.keys, min_free_bytes=min_free_bytes, min_free_percent=min_free_percent,
                  disk_usage=facts.usage, clock=lambda: facts.now)


async def test_all_checks_pass():
    found = await health(Facts()).ready()
    assert found.ready and found.body() == {"status": "ready", "checks": {"node": "ok", "store": "ok", "keys": "ok",
                                                                          "disk": "ok"}}


@pytest.mark.parametrize(("change", "check", "public"), [
    (lambda f: setattr(f, "phase", "starting"), "node", "starting"),
    (lambda f: setattr(f, "phase", "stopping"), "node", "stopping"),
    (lambda f: setattr(f, "store", "commit failed: disk I/O error"), "store", "not writable"),
    (lambda f: setattr(f, "keys", False), "keys", "not loaded"),
    (lambda f: setattr(f, "disk", DiskUsage(100 * GIB, 100 * GIB - GIB // 2, GIB // 2)), "disk",
     "free space below the threshold"),
    (lambda f: setattr(f, "disk", OSError("statvfs failed")), "disk", "free space unknown"),
])
async def test_each_failing_check_makes_the_node_not_ready(change, check, public):
    facts = Facts()
    change(facts)
    found = await health(facts).ready()
    assert not found.ready
    assert found.checks[check] == public and [c for c, v in found.checks.items() if v != "ok"] == [check]
    assert found.body()["reasons"] == [f"{check}: {public}"]
    assert check in found.details  # the detail is for the log


def test_the_disk_detail_names_the_setting_and_the_figure():
    assert disk_problem(DiskUsage(10 * GIB, 9 * GIB, GIB // 2), GIB, 0.0) == \
        f"{GIB // 2} bytes free, below node.min_free_disk_bytes ({GIB})"
    assert disk_problem(DiskUsage(100 * GIB, 96 * GIB, 4 * GIB), GIB, 5.0) == \
        "4.00 % free, below node.min_free_disk_percent (5 %)"
    assert disk_problem(DiskUsage(100 * GIB, 94 * GIB, 6 * GIB), GIB, 5.0) is None
    assert disk_problem(DiskUsage(100 * GIB, 100 * GIB, 0), 0, 0.0) is None  # both checks off


async def test_a_check_is_reused_for_a_second_then_made_again():
    facts = Facts()
    checks = health(facts)
    await checks.ready()
    facts.store = "commit failed"
    facts.now += 0.5
    assert (await checks.ready()).ready and facts.store_checks == 1
    facts.now += 0.6
    assert not (await checks.ready()).ready and facts.store_checks == 2


CONFIG = """
[node]
public_url = "https://tds.example.com"
{extra}

[participant]
name = "acme"
legal_name = "ACME Co."
region = "CN-GD"
"""


def test_the_thresholds_default_to_one_gib_and_no_share():
    node = parse_config(CONFIG.format(extra="")).node
    assert (node.min_free_disk_bytes, node.min_free_disk_percent) == (GIB, 0.0)
    node = parse_config(CONFIG.format(extra="min_free_disk_bytes = 0\nmin_free_disk_percent = 5.0")).node
    assert (node.min_free_disk_bytes, node.min_free_disk_percent) == (0, 5.0)


@pytest.mark.parametrize(("extra", "field"), [
    ("min_free_disk_bytes = -1", "node.min_free_disk_bytes"),
    ("min_free_disk_percent = 101.0", "node.min_free_disk_percent"),
    ("min_free_disk_percent = -0.5", "node.min_free_disk_percent"),
    ("min_free_disk_percent = nan", "node.min_free_disk_percent"),
])
def test_a_threshold_out_of_range_is_refused_naming_it(extra, field):
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.format(extra=extra))
    assert info.value.path == field
