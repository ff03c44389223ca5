"""benchmarks/report.py: reading TARGET lines, running a benchmark within its budget, writing REPORT.md, and
(where matplotlib is installed) drawing the chart. No real benchmark runs here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


report = _load()

# TARGET lines as the benchmarks print them (one of each shape), with other output around them.
OUTPUT = "\n".join([
    "(a) 3-constraint policy with report: engine 198,742/s, hand-written floor 11,811,507/s",
    "TARGET usage_policy_3c_throughput: 198742 decisions/s; baseline 11811507 decisions/s; ratio 0.017; "
    "goal >= 100000 decisions/s: met",
    "TARGET policy_decide_first_vs_floor: 698695 decisions/s; baseline 12476062 decisions/s; ratio 0.056; "
    "goal >= 0.1 x: missed",
    "TARGET handshake_p50: 3.10 ms; baseline 2.40 ms; ratio 1.29; goal <= 1.5x: met",
    "TARGET search_p50: 2.31 ms; baseline 40.1 ms; ratio 0.1; goal <= 10 ms: met",
    "TARGET converged_bytes_per_node_round_50: 80.00 KiB; baseline 12.00 KiB; ratio 6.67; goal < 64 KiB: missed",
    "TARGET usage_concurrent: 900 uses/s; baseline 300 uses/s; ratio 3.00; goal >= 4x sequential: missed",
    "TARGET tar_stream: 210 MB/s (1.20 s); baseline tar + fsync 180 MB/s (1.40 s); ratio 1.17; goal >= 0.5: met "
    "(plain tar 400 MB/s, ratio 0.53)",
    "TARGET not a target line",
    "  TARGET search_speedup: 17.4 x; baseline 1 x (full scan, 40.1 ms); ratio 17.4; goal >= 10 x: met",
])


def test_every_target_line_is_read_with_its_texts():
    targets = report.parse_targets(OUTPUT, "mixed")
    assert [t.name for t in targets] == [
        "usage_policy_3c_throughput", "policy_decide_first_vs_floor", "handshake_p50", "search_p50",
        "converged_bytes_per_node_round_50", "usage_concurrent", "tar_stream", "search_speedup",
    ]
    first = targets[0]
    assert (first.benchmark, first.measured, first.baseline, first.ratio, first.goal, first.met) == (
        "mixed", "198742 decisions/s", "11811507 decisions/s", "0.017", ">= 100000 decisions/s", True)
    tar = targets[6]
    assert tar.baseline == "tar + fsync 180 MB/s (1.40 s)" and tar.goal == ">= 0.5"
    assert tar.note == "(plain tar 400 MB/s, ratio 0.53)"
    assert [t.met for t in targets] == [True, False, True, True, False, False, True, True]


@pytest.mark.parametrize("name, attainment", [
    ("usage_policy_3c_throughput", 1.98742),  # the measured value against a goal in its own unit
    ("policy_decide_first_vs_floor", 0.56),  # the ratio against a goal in x
    ("handshake_p50", 1.5 / 1.29),  # a ceiling: goal / figure, so that >= 1 is met
    ("search_p50", 10 / 2.31),
    ("converged_bytes_per_node_round_50", 64 / 80),
    ("usage_concurrent", 0.75),  # "4x sequential" is a goal on the ratio
    ("tar_stream", 1.17 / 0.5),  # no unit: on the ratio
])
def test_each_figure_is_set_against_its_goal(name, attainment):
    target = next(t for t in report.parse_targets(OUTPUT, "mixed") if t.name == name)
    assert target.attainment == pytest.approx(attainment)
    assert (target.attainment >= 1) is target.met


def test_a_goal_without_a_number_has_no_attainment():
    (target,) = report.parse_targets("TARGET odd: 1 s; baseline 2 s; ratio 0.5; goal fast enough: met", "b")
    assert target.attainment is None and target.met


def test_the_report_itself_is_not_a_benchmark(tmp_path):
    for name in ("usage.py", "report.py", "_helpers.py", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in report.discover(tmp_path)] == ["usage.py"]
    assert "report.py" not in [p.name for p in report.discover()]
    assert "policy_eval.py" in [p.name for p in report.discover()]


def _run(name: str, targets: list, *, returncode: int | None = 0, stderr: str = "", seconds: float = 12.0):
    return report.Run(benchmark=name, returncode=returncode, seconds=seconds, stdout="", stderr=stderr,
                      targets=targets)


WHERE = report.Machine(when="2026-12-06 15:00:00 UTC", cpus=2, load="1.00, 0.50, 0.25", python="CPython 3.11.7",
                       platform="Linux-6.1-x86_64", commit="abcdef123456 with uncommitted changes")


def test_the_report_says_when_and_where_and_lists_every_target_and_problem():
    targets = report.parse_targets(OUTPUT, "policy_eval")
    runs = [
        _run("policy_eval", targets[:2]),
        _run("search", targets[3:4]),
        _run("usage", [], returncode=None, seconds=120.4),
        _run("startup", [], returncode=1, stderr="Traceback (most recent call last):\nRuntimeError: no port\n"),
        _run("quiet", []),
    ]
    text = report.render_report(runs, WHERE, "report.png")
    assert "2026-12-06 15:00:00 UTC" in text and "2 CPU(s)" in text and "CPython 3.11.7" in text
    assert "abcdef123456 with uncommitted changes" in text and "load average 1.00, 0.50, 0.25" in text
    assert "**2 of 3 targets met**, from 5 benchmark(s); 3 with a problem (below)." in text
    assert "| policy_eval | `usage_policy_3c_throughput` | 198742 decisions/s | 11811507 decisions/s | 0.017 | " \
           ">= 100000 decisions/s | met |" in text
    assert "| policy_eval | `policy_decide_first_vs_floor` | 698695 decisions/s | 12476062 decisions/s | 0.056 | " \
           ">= 0.1 x | **missed** |" in text
    assert "| usage | 120 s | timed out after 120 s (budget 120 s) |" in text
    assert "| startup | 12 s | exit status 1: RuntimeError: no port |" in text
    assert "| quiet | 12 s | printed no TARGET line |" in text
    assert "![targets against their goals](report.png)" in text


def test_a_report_without_the_chart_says_why():
    text = report.render_report([_run("search", report.parse_targets(OUTPUT, "search")[3:4])], WHERE, None,
                                "matplotlib is missing (pip install -e '.[bench]')")
    assert "No chart: matplotlib is missing (pip install -e '.[bench]')." in text
    assert "![" not in text
    assert "**1 of 1 targets met**, from 1 benchmark(s)." in text


def test_a_pipe_in_a_printed_text_does_not_break_the_table():
    (target,) = report.parse_targets("TARGET t: 1 a|b; baseline 2; ratio 0.5; goal >= 0.1: met", "b")
    assert "1 a\\|b" in report.render_report([_run("b", [target])], WHERE, None)


def test_a_benchmark_is_run_and_its_targets_read(tmp_path):
    bench = tmp_path / "quick.py"
    bench.write_text("print('warming up')\nprint('TARGET quick_rate: 10 ops/s; baseline 20 ops/s; ratio 0.50; "
                     "goal >= 0.4x: met')\n")
    run = report.run_benchmark(bench)
    assert run.ok and run.problem is None
    assert [(t.benchmark, t.name, t.met) for t in run.targets] == [("quick", "quick_rate", True)]


def test_a_benchmark_over_its_budget_is_stopped_with_what_it_started(tmp_path):
    marker = tmp_path / "child.pid"
    bench = tmp_path / "slow.py"
    # The benchmark starts a process of its own (as a node would be), then overruns its budget.
    bench.write_text(
        "import signal, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "print('TARGET slow_rate: 1 ops/s; baseline 2 ops/s; ratio 0.5; goal >= 0.4x: met', flush=True)\n"
        "signal.pause()  # hangs: the budget must stop it\n"
    )
    run = report.run_benchmark(bench, budget_s=3)
    assert run.returncode is None and not run.ok
    assert run.problem.startswith("timed out after")
    assert [t.name for t in run.targets] == ["slow_rate"]  # what it printed before is kept
    child = int(marker.read_text())
    assert not _alive(child), "the benchmark's own process outlived it"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie waiting for its reaper is gone for our purposes
    except FileNotFoundError:
        return False


def test_the_chart_has_one_bar_per_target(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "report.png"
    report.draw_chart(report.parse_targets(OUTPUT, "mixed"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
