from __future__ import annotations

import pytest

from connector.protocol.export_control import ExportRule, RecipientRegion, refusal, within

CN_RULE = [ExportRule(region="CN", data_classes=["core", "personal"])]
REGISTRY = "did:web:registry.example"


@pytest.mark.parametrize(
    ("region", "area", "inside"),
    [("CN", "CN", True), ("CN-GD", "CN", True), ("CN-GD-GZ", "CN-GD", True), ("CNX", "CN", False),
     ("US", "CN", False), ("CN", "CN-GD", False)],
)
def test_within(region, area, inside):
    assert within(region, area) is inside


@pytest.mark.parametrize(
    ("data_class", "holder", "recipient", "refused"),
    [
        ("core", "CN-GD", "CN-BJ", False),
        ("core", "CN-GD", "US-CA", True),
        ("personal", "CN", "DE", True),
        ("core", "CN-GD", None, True),
        ("important", "CN-GD", "US-CA", False),
        ("core", "DE", "US", False),  # the rule is about data held in CN
    ],
)
def test_refusal_by_the_verified_region(data_class, holder, recipient, refused):
    reason = refusal(CN_RULE, data_class=data_class, holder_region=holder,
                     recipient=RecipientRegion(recipient, REGISTRY if recipient else None))
    assert (reason is not None) is refused
    if refused:
        assert "may not leave CN" in reason and data_class in reason


@pytest.mark.parametrize(("recipient", "reason"), [
    (RecipientRegion(verified="CN-BJ", issuer=REGISTRY, self_asserted="CN-BJ"), None),
    (RecipientRegion(verified="US-CA", issuer=REGISTRY),
     f"export control: data classed 'core' may not leave CN; the recipient is in US-CA (verified by {REGISTRY})"),
    # the attack: a recipient abroad that states a region at home in its self-description
    (RecipientRegion(verified="DE", issuer=REGISTRY, self_asserted="CN-GD"),
     f"export control: data classed 'core' may not leave CN; the recipient is in DE (verified by {REGISTRY})"),
    (RecipientRegion(self_asserted="CN-GD"),
     "export control: data classed 'core' may not leave CN, and the recipient has no verified region: no credential "
     "from an issuer trusted for regions (its self-description states CN-GD: self-asserted, which does not count)"),
    (RecipientRegion(),
     "export control: data classed 'core' may not leave CN, and the recipient has no verified region: no credential "
     "from an issuer trusted for regions"),
])
def test_only_a_verified_region_satisfies_a_rule(recipient, reason):
    assert refusal(CN_RULE, data_class="core", holder_region="CN-GD", recipient=recipient) == reason


@pytest.mark.parametrize("recipient", [RecipientRegion(), RecipientRegion(self_asserted="CN-GD"),
                                       RecipientRegion(verified="DE", issuer=REGISTRY)])
def test_data_no_rule_names_goes_anywhere(recipient):
    assert refusal(CN_RULE, data_class="general", holder_region="CN-GD", recipient=recipient) is None
    assert refusal([], data_class="core", holder_region="CN-GD", recipient=recipient) is None
