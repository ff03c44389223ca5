"""The JSON-LD contexts the node ships: the DSP ones as published, and its own, which defines every term the
node writes under ``https://w3id.org/tds/v1#``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from connector.identity import credentials
from connector.protocol import contexts
from connector.testing import shared_dir

ROOT = Path(__file__).resolve().parents[2]
TDS_CONTEXT = contexts.document(contexts.TDS)["@context"]


def defined_iris(context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """IRI → term definition, for every term of *context* and of the contexts scoped in it."""
    prefixes = {k: v for k, v in context.items() if isinstance(v, str) and v.endswith(("#", "/"))}
    out: dict[str, dict[str, Any]] = {}
    for term, definition in context.items():
        if term.startswith("@") or term in prefixes:
            continue
        definition = {"@id": definition} if isinstance(definition, str) else definition
        prefix, _, rest = str(definition.get("@id", term)).partition(":")
        out[prefixes[prefix] + rest if prefix in prefixes else definition.get("@id", term)] = definition
        scoped = definition.get("@context")
        if isinstance(scoped, dict):
            out.update(defined_iris({**prefixes, **scoped}))
    return out


def used_tds_iris() -> set[str]:
    """Every ``https://w3id.org/tds/v1#NAME`` the node's code writes (as a literal or as ``TDS… + "NAME"``)."""
    used: set[str] = set()
    for path in [*ROOT.glob("connector/**/*.py"), *ROOT.glob("usage_policies/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        used.update(re.findall(r"https://w3id\.org/tds/v1#(\w+)", text))
        used.update(re.findall(r"\bTDS(?:_NS)? \+ \"(\w+)\"", text))
    return {contexts.TDS_NS + name for name in used}


@pytest.mark.parametrize(("url", "official"), [
    (contexts.DSP, "dspace.jsonld"), (contexts.DSP_ODRL_PROFILE, "odrl.jsonld"),
])
def test_the_dsp_contexts_are_shipped_as_published(url, official):
    assert contexts.body(url) == (shared_dir() / "dsp-2025-1" / "context" / official).read_bytes()


def test_no_other_context_is_known():
    with pytest.raises(contexts.UnknownContext):
        contexts.body("https://www.w3.org/ns/credentials/v2")


def test_the_nodes_context_defines_every_term_the_node_writes_in_its_namespace():
    used = used_tds_iris()
    assert contexts.TDS_NS + "proof" in used and contexts.TDS_NS + "dataClass" in used  # the scan finds them
    assert used - set(defined_iris(TDS_CONTEXT)) == set()


def test_the_nodes_context_defines_every_claim_of_the_self_description():
    claims = {f.encode_name for f in msgspec.structs.fields(credentials.Subject)} - {"id"}
    defined = {term for term, value in TDS_CONTEXT.items() if not term.startswith("@")}
    assert claims <= defined
    assert credentials.CREDENTIAL_TYPE in defined


def test_the_nodes_context_defines_every_kind_of_credential_and_its_claims():
    from connector.identity.claims import CLAIM_TYPES

    defined = {term for term in TDS_CONTEXT if not term.startswith("@")}
    for kind, claims in CLAIM_TYPES.items():
        assert kind.value in defined
        assert {f.encode_name for f in msgspec.structs.fields(claims)} <= defined, kind


def test_the_verified_operands_are_defined_as_terms():
    from usage_policies.operands import VERIFIED_OPERANDS

    assert set(defined_iris(TDS_CONTEXT)) >= VERIFIED_OPERANDS


@pytest.mark.parametrize("iri", [contexts.TDS_NS + "proof", contexts.TDS_NS + "providerProof",
                                 contexts.TDS_NS + "consumerProof", contexts.TDS_NS + "didDocuments"])
def test_proofs_and_did_documents_are_json_literals_kept_exactly_as_signed(iri):
    assert defined_iris(TDS_CONTEXT)[iri]["@type"] == "@json"


def test_the_proof_property_is_defined_under_its_full_iri_the_key_the_messages_use():
    # A term named by the IRI itself: expansion applies its definition to the key as written, and compaction
    # writes the same key back (a short term would rename the key and change the wire form).
    assert TDS_CONTEXT[contexts.TDS_NS + "proof"] == {"@id": contexts.TDS_NS + "proof", "@type": "@json"}


def test_the_context_is_protected_json_ld_1_1():
    assert TDS_CONTEXT["@version"] == 1.1 and TDS_CONTEXT["@protected"] is True
    assert json.loads(contexts.body(contexts.TDS)) == contexts.document(contexts.TDS)
