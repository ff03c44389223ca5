"""Federation: finding a peer's DSP endpoint and exchanging verified self-descriptions.

``verify_peer`` is what ``tds peer verify PEER`` and the demo use: it finds the peer's DSP base (from a
node root URL through the version document, from a DSP base URL directly, or from a ``did:web`` through
its DID document), sends a signed handshake with our own self-description, and verifies the peer's
answer: the proof must verify against the key in the peer's DID document, the credential must be valid
now, and the DSP endpoint it names must be the one we called (so a node cannot pass off another's
identity). Verified peers are stored per participant. The same request and answer carry each side's
credentials (*credentials*, ``CredentialService``: challenges and presentations; the request body is then
``{"selfDescription": …, "challenge": …, "presentation": …}`` and so is the answer); whatever happens to
them, the handshake stands (a peer that shows none is verified as before), and a bare self-description is
answered with a bare self-description. ``peer_catalog`` reads a peer's catalog, all its pages, as one of our
participants sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from connector.errors import BadRequest, PeerError, TdsError, Unauthorized
from connector.identity import credentials
from connector.identity import did as dids
from connector.logging import get_logger
from connector.protocol import messages as m
from connector.services.ports import PeerFetcher, Resolver
from connector.store.repository import Peer

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.credentials import Opening
    from connector.store.repository import Repository

DSP_SUFFIX = "/api/dsp/2025-1"
#: The handshake route, under a participant's DSP base.
HANDSHAKE_PATH = "/tds/handshake"
#: Most pages of a peer's catalog read for one query.
MAX_CATALOG_PAGES = 50
log = get_logger(component="federation")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Credentials(Protocol):
    """The credentials a handshake carries both ways (``connector.services.credentials.CredentialService``)."""

    async def opening(self, participant: ParticipantRuntime, dsp_base: str) -> Opening | None: ...

    async def on_handshake(self, participant: ParticipantRuntime, caller: str, fields: Mapping[str, Any]
                           ) -> dict[str, Any]: ...

    async def closing(self, participant: ParticipantRuntime, peer: str, dsp_base: str, opening: Opening,
                      answer: Mapping[str, Any] | None) -> Any: ...


class FederationService:
    """Finds peers' endpoints and exchanges verified self-descriptions; verified peers go to *peers*; each
    handshake carries credentials both ways through *credentials*, if set."""

    def __init__(
        self, client: PeerFetcher, resolver: Resolver, peers: Repository, *,
        clock: Callable[[], datetime] = _utc_now, credentials: Credentials | None = None,
    ) -> None:
        self.client = client
        self.resolver = resolver
        self.peers = peers
        self.clock = clock
        self.credentials = credentials

    async def check_self_description(self, document: Any) -> credentials.Subject:
        """Verify a self-description against its issuer's DID document (resolved now)."""
        if not isinstance(document, dict):
            raise credentials.SelfDescriptionError("self-description is not a JSON object")
        method = credentials.verification_method(document)
        try:
            did, _ = dids.split_did_url(method)
            # With the key it names: signed by a key the cached document may not list yet (a rotation).
            issuer_document = await self.resolver.resolve(did, key_id=method)
        except dids.DidError as exc:
            raise credentials.SelfDescriptionError(str(exc)) from exc
        return credentials.verify(document, issuer_document, now=self.clock())

    async def dsp_base_of(self, peer: str) -> str:
        """The DSP 2025-1 base URL of *peer*: a node root URL, a participant URL, a DSP base or a did:web."""
        peer = peer.strip().rstrip("/")
        if peer.startswith("did:"):
            if peer.startswith("did:key:"):
                raise BadRequest("a did:key names no endpoint; give the peer's URL instead", path="peer")
            try:
                document = await self.resolver.resolve(peer)
            except dids.DidError as exc:
                raise BadRequest(str(exc), path="peer") from exc
            services = document.get("service", [])
            for service in services if isinstance(services, list) else []:
                endpoint = service.get("serviceEndpoint") if isinstance(service, dict) else None
                if isinstance(service, dict) and service.get("type") == "DataService" and isinstance(endpoint, str):
                    return await self._from_version_document(endpoint)
            raise PeerError(f"the DID document of {peer} names no DataService endpoint")
        if not peer.startswith(("http://", "https://")):
            raise BadRequest("peer must be an http(s) URL or a did:web", path="peer")
        if peer.endswith(DSP_SUFFIX):
            return peer
        return await self._from_version_document(f"{peer}/.well-known/dspace-version")

    async def _from_version_document(self, url: str) -> str:
        document = await self.client.get_json(url)
        versions = document.get("protocolVersions") if isinstance(document, dict) else None
        for entry in versions if isinstance(versions, list) else []:
            if isinstance(entry, dict) and entry.get("version") == "2025-1" and isinstance(entry.get("path"), str):
                parts = urlsplit(url)
                path = entry["path"]
                return path.rstrip("/") if "://" in path else f"{parts.scheme}://{parts.netloc}{path}".rstrip("/")
        raise PeerError(f"{url} lists no DSP 2025-1 endpoint")

    async def verify_peer(self, participant: ParticipantRuntime, peer: str) -> tuple[credentials.Subject, str]:
        """Handshake with *peer* over a signed request; return its verified subject and DSP base."""
        dsp_base = await self.dsp_base_of(peer)
        now = self.clock()
        own = participant.self_description(now)
        opening = await self.credentials.opening(participant, dsp_base) if self.credentials is not None else None
        body = {"selfDescription": own, **opening.fields} if opening is not None else own
        response = await self.client.request("POST", f"{dsp_base}{HANDSHAKE_PATH}", json_body=body,
                                             signer=participant.signer)
        if response.status != 200:
            raise PeerError(f"{dsp_base} refused the handshake with {response.status}: {response.body[:300]!r}")
        answer = response.json()
        wrapped = isinstance(answer, dict) and isinstance(answer.get("selfDescription"), dict)
        document = answer["selfDescription"] if wrapped else answer
        try:
            subject = await self.check_self_description(document)
        except credentials.SelfDescriptionError as exc:
            raise PeerError(f"{dsp_base} answered with a self-description that does not verify: {exc}") from exc
        if subject.dsp_endpoint.rstrip("/") != dsp_base:
            raise PeerError(
                f"{dsp_base} answered with the self-description of {subject.id}, "
                f"whose DSP endpoint is {subject.dsp_endpoint}"
            )
        if peer.startswith("did:") and subject.id != peer:
            raise PeerError(f"{dsp_base} answered as {subject.id}, not {peer}")
        await self._remember(participant, subject, document, now)
        log.info("peer verified", participant=participant.name, peer=subject.id, legal_name=subject.legal_name,
                 region=subject.region)
        if opening is not None and self.credentials is not None:
            try:
                await self.credentials.closing(participant, subject.id, dsp_base, opening,
                                               answer if wrapped else None)
            except TdsError as exc:
                log.warning("credentials not exchanged", participant=participant.name, peer=subject.id,
                            reason=exc.message)
        return subject, dsp_base

    async def known(self, participant: ParticipantRuntime) -> list[Peer]:
        """The peers this participant has verified (by handshake, either way), by DID."""
        return await self.peers.peers(participant.id)

    async def peer_catalog(self, participant: ParticipantRuntime, peer: str) -> Any:
        """*peer*'s catalog as *participant* sees it: every page (at most :data:`MAX_CATALOG_PAGES`), the
        datasets of all pages in the first page's catalog."""
        dsp = await self.dsp_base_of(peer)
        datasets: list[Any] = []
        url: str | None = f"{dsp}/catalog/request"
        catalog: Any = {}
        pages = 0
        while url and pages < MAX_CATALOG_PAGES:
            response = await self.client.request("POST", url, json_body=m.encode(m.CatalogRequestMessage()),
                                                  signer=participant.signer)
            if response.status != 200:
                raise PeerError(f"{dsp} refused the catalog request with {response.status}")
            catalog = response.json()
            datasets += catalog.get("dataset", []) if isinstance(catalog, dict) else []
            url = next_link(response.headers.get("Link", ""))
            pages += 1
        if isinstance(catalog, dict):
            catalog = {k: v for k, v in catalog.items() if k != "dataset"}
            if datasets:
                catalog["dataset"] = datasets
        return catalog

    async def accept_handshake(
        self, participant: ParticipantRuntime, caller_did: str, body: Any
    ) -> dict[str, Any]:
        """A handshake from *caller_did* (the request's signer): its self-description verified and recorded,
        answered with ours; the credentials beside it, if any, answered beside ours."""
        fields = None
        document = body
        if isinstance(body, dict) and "selfDescription" in body:
            fields = {k: v for k, v in body.items() if k != "selfDescription"}
            document = body["selfDescription"]
        try:
            subject = await self.check_self_description(document)
        except credentials.SelfDescriptionError as exc:
            raise BadRequest(f"self-description does not verify: {exc}") from exc
        if subject.id != caller_did:
            raise Unauthorized("the self-description was issued by another DID than the request's signer")
        now = self.clock()
        await self._remember(participant, subject, document, now)
        log.info("handshake accepted", participant=participant.name, peer=subject.id)
        own = participant.self_description(now)
        if fields is None:
            return own
        answer: dict[str, Any] = {"selfDescription": own}
        if self.credentials is not None:
            answer.update(await self.credentials.on_handshake(participant, caller_did, fields))
        return answer

    async def _remember(
        self, participant: ParticipantRuntime, subject: credentials.Subject, document: dict[str, Any],
        now: datetime,
    ) -> None:
        peer = Peer(subject.id, subject.legal_name, subject.region, subject.industry, subject.dsp_endpoint,
                    credentials.utc_text(now))
        await self.peers.save_peer(participant.id, peer, document)


def next_link(header: str) -> str | None:
    """The ``rel="next"`` target of an HTTP ``Link`` header (DSP 2025-1 §6.3.2 catalog pagination)."""
    for part in header.split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params:
            return url.strip().strip("<>")
    return None
