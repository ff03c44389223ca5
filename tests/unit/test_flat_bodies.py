"""The usage route's body, read straight into its struct by msgspec (``FlatBody``), is decided exactly as the
management API's general body reading (``decode_body``) decides it: the same value, or the same 400 with the same
reason and path, for well-formed bodies and for every kind of bad one."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from connector.errors import BadRequest
from connector.http.management import USE_BODY, FlatBody, UseIn, decode_body

BODIES = [
    b'{"agreementId": "urn:uuid:a", "useId": "u1", "action": "use", "purpose": "R&D", "deliver": false}',
    b'{"agreementId": "urn:uuid:a", "dryRun": true}',
    b'{"agreementId": "a", "agreementId": "b", "useId": "u"}',  # the last one counts, as in json.loads
    b'  {"agreementId": "urn:uuid:\xe4\xb8\xad", "useId": "u"}\n',
    # refused, each with its own reason
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{",
    b'{"agreementId": "a"} trailing',
    b'{"agreementId": "a", "useID": "u"}',  # an unknown field (a typo)
    b'{"agreementId": ""}',
    b'{"agreementId": "' + b"x" * 201 + b'"}',
    b'{"agreementId": 7}',
    b'{"agreementId": "a", "deliver": 1}',
    b'{"agreementId": "a", "deliver": "false"}',
    b'{"agreementId": "a", "purpose": {"nested": [1, 2]}}',
    b'{"agreementId": "a", "purpose": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"agreementId": "a", "useId": NaN}',
    b'{"agreementId": "a", "useId": ' + b"9" * 2000 + b"}",
    b'{"useId": "u"}',  # agreementId missing
    b'{"agreementId": "a\xff"}',  # not UTF-8
    b"\xef\xbb\xbf" + b'{"agreementId": "a", "useId": "u"}',  # a byte order mark (RFC 8259 8.1: may be ignored)
    b'{"agreementId": "\\ud800", "useId": "u"}',  # a lone surrogate
    b'{"agreementId": "a\\u00e4\\n", "useId": "u\\"q"}',  # escapes that are text
]


def outcome(decode: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(raw)
    except BadRequest as exc:
        return "refused", (exc.status, exc.message, exc.path)


@pytest.mark.parametrize("raw", BODIES)
def test_the_usage_body_is_read_as_the_general_reading_reads_it(raw):
    assert outcome(USE_BODY, raw) == outcome(lambda body: decode_body(body, UseIn), raw)


class Nested(msgspec.Struct):
    name: str
    tags: list[str]


def test_a_struct_with_a_field_that_is_neither_a_string_nor_a_boolean_is_not_read_this_way():
    with pytest.raises(TypeError, match=r"Nested\.tags"):
        FlatBody(Nested)
