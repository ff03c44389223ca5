"""What the node sets for its own process before it serves: glibc's malloc keeps freed memory for reuse
(``connector.node.keep_freed_memory``), so that the pieces a stream allocates and frees over and over stop
costing page faults. Checked in child processes, so that this one is left as it was."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHURN = """
import resource, sys, threading
from connector.node import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
def churn():
    for _ in range(100):
        pieces = [bytearray(256 * 1024) for _ in range(8)]  # a stream's pieces, freed together
        del pieces
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=churn)
worker.start()
worker.join()
churn()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    tuned, faults = done.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_the_node_keeps_freed_memory_for_reuse_so_a_streams_pieces_stop_faulting() -> None:
    untuned, default_faults = page_faults("default")
    tuned, tuned_faults = page_faults("tuned")
    assert (untuned, tuned) == ("None", "True")
    # Each round touches 2 MiB (512 pages) afresh by default; kept for reuse, only the first rounds do.
    assert default_faults > 100 * 512 // 2
    assert tuned_faults < default_faults // 10
