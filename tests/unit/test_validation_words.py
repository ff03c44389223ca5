"""Validation messages state a field's rule in words, never its regular expression: every pattern a request
body, the config file or a credential's claims is checked against has its words."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import ModuleType

import msgspec
import pytest

from connector import config
from connector.errors import BadRequest, readable_validation, validation_error_path
from connector.http import credentials as credential_routes
from connector.http import management
from connector.identity import claims


def _patterns(module: ModuleType) -> Iterator[tuple[str, str]]:
    """(struct.field, pattern) for every string pattern of the structs *module* defines."""
    structs = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, msgspec.Struct) and obj.__module__ == module.__name__]
    seen: set[int] = set()

    def walk(where: str, t: msgspec.inspect.Type) -> Iterator[tuple[str, str]]:
        if id(t) in seen:
            return
        seen.add(id(t))
        if isinstance(t, msgspec.inspect.StrType) and t.pattern:
            yield where, t.pattern
        elif isinstance(t, msgspec.inspect.StructType):
            for field in t.fields:
                yield from walk(f"{t.cls.__name__}.{field.name}", field.type)
        for attr in ("item_type", "key_type", "value_type"):
            if hasattr(t, attr):
                yield from walk(where, getattr(t, attr))
        for inner in getattr(t, "types", ()) or ():
            yield from walk(where, inner)

    for info in msgspec.inspect.multi_type_info(structs):
        yield from walk("", info)


CASES = [case for module in (management, credential_routes, config, claims) for case in _patterns(module)]


def test_there_are_patterns_to_check():
    assert {"ParticipantIn.name", "ParticipantIn.region", "TokenIn.application"} <= {where for where, _ in CASES}


@pytest.mark.parametrize(("where", "pattern"), CASES, ids=[where for where, _ in CASES])
def test_every_pattern_has_its_rule_in_words(where, pattern):
    said = readable_validation(f"Expected `str` matching regex {pattern!r} - at `$.x`")
    assert said.startswith("must be ") and pattern not in said, (where, said)


@pytest.mark.parametrize(("body", "path", "message"), [
    (b'{"name": "Bad Name", "legalName": "X", "region": "CN"}', "$.name",
     "name: must be 1-63 lowercase letters (a-z), digits or '-', starting with a letter or digit"),
    (b'{"name": "sme", "legalName": "X", "region": "china"}', "$.region",
     "region: must be an ISO 3166 code in capitals such as CN or CN-GD"),
])
def test_a_participant_body_is_refused_with_the_rule(body, path, message):
    with pytest.raises(BadRequest) as refused:
        management.decode_body(body, management.ParticipantIn)
    assert (refused.value.path, refused.value.message) == (path, message)


def test_a_pattern_without_words_is_named_as_a_pattern_and_other_messages_stay():
    assert validation_error_path("Expected `str` matching regex '^x+$' - at `$.a.b`") == (
        "a.b", "does not have the form this field takes (pattern '^x+$')")
    assert validation_error_path("Expected `int`, got `str` - at `$.node.port`") == (
        "node.port", "Expected `int`, got `str`")


def test_the_config_file_says_the_name_rule_too():
    text = '[node]\npublic_url = "http://127.0.0.1:8181"\ndev_mode = true\n[participant]\nname = "Bad Name"\n' \
           'legal_name = "X"\nregion = "CN"\n'
    with pytest.raises(config.ConfigError, match=r"^participant.name must be 1-63 lowercase letters \(a-z\)"):
        config.parse_config(text)
