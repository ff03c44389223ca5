"""Admission of peers: who is known to each hosted participant, and the budget all unknown peers share.

Theory of operation. Every DSP request is signed, but a signature proves only that the caller holds the
key of *some* DID, and a fresh did:key costs nothing: a budget per DID does not bound strangers, who
make a new identity for every request. So a caller is *known* to the participant it calls when the two
have an agreement that reached FINALIZED (it may since have been REVOKED: receipts and revocations still
flow between them); every other caller is *unknown*, a hosted participant of the same node included
(it talks through the public listener like any peer). Once membership credentials exist, one from a
trusted issuer will make a peer known too.

- Known peers each draw from their own token bucket (``node.dsp_rate_per_s``, ``node.dsp_burst``).
- All unknown peers of all participants together draw from one node-wide bucket
  (``dsp.unknown_peer_rate_per_s``, ``dsp.unknown_peer_burst``), and together hold at most
  ``dsp.unknown_peer_open_negotiations`` negotiations that are not over. Over either: 429 with
  Retry-After. This also bounds the deliveries strangers can make the node attempt (one pending message
  per negotiation), and with them the tasks and sockets it spends on them.
- A negotiation whose peer stops answering ends on the negotiation shell's deadlines (a message not
  delivered within ``node.delivery_timeout_s``, no progress within ``node.negotiation_timeout_s``), which
  gives its place back. TERMINATED negotiations without agreement that unknown peers opened are deleted
  ``dsp.unknown_peer_retention_s`` after their last change (checked at start and, at most hourly, when an
  unknown peer opens another), so rejected strangers leave no rows behind for ever.

The lookups cost no query: the known DIDs per participant are read from the store at start and added to
when an agreement is FINALIZED (``NegotiationService._commit``); the open negotiations are counted in
memory the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from connector.errors import TooManyRequests
from connector.logging import get_logger
from connector.protocol.negotiation import TERMINAL, Role
from connector.ratelimit import RateLimiter, check_rate, retry_after

if TYPE_CHECKING:
    from connector.config import DspSection
    from connector.store.records import AgreementRecord, NegotiationRecord
    from connector.store.repository import ContractRepository

log = get_logger(component="admission")

#: The one key of the unknown peers' bucket (a limiter of its own, so no DID can collide with it).
UNKNOWN = "unknown-peers"
#: The most often the retention purge runs while unknown peers keep opening negotiations.
PURGE_INTERVAL_S = 3600.0
#: Rows deleted per write transaction (the store has one writer: a long delete would hold up the rest).
PURGE_BATCH = 5000

Key = tuple[str, str]


def opened_by_peer(record: NegotiationRecord) -> bool:
    """Whether the counterparty opened the negotiation (a request to us as provider, or an offer to us as
    consumer: our own requests carry the terms we asked for)."""
    return record.role == Role.PROVIDER or not record.requested


def counterparty(agreement: AgreementRecord) -> str:
    return agreement.consumer_did if agreement.role == Role.PROVIDER else agreement.provider_did


def _no_static_caller(_: str) -> bool:
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Admission:
    """Who is known to each participant, and the budgets of known and unknown peers.

    *known_limit* is the bucket per known peer; *stuck_after_s* is the longest an open negotiation can
    hold a place (the earlier of the negotiation shell's deadlines), given to callers as Retry-After;
    *static_caller* names callers that are always known (conformance mode's one fixture caller)."""

    def __init__(
        self, contracts: ContractRepository, config: DspSection, known_limit: RateLimiter, *,
        stuck_after_s: float, static_caller: Callable[[str], bool] = _no_static_caller,
        monotonic: Callable[[], float] = time.monotonic, clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.contracts = contracts
        self.config = config
        self.known_limit = known_limit
        self.stuck_after_s = stuck_after_s
        self.static_caller = static_caller
        self.monotonic = monotonic
        self.clock = clock
        self.unknown_limit = RateLimiter(self.config.unknown_peer_rate_per_s, self.config.unknown_peer_burst,
                                         max_keys=1)
        self._known: dict[str, set[str]] = {}
        #: Negotiations unknown peers opened that are not over, with the peer's DID.
        self._open: dict[Key, str] = {}
        self._purged_at = -PURGE_INTERVAL_S
        self._purge: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """At start: the known peers and the open negotiations of unknown peers, from the store."""
        for participant_id, did in await self.contracts.known_counterparties():
            self._known.setdefault(participant_id, set()).add(did)
        for record in await self.contracts.all_active_negotiations():
            if (record.state not in TERMINAL and opened_by_peer(record)
                    and not self.is_known(record.participant_id, record.counterparty_did)):
                self._open[(record.participant_id, record.id)] = record.counterparty_did
        await self.purge()

    async def close(self) -> None:
        if self._purge is not None:
            self._purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge
            self._purge = None

    # -- who is known ----------------------------------------------------------------------------------

    def is_known(self, participant_id: str | None, did: str) -> bool:
        if self.static_caller(did):  # the compatibility kit's one static caller (a test fixture)
            return True
        return participant_id is not None and did in self._known.get(participant_id, ())

    def learn(self, participant_id: str, did: str) -> None:
        """*did* has a FINALIZED agreement with the participant: from now on it is a known peer."""
        known = self._known.setdefault(participant_id, set())
        if did in known:
            return
        known.add(did)
        for key in [k for k, peer in self._open.items() if k[0] == participant_id and peer == did]:
            del self._open[key]
        log.info("peer known", participant=participant_id, peer=did)

    def forget(self, participant_id: str) -> None:
        """The participant is no longer hosted: its known peers and its open negotiations go (a participant
        hosted later under the same id starts with no known peer)."""
        self._known.pop(participant_id, None)
        for key in [k for k in self._open if k[0] == participant_id]:
            del self._open[key]

    # -- budgets ---------------------------------------------------------------------------------------

    def check_request(self, participant_id: str | None, caller: str) -> None:
        """Take one DSP request from the verified *caller*'s budget, or raise 429."""
        if self.is_known(participant_id, caller):
            check_rate(self.known_limit, caller, "DSP requests from this peer", self.monotonic(), limit="dsp-peer")
        else:
            self.check_unknown()

    def check_unknown(self) -> None:
        """Take one request from the budget all unknown peers share, or raise 429."""
        check_rate(self.unknown_limit, UNKNOWN,
                   "DSP requests from peers without an agreement here (all such peers share this budget)",
                   self.monotonic(), limit="dsp-unknown-peers")

    def admit_negotiation(self, participant_id: str, negotiation_id: str, caller: str) -> None:
        """Hold a place for a negotiation *caller* opens, or raise 429 when unknown peers hold them all.

        Synchronous, so that concurrent openings cannot both take the last place; give the place back
        with :meth:`ended` if the negotiation is not stored after all."""
        if self.is_known(participant_id, caller):
            return
        limit = self.config.unknown_peer_open_negotiations
        if len(self._open) >= limit:
            # A place frees when an open negotiation ends; a stuck one ends by the shell's deadlines at the latest.
            seconds = retry_after(self.stuck_after_s)
            raise TooManyRequests(
                f"too many negotiations opened by peers without an agreement here: at most {limit} at once "
                f"on this node; retry after {seconds} s", retry_after=seconds, limit="dsp-open-negotiations")
        self._open[(participant_id, negotiation_id)] = caller
        self._purge_soon()

    def ended(self, participant_id: str, negotiation_id: str) -> None:
        """The negotiation is over (or was never stored): its place is free."""
        self._open.pop((participant_id, negotiation_id), None)

    @property
    def open_negotiations(self) -> int:
        """Negotiations opened by unknown peers that are not over."""
        return len(self._open)

    # -- retention -------------------------------------------------------------------------------------

    def _purge_soon(self) -> None:
        now = self.monotonic()
        if now - self._purged_at < min(PURGE_INTERVAL_S, self.config.unknown_peer_retention_s):
            return
        if self._purge is not None and not self._purge.done():
            return
        self._purged_at = now
        self._purge = asyncio.get_running_loop().create_task(self._purge_logged())

    async def _purge_logged(self) -> None:
        try:
            await self.purge()
        except Exception:
            log.exception("purge of ended negotiations of unknown peers failed")

    async def purge(self) -> int:
        """Delete the TERMINATED negotiations without agreement that unknown peers opened, once they are
        older than ``dsp.unknown_peer_retention_s``; return how many went."""
        self._purged_at = self.monotonic()
        cutoff = self.clock() - timedelta(seconds=self.config.unknown_peer_retention_s)
        before = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        removed = 0
        while True:
            batch = await self.contracts.purge_stranger_negotiations(before, limit=PURGE_BATCH)
            removed += batch
            if batch < PURGE_BATCH:
                break
        if removed:
            log.info("ended negotiations of unknown peers deleted", count=removed,
                     retention_s=self.config.unknown_peer_retention_s)
        return removed
