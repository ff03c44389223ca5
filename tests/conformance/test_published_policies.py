"""Published ODRL policies: every policy example of the ODRL 2.2 Information Model and of the IDS-G usage
control classes (``tests/shared/odrl-tests/published-policies/``, sources and licences in its SOURCES.md).

Each file must be read, or be refused with a reason that cites the rule of ODRL 2.2 it breaks. The
refusals are listed below, each with its Information Model section and why; a file refused for another
reason, or read although listed, fails. A policy that is read must also be one the engine can decide
(every rule has an action; the prefixes of the ODRL context are expanded) and, if it is an ``Offer`` or an
``Agreement``, one the DSP writer carries or refuses with ``NotRepresentableError``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from connector.testing import shared_dir
from usage_policies import NotRepresentableError, PolicySyntaxError, Request, World, evaluate, parse_policy, to_dsp
from usage_policies.jsonld import ODRL_CONTEXT_PREFIXES
from usage_policies.model import Policy, PolicyType

FOLDER = shared_dir() / "odrl-tests" / "published-policies"
FILES = sorted(FOLDER.glob("*.jsonld"))
NOW = datetime(2025, 6, 1, tzinfo=UTC)

#: file → (the section of the ODRL 2.2 Information Model it breaks, why).
EXPECTED_REFUSALS: dict[str, tuple[str, str]] = {
    "IM-eg19.jsonld": (
        "§2.5.2",
        "the xone refinement's operands are only references (@id) to constraints C1 and C2, which the IM "
        "declares in documents of their own (Example 15); a logical constraint's operands are existing "
        "Constraint instances that MUST be evaluated, and the reader fetches nothing",
    ),
}


def _read(path: Path) -> dict:
    doc: dict = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_the_folder_holds_the_63_published_policies_and_their_sources():
    assert len(FILES) == 63
    assert sorted(p.name for p in FOLDER.iterdir() if p.suffix != ".jsonld") == ["SOURCES.md"]
    assert set(EXPECTED_REFUSALS) <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_published_policy_is_read_or_refused_for_the_rule_it_breaks(path: Path):
    doc = _read(path)
    if path.name in EXPECTED_REFUSALS:
        section, _why = EXPECTED_REFUSALS[path.name]
        with pytest.raises(PolicySyntaxError) as info:
            parse_policy(doc)
        assert all(section in message for _, message in info.value.problems), info.value.problems
        return
    policy = parse_policy(doc)
    _check_decidable(policy)
    _check_written(policy)


def _check_decidable(policy: Policy) -> None:
    rules = [*policy.permissions, *policy.prohibitions]
    # The ODRL context's prefixes (foaf:, vcard:, …) never survive reading; undeclared ones (ex:) may.
    leftover = [s for s in _strings(msgspec.to_builtins(policy))
                if s.partition(":")[0] in ODRL_CONTEXT_PREFIXES and not s.startswith(("http:", "https:"))]
    assert leftover == []
    for rule in rules:
        assert rule.action is not None
        target = rule.target if isinstance(rule.target, str) else None
        decision = evaluate(policy, Request(action=rule.action.name, target=target), World(), NOW)
        assert decision.reasons


def _check_written(policy: Policy) -> None:
    if policy.type is PolicyType.SET:
        return
    try:
        out = to_dsp(policy)
    except NotRepresentableError:
        return  # e.g. an Agreement whose parties are collections: DSP needs IRIs
    assert parse_policy(out).uid == policy.uid


def test_published_policies_count(capsys):
    refused = []
    for path in FILES:
        try:
            parse_policy(_read(path))
        except PolicySyntaxError:
            refused.append(path.name)
    with capsys.disabled():  # shown in every run, not only with -s
        print(f"\nPublished ODRL policies: {len(FILES) - len(refused)} read, {len(refused)} refused "
              f"(of {len(FILES)})")
    assert sorted(refused) == sorted(EXPECTED_REFUSALS)
