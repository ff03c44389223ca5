"""Gossip between nodes: the shell of ``connector.protocol.gossip`` (anti-entropy of signed self-descriptions).

Every ``gossip_interval_s`` each hosted participant exchanges with at most ``fanout`` peers picked at random
from its directory (and its bootstrap peers until they answered): a signed ``POST …/tds/gossip`` with its
digest, then one with the items the peer lacks and the DIDs it wants; whatever comes back is screened,
verified against each subject's own DID document and kept by :class:`~connector.services.directory.Directory`.
The same route answers peers: a digest with the entries of the buckets that differ, items with the items
asked for. Bounds: each message (bytes, items, entries), each peer's rate (token bucket per participant and
peer), the directory's size; refusals are counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from connector.errors import BadRequest, PayloadTooLarge, PeerError, TdsError
from connector.logging import get_logger
from connector.protocol import gossip as core
from connector.ratelimit import RateLimiter, check_rate
from connector.services.directory import BOOTSTRAP, DSP_SUFFIX, HANDSHAKE, Admitted, Directory, DirectoryEntry
from connector.services.ports import PeerFetcher

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime

log = get_logger(component="gossip")
#: Where a participant's gossip is answered, under its DSP base.
GOSSIP_PATH = "/tds/gossip"


class Gossip:
    """Rounds of gossip for every hosted participant, and the answers to peers' gossip."""

    def __init__(
        self, directory: Directory, client: PeerFetcher, *,
        participants: Callable[[], Iterable[ParticipantRuntime]], interval_s: float | None = None,
        sent_bytes: Callable[[int], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
    ) -> None:
        self.directory = directory
        self.client = client
        self.settings = directory.settings
        self.limits = directory.limits
        self.participants = participants
        self.interval_s = interval_s if interval_s is not None else self.settings.gossip_interval_s
        self.sent_bytes = sent_bytes or (lambda n: None)
        self.monotonic = monotonic
        self.rng = rng or random.SystemRandom()
        self.peer_limit = RateLimiter(self.settings.peer_rate_per_s, self.settings.peer_burst)
        #: (participant id, bootstrap peer) pairs verified and added: not tried again.
        self._bootstrapped: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="gossip")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.round()
            except Exception as exc:  # one bad round must not end gossip
                log.warning("gossip round failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def round(self) -> None:
        """One round: own items refreshed, expired entries dropped, bootstrap peers tried, then each
        participant's exchanges with up to ``fanout`` peers (all at once)."""
        now = self.directory.clock()
        self.directory.refresh_own(now)
        await self.directory.expire(now)
        await self._bootstrap()
        hosted = {p.did for p in self.participants()}
        exchanges = []
        for participant in self.participants():
            peers = [e for e in self.directory.known(participant.id) if e.did not in hosted]
            for entry in self.rng.sample(peers, min(self.settings.fanout, len(peers))):
                exchanges.append(self._exchange_logged(participant, entry))
        await asyncio.gather(*exchanges)

    async def _bootstrap(self) -> None:
        for participant in self.participants():
            for peer in self.settings.bootstrap:
                if (participant.id, peer) in self._bootstrapped:
                    continue
                try:
                    await self.add(participant, peer, learned_from=BOOTSTRAP)
                except TdsError as exc:
                    log.info("bootstrap peer not reached", participant=participant.name, peer=peer[:200],
                             reason=exc.message[:300])
                    continue
                self._bootstrapped.add((participant.id, peer))

    # -- one exchange ----------------------------------------------------------------------------------

    async def _exchange_logged(self, participant: ParticipantRuntime, entry: DirectoryEntry) -> None:
        try:
            await self.exchange(participant, entry.dsp_endpoint, peer=entry.did)
            await self.directory.seen(participant, entry.did)
        except (TdsError, core.GossipError) as exc:
            log.info("gossip exchange failed", participant=participant.name, peer=entry.did[:200],
                     reason=str(exc)[:300])

    async def _post(self, participant: ParticipantRuntime, dsp_base: str, message: dict[str, Any]) -> Any:
        size = len(json.dumps(message, separators=(",", ":")))
        self.sent_bytes(size)
        response = await self.client.request("POST", f"{dsp_base.rstrip('/')}{GOSSIP_PATH}", json_body=message,
                                             signer=participant.signer)
        if response.status != 200:
            raise PeerError(f"{dsp_base} refused gossip with {response.status}")
        if len(response.body) > self.limits.max_message_bytes:
            self.directory.refused(core.Refusal.OVERSIZED)
            raise PeerError(f"{dsp_base} answered gossip with {len(response.body)} bytes, more than "
                            f"{self.limits.max_message_bytes}")
        try:
            return response.json()
        except ValueError as exc:
            self.directory.refused(core.Refusal.MALFORMED)
            raise PeerError(f"{dsp_base} answered gossip with no JSON") from exc

    async def exchange(self, participant: ParticipantRuntime, dsp_base: str, *, peer: str) -> Admitted:
        """Anti-entropy with *peer* (a DID) at *dsp_base*: digest, then items both ways."""
        view = self.directory.view(participant.id)
        answer = await self._post(participant, dsp_base, view.digest())
        try:
            send, want, over = view.plan(answer, hidden=self.directory.hidden_dids())
        except core.GossipError:
            self.directory.refused(core.Refusal.MALFORMED)
            raise
        for _ in range(over):
            self.directory.refused(core.Refusal.OVER_LIMIT)
        if not send and not want:
            return Admitted([], {})
        reply = await self._post(participant, dsp_base, core.items_message(send, want))
        return await self._take(participant, reply, learned_from=peer)

    async def _take(self, participant: ParticipantRuntime, message: Any, *, learned_from: str) -> Admitted:
        try:
            documents, over = core.received_items(message, self.limits)
        except core.GossipError:
            self.directory.refused(core.Refusal.MALFORMED)
            raise
        return await self.directory.admit(participant, documents, learned_from=learned_from, over_limit=over)

    # -- tds peer add ----------------------------------------------------------------------------------

    async def add(self, participant: ParticipantRuntime, peer: str, *, learned_from: str = HANDSHAKE
                  ) -> DirectoryEntry:
        """Verify *peer* by handshake (as ``tds peer verify``), then ask it for its own latest signed
        self-description (sending ours) and put that into *participant*'s directory; return the entry."""
        subject, dsp_base = await self.directory.verify_peer(participant, peer)
        view = self.directory.view(participant.id)
        mine = [i for d, i in view.items.items() if d == participant.did]
        try:
            reply = await self._post(participant, dsp_base, core.items_message(mine, [subject.id]))
            documents, _ = core.received_items(reply, self.limits)
        except (TdsError, core.GossipError):
            # A peer without gossip: the self-description it publishes, if still fresh enough.
            base = dsp_base[: -len(DSP_SUFFIX)] if dsp_base.endswith(DSP_SUFFIX) else dsp_base
            documents = [await self.client.get_json(f"{base}/.well-known/tds/self-description")]
        own = [d for d in documents if isinstance(d, dict) and d.get("issuer") == subject.id]
        if not own:
            raise PeerError(f"{subject.id} keeps itself out of peer directories (its node is not discoverable)")
        admitted = await self.directory.admit(participant, own[:1], learned_from=learned_from)
        entry = next((e for e in self.directory.known(participant.id) if e.did == subject.id), None)
        if entry is None:
            reasons = ", ".join(admitted.refused) or "it sent no self-description of its own"
            raise PeerError(f"{subject.id} was verified but not added to the directory: {reasons}")
        await self.directory.seen(participant, subject.id)
        log.info("peer added to the directory", participant=participant.name, peer=subject.id,
                 learned_from=learned_from)
        return entry

    # -- answering peers -------------------------------------------------------------------------------

    async def on_message(self, participant: ParticipantRuntime, caller: str, body: bytes) -> dict[str, Any]:
        """``POST …/tds/gossip`` from *caller* (its signature verified): a digest or items."""
        check_rate(self.peer_limit, f"{participant.id} {caller}", "gossip messages", self.monotonic(),
                   limit="gossip")
        if len(body) > self.limits.max_message_bytes:
            self.directory.refused(core.Refusal.OVERSIZED)
            raise PayloadTooLarge(f"a gossip message is at most {self.limits.max_message_bytes} bytes")
        try:
            message = json.loads(body)
        except ValueError as exc:
            self.directory.refused(core.Refusal.MALFORMED)
            raise BadRequest("a gossip message is a JSON object") from exc
        kind = message.get("@type") if isinstance(message, dict) else None
        view = self.directory.view(participant.id)
        try:
            if kind == core.DIGEST_TYPE:
                answer = view.entries_for(message)
            elif kind == core.ITEMS_TYPE:
                admitted = await self._take(participant, message, learned_from=caller)
                found = view.items_for(message.get("want", []), hidden=self.directory.hidden_dids())
                answer = core.items_message(found)
                answer["accepted"] = len(admitted.accepted)
                answer["refused"] = admitted.refused
            else:
                raise core.GossipError(f"expected a {core.DIGEST_TYPE} or a {core.ITEMS_TYPE}")
        except core.GossipError as exc:
            if kind != core.ITEMS_TYPE:
                self.directory.refused(core.Refusal.MALFORMED)
            raise BadRequest(str(exc)) from exc
        await self.directory.seen(participant, caller)
        return answer
