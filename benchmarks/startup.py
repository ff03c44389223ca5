"""Node start-up time and idle memory, beside a bare aiohttp app measured in the same run.

Start time: from spawning the process to the first 200 on /healthz (median of several runs, node and bare app
interleaved). Idle RSS: resident memory of the process once it answers (after one health request and a short
settle), for a node with one participant.

Both run as installed: with their modules' bytecode cached (``pip install`` compiles it; the bare app's
aiohttp has it in site-packages already). Where the environment turns bytecode off
(``PYTHONDONTWRITEBYTECODE``, as on the development machine), it is cached in a temporary folder instead
(``PYTHONPYCACHEPREFIX``, so the source tree is left alone) after one warm-up start of each, not counted. The
starts from source (every module compiled at each start) are measured too, and printed for information.

    python benchmarks/startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.bootstrap import init_node  # noqa: E402
from connector.testing import free_port  # noqa: E402

RUNS = 7
SOURCE_RUNS = 5
BARE_APP = """
import sys
from aiohttp import web
async def healthz(request):
    return web.json_response({"status": "ok"})
app = web.Application()
app.add_routes([web.get("/healthz", healthz)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(cmd: list[str], port: int, env: dict[str, str]) -> tuple[float, float]:
    url = f"http://127.0.0.1:{port}/healthz"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = start + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{cmd} did not start") from None
                time.sleep(0.002)
        elapsed = time.perf_counter() - start
        time.sleep(0.5)  # settle before reading idle memory
        return elapsed, rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node_port = free_port()
        node_dir = Path(tmp) / "n"
        init_node(node_dir, name="bench", port=node_port, management_port=free_port(), dev_mode=True)
        installed = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        installed["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        from_source = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        from_source.pop("PYTHONPYCACHEPREFIX", None)
        node_cmd = [sys.executable, "-m", "connector", "serve", "--dir", str(node_dir)]

        def bare_run(env: dict[str, str]) -> tuple[float, float]:
            port = free_port()
            return measure([sys.executable, "-c", BARE_APP, str(port)], port, env)

        def runs(env: dict[str, str], count: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
            bare, node = [], []
            for _ in range(count):
                bare.append(bare_run(env))
                node.append(measure(node_cmd, node_port, env))
            return bare, node

        bare_run(installed)  # warm-up: the bytecode is written
        measure(node_cmd, node_port, installed)
        bare, node = runs(installed, RUNS)
        src_bare, src_node = runs(from_source, SOURCE_RUNS)
    b_start = statistics.median(t for t, _ in bare)
    n_start = statistics.median(t for t, _ in node)
    b_rss = statistics.median(r for _, r in bare)
    n_rss = statistics.median(r for _, r in node)
    sb_start = statistics.median(t for t, _ in src_bare)
    sn_start = statistics.median(t for t, _ in src_node)
    print(f"runs: {RUNS}; bare aiohttp start {b_start:.3f} s, RSS {b_rss:.1f} MiB; "
          f"node start {n_start:.3f} s, RSS {n_rss:.1f} MiB")
    print(f"  node starts (s): {' '.join(f'{t:.3f}' for t, _ in node)}; bare: {' '.join(f'{t:.3f}' for t, _ in bare)}")
    print(f"from source (no bytecode, {SOURCE_RUNS} runs): bare {sb_start:.3f} s, node {sn_start:.3f} s, "
          f"ratio {sn_start / sb_start:.2f}")
    print(f"TARGET start: {n_start:.3f} s; baseline {b_start:.3f} s; ratio {n_start / b_start:.2f}; "
          f"goal <= 1.5x baseline: {'met' if n_start <= 1.5 * b_start else 'missed'}")
    print(f"TARGET idle_rss: {n_rss:.1f} MiB; baseline {b_rss:.1f} MiB; ratio {n_rss / b_rss:.2f}; "
          f"goal <= 70 MiB: {'met' if n_rss <= 70 else 'missed'}")


if __name__ == "__main__":
    main()
