"""Credentials on a PostgreSQL store that several processes of one node share (two CredentialService objects on two
Stores over one schema, as ``tds serve`` twice behind a proxy): what one process changes counts in the other at
once, where a memory of its own would keep the old state. An issuer no longer trusted, a credential revoked, a
held credential removed."""

from __future__ import annotations

from typing import Any

import pytest
from credentials_setup import SPACE, Network, exchange, runtime

from connector.identity import status_list
from connector.identity.claims import Membership
from connector.services.credentials import CredentialService
from connector.store.credentials import CredentialRepository
from connector.store.db import Store
from connector.store.repository import SqliteRepository


@pytest.fixture
async def network(tmp_path) -> Any:
    net = Network(tmp_path)
    yield net
    await net.close()


async def processes(net: Network, location: Any, *participants: Any) -> tuple[CredentialService, CredentialService]:
    """Two processes of one node on the shared store, hosting *participants*."""
    first, second = Store(location), Store(location)
    for store in (first, second):
        await store.open()
        net.stores.append(store)
    for p in participants:
        await SqliteRepository(first).add_participant(p.record)
        net.resolver.documents[p.did] = p.did_document()
    return tuple(CredentialService(CredentialRepository(s), net.client, net.resolver, dsp_base_of=net.dsp_base_of,
                                   clock=net.clock.utc) for s in (first, second))  # type: ignore[return-value]


async def test_an_issuer_no_longer_trusted_through_one_process_counts_in_the_other_at_once(network, postgres_schema):
    alliance, parts, buyer = (runtime("alliance", "alliance.example"), runtime("parts", "parts.example"),
                              runtime("buyer", "buyer.example"))
    issuer = await network.node("issuer", alliance)
    holder = await network.node("holder", parts)
    first, second = await processes(network, postgres_schema, buyer)
    network.by_did[buyer.did] = (second, buyer)
    network.client.route(buyer.base_url, network._routes(second, buyer))
    issued = await issuer.issue(alliance, parts.did, Membership(SPACE, "member"))
    await holder.import_credential(parts, issued.document)
    await first.add_trust(buyer, alliance.did, ["membership"])
    claims = await exchange(second, buyer, parts.did, parts.dsp_base)
    assert [m.value.data_space for m in claims.memberships] == [SPACE]
    await first.remove_trust(buyer, alliance.did)  # the operator, through the other process
    again = await second.claims_of(buyer.id, parts.did)
    assert again is not None and again.memberships == ()
    fresh = await exchange(second, buyer, parts.did, parts.dsp_base)  # (trusting no one, it asks for nothing)
    assert fresh is None or fresh.memberships == ()


async def test_a_credential_revoked_through_one_process_is_revoked_in_the_list_the_other_serves(network,
                                                                                               postgres_schema):
    alliance, parts = runtime("alliance", "alliance.example"), runtime("parts", "parts.example")
    first, second = await processes(network, postgres_schema, alliance)
    issued = await first.issue(alliance, parts.did, Membership(SPACE, "member"))

    def revoked(document: dict[str, Any]) -> bool:
        return status_list.Bitstring.decode(document["credentialSubject"]["encodedList"])[issued.status_index]

    assert not revoked(await second.status_list_document(alliance, issued.status_list))  # served (and kept) there
    await first.revoke(alliance, issued.id)
    assert revoked(await second.status_list_document(alliance, issued.status_list))


async def test_a_held_credential_removed_through_one_process_is_not_presented_by_the_other(network,
                                                                                          postgres_schema):
    alliance, parts = runtime("alliance", "alliance.example"), runtime("parts", "parts.example")
    issuer = await network.node("issuer", alliance)
    first, second = await processes(network, postgres_schema, parts)
    issued = await issuer.issue(alliance, parts.did, Membership(SPACE, "member"))
    await first.import_credential(parts, issued.document)
    shown = await second.presentation_for(parts, domain="did:web:buyer.example", challenge="c" * 20)
    assert [c["id"] for c in shown["verifiableCredential"]] == [issued.id]
    await first.remove_held(parts, issued.id)
    shown = await second.presentation_for(parts, domain="did:web:buyer.example", challenge="d" * 20)
    assert not shown or not shown.get("verifiableCredential")
