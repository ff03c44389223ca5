"""Run every benchmark and write ``benchmarks/REPORT.md`` and the chart ``benchmarks/report.png``.

Each ``benchmarks/*.py`` (but this file) runs in a process of its own, in its own process group, with its
2-minute budget; one that overruns is stopped, with everything it started, and reported as timed out. Every
``TARGET`` line a benchmark prints is collected::

    TARGET <name>: <measured>; baseline <baseline>; ratio <r>; goal <op> <value> [<unit>]: met|missed [note]

REPORT.md says when and on what the run was made (CPU count, load, Python, git commit), lists every target
(measured, baseline, ratio, goal, met or missed) and every benchmark that failed; report.png draws each
target's figure against its goal (one bar per target, the goal marked, met and missed in two colours).
The chart needs matplotlib, the ``bench`` extra: ``pip install -e '.[bench]'``; without it the report is
written without the chart.

    python benchmarks/report.py              # every benchmark (several minutes)
    python benchmarks/report.py usage negotiation   # only these
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET_S = 120.0  # each benchmark's budget (benchmarks/*.py: "under 2 minutes")
INSTALL_HINT = "pip install -e '.[bench]'"
MET, MISSED = "#2e7d32", "#c62828"

_TARGET = re.compile(
    r"^TARGET (?P<name>[^\s:]+): (?P<measured>.+?); baseline (?P<baseline>.+?); ratio (?P<ratio>[^;]+?); "
    r"goal (?P<goal>.+?): (?P<verdict>met|missed)\b(?P<note>.*)$"
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_GOAL = re.compile(r"^(?P<op>>=|<=|==|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>.*)$")


@dataclass(frozen=True)
class Target:
    """One ``TARGET`` line: the texts as printed, and the numbers read from them."""

    benchmark: str
    name: str
    measured: str
    baseline: str
    ratio: str
    goal: str
    met: bool
    note: str = ""

    @property
    def ratio_value(self) -> float | None:
        return _first_number(self.ratio)

    @property
    def attainment(self) -> float | None:
        """The figure the goal is about, relative to the goal, so that >= 1 is met whatever the goal's
        direction: figure / goal for a floor (>=, >), goal / figure for a ceiling (<=, <). The figure is the
        ratio when the goal has no unit or is in ``x`` (``>= 0.25 x``, ``<= 1.5x``, ``>= 4x sequential``),
        else the measured value (``<= 10 ms``, ``>= 100000 decisions/s``). None when a number is missing."""
        goal = _GOAL.match(self.goal.strip())
        if goal is None:
            return None
        op, bound, unit = goal["op"], float(goal["value"]), goal["unit"].strip()
        figure = self.ratio_value if unit == "" or unit.split()[0].startswith("x") else _first_number(self.measured)
        if figure is None:
            return None
        if op in (">=", ">"):
            return figure / bound if bound else (1.0 if figure > 0 else 0.0)
        if op in ("<=", "<"):
            return bound / figure if figure else float("inf")
        return 1.0 if figure == bound else 0.0


@dataclass
class Run:
    """One benchmark's run: how it ended and what it printed."""

    benchmark: str
    returncode: int | None  # None: stopped at the end of its budget
    seconds: float
    stdout: str
    stderr: str
    targets: list[Target] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def problem(self) -> str | None:
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f} s (budget {BUDGET_S:.0f} s)"
        if self.returncode != 0:
            last = next((line for line in reversed(self.stderr.splitlines()) if line.strip()), "")
            return f"exit status {self.returncode}" + (f": {last.strip()}" if last else "")
        if not self.targets:
            return "printed no TARGET line"
        return None


def _first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def parse_targets(output: str, benchmark: str) -> list[Target]:
    """Every ``TARGET`` line of *output*, in order; other lines are ignored."""
    found = []
    for line in output.splitlines():
        match = _TARGET.match(line.strip())
        if match is not None:
            found.append(Target(
                benchmark=benchmark, name=match["name"], measured=match["measured"].strip(),
                baseline=match["baseline"].strip(), ratio=match["ratio"].strip(), goal=match["goal"].strip(),
                met=match["verdict"] == "met", note=match["note"].strip(),
            ))
    return found


def discover(folder: Path = HERE) -> list[Path]:
    """The benchmarks: every ``*.py`` of *folder* but this report."""
    return sorted(p for p in folder.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def run_benchmark(path: Path, budget_s: float = BUDGET_S, python: str = sys.executable) -> Run:
    """Run one benchmark in its own process group; at the end of its budget the whole group is stopped (a
    benchmark may start nodes of its own)."""
    started = time.perf_counter()
    with subprocess.Popen([python, str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=budget_s)
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            stdout, stderr = proc.communicate()
            returncode = None
    name = path.stem
    return Run(benchmark=name, returncode=returncode, seconds=time.perf_counter() - started, stdout=stdout,
               stderr=stderr, targets=parse_targets(stdout, name))


def _stop_group(proc: subprocess.Popen[str], grace_s: float = 5.0) -> None:
    """Stop the benchmark's process group (it leads it) and wait until all of it is gone: SIGTERM, then
    SIGKILL to what is left after *grace_s*."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Machine:
    when: str
    cpus: int
    load: str
    python: str
    platform: str
    commit: str


def machine() -> Machine:
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return Machine(
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), cpus=os.cpu_count() or 0, load=load,
        python=f"{platform.python_implementation()} {platform.python_version()}", platform=platform.platform(),
        commit=_git_commit(),
    )


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_report(runs: Sequence[Run], where: Machine, chart: str | None, chart_problem: str | None = None) -> str:
    """REPORT.md's text."""
    targets = [t for r in runs for t in r.targets]
    met = sum(t.met for t in targets)
    troubled = sum(r.problem is not None for r in runs)
    lines = [
        "# Benchmark report",
        "",
        f"Run {where.when} by `benchmarks/report.py`, on {where.cpus} CPU(s) (load average {where.load} at the "
        f"start), {where.python} ({where.platform}), git commit {where.commit}.",
        "",
        "Each benchmark measures its baseline in the same run; the ratio is the benchmark's own (see its "
        "docstring). Other work on the machine during the run changes the figures, less so the ratios.",
        "",
        f"**{met} of {len(targets)} targets met**, from {len(runs)} benchmark(s)"
        + (f"; {troubled} with a problem (below)." if troubled else "."),
        "",
        "| benchmark | target | measured | baseline | ratio | goal | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        result = "met" if t.met else "**missed**"
        lines.append(f"| {t.benchmark} | `{t.name}` | {_cell(t.measured)} | {_cell(t.baseline)} | {_cell(t.ratio)} "
                     f"| {_cell(t.goal)} | {result}{' ' + _cell(t.note) if t.note else ''} |")
    lines += ["", "| benchmark | time | outcome |", "|---|---|---|"]
    for r in runs:
        outcome = r.problem or f"{len(r.targets)} target(s)"
        lines.append(f"| {r.benchmark} | {r.seconds:.0f} s | {_cell(outcome)} |")
    lines.append("")
    if chart is not None:
        lines += ["Each target's figure against its goal (>= 1: met; the figure is the ratio for a goal in x, else "
                  "the measured value):", "", f"![targets against their goals]({chart})", ""]
    else:
        lines += [f"No chart: {chart_problem or 'not drawn'}.", ""]
    return "\n".join(lines)


def draw_chart(targets: Sequence[Target], path: Path) -> None:
    """One horizontal bar per target: its figure relative to its goal (log scale), the goal at 1, met and
    missed in two colours. Needs matplotlib (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(t, t.attainment) for t in targets]
    # A figure of 0 or a ceiling met by 0 would not fit a log scale: drawn at the edge, its number printed.
    finite = [a for _, a in shown if a is not None and 0 < a < float("inf")] or [1.0]
    low, high = min(0.5, min(finite) / 2), max(2.0, max(finite) * 4)
    values = [low if a is None or a <= 0 else min(a, high) for _, a in shown]
    labels = [f"{t.name} ({t.goal})" for t, _ in shown]
    colours = [MET if t.met else MISSED for t, _ in shown]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(shown) + 1.6))
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, [v - low for v in values], left=low, color=colours)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("figure relative to its goal (log scale; the dashed line is the goal, right of it is met)")
    for y, (_, a), v in zip(ys, shown, values, strict=True):
        ax.text(v * 1.04, y, "?" if a is None else f"{a:.3g}", va="center", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (MET, MISSED)]
    ax.legend(handles, ["met", "missed"], loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.set_title(f"Benchmark targets: {sum(t.met for t in targets)} of {len(targets)} met")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("only", nargs="*", help="run only these benchmarks (file names without .py)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds each benchmark may take")
    args = parser.parse_args(list(argv) if argv is not None else None)
    chartable = have_matplotlib()
    if not chartable:
        print(f"report.py: matplotlib is missing, so the report will have no chart: {INSTALL_HINT}", file=sys.stderr)
    benchmarks = discover()
    if args.only:
        unknown = set(args.only) - {p.stem for p in benchmarks}
        if unknown:
            print(f"report.py: no such benchmark: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        benchmarks = [p for p in benchmarks if p.stem in args.only]
    where = machine()
    runs = []
    for path in benchmarks:
        print(f"{path.name} …", end=" ", flush=True)
        run = run_benchmark(path, args.budget)
        runs.append(run)
        print(f"{run.seconds:.0f} s, {run.problem or f'{len(run.targets)} target(s)'}", flush=True)
    targets = [t for r in runs for t in r.targets]
    chart, chart_problem = None, None
    if not chartable:
        chart_problem = f"matplotlib is missing ({INSTALL_HINT})"
    elif targets:
        draw_chart(targets, HERE / "report.png")
        chart = "report.png"
    else:
        chart_problem = "no targets"
    (HERE / "REPORT.md").write_text(render_report(runs, where, chart, chart_problem), encoding="utf-8")
    print(f"{sum(t.met for t in targets)} of {len(targets)} targets met; {HERE / 'REPORT.md'}"
          + (f", {HERE / 'report.png'}" if chart else ""))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
