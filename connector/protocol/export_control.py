"""Export control: which data may leave which region (pure).

A node keeps a rule set — for example "data classed ``core`` or ``personal`` may not leave ``CN``" — and
applies it wherever data could start to flow to a participant: when offers are shown, when a negotiation
is decided and when a transfer starts. A rule applies to data of its classes held in its region (the
providing participant's region lies within it) and refuses every recipient whose region is not within it,
or whose region is not known. Regions are ISO 3166 codes; ``CN-GD-GZ`` lies within ``CN-GD`` and ``CN``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class ExportRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str
    data_classes: list[str]


def within(region: str, area: str) -> bool:
    """Whether *region* lies within *area* (equal, or a subdivision of it)."""
    return region == area or region.startswith(area + "-")


def refusal(
    rules: Sequence[ExportRule], *, data_class: str, holder_region: str, recipient_region: str | None
) -> str | None:
    """The reason this flow is refused, or None if the rules allow it."""
    for rule in rules:
        if data_class not in rule.data_classes or not within(holder_region, rule.region):
            continue
        if recipient_region is None:
            return (f"export control: data classed {data_class!r} may not leave {rule.region}, and the "
                    "recipient's region is not known (no verified self-description)")
        if not within(recipient_region, rule.region):
            return (f"export control: data classed {data_class!r} may not leave {rule.region}; the recipient "
                    f"is in {recipient_region}")
    return None
