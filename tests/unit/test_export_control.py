from __future__ import annotations

import pytest

from connector.protocol.export_control import ExportRule, refusal, within

CN_RULE = [ExportRule(region="CN", data_classes=["core", "personal"])]


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
def test_refusal(data_class, holder, recipient, refused):
    reason = refusal(CN_RULE, data_class=data_class, holder_region=holder, recipient_region=recipient)
    assert (reason is not None) is refused
    if refused:
        assert "may not leave CN" in reason and data_class in reason
