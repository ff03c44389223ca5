"""DSP 2025-1 artifacts for the policy tests: the policy schema check and the spec's examples."""

from __future__ import annotations

import json
from typing import Any

from connector.testing import dsp_validator, shared_dir


def dsp_errors(policy: dict[str, Any]) -> list[str]:
    return dsp_validator().policy_errors(policy)


def dsp_example(relative: str) -> dict[str, Any]:
    return json.loads((shared_dir() / "dsp-2025-1" / relative).read_text())
