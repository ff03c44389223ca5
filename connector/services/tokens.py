"""Management tokens: who an API call speaks for, and each participant's own tokens.

A token is shown once, when it is made; the store keeps only its hash. A token belongs to one participant
and one application (the usage log records which application used data), or it is the node's admin
token, which reaches only the admin routes, or a metrics token the admin made for a scraper (Prometheus),
which reads the node's ``/metrics`` and nothing else. Each token's participant has a budget of management
requests (``node.management_rate_per_s``); the admin token and each metrics token have their own.

Every management request names a token, so a token found in the store is kept in memory for a few seconds
(by its hash, never its value; at most :data:`CACHE_SIZE` of them). The store stays the authority: a token
revoked here is dropped from memory as soon as the revocation is committed, a token whose participant is not
served (suspended, being removed) is never taken from memory, and any entry is read again from the store
after :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from connector.bootstrap import new_token
from connector.errors import Conflict, NotFound, Unauthorized
from connector.participant import ParticipantRuntime
from connector.ratelimit import RateLimiter, check_rate
from connector.store.repository import SqliteRepository, Token, TokenInfo, token_hash

#: Active management tokens a participant may hold at once.
MAX_TOKENS = 100
#: No token the node makes is longer; a longer one is not looked up.
MAX_TOKEN_CHARS = 512
#: Tokens kept in memory after a lookup in the store, at most (the oldest goes first).
CACHE_SIZE = 1024
#: How long a token found in the store is taken from memory before it is read from the store again.
CACHE_SECONDS = 10.0


class NewToken(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    application: str
    created_at: str
    #: The token itself: shown only here; the node keeps only its hash.
    token: str


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TokenService:
    """Checks management tokens against the store and the per-participant budget; makes and revokes a
    participant's tokens."""

    def __init__(self, repo: SqliteRepository, limit: RateLimiter, *,
                 monotonic: Callable[[], float] = time.monotonic, timestamp: Callable[[], str] = _timestamp,
                 served: Callable[[str], bool] = lambda _: True, cache_seconds: float | None = None) -> None:
        self.repo = repo
        #: How long a token found in the store is taken from memory (0: never; another process may revoke it).
        self.cache_seconds = CACHE_SECONDS if cache_seconds is None else cache_seconds
        self.limit = limit
        self.monotonic = monotonic
        self.timestamp = timestamp
        #: Whether a participant (by id) is served now: a token of one that is not is never taken from memory.
        self.served = served
        #: Tokens found in the store, by hash: the token and until when it may be taken from here.
        self._cache: OrderedDict[str, tuple[Token, float]] = OrderedDict()
        #: Raised by every drop: a store answer read before a drop is not kept (it may predate the revocation).
        self._drops = 0

    async def authenticate(self, value: str) -> Token:
        """The live token *value*, its request counted against its participant's budget; 401 otherwise."""
        if not value or len(value) > MAX_TOKEN_CHARS:
            raise Unauthorized("unknown or revoked token")
        now = self.monotonic()
        digest = token_hash(value)
        cached = self._cache.get(digest)
        if (cached is not None and now < cached[1]
                and (cached[0].participant_id is None or self.served(cached[0].participant_id))):
            found: Token | None = cached[0]
        else:
            drops = self._drops
            found = await self.repo.find_token_hash(digest)
            if drops == self._drops:
                self._remember(digest, found, now)
        if found is None:
            raise Unauthorized("unknown or revoked token")
        key = found.participant_id if found.participant_id is not None else f"node:{found.id}"
        check_rate(self.limit, key, "management requests for this participant", now, limit="management")
        return found

    def _remember(self, digest: str, found: Token | None, now: float) -> None:
        """Keep *found* (the store's answer for *digest*) in memory, or drop what was kept under *digest*."""
        self._cache.pop(digest, None)
        if found is None or (found.participant_id is not None and not self.served(found.participant_id)):
            return
        if self.cache_seconds <= 0:
            return
        self._cache[digest] = (found, now + self.cache_seconds)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def forget_participant(self, participant_id: str) -> None:
        """Drop the tokens of participant *participant_id* from memory (it is suspended or removed)."""
        self._forget(lambda token: token.participant_id == participant_id)

    def _forget(self, which: Callable[[Token], bool]) -> None:
        self._drops += 1
        for digest, (token, _) in list(self._cache.items()):
            if which(token):
                del self._cache[digest]

    async def create(self, participant: ParticipantRuntime, application: str) -> NewToken:
        """A new token for *application*; 409 once the participant holds :data:`MAX_TOKENS` live ones."""
        active = [t for t in await self.repo.tokens(participant.id) if t.revoked_at is None]
        if len(active) >= MAX_TOKENS:
            raise Conflict(f"this participant already has {MAX_TOKENS} active tokens; revoke one first")
        value, created = new_token(), self.timestamp()
        token_id = await self.repo.add_token(value, participant.id, application, admin=False, now=created)
        return NewToken(id=token_id, application=application, created_at=created, token=value)

    async def create_metrics_token(self, application: str) -> NewToken:
        """A new metrics token for *application* (a scraper); 409 once the node holds :data:`MAX_TOKENS`."""
        active = [t for t in await self.repo.metrics_tokens() if t.revoked_at is None]
        if len(active) >= MAX_TOKENS:
            raise Conflict(f"this node already has {MAX_TOKENS} active metrics tokens; revoke one first")
        value, created = new_token(), self.timestamp()
        token_id = await self.repo.add_token(value, None, application, admin=False, now=created)
        return NewToken(id=token_id, application=application, created_at=created, token=value)

    async def metrics_tokens(self) -> list[TokenInfo]:
        """The node's metrics tokens, revoked ones too, newest first; never their values."""
        return await self.repo.metrics_tokens()

    async def revoke_metrics_token(self, token_id: str) -> None:
        revoked = await self.repo.revoke_metrics_token(token_id, self.timestamp())
        self._forget(lambda token: token.id == token_id)  # committed: the next request reads the store
        if not revoked:
            raise NotFound("no such metrics token")

    async def of(self, participant: ParticipantRuntime) -> list[TokenInfo]:
        """The participant's tokens, revoked ones too, newest first; never their values."""
        return await self.repo.tokens(participant.id)

    async def revoke(self, participant: ParticipantRuntime, token_id: str) -> None:
        revoked = await self.repo.revoke_token(participant.id, token_id, self.timestamp())
        self._forget(lambda token: token.id == token_id)  # committed: the next request reads the store
        if not revoked:
            raise NotFound("no such token")
