"""Each example in examples/ runs and tells its story."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "onboard_sme.py": ["hosted Lingnan Sensors Ltd.", "negotiation FINALIZED", "sees none of the SME's assets"],
    "cross_border.py": ["domestic SME sees ['urn:tds:asset:did:web:", ":participants:acme:line-7-process']",
                        "foreign partner sees []",
                        "TERMINATED", "may not leave CN"],
    "sme_pull.py": ["transfer COMPLETED", "payload matches manifest"],
    "usage_app.py": ["morning-report (R&D): 26 bytes", "sales-deck (marketing): refused", "purpose is 'marketing'",
                     "night-report (R&D): refused", "uses counted: 2"],
    "sandbox_query.py": ["published for computation only: about 2000 rows", "transfer TERMINATED",
                         "for computation only", "groups that left: east, north, south, west; epsilon spent 1.0",
                         "(verified)",
                         "query 3: answered", "query 4: refused (budget)", "3 queries counted, intact"],
    "settlement.py": ["negotiation FINALIZED", "3 receipts reached the provider", ": 7.50 CNY for 3 uses",
                      "consumer's node: statement received", "consumer: statement accepted",
                      "provider: statement accepted (7.50 CNY)",
                      "verified offline: 7.50 CNY, answer accepted, signatures verified"],
}


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_runs(name):
    proc = await asyncio.create_subprocess_exec(sys.executable, str(EXAMPLES / name), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode()
    assert proc.returncode == 0, text
    for line in EXPECTED[name]:
        assert line in text, (line, text)
