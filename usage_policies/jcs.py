"""RFC 8785 (JSON Canonicalization Scheme) bytes: the ``rfc8785`` package's, made faster where that is safe.

The package encodes in pure Python (some 20-40 µs for a usage log entry or a signed head's proof
configuration, on the node's hottest paths). For the values that make up almost every document signed or
hashed here, ``msgspec`` with sorted keys writes the very same bytes in about a microsecond:

- strings: both escape exactly ``"``, ``\\`` and the control characters below U+0020 (``\\b \\f \\n \\r \\t``
  by name, the rest as ``\\u00xx``) and write every other character as UTF-8 (RFC 8785 §3.2.2.2; checked
  for every code point by the tests);
- objects: keys sorted; RFC 8785 §3.2.3 sorts by UTF-16 code units, which is code-point order as long as
  no key holds a character above U+D7FF — so only such objects are written here;
- integers in the range RFC 8785 takes (I-JSON's, ±(2**53 - 1)), ``true``, ``false``, ``null``, arrays.

Anything else (a float, whose ES6 number form msgspec does not write; a larger integer, which RFC 8785
refuses; a key beyond ASCII; a subclass of a JSON type; a string that is not valid Unicode) goes to the
package, so the result — bytes or the error — is always the package's.

Used for hashes (a usage log entry's hash); what is signed is canonicalised by the package itself
(``connector.identity.proof.canonical``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import rfc8785

#: The integers RFC 8785 writes (I-JSON's safe range).
_SAFE = 2**53 - 1

_encode = msgspec.json.Encoder(order="sorted").encode


def _plain(value: Any) -> bool:
    """Whether msgspec writes *value* exactly as RFC 8785 does (see the module docstring)."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            leaf = type(item)
            if leaf is str or item is None or leaf is bool:  # most values: no call
                continue
            if not _plain(item):
                return False
        return True
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-_SAFE <= value <= _SAFE)
    if kind is list:
        for item in value:
            leaf = type(item)
            if leaf is str or item is None or leaf is bool:
                continue
            if not _plain(item):
                return False
        return True
    return False


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of *value*, exactly as ``rfc8785.dumps`` writes them; raises what it
    raises (``rfc8785.CanonicalizationError`` and its kin) for a value RFC 8785 has no form for."""
    if _plain(value):
        try:
            return _encode(value)
        except UnicodeEncodeError:
            pass  # a lone surrogate: the package says what is wrong with it
    return bytes(rfc8785.dumps(value))
