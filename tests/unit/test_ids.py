"""The ids the node writes into JSON-LD (absolute IRIs) and how it reads them back, its older ids and the
peers' included."""

from __future__ import annotations

import pytest

from connector.protocol import ids

ACME = "did:web:127.0.0.1%3A8080:participants:acme"


@pytest.mark.parametrize(("asset_id", "iri"), [
    ("qi-2026", f"urn:tds:asset:{ACME}:qi-2026"),
    ("a b/c", f"urn:tds:asset:{ACME}:a%20b%2Fc"),  # RFC 3986 §2.1: what is no pchar is percent-encoded
    ("x:y", f"urn:tds:asset:{ACME}:x:y"),
])
def test_a_dataset_is_named_by_its_providers_did_and_its_asset_id(asset_id, iri):
    assert ids.dataset_iri(ACME, asset_id) == iri
    assert ids.is_absolute(iri)
    assert ids.local_asset_id(ACME, iri) == asset_id


@pytest.mark.parametrize(("dataset_id", "asset_id"), [
    (f"urn:tds:asset:{ACME}:qi-2026", "qi-2026"),
    ("urn:tds:asset:did:web:127.0.0.1:8080:participants:acme:qi-2026", "qi-2026"),  # %3A decoded in a URL path
    ("qi-2026", "qi-2026"),  # an older id of the node's, or the compatibility kit's: the asset id itself
    ("urn:tds:asset:did:web:example.org:participants:other:qi-2026",  # another provider's dataset
     "urn:tds:asset:did:web:example.org:participants:other:qi-2026"),
])
def test_a_dataset_id_names_the_providers_asset(dataset_id, asset_id):
    assert ids.local_asset_id(ACME, dataset_id) == asset_id


@pytest.mark.parametrize(("a", "b", "same"), [
    (f"urn:tds:asset:{ACME}:qi", "qi", True),
    (f"urn:tds:asset:{ACME}:qi", f"urn:tds:asset:{ACME}:qi", True),
    (f"urn:tds:asset:{ACME}:qi", f"urn:tds:asset:{ACME}:other", False),
    ("urn:tds:asset:did:web:example.org:participants:other:qi", "qi", False),
])
def test_an_absolute_and_an_older_relative_id_of_one_asset_are_the_same_dataset(a, b, same):
    assert ids.same_dataset(ACME, a, b) is same


@pytest.mark.parametrize(("offer_id", "parts"), [
    ("urn:tds:offer:cd-1:qi-2026:0123456789ab", ("cd-1", "qi-2026")),
    ("cd-1:qi-2026:0123456789ab", ("cd-1", "qi-2026")),  # the node's older offer ids, the kit's
    ("CD123:ACN0101:456", ("CD123", "ACN0101")),
    ("cd-1:qi-2026", ("cd-1", "qi-2026")),
    ("offer-1", ("offer-1", None)),
    ("urn:tds:offer:offer-1", ("urn:tds:offer:offer-1", None)),
])
def test_offer_ids_name_the_contract_definition_and_the_asset(offer_id, parts):
    assert ids.offer_parts(offer_id) == parts


def test_an_offer_id_is_absolute_and_reads_back():
    offer_id = ids.offer_iri("cd-1", "qi-2026", "0123456789ab")
    assert offer_id == "urn:tds:offer:cd-1:qi-2026:0123456789ab" and ids.is_absolute(offer_id)
    assert ids.offer_parts(offer_id) == ("cd-1", "qi-2026")


@pytest.mark.parametrize(("iri", "absolute"), [
    ("urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833", True), ("did:web:example.org", True),
    ("https://example.org/x", True), ("qi-2026", False), ("", False), ("1cd:x", False), ("urn:a b", False),
])
def test_absolute_iris_are_told_from_relative_references(iri, absolute):
    assert ids.is_absolute(iri) is absolute
