"""Prints the DSP compatibility kit's pass count per scenario group, and the OVAL monitoring suite's pass
count, at the end of the run."""

from __future__ import annotations

import re

import pytest

GROUPS = ("MET", "CAT", "CN", "CN_C", "TP", "TP_C")
_SCENARIO = re.compile(r"test_dsp_tck\.py::test_scenario\[(?P<id>(?P<group>[A-Z_]+):\d\d-\d\d)\]$")
_OVAL_CASE = re.compile(r"test_oval_monitoring\.py::test_oval_monitoring_case\[(?P<id>[^\]]+)\]$")
_outcomes: dict[str, tuple[str, bool]] = {}
_oval: dict[str, bool] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    oval = _OVAL_CASE.search(report.nodeid)
    if oval is not None:
        # A case counts when its verdict matches the suite's: passed, not an expected failure (xfail).
        ok = _oval.get(report.nodeid, True)
        if report.failed or report.skipped or (report.when == "call" and not report.passed):
            ok = False
        _oval[report.nodeid] = ok
        return
    match = _SCENARIO.search(report.nodeid)
    if match is None:
        return
    group, ok = match["group"], _outcomes.get(report.nodeid, ("", True))[1]
    if report.failed or (report.when == "call" and not report.passed):
        ok = False
    _outcomes[report.nodeid] = (group, ok)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _oval:
        terminalreporter.write_line(f"OVAL monitoring: {sum(_oval.values())}/{len(_oval)}")
    if not _outcomes:
        return
    for group in GROUPS:
        results = [ok for g, ok in _outcomes.values() if g == group]
        if results:
            terminalreporter.write_line(f"DSP TCK {group}: {sum(results)}/{len(results)}")
