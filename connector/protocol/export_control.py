"""Export control: which data may leave which region (pure).

A node keeps a rule set — for example "data classed ``core`` or ``personal`` may not leave ``CN``" — and
applies it wherever data could start to flow to a participant: when offers are shown, when a negotiation
is decided and when a transfer starts. A rule applies to data of its classes held in its region (the
providing participant's region lies within it) and refuses every recipient whose region is not within it,
or whose region is not verified. Regions are ISO 3166 codes; ``CN-GD-GZ`` lies within ``CN-GD`` and ``CN``.

What counts as the recipient's region (:class:`RecipientRegion`): only the region of a credential by an
issuer the node trusts for regions (``connector.identity.trust``). The region a peer states in its own
self-description is signed by the peer itself, so it proves who said it, not that it is true: it is shown
in a refusal as *self-asserted* and never satisfies a rule. Data of a class no rule names is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class ExportRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str
    data_classes: list[str]


class RecipientRegion(msgspec.Struct, frozen=True):
    """What is known of a recipient's region: *verified* (with its *issuer*) from a credential by an issuer
    trusted for regions; *self_asserted* from its self-description, which is shown but never counted."""

    verified: str | None = None
    issuer: str | None = None
    self_asserted: str | None = None


#: Why a recipient has no verified region, as a refusal names it.
NO_VERIFIED_REGION = "no verified region: no credential from an issuer trusted for regions"


def within(region: str, area: str) -> bool:
    """Whether *region* lies within *area* (equal, or a subdivision of it)."""
    return region == area or region.startswith(area + "-")


def refusal(
    rules: Sequence[ExportRule], *, data_class: str, holder_region: str, recipient: RecipientRegion
) -> str | None:
    """The reason this flow is refused, or None if the rules allow it."""
    for rule in rules:
        if data_class not in rule.data_classes or not within(holder_region, rule.region):
            continue
        if recipient.verified is None:
            stated = "" if recipient.self_asserted is None else (
                f" (its self-description states {recipient.self_asserted}: self-asserted, which does not count)")
            return (f"export control: data classed {data_class!r} may not leave {rule.region}, and the recipient "
                    f"has {NO_VERIFIED_REGION}{stated}")
        if not within(recipient.verified, rule.region):
            by = f" (verified by {recipient.issuer})" if recipient.issuer else ""
            return (f"export control: data classed {data_class!r} may not leave {rule.region}; the recipient "
                    f"is in {recipient.verified}{by}")
    return None
