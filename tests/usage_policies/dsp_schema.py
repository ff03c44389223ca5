"""The DSP 2025-1 policy schema (negotiation/contract-schema.json), for checking what we emit."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft201909Validator

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DSP = SHARED / "dsp-2025-1"


@cache
def _validator() -> Draft201909Validator:
    # INDEX.md: some DSP schemas write "#definitions/"; strict validators need "#/definitions/".
    text = (DSP / "negotiation" / "contract-schema.json").read_text()
    text = text.replace("#definitions/", "#/definitions/")
    return Draft201909Validator(json.loads(text))


def dsp_errors(policy: dict[str, Any]) -> list[str]:
    return [
        f"{list(e.absolute_path)}: {[c.message[:120] for c in (e.context or [])][-3:] or e.message[:200]}"
        for e in _validator().iter_errors(policy)
    ]


def dsp_example(relative: str) -> dict[str, Any]:
    return json.loads((DSP / relative).read_text())
