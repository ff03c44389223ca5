"""DSP error bodies (``connector.http.middleware.error_body``): valid against the DSP 2025-1 schemas, with both
process ids as IRIs, whatever the request named — no node, no socket."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from connector.errors import BadRequest
from connector.http.middleware import PIDS, error_body
from connector.protocol import ids
from connector.testing import dsp_validator

BASE = "/participants/acme/api/dsp/2025-1"


@pytest.mark.parametrize(("path", "type_name"), [
    (f"{BASE}/transfers/request", "TransferError"),
    (f"{BASE}/negotiations/request", "ContractNegotiationError"),
])
def test_a_refused_opening_names_the_side_without_a_process_by_a_fresh_iri(path, type_name):
    request = make_mocked_request("POST", path)
    request[PIDS] = {"consumerPid": "urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833"}
    body = error_body(request, BadRequest("no agreement 'x' with you"))
    dsp_validator().validate(body)
    assert body["@type"] == type_name
    assert body["consumerPid"] == "urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833"
    # Not "": the DSP context reads providerPid as an IRI (@type: @id), and "" is none.
    assert body["providerPid"].startswith("urn:uuid:") and ids.is_absolute(body["providerPid"])


def test_each_refusal_is_named_afresh():
    bodies = [error_body(make_mocked_request("POST", f"{BASE}/transfers/request"), BadRequest("no"))
              for _ in range(2)]
    assert bodies[0]["providerPid"] != bodies[1]["providerPid"]
    assert all(ids.is_absolute(b["consumerPid"]) for b in bodies)


def test_the_pids_a_request_named_are_echoed():
    request = make_mocked_request("POST", f"{BASE}/transfers/urn:uuid:p/completion")
    request[PIDS] = {"providerPid": "urn:uuid:p", "consumerPid": "urn:uuid:c"}
    body = error_body(request, BadRequest("refused"))
    assert (body["providerPid"], body["consumerPid"]) == ("urn:uuid:p", "urn:uuid:c")


def test_a_catalog_error_names_no_process():
    body = error_body(make_mocked_request("GET", f"{BASE}/catalog/datasets/x"), BadRequest("no"))
    dsp_validator().validate(body)
    assert "providerPid" not in body and "consumerPid" not in body
