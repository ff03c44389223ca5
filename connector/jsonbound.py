"""JSON from outside the node (request bodies, peers' answers), parsed with a bound on nesting depth.

Deep nesting is a cheap way to make a parser, a canonicaliser or any recursive walk overflow the stack;
nothing a peer or an application legitimately sends comes near :data:`MAX_DEPTH`. Strings must be Unicode
text (I-JSON, RFC 7493 §2.1): a lone surrogate such as ``"\\ud800"`` parses in Python but cannot be
stored, logged as UTF-8 or canonicalised (RFC 8785 §3.2.2.2), so it is refused here, where it comes in.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
#: Longest integer literal read (nothing legitimate comes near it; Python's own limit is 4300 digits).
MAX_DIGITS = 1000


class TooDeep(ValueError):
    """The JSON nests objects and arrays deeper than the bound."""


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of standard JSON only (UTF-8; no NaN, Infinity or numbers beyond a double or of more
    than :data:`MAX_DIGITS` digits, a ValueError) that refuses nesting deeper than *max_depth* with
    :class:`TooDeep` (a ValueError too)."""
    if isinstance(raw, bytes):
        try:
            # RFC 8259 §8.1: JSON between systems is UTF-8 (json.loads would also guess UTF-16 and UTF-32).
            raw = raw.decode("utf-8-sig")  # a leading byte order mark may be ignored (§8.1)
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int)
    except RecursionError as exc:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from exc
    check_depth(value, max_depth)
    if _SURROGATE_ESCAPE.search(raw):  # a lone surrogate can only come from such an escape (raw is text)
        _check_text(value)
    return value


class NotText(ValueError):
    """A JSON string (or object key) that is not Unicode text: it holds a lone surrogate."""


#: A ``\uD800`` to ``\uDFFF`` escape (perhaps preceded by an escaped backslash: then the walk finds nothing).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_text(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise NotText(f"a string holds a lone surrogate (\\u{ord(item[exc.start]):04x}); JSON strings "
                              "must be Unicode text (RFC 7493 §2.1)") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:  # int() refuses them too, with a message about its own limit
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if *value* nests dicts and lists deeper than *max_depth* (a walk that goes no
    deeper than *max_depth* itself)."""

    def walk(item: Any, level: int) -> None:
        if level > max_depth:
            raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                walk(child, level + 1)

    if isinstance(value, dict | list):
        walk(value, 1)
