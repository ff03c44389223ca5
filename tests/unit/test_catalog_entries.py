"""Reading a peer's catalog into cache entries (pure): the dataset's fields as written, bounded; each offer's
policy features and terms; what is refused as a whole and what is skipped and counted."""

from __future__ import annotations

import pytest

from connector.protocol.catalog_entries import (
    MAX_TITLE,
    CatalogRefused,
    policy_features,
    read_catalog,
    terms_line,
)

PROVIDER = "did:web:parts.example"
DSP = "https://parts.example/api/dsp/2025-1"
RND = {"@id": "urn:tds:offer:qi:qi-2026:abc", "@type": "Offer", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"},
    {"leftOperand": "odrl:count", "operator": "lteq", "rightOperand": {"@value": "5", "@type": "xsd:integer"}},
    {"leftOperand": "https://w3id.org/tds/v1#exportDestination", "operator": "isPartOf", "rightOperand": "CN"},
], "duty": [{"action": "odrl:acceptTracking"}]}]}
OPEN = {"@id": "urn:tds:offer:open:qi-2026:def", "@type": "Offer", "permission": [{"action": "use"}]}


def catalog(*datasets, participant=PROVIDER):
    return {"@type": "Catalog", "participantId": participant, "dataset": list(datasets)}


def dataset(dataset_id="urn:tds:asset:did:web:parts.example:qi-2026", *offers, **fields):
    return {"@id": dataset_id, "@type": "Dataset", "hasPolicy": list(offers) or [RND], **fields}


def test_every_offer_of_every_dataset_is_an_entry_with_the_datasets_fields():
    read = read_catalog(catalog(dataset("ds-1", RND, OPEN, **{
        "dct:title": "Quality inspection 2026", "dct:description": "Line scans", "dcat:keyword": ["quality", "qi"],
        "https://w3id.org/tds/v1#dataClass": "important", "dcat:mediaType": "text/csv"})),
        provider_did=PROVIDER, dsp_endpoint=DSP, max_offers=10)
    assert [(e.dataset_id, e.offer_id) for e in read.entries] == [("ds-1", RND["@id"]), ("ds-1", OPEN["@id"])]
    first = read.entries[0]
    assert (first.title, first.description, first.keywords, first.data_class, first.media_type) == (
        "Quality inspection 2026", "Line scans", ["quality", "qi"], "important", "text/csv")
    assert first.policy == RND and first.provider_did == PROVIDER and first.dsp_endpoint == DSP
    assert read.skipped == read.over_bound == 0


@pytest.mark.parametrize(("policy", "features"), [
    (RND, ["export-within:CN", "logged-use", "purpose:R&D", "use-limit"]),
    (OPEN, ["any-purpose", "no-export-restriction"]),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "odrl:spatial", "operator": "isAnyOf", "rightOperand": ["CN-GD", "CN-BJ"]},
        {"leftOperand": "odrl:elapsedTime", "operator": "lteq", "rightOperand": "P30D"}]}],
      "prohibition": [{"action": "odrl:distribute"}]},
     ["any-purpose", "no-export-restriction", "prohibits:distribute", "recipient-region:CN-BJ",
      "recipient-region:CN-GD", "time-limit"]),
    ({"permission": "not a rule"}, ["any-purpose", "no-export-restriction"]),
])
def test_policy_features(policy, features):
    assert policy_features(policy) == features


def test_terms_fit_in_one_line():
    assert terms_line(RND) == "use; purpose R&D; at most 5 uses; no export outside CN; duty acceptTracking"
    assert terms_line({}) == "no terms"


@pytest.mark.parametrize(("answer", "why"), [
    ([], "not a JSON object"),
    ({"@type": "Dataset"}, "not a Catalog"),
    (catalog(participant="did:web:someone-else.example"), "not of did:web:parts.example"),
])
def test_what_is_not_the_providers_catalog_is_refused(answer, why):
    with pytest.raises(CatalogRefused, match=why):
        read_catalog(answer, provider_did=PROVIDER, dsp_endpoint=DSP, max_offers=10)


def test_unreadable_datasets_and_offers_are_skipped_and_counted():
    read = read_catalog(catalog(
        "garbage", {"@type": "Dataset"}, dataset("ds", {"no": "id"}, {"@id": "x" * 600}, RND, RND),
        dataset("big", {"@id": "o", "permission": [{"action": "use", "x": "y" * 20_000}]})),
        provider_did=PROVIDER, dsp_endpoint=DSP, max_offers=10)
    assert [e.offer_id for e in read.entries] == [RND["@id"]]
    assert read.skipped == 6  # two datasets, an offer without id, one with a huge id, a duplicate, a huge policy


def test_offers_over_the_bound_are_left_out_and_counted():
    offers = [{"@id": f"o-{i}", "permission": [{"action": "use"}]} for i in range(30)]
    read = read_catalog(catalog(dataset("ds", *offers)), provider_did=PROVIDER, dsp_endpoint=DSP, max_offers=12)
    assert len(read.entries) == 12 and read.over_bound == 18


def test_long_fields_are_cut_to_what_the_management_api_accepts():
    read = read_catalog(catalog(dataset("ds", **{"dct:title": [{"@value": "t" * 2000, "@language": "en"}],
                                                 "dcat:keyword": ["k" * 300] * 80,
                                                 "https://w3id.org/tds/v1#dataClass": "secret"})),
                        provider_did=PROVIDER, dsp_endpoint=DSP, max_offers=10)
    entry = read.entries[0]
    assert len(entry.title) == MAX_TITLE and len(entry.keywords) == 50 and len(entry.keywords[0]) == 100
    assert entry.data_class == ""  # not one of the data classes: not trusted as one
