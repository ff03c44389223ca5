"""DID resolution with a cache: ``did:key`` offline, ``did:web`` over HTTP(S) through the outbound guard."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nacl.signing import VerifyKey

from connector.errors import PeerError, Unauthorized
from connector.identity import did as dids

LocalLookup = Callable[[str], dict[str, Any] | None]


class DidResolver:
    def __init__(
        self,
        client: Any,
        *,
        dev_mode: bool,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        local: LocalLookup | None = None,
    ) -> None:
        self._client = client
        self._dev_mode = dev_mode
        self._ttl = ttl_s
        self._max = max_entries
        self._local = local
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def forget(self, did: str) -> None:
        self._cache.pop(did, None)

    async def resolve(self, did: str) -> dict[str, Any]:
        """The DID document of *did*; raises ``DidError`` (malformed) or ``PeerError`` (unreachable)."""
        if len(did) > 512:
            raise dids.DidError("DID is longer than 512 characters")
        if did.startswith("did:key:"):
            return dids.did_key_document(did)
        if not did.startswith("did:web:"):
            raise dids.DidError(f"unsupported DID method: {did.split(':')[1] if ':' in did else did!r}")
        if self._local is not None and (doc := self._local(did)) is not None:
            return doc
        hit = self._cache.get(did)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(did)
            return hit[1]
        url = dids.did_web_url(did, dev_mode=self._dev_mode)
        document = await self._client.get_json(url)
        if not isinstance(document, dict) or document.get("id") != did:
            raise PeerError(f"{url} does not hold the DID document of {did}")
        self._cache[did] = (now + self._ttl, document)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return document

    async def verification_key(self, key_id: str, relationship: str) -> VerifyKey:
        """The Ed25519 key named by a DID URL, checked against the DID document's *relationship*.

        Any failure is reported as :class:`~connector.errors.Unauthorized`: the caller cannot be
        authenticated.
        """
        try:
            did, _ = dids.split_did_url(key_id)
            document = await self.resolve(did)
            return VerifyKey(dids.verification_key(document, key_id, relationship))
        except dids.DidError as exc:
            raise Unauthorized(f"cannot use key {key_id!r}: {exc}") from exc
        except PeerError as exc:
            raise Unauthorized(f"cannot resolve the DID of key {key_id!r}: {exc.message}") from exc
