"""The left operands over what credentials by trusted issuers verify of a party (usage_policies.operands):
``tds:verifiedRegion``, ``tds:memberOf``, ``tds:legalEntityId``, ``tds:certificationLevel``; each satisfied,
unsatisfied, and missing with a reason that names what is missing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from usage_policies.evaluate import Request, World, compile_constraint
from usage_policies.model import ODRL, TDS, Constraint, Literal
from usage_policies.operands import VERIFIED_OPERANDS, get_operand
from usage_policies.report import Satisfaction

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SPACE = "urn:tds:space:auto-parts"
OPTICS = "urn:tds:space:optics"
CREDIT_CODE = "91350100M000100Y43"
LEI = "5493001KJTIIGC8Y1R12"
LEVELS = World(certification_order=("basic", "substantial", "high"))


def check(operand: str, op: str, right: str | tuple[str, ...], world: World | None = None, **request: object):
    values = right if isinstance(right, tuple) else (right,)
    constraint = Constraint(left_operand=TDS + operand, operator=ODRL + op,
                            right_operand=tuple(Literal(value=v) for v in values))
    return compile_constraint(constraint)(Request(**request), world or World(), NOW)  # type: ignore[arg-type]


# (operand, operator, right operand, what is verified of the party, world) -> satisfied
CASES: list[tuple[str, str, str | tuple[str, ...], dict[str, object], World | None, bool]] = [
    ("verifiedRegion", "eq", "CN-GD", {"verified_region": "CN-GD"}, None, True),
    ("verifiedRegion", "eq", "CN", {"verified_region": "CN-GD"}, None, False),  # eq compares codes exactly
    ("verifiedRegion", "isPartOf", "CN", {"verified_region": "CN-GD"}, None, True),
    ("verifiedRegion", "isPartOf", "CN", {"verified_region": "DE"}, None, False),
    ("verifiedRegion", "isA", "CN", {"verified_region": "CN-GD"}, None, True),
    ("verifiedRegion", "isA", "CN-GD", {"verified_region": "CN-GD"}, None, False),  # not an instance of itself
    ("verifiedRegion", "isA", "EU", {"verified_region": "DE"}, None, True),
    ("verifiedRegion", "isAnyOf", ("CN-GD", "CN-BJ"), {"verified_region": "CN-BJ"}, None, True),
    ("memberOf", "eq", SPACE, {"member_of": (OPTICS, SPACE)}, None, True),  # a member of several spaces
    ("memberOf", "eq", SPACE, {"member_of": (OPTICS,)}, None, False),
    ("memberOf", "neq", SPACE, {"member_of": (OPTICS,)}, None, True),
    ("memberOf", "neq", SPACE, {"member_of": (OPTICS, SPACE)}, None, False),
    ("memberOf", "isAnyOf", (SPACE, "urn:tds:space:x"), {"member_of": (SPACE,)}, None, True),
    ("memberOf", "isAnyOf", ("urn:tds:space:x",), {"member_of": (SPACE, OPTICS)}, None, False),
    ("memberOf", "isAllOf", (SPACE, OPTICS), {"member_of": (OPTICS, SPACE)}, None, True),
    ("memberOf", "isNoneOf", (OPTICS,), {"member_of": (SPACE,)}, None, True),
    ("legalEntityId", "eq", CREDIT_CODE, {"legal_entity_ids": (CREDIT_CODE, LEI)}, None, True),
    ("legalEntityId", "eq", LEI, {"legal_entity_ids": (CREDIT_CODE, LEI)}, None, True),
    ("legalEntityId", "eq", LEI, {"legal_entity_ids": (CREDIT_CODE,)}, None, False),
    ("legalEntityId", "isAnyOf", ("X", CREDIT_CODE), {"legal_entity_ids": (CREDIT_CODE,)}, None, True),
    ("certificationLevel", "eq", "2", {"certification_levels": ("2",)}, None, True),
    ("certificationLevel", "eq", "3", {"certification_levels": ("2",)}, None, False),
    ("certificationLevel", "gteq", "2", {"certification_levels": ("3",)}, None, True),  # whole numbers: 2 < 3
    ("certificationLevel", "gteq", "3", {"certification_levels": ("2",)}, None, False),
    ("certificationLevel", "gteq", "3", {"certification_levels": ("1", "3")}, None, True),  # one of them
    ("certificationLevel", "gteq", "10", {"certification_levels": ("9",)}, None, False),  # not as text
    ("certificationLevel", "gteq", "substantial", {"certification_levels": ("high",)}, LEVELS, True),
    ("certificationLevel", "gteq", "substantial", {"certification_levels": ("basic",)}, LEVELS, False),
    ("certificationLevel", "lt", "high", {"certification_levels": ("basic",)}, LEVELS, True),
]


@pytest.mark.parametrize(("operand", "op", "right", "verified", "world", "satisfied"), CASES)
def test_a_verified_operand_decides_on_what_is_verified(operand, op, right, verified, world, satisfied):
    report = check(operand, op, right, world, **verified)
    assert (report.satisfaction is Satisfaction.SATISFIED) is satisfied, report.reason
    if not satisfied:
        assert report.reason


# (operand, operator, right operand) -> the reason when the party has no verified value
MISSING = [
    ("verifiedRegion", "isPartOf", "CN",
     "no verified region: no credential from an issuer trusted for regions, policy requires within 'CN'"),
    ("memberOf", "eq", SPACE,
     f"no verified membership: no membership credential from an issuer trusted for it, policy requires {SPACE!r}"),
    ("legalEntityId", "eq", LEI,
     f"no verified legal entity: no credential from an issuer trusted for legal entities, policy requires {LEI!r}"),
    ("certificationLevel", "gteq", "2",
     "no verified certification: no credential from an issuer trusted for certifications, policy requires at "
     "least '2'"),
    ("exportDestination", "isPartOf", "CN",
     "the export destination is not known: no verified region of the recipient, policy requires within 'CN'"),
]


@pytest.mark.parametrize(("operand", "op", "right", "reason"), MISSING)
def test_a_party_without_a_verified_value_does_not_satisfy_and_is_told_what_is_missing(operand, op, right, reason):
    report = check(operand, op, right)
    assert report.satisfaction is Satisfaction.UNSATISFIED
    assert report.reason == reason


@pytest.mark.parametrize("operand", ["verifiedRegion", "exportDestination"])
def test_the_region_a_party_states_is_not_a_verified_region(operand):
    report = check(operand, "isPartOf", "CN", region="CN-GD")
    assert report.satisfaction is Satisfaction.UNSATISFIED


@pytest.mark.parametrize(("level", "world", "reason"), [
    ("gold", None, "certification level 'gold' has no order (no certification order is given, and it is not a "
                   "whole number)"),
    ("platinum", LEVELS, "certification level 'platinum' is not in the order ['basic', 'substantial', 'high']"),
])
def test_a_level_without_an_order_makes_an_ordered_constraint_unsatisfied(level, world, reason):
    report = check("certificationLevel", "gteq", "substantial" if world else "2", world,
                   certification_levels=(level,))
    assert report.satisfaction is Satisfaction.UNSATISFIED
    assert reason in (report.reason or "")


def test_the_verified_operands_are_registered_under_the_tds_namespace():
    assert {TDS + name for name in ("verifiedRegion", "memberOf", "legalEntityId", "certificationLevel")} \
        == VERIFIED_OPERANDS
    assert all(get_operand(iri) is not None for iri in VERIFIED_OPERANDS)
