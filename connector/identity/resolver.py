"""DID resolution with a cache: ``did:key`` offline, ``did:web`` over HTTP(S) through the outbound guard.

A peer that rotated its keys signs with a key id its cached DID document does not list yet. Asked for a
document that must hold a given key (:meth:`DidResolver.resolve` with ``key_id``), the resolver fetches the
document again before its cache entry expires, at most once per ``refresh_interval_s`` for each DID (the
DIDs so refreshed are remembered in a bounded table): a rotated peer is trusted again at its next signed
request, and a stream of made-up key ids costs at most one fetch per interval.
"""

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
        refresh_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._dev_mode = dev_mode
        self._ttl = ttl_s
        self._max = max_entries
        self._local = local
        self._refresh_interval = refresh_interval_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        #: When each DID's document was last fetched again for a key it did not list (bounded like the cache).
        self._refreshed: OrderedDict[str, float] = OrderedDict()

    def forget(self, did: str) -> None:
        self._cache.pop(did, None)

    def _may_refresh(self, did: str, now: float) -> bool:
        last = self._refreshed.get(did)
        if last is not None and now - last < self._refresh_interval:
            return False
        self._refreshed[did] = now
        self._refreshed.move_to_end(did)
        while len(self._refreshed) > self._max:
            self._refreshed.popitem(last=False)
        return True

    async def resolve(self, did: str, *, key_id: str | None = None) -> dict[str, Any]:
        """The DID document of *did*; raises ``DidError`` (malformed) or ``PeerError`` (unreachable).

        With *key_id* (a DID URL of *did*), a cached document that does not list that key is fetched again
        (rate-limited per DID, see the module docstring): the key may be one the DID's controller rotated to."""
        if len(did) > 512:
            raise dids.DidError("DID is longer than 512 characters")
        if did.startswith("did:key:"):
            return dids.did_key_document(did)
        if not did.startswith("did:web:"):
            raise dids.DidError(f"unsupported DID method: {did.split(':')[1] if ':' in did else did!r}")
        if self._local is not None and (doc := self._local(did)) is not None:
            return doc
        hit = self._cache.get(did)
        now = self._clock()
        if hit is not None and hit[0] > now and (
                key_id is None or lists_key(hit[1], key_id) or not self._may_refresh(did, now)):
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
            document = await self.resolve(did, key_id=key_id)
            return VerifyKey(dids.verification_key(document, key_id, relationship))
        except dids.DidError as exc:
            raise Unauthorized(f"cannot use key {key_id!r}: {exc}") from exc
        except PeerError as exc:
            raise Unauthorized(f"cannot resolve the DID of key {key_id!r}: {exc.message}") from exc


def lists_key(document: dict[str, Any], key_id: str) -> bool:
    """Whether *document* has a verification method with the id *key_id* (absolute or relative)."""
    did = document.get("id")
    methods = document.get("verificationMethod")
    if not isinstance(did, str) or not isinstance(methods, list):
        return False
    return any(isinstance(m, dict) and isinstance(m.get("id"), str)
               and (m["id"] == key_id or did + m["id"] == key_id) for m in methods)


def proof_key_id(document: Any, proof_property: str = "proof") -> str | None:
    """The ``verificationMethod`` a signed document's proof names, if it has one (to resolve its signer's DID
    document with the key it needs: :meth:`DidResolver.resolve`)."""
    found = document.get(proof_property) if isinstance(document, dict) else None
    method = found.get("verificationMethod") if isinstance(found, dict) else None
    return method if isinstance(method, str) and len(method) <= 1024 else None
