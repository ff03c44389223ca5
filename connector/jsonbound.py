"""JSON from outside the node (request bodies, peers' answers), parsed with a bound on nesting depth.

Deep nesting is a cheap way to make a parser, a canonicaliser or any recursive walk overflow the stack;
nothing a peer or an application legitimately sends comes near :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON nests objects and arrays deeper than the bound."""


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of standard JSON only (no NaN, Infinity or numbers beyond a double, a ValueError) that
    refuses nesting deeper than *max_depth* with :class:`TooDeep` (a ValueError too)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from exc
    check_depth(value, max_depth)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if *value* nests dicts and lists deeper than *max_depth* (iterative walk)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > max_depth:
            raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
