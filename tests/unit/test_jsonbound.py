"""JSON from outside the node is refused past a nesting bound, whatever parser would have overflowed."""

from __future__ import annotations

import json

import pytest

from connector import jsonbound
from connector.errors import PeerError
from connector.net.client import PeerResponse
from connector.services.process_shell import peer_reason


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_nesting_up_to_the_bound_parses():
    assert jsonbound.loads(nested(jsonbound.MAX_DEPTH)) is not None
    assert jsonbound.loads(b'{"a": {"b": [1, {"c": "d"}]}}') == {"a": {"b": [1, {"c": "d"}]}}
    assert jsonbound.loads(b"3") == 3


@pytest.mark.parametrize("levels", [jsonbound.MAX_DEPTH + 1, 5_000, 200_000])
def test_deeper_is_refused_as_a_value_error(levels):
    with pytest.raises(jsonbound.TooDeep, match="deeper than 64"):
        jsonbound.loads(nested(levels))
    assert issubclass(jsonbound.TooDeep, ValueError)


@pytest.mark.parametrize("text", ['{"a": NaN}', '[Infinity]', '[-Infinity]', '{"n": 1e400}', '[-1e999]'])
def test_only_standard_json_numbers(text):
    with pytest.raises(ValueError):
        jsonbound.loads(text)
    assert jsonbound.loads('{"n": 1.5e300, "m": -0.25, "i": 12345678901234567890}') == {
        "n": 1.5e300, "m": -0.25, "i": 12345678901234567890}


def test_objects_count_like_arrays():
    deep = {"a": 1}
    for _ in range(jsonbound.MAX_DEPTH):
        deep = {"a": deep}
    with pytest.raises(jsonbound.TooDeep):
        jsonbound.loads(json.dumps(deep))


def test_a_peers_deep_answer_is_a_peer_error_not_a_crash():
    response = PeerResponse(status=200, headers={}, body=nested(10_000), url="https://peer.example/x")
    with pytest.raises(PeerError, match="not JSON"):
        response.json()
    assert peer_reason(nested(10_000)) == "a non-JSON body"
