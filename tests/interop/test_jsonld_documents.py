"""Every JSON-LD document two nodes emit or sign in a real negotiation and transfer, read by another JSON-LD
processor (``pyld``, offline: ``jsonld_offline.py``): nothing is dropped, every id is an absolute IRI, and the
signatures still verify on what the processor gives back.

The run: acme publishes a file, parts verifies acme (the self-description handshake), reads the catalog and
a dataset, negotiates (request, agreement with acme's proof, verification with parts' proof, finalization)
and pulls the data (request, start, completion); a third node asks for a transfer under an agreement that is
not its own and is refused (``TransferError``). The documents: every DSP message either node sent and
every DSP body answered, both self-descriptions and DID documents (as served), and both evidence bundles.

Each is expanded, then compacted with its own ``@context``; every key of the original must come back with
the same value. Two things JSON-LD itself does are not losses: an array of one item may compact to the item
(W3C JSON-LD 1.1 §4.3.1, ``compactArrays``), and an ``@context`` nested in a node (a Data Integrity proof
carries its document's, eddsa-jcs-2022 §3.3.5) is a context, not data (JSON-LD 1.1 §3.1), which compaction
does not write back.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from jsonld_offline import OfflineContexts, round_trip
from pyld import jsonld

from connector.identity import credentials
from connector.identity import did as dids
from connector.net import signing
from connector.protocol import agreements, contexts, ids
from connector.protocol import messages as m
from connector.testing import RunningNode

#: Where the DSP 2025-1 artifacts disagree with themselves, the test follows what peers interoperate on, and
#: allows exactly this: the DSP context types ``format`` (``dct:format``) ``@vocab`` and defines no ``@vocab``,
#: so its value must be an IRI; the DSP examples (catalog.json, transfer-request-message.json), the
#: compatibility kit and the Eclipse connector all write the bare name ``HttpData-PULL``, which expands to a
#: relative IRI (DataspaceProtocol issue #242, open). The node writes the bare names so that peers read them.
DSP_FORMAT = "http://purl.org/dc/terms/format"
FORMAT_NAMES = frozenset({"HttpData-PULL", "HttpData-PUSH"})
CONTRACT = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2099-01-01T00:00:00Z"}]}]}
OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


def differences(original: Any, compacted: Any, path: str = "$") -> list[str]:
    """Where *compacted* lost or changed something of *original* (see the module's docstring)."""
    if isinstance(original, dict):
        if not isinstance(compacted, dict):
            return [f"{path}: an object became {compacted!r}"]
        found = []
        for key, value in original.items():
            if key == "@context":
                continue
            if key not in compacted:
                found.append(f"{path}.{key}: dropped (the compacted object has {sorted(compacted)})")
            else:
                found += differences(value, compacted[key], f"{path}.{key}")
        return found
    if isinstance(original, list):
        items = compacted if isinstance(compacted, list) else [compacted]
        if len(items) != len(original):
            return [f"{path}: {len(original)} items became {len(items)}"]
        pairs = enumerate(zip(original, items, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{path}[{i}]")]
    return [] if original == compacted else [f"{path}: {original!r} became {compacted!r}"]


def relative_ids(expanded: Any, path: str = "$") -> list[str]:
    """Every ``@id`` and ``@type`` of the expanded form that is not an absolute IRI (a JSON literal's inside is
    its value, not the graph's)."""
    found: list[str] = []
    if isinstance(expanded, list):
        for i, item in enumerate(expanded):
            found += relative_ids(item, f"{path}[{i}]")
    elif isinstance(expanded, dict):
        if "@value" in expanded:
            kind = expanded.get("@type")
            return [] if kind is None or kind == "@json" or ids.is_absolute(kind) else [f"{path}: @type {kind!r}"]
        if "@id" in expanded and not ids.is_absolute(expanded["@id"]):
            found.append(f"{path}: @id {expanded['@id']!r}")
        types = expanded.get("@type", [])
        found += [f"{path}: @type {t!r}" for t in (types if isinstance(types, list) else [types])
                  if not ids.is_absolute(t)]
        for key, value in expanded.items():
            if key == DSP_FORMAT and all(v.get("@id") in FORMAT_NAMES for v in value):
                continue  # see DSP_FORMAT
            if key not in ("@id", "@type"):
                found += relative_ids(value, f"{path}.{key}")
    return found


def check(name: str, document: dict[str, Any], loader: OfflineContexts) -> dict[str, Any]:
    """Round-trip *document* through pyld; fail on anything dropped, changed or relative. Returns the
    compacted form."""
    result = round_trip(document, loader)
    assert result.dropped == [], f"{name}: pyld dropped {result.dropped}"
    assert differences(document, result.compacted) == [], (name, differences(document, result.compacted))
    assert relative_ids(result.expanded) == [], (name, relative_ids(result.expanded))
    return result.compacted


async def get_json(url: str, **headers: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.content_type, json.loads(await response.read())


async def refused_transfer(provider: RunningNode, stranger: RunningNode, agreement_id: str) -> dict[str, Any]:
    """A TransferRequestMessage from a node that is not party to *agreement_id*: the provider's TransferError."""
    p = stranger.participant
    body = m.encode(m.TransferRequestMessage(consumerPid="urn:uuid:0e0b7c7e-3a59-4a83-9f5e-6a0f1b2c3d4e",
                                             agreementId=agreement_id, format="HttpData-PULL",
                                             callbackAddress=p.dsp_base))
    raw = json.dumps(body).encode()
    url = f"{provider.participant.dsp_base}/transfers/request"
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
        assert response.status == 400
        answer: dict[str, Any] = await response.json()
    return answer


@pytest.fixture
async def run(nodes):
    """acme provides, parts consumes (negotiated and transferred), north is refused; see the module docstring."""
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    data = provider.data_dir / "files" / "acme" / "qi.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("part,defects\nA,0\nB,2\n")
    await provider.client.add_asset({"id": "qi-2026", "title": "Quality inspection", "keywords": ["quality"],
                                     "contentType": "text/csv", "dataAddress": {"type": "File", "path": "qi.csv"}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("contract", CONTRACT)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="contract",
                                                  assets=["qi-2026"])
    await consumer.client.verify_peer(provider.public_url)
    catalog = await consumer.client.catalog(provider.public_url)
    offer_id = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer_id)
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    agreement_id = final["agreement"]["@id"]
    transfer = await consumer.client.start_transfer(agreement_id)
    done = await consumer.client.transfer(transfer["id"], wait_s=20)
    assert done["state"] == "COMPLETED", done
    stranger = await nodes.start("north")
    error = await refused_transfer(provider, stranger, agreement_id)
    return provider, consumer, agreement_id, error


async def test_every_dsp_message_and_answer_keeps_everything_through_expansion_and_compaction(nodes, run, loader):
    _, _, _, error = run
    documents = [*nodes.sent, *nodes.answers, error]
    seen = {d["@type"] for d in documents}
    # The run exercised each of these (the catalog and the dataset are answers, the error is the refusal).
    assert seen >= {"CatalogRequestMessage", "Catalog", "Dataset", "ContractRequestMessage", "ContractNegotiation",
                    "ContractAgreementMessage", "ContractAgreementVerificationMessage",
                    "ContractNegotiationEventMessage", "TransferRequestMessage", "TransferProcess",
                    "TransferStartMessage", "TransferCompletionMessage", "TransferError"}, seen
    for document in documents:
        check(document["@type"], document, loader)


async def test_the_agreement_proofs_survive_as_signed_and_still_verify(nodes, run, loader):
    provider, consumer, _, _ = run
    [agreement_message] = [d for d in nodes.sent if d["@type"] == "ContractAgreementMessage"]
    [verification] = [d for d in nodes.sent if d["@type"] == "ContractAgreementVerificationMessage"]
    # Between two TDS nodes (each verified the other's self-description) the node's context is named.
    assert agreement_message["@context"] == verification["@context"] == [contexts.DSP, contexts.TDS]
    compacted = check("ContractAgreementMessage", agreement_message, loader)
    compacted_verification = check("ContractAgreementVerificationMessage", verification, loader)
    # The proofs are JSON literals: all six fields, byte for byte, and the signatures verify on what pyld
    # gave back (eddsa-jcs-2022 signs the JSON, RFC 8785, which a JSON literal keeps).
    for before, after in ((agreement_message, compacted), (verification, compacted_verification)):
        assert after[m.PROOF] == before[m.PROOF]
        assert set(after[m.PROOF]) == {"type", "cryptosuite", "created", "verificationMethod", "proofPurpose",
                                       "proofValue"}
    agreement = compacted["agreement"]
    agreements.verify(agreement, compacted[m.PROOF], provider.participant.did_document(),
                      party=provider.participant.did)
    agreements.verify(agreement, compacted_verification[m.PROOF], consumer.participant.did_document(),
                      party=consumer.participant.did)


async def test_ids_are_absolute_and_the_dataset_is_the_providers(nodes, run):
    provider, _, _, error = run
    [agreement_message] = [d for d in nodes.sent if d["@type"] == "ContractAgreementMessage"]
    target = agreement_message["agreement"]["target"]
    assert target == f"urn:tds:asset:{provider.participant.did}:qi-2026"
    [request] = [d for d in nodes.sent if d["@type"] == "ContractRequestMessage"]
    assert request["offer"]["target"] == target and request["offer"]["@id"].startswith("urn:tds:offer:cd:qi-2026:")
    # A refused opening has no process on the provider's side: the error names it by a fresh IRI, not "".
    assert error["@type"] == "TransferError" and ids.is_absolute(error["providerPid"])


@pytest.mark.parametrize("party", ["provider", "consumer"])
async def test_self_descriptions_and_did_documents_as_served(run, loader, party):
    provider, consumer, _, _ = run
    node = provider if party == "provider" else consumer
    participant = node.participant
    status, _, self_description = await get_json(f"{participant.base_url}/.well-known/tds/self-description")
    assert status == 200 and self_description["@context"] == [credentials.VC_CONTEXT, contexts.TDS]
    compacted = check("self-description", self_description, loader)
    assert compacted["credentialSubject"]["legalName"] == participant.record.legal_name
    status, _, document = await get_json(f"{participant.base_url}/did.json")
    assert status == 200 and document["@context"] == [dids.DID_CONTEXT, dids.MULTIKEY_CONTEXT, contexts.DSP]
    check("DID document", document, loader)
    # The self-description's own proof is checked on the document as served (its proof carries the
    # document's @context, which compaction does not write back: see the module docstring).
    assert credentials.verify(self_description, document, now=datetime.now(UTC)).id == participant.did


@pytest.mark.parametrize("party", ["provider", "consumer"])
async def test_evidence_bundles_keep_the_agreement_proofs_and_did_documents(run, loader, party):
    provider, consumer, agreement_id, _ = run
    node = provider if party == "provider" else consumer
    bundle = await node.client.agreement_evidence(agreement_id)
    compacted = check("evidence bundle", bundle, loader)
    assert [c.status for c in agreements.check_bundle(compacted)] == ["valid", "valid"]


async def test_the_nodes_context_is_served_as_shipped(run):
    provider, _, _, _ = run
    status, content_type, served = await get_json(f"{provider.public_url}{contexts.TDS_PATH}")
    assert status == 200 and content_type == contexts.MEDIA_TYPE
    assert served == contexts.document(contexts.TDS)


def test_the_processor_fetches_nothing(loader):
    with pytest.raises(jsonld.JsonLdError, match="loading remote context failed"):
        round_trip({"@context": ["https://example.org/elsewhere"], "x": 1}, loader)
    assert loader.refused == ["https://example.org/elsewhere"]
    loader.refused.clear()  # refused on purpose: the fixture fails a test for any other


@pytest.mark.parametrize("kind", ["membership", "legal-entity", "region", "certification"])
def test_credentials_of_each_kind_keep_every_claim(loader, kind):
    from nacl.signing import SigningKey

    from connector.identity import vc
    from connector.identity.claims import Certification, LegalEntity, Membership, Region
    from connector.identity.keys import Signer

    claims = {
        "membership": Membership("urn:tds:space:auto-parts", "operator"),
        "legal-entity": LegalEntity("ACME Precision Manufacturing Co.", "91350100M000100Y43", "5493001KJTIIGC8Y1R12"),
        "region": Region("CN-GD"),
        "certification": Certification("2", "TDS Connector", "0.1.0"),
    }[kind]
    key = SigningKey.generate()
    issuer = dids.did_key_for(bytes(key.verify_key))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    document = vc.issue(claims, holder="did:web:parts.example", signer=Signer(key, dids.signing_key_id(issuer)),
                        credential_id="urn:uuid:5b0c9a2e-8f4b-4b8e-9a55-0d1f0c1d2e3f", now=now,
                        valid_until=datetime(2027, 6, 1, tzinfo=UTC))
    compacted = check(f"{kind} credential", document, loader)
    assert compacted["type"] == ["VerifiableCredential", claims.kind.value]
