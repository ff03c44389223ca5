"""Conformance mode (``connector.conformance``): the static Authorization header, seed data and trigger,
and that none of it exists without the ``[conformance]`` section."""

from __future__ import annotations

import aiohttp
import pytest

from connector.config import ConformanceSection
from connector.protocol import messages as m
from connector.testing import free_port

KIT = ConformanceSection(authorization="static-kit-value", agent_id="TCK_PARTICIPANT")
CATALOG_REQUEST = m.encode(m.CatalogRequestMessage())


async def _post(url, body, authorization=None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_static_authorization_is_the_kit(nodes):
    cut = await nodes.start("cut", conformance=KIT)
    status, body = await _post(f"{cut.participant.dsp_base}/catalog/request", CATALOG_REQUEST, KIT.authorization)
    assert status == 200, body
    assert "CAT0101" in [d["@id"] for d in body["dataset"]]  # seeded for the first participant
    assert cut.node.conformance_caller("TCK_PARTICIPANT")


@pytest.mark.parametrize("authorization", [None, "", "static-kit-valuE", "static-kit-value2", "Bearer x"])
async def test_wrong_or_missing_static_authorization_is_401(nodes, authorization):
    cut = await nodes.start("cut", conformance=KIT)
    status, body = await _post(f"{cut.participant.dsp_base}/catalog/request", CATALOG_REQUEST, authorization)
    assert status == 401 and body["@type"] == "CatalogError"
    status, _ = await _post(f"{cut.public_url}/conformance/negotiations/initiate", {}, authorization)
    assert status == 401


async def test_signed_peers_still_work_in_conformance_mode(nodes):
    cut, peer = await nodes.start("cut", conformance=KIT), await nodes.start("parts")
    catalog = await peer.client.catalog(cut.public_url)
    assert "ACN0101" in [d["@id"] for d in catalog["dataset"]]


async def test_without_the_section_there_is_no_static_authorization_and_no_trigger(nodes):
    node = await nodes.start("acme")
    assert node.node.conformance is None and node.node.negotiations.script is None
    status, body = await _post(f"{node.participant.dsp_base}/catalog/request", CATALOG_REQUEST, KIT.authorization)
    assert status == 401 and "not signed" in body["reason"][0]
    status, _ = await _post(f"{node.public_url}/conformance/negotiations/initiate", {}, KIT.authorization)
    assert status == 404
    assert await node.client.entries("assets") == []  # nothing seeded


async def test_trigger_refuses_a_bad_body(nodes):
    cut = await nodes.start("cut", conformance=KIT)
    url = f"{cut.public_url}/conformance/negotiations/initiate"
    status, body = await _post(url, {"datasetId": "ACNC0101"}, KIT.authorization)
    assert status == 400 and "offerId" in body["message"]
    status, body = await _post(url, {"datasetId": "ACNC0101", "offerId": "CD123:ACNC0101:456", "providerId": "x",
                                     "connectorAddress": "file:///etc/passwd"}, KIT.authorization)
    assert status == 400 and body["path"] == "connectorAddress"
    deep: list = []
    for _ in range(100):
        deep = [deep]
    for trigger in ("negotiations", "transfers"):
        status, body = await _post(f"{cut.public_url}/conformance/{trigger}/initiate", {"offerId": deep},
                                   KIT.authorization)
        assert status == 400 and "deeper than 64" in body["message"], body


async def test_seeding_twice_is_harmless(nodes):
    cut = await nodes.start("cut", conformance=KIT)
    await nodes.restart(cut)
    assert len(await cut.client.entries("contract-definitions")) == 1


async def test_trigger_reports_an_unreachable_kit(nodes):
    cut = await nodes.start("cut", conformance=KIT)
    status, body = await _post(f"{cut.public_url}/conformance/negotiations/initiate",
                               {"datasetId": "ACNC0101", "offerId": "CD123:ACNC0101:456",
                                "providerId": "TCK_PARTICIPANT", "connectorAddress": f"http://127.0.0.1:{free_port()}"},
                               KIT.authorization)
    assert status == 502 and "could not be delivered" in body["message"]
