"""Measurable and controllable: usage receipts to the provider, and revocation by the provider.

Receipts (consumer → provider). After every commit of its usage log, the consumer's node sends the
agreement's new entries with their signed chain heads to the provider's node, in batches ending at a
signed head, over the project's DSP extension ``POST …/api/dsp/2025-1/tds/usage-receipts`` (an RFC
9421-signed request, like every DSP request). The provider checks that the signer is the agreement's
consumer, that the entries continue what it already holds (sequence numbers and hashes) and that every
head signature verifies; it stores what is right and flags what is not:

- *gap*: entries are missing before the batch (the provider answers with the sequence number it expects,
  and the consumer resends from there);
- *reorder*: sequence numbers go backwards;
- *fork*: an entry the provider already holds arrives with another hash;
- *forged*: an entry does not match its hash, its chain, or a signed head;
- *mismatch*: an entry or head names another agreement than the one it is posted under (a chain is
  bound to its agreement: one agreement's uses cannot be passed off as another's);
- *beyond-allowance*: a use the agreement does not allow (over its count, outside its time window, for a
  purpose it does not permit), judged from the receipts alone by the policy engine's monitoring
  (``usage_policies.check_history``), whatever the consumer's node decided.

Each anomaly is recorded once, however often a refused batch is sent again. The provider answers an
accepted batch with a signed acknowledgement of the last entry it holds (agreement, sequence number,
hash); the consumer keeps it, so a log cut short below it is detected on the consumer's side too (the
usage service refuses uses; ``tds log verify`` names it).

A consumer that was offline catches up on start. The provider flags an agreement whose receipts are
overdue (``node.receipts_overdue_s`` after the agreement or the last receipt).

Revocation (provider → consumer). ``tds agreement revoke`` marks the agreement REVOKED on the provider
and sends ``POST …/tds/revocations`` (signed request; the revocation also carries an ``eddsa-jcs-2022``
proof). The consumer's node blocks every further use at once, deletes the agreement's data, logs the
revocation and the deletion in the usage log, and answers with a deletion receipt: the signed log entry.
Undelivered revocations are retried until acknowledged, across restarts. (DSP termination is not
reused: it is not allowed after FINALIZED.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import BadRequest, Conflict, NotFound, PeerError, Unauthorized
from connector.identity import proof
from connector.identity.resolver import proof_key_id
from connector.logging import get_logger
from connector.protocol.agreement_lifecycle import AgreementEvent, AgreementStateError, next_state
from connector.protocol.negotiation import Role
from connector.services.ports import PeerRequester, Resolver
from connector.services.usage import allowance, head_verifier, now_text
from connector.store import usage as store
from connector.store.db import Database
from usage_policies import PolicyError, ledger

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.protocol.policy import PeerFacts
    from connector.services.usage import UsageService
    from connector.services.vault import Deletion
    from connector.store.records import AgreementRecord
    from connector.store.repository import ContractRepository
    from connector.store.usage import UsageRepository

log = get_logger(component="receipts")
BATCH = 500
GATHER_S = 0.05
RETRY_MAX_S = 60.0
REVOCATION_TYPE = "https://w3id.org/tds/v1#AgreementRevocation"
ACK_TYPE = "https://w3id.org/tds/v1#UsageReceiptAcknowledgement"
#: The most anomalies kept per agreement (the report says when the limit was reached).
MAX_ANOMALIES = 1000


#: Its own generator: retries leave the process-wide random state alone.
_jitter = random.Random()


def _is_seq(value: Any) -> bool:
    """Whether *value* is an entry's sequence number as a peer's JSON may carry it (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _backoff(attempt: int) -> float:
    return float(min(RETRY_MAX_S, 0.2 * 2 ** max(0, attempt - 1)) * _jitter.uniform(0.8, 1.2))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReceiptService:
    """Receipts sent (consumer) and received (provider); revocations sent (provider) and carried out (consumer).

    *repo* holds the usage log and the receipts; *contracts* the agreements and their negotiations (the
    peer's address); *usage* appends the revocation's duties to the consumer's log; *client* sends the
    signed requests and *resolver* resolves the peers' DIDs; *participant_by_id* finds a hosted participant;
    *peer_facts* is what a participant knows of a peer (its stated region and verified claims, for judging
    receipts); *destroy_data* deletes an agreement's data in the vault; *receipts_overdue_s* is when a provider
    calls receipts overdue;
    *clock* the time of anomalies, acknowledgements and revocations."""

    def __init__(
        self, repo: UsageRepository, contracts: ContractRepository, usage: UsageService, client: PeerRequester,
        resolver: Resolver, *, participant_by_id: Callable[[str], ParticipantRuntime | None],
        peer_facts: Callable[[ParticipantRuntime, str], Awaitable[PeerFacts]],
        destroy_data: Callable[[ParticipantRuntime, str], Awaitable[Deletion]], receipts_overdue_s: float,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.repo = repo
        self.contracts = contracts
        self.usage = usage
        self.client = client
        self.resolver = resolver
        self.participant_by_id = participant_by_id
        self.peer_facts = peer_facts
        self.destroy_data = destroy_data
        self.receipts_overdue_s = receipts_overdue_s
        self.clock = clock
        self._senders: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Provider: agreements whose receipts are being judged against the policy, and those to judge again
        #: when that is done (one judgement per agreement at a time, however fast receipts come).
        self._judging: set[tuple[str, str]] = set()
        self._judge_again: set[tuple[str, str]] = set()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def resume(self, only: str | None = None) -> None:
        """On start (or for participant *only*, served again after a suspension): send what providers have not
        acknowledged; re-deliver pending revocations."""

        behind, pending = await self.repo.read(lambda db: (store.unacknowledged(db), store.pending_revocations(db)))
        for participant_id, agreement_id in behind:
            if only is None or participant_id == only:
                self.notify(participant_id, agreement_id)
        for participant_id, agreement_id in pending:
            if only is None or participant_id == only:
                self._spawn(self._deliver_revocation(participant_id, agreement_id))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forget(self, participant_id: str) -> None:
        """The participant is no longer hosted: stop sending its receipts."""
        for key in [k for k in self._senders if k[0] == participant_id]:
            self._senders.pop(key).cancel()
            self._again.discard(key)

    # -- consumer: sending receipts ------------------------------------------------------------------

    def notify(self, participant_id: str, agreement_id: str) -> None:
        """New log entries exist for this agreement: send them (coalesced with a send in progress)."""
        key = (participant_id, agreement_id)
        running = self._senders.get(key)
        if running is not None and not running.done():
            self._again.add(key)
            return
        self._senders[key] = self._spawn(self._send_loop(key))

    async def _send_loop(self, key: tuple[str, str]) -> None:
        # A short gathering window: the uses of a busy moment travel in one batch, not one request each.
        await asyncio.sleep(GATHER_S)
        attempt = 0
        while True:
            self._again.discard(key)
            try:
                more = await self._send_batch(*key)
            except (PeerError, Conflict) as exc:
                attempt += 1
                await self._set_error(key, exc.message)
                log.info("usage receipts not delivered; retrying", agreement=key[1], error=exc.message,
                         attempt=attempt)
                await asyncio.sleep(_backoff(attempt))
                continue
            except NotFound:
                return
            attempt = 0
            if not more and key not in self._again:
                return

    async def _set_error(self, key: tuple[str, str], error: str) -> None:
        await self.repo.set_cursor_error(key[0], key[1], error[:500])

    async def _send_batch(self, participant_id: str, agreement_id: str) -> bool:
        """Send the next batch; True if more entries remain."""
        participant = self.participant_by_id(participant_id)
        agreement = await self.contracts.agreement(participant_id, agreement_id)
        if participant is None or agreement is None or agreement.role != Role.CONSUMER:
            raise NotFound("no such agreement")
        negotiation = await self.contracts.negotiation(participant_id, agreement.negotiation_id)
        if negotiation is None:
            raise NotFound("no negotiation for the agreement")

        def query(db: Database) -> tuple[int, list[str], list[str]]:
            # A batch ends at a signed head: the last one within BATCH entries, or the first one after.
            acked = store.acked_seq(db, participant_id, agreement_id)
            heads = store.signed_heads(db, participant_id, agreement_id, after=acked)
            last = None
            for raw in heads:
                seq = msgspec.json.decode(raw)["seq"]
                if last is None or seq <= acked + BATCH:
                    last = seq
            entries = store.entry_texts(db, participant_id, agreement_id, acked, last or acked)
            used = [h for h in heads if msgspec.json.decode(h)["seq"] <= (last or acked)]
            return acked, entries, used

        acked, entries, heads = await self.repo.read(query)
        if not entries:
            return False
        body: dict[str, Any] = {
            "@type": "https://w3id.org/tds/v1#UsageReceipts",
            "agreementId": agreement_id,
            "entries": [msgspec.json.decode(e) for e in entries],
            "heads": [msgspec.json.decode(h) for h in heads],
        }
        url = f"{negotiation.counterparty_address}/tds/usage-receipts"
        response = await self.client.request("POST", url, json_body=body, signer=participant.signer)
        answer = response.json() if response.body[:1] == b"{" else {}
        if not isinstance(answer, dict):
            answer = {}
        last_sent = body["entries"][-1]["seq"]
        if response.status == 409 and _is_seq(answer.get("expectedSeq")):
            # The provider lacks entries before this batch: resend from where it is.
            new_acked = max(0, int(answer["expectedSeq"]) - 1)
        elif response.status != 200:
            raise PeerError(f"{url} answered {response.status}: {answer.get('message') or answer.get('reason')}")
        else:
            new_acked = answer.get("acceptedThrough", acked)
        # The cursor says how far the provider holds the log, which every later use is checked against: it never
        # passes what was sent (a provider's word beyond that would block the uses and make the log look cut).
        if not _is_seq(new_acked) or new_acked > last_sent:
            raise PeerError(f"{url} answered that it holds the log through entry {str(new_acked)[:40]}, but it was "
                            f"sent entries through #{last_sent}")
        ack = await self._checked_ack(answer.get("acknowledgement"), agreement, new_acked, body["entries"])
        ack_text = msgspec.json.encode(ack).decode() if ack is not None else None
        await self.repo.set_cursor(participant_id, agreement_id, new_acked, ack_text)
        if response.status == 409:
            return True
        return bool(new_acked >= last_sent and await self.repo.last_seq(participant_id, agreement_id) > new_acked)

    async def _checked_ack(self, ack: Any, agreement: AgreementRecord, seq: int, sent: list[dict[str, Any]]
                           ) -> dict[str, Any] | None:
        """The provider's acknowledgement, if it is one of *seq* of this agreement, names the hash we sent for
        that entry and is signed by the provider; else None (an older provider sends none)."""
        if not isinstance(ack, dict):
            return None
        mine = next((e.get("hash") for e in sent if e.get("seq") == seq), None)
        if (ack.get("@type") != ACK_TYPE or ack.get("agreement") != agreement.id or ack.get("seq") != seq
                or ack.get("signer") != agreement.provider_did or mine is None or ack.get("hash") != mine):
            log.warning("the provider's receipt acknowledgement does not match what was sent; not kept",
                        agreement=agreement.id, seq=seq)
            return None
        try:
            document = await self.resolver.resolve(agreement.provider_did, key_id=proof_key_id(ack))
            proof.verify(ack, proof.key_resolver(document))
        except (PeerError, proof.ProofError) as exc:
            log.warning("the provider's receipt acknowledgement does not verify; not kept", agreement=agreement.id,
                        error=str(exc)[:200])
            return None
        return ack

    # -- provider: receiving receipts ------------------------------------------------------------------

    async def receive(self, participant: ParticipantRuntime, caller: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("agreementId"), str):
            raise BadRequest("usage receipts need an agreementId", path="agreementId")
        agreement = await self.contracts.agreement(participant.id, body["agreementId"])
        if agreement is None or agreement.role != Role.PROVIDER or agreement.consumer_did != caller:
            raise NotFound("no such agreement")
        raw_entries, heads = body.get("entries"), body.get("heads", [])
        if not isinstance(raw_entries, list) or not isinstance(heads, list) or len(raw_entries) > BATCH * 2:
            raise BadRequest(f"entries and heads must be lists (at most {BATCH * 2} entries)", path="entries")
        if len(heads) > BATCH * 2 or not all(isinstance(h, dict) for h in heads):
            raise BadRequest(f"heads must be JSON objects (at most {BATCH * 2})", path="heads")
        try:
            entries = [msgspec.convert(e, ledger.Entry) for e in raw_entries]
        except msgspec.ValidationError as exc:
            raise BadRequest(f"an entry is malformed: {exc}", path="entries") from exc
        document = await self.resolver.resolve(caller)
        verify = head_verifier(document)
        key = (participant.id, agreement.id)
        # Bound to the agreement it is posted under: another agreement's entries or heads are refused (and
        # flagged), even when they are the caller's own, validly signed ones.
        foreign = next((e.agreement for e in entries if e.agreement != agreement.id), None)
        if foreign is None:
            foreign = next((str(h.get("agreement")) for h in heads if h.get("agreement") != agreement.id), None)
        if foreign is not None:
            answer = await self.repo.write(lambda db: self._anomaly(
                db, key, "mismatch", f"receipts of agreement {str(foreign)[:200]} were posted under {agreement.id}"))
            self._raise_anomaly(participant, agreement.id, answer)

        def keep(db: Database) -> dict[str, Any]:
            known = store.received_texts(db, key)
            last = max(known, default=0)
            start = msgspec.json.decode(known[last], type=ledger.Entry) if last else None
            fresh: list[ledger.Entry] = []
            for entry in entries:
                if entry.seq <= last:
                    if ledger.entry_hash(entry) != entry.hash:
                        return self._anomaly(db, key, "forged", f"entry #{entry.seq}: content does not match "
                                                                "its hash")
                    held = msgspec.json.decode(known[entry.seq], type=ledger.Entry) if entry.seq in known else None
                    if held is None or held.hash != entry.hash:
                        return self._anomaly(db, key, "fork", f"entry #{entry.seq} arrived with another hash than "
                                                              "the one already received")
                    continue
                fresh.append(entry)
            if not fresh:
                return {"acceptedThrough": last}
            if any(b.seq <= a.seq for a, b in itertools.pairwise(fresh)):
                return self._anomaly(db, key, "reorder", "sequence numbers do not increase")
            if fresh[0].seq > last + 1:
                answer = self._anomaly(db, key, "gap", f"entries #{last + 1} to #{fresh[0].seq - 1} are missing")
                return {**answer, "expectedSeq": last + 1}
            problem = ledger.check_chain(fresh, heads, verify_head=verify, start=start, agreement=agreement.id)
            if problem is not None:
                kind = "gap" if "missing" in problem.problem else "forged"
                return self._anomaly(db, key, kind, f"entry #{problem.seq}: {problem.problem}")
            received = now_text(self.clock())
            for entry in fresh:
                store.add_received_entry(db, key, entry, received)
            for head in heads:
                if isinstance(head.get("seq"), int) and head["seq"] > last:
                    store.put_received_head(db, key, head["seq"], head)
            return {"acceptedThrough": fresh[-1].seq, "fresh": any(e.permitted_use for e in fresh)}

        answer = await self.repo.write(keep)
        if "anomaly" in answer:
            self._raise_anomaly(participant, agreement.id, answer)
        if answer.pop("fresh", False):
            await self._check_allowance(participant, agreement)
        last = answer["acceptedThrough"]
        if last:
            answer["acknowledgement"] = await self._acknowledgement(participant, agreement.id, last)
        return answer

    def _raise_anomaly(self, participant: ParticipantRuntime, agreement_id: str, answer: dict[str, Any]) -> None:
        log.warning("usage receipt anomaly", participant=participant.name, agreement=agreement_id,
                    kind=answer["anomaly"], detail=answer["message"])
        err = Conflict(answer["message"])
        err.details = {k: v for k, v in answer.items() if k != "message"}  # type: ignore[attr-defined]
        raise err

    async def _acknowledgement(self, participant: ParticipantRuntime, agreement_id: str, seq: int) -> dict[str, Any]:
        """The provider's signed word that it holds the consumer's log up to entry *seq* (with its hash)."""
        entry = await self.repo.received_entry((participant.id, agreement_id), seq)
        assert entry is not None  # just accepted (received entries are never deleted but with the participant)
        at = now_text(self.clock())
        document = {"@type": ACK_TYPE, "agreement": agreement_id, "seq": seq, "hash": entry.hash,
                    "signer": participant.did, "at": at}
        signer = participant.signer
        return proof.sign(document, signer.key, verification_method=signer.key_id, created=at)

    async def _check_allowance(self, participant: ParticipantRuntime, agreement: AgreementRecord) -> None:
        """Judge every received use against the agreement's policy, from the receipts alone; flag (once each)
        the uses it does not allow."""
        key = (participant.id, agreement.id)
        if key in self._judging:
            self._judge_again.add(key)  # the judgement under way starts over once it is done
            return
        self._judging.add(key)
        try:
            while True:
                self._judge_again.discard(key)
                await self._judge(participant, agreement)
                if key not in self._judge_again:
                    return
        finally:
            self._judging.discard(key)

    async def _judge(self, participant: ParticipantRuntime, agreement: AgreementRecord) -> None:
        key = (participant.id, agreement.id)
        entries = await self.repo.received_chain(key)
        facts = await self.peer_facts(participant, agreement.consumer_did)
        problems = await asyncio.to_thread(beyond_allowance, agreement, entries, facts, self.clock())
        if not problems:
            return

        def record(db: Database) -> None:
            for detail in problems:
                self._anomaly(db, key, "beyond-allowance", detail)

        await self.repo.write(record)
        log.warning("usage beyond the agreement's allowance", participant=participant.name, agreement=agreement.id,
                    uses=len(problems))

    def _anomaly(self, db: Database, key: tuple[str, str], kind: str, detail: str) -> dict[str, Any]:
        # Once per anomaly: a batch refused for the same reason and sent again adds nothing; and at most
        # MAX_ANOMALIES per agreement, so a peer cannot grow the table without bound by varying the details.
        store.add_anomaly(db, key, now_text(self.clock()), kind, detail, cap=MAX_ANOMALIES)
        return {"anomaly": kind, "message": f"{kind}: {detail}"}

    async def report(self, participant: ParticipantRuntime, agreement_id: str) -> dict[str, Any]:
        """What the provider knows, with proof, about the use of its data under this agreement."""
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.PROVIDER:
            raise NotFound("no such agreement (as provider)")
        key = (participant.id, agreement_id)

        def query(db: Database) -> tuple[list[ledger.Entry], list[dict[str, Any]], list[dict[str, Any]],
                                                      str | None, dict[str, Any] | None]:
            return (store.received_chain(db, key), store.received_heads(db, key), store.anomalies(db, key),
                    store.last_received_at(db, key), store.revocation(db, *key))

        entries, heads, anomalies, last, revocation = await self.repo.read(query)
        per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        permits = [e for e in entries if e.kind == "use" and e.decision == "permit"]
        for e in permits:
            per_day[e.at[:10]][e.purpose or "(none)"] += 1
        now = self.clock()
        overdue_s = self.receipts_overdue_s
        since = last or agreement.created_at
        overdue = False
        with contextlib.suppress(ValueError):
            overdue = (now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds() > overdue_s
        return {
            "agreementId": agreement_id,
            "consumer": agreement.consumer_did,
            "target": agreement.asset_id,
            "receivedEntries": len(entries),
            "signedHeads": len(heads),
            "lastReceiptAt": last,
            "overdue": overdue and (revocation is None or revocation["status"] != "acknowledged"),
            "uses": len(permits),
            "denied": sum(1 for e in entries if e.kind == "use" and e.decision == "deny"),
            "usesPerDay": {day: dict(purposes) for day, purposes in sorted(per_day.items())},
            "allowance": allowance(agreement.agreement, len(permits), permits[0].at if permits else None, now),
            "duties": [{"seq": e.seq, "at": e.at, "kind": e.kind, "detail": "; ".join(e.reasons)}
                       for e in entries if e.kind != "use"],
            "anomalies": anomalies,
            "anomaliesCapped": len(anomalies) >= MAX_ANOMALIES,
            "revocation": revocation,
        }

    # -- revocation ------------------------------------------------------------------------------------

    async def revoke(self, participant: ParticipantRuntime, agreement_id: str, reason: str) -> dict[str, Any]:
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.PROVIDER:
            raise NotFound("no such agreement (as provider)")
        try:
            revoked = next_state(agreement.state, AgreementEvent.REVOKED)
        except AgreementStateError as exc:
            raise Conflict(f"only a FINALIZED agreement can be revoked (it is {agreement.state})") from exc
        at = now_text(self.clock())

        def mark(db: Database) -> None:
            store.set_agreement_state(db, participant.id, agreement_id, revoked)
            store.add_revocation(db, participant.id, agreement_id, reason, at)

        await self.repo.write(mark, durable=True)
        log.info("agreement revoked", participant=participant.name, agreement=agreement_id, reason=reason)
        self._spawn(self._deliver_revocation(participant.id, agreement_id))
        return {"agreementId": agreement_id, "state": revoked.value, "reason": reason}

    async def _deliver_revocation(self, participant_id: str, agreement_id: str) -> None:
        participant = self.participant_by_id(participant_id)
        agreement = await self.contracts.agreement(participant_id, agreement_id)
        if participant is None or agreement is None:
            return
        negotiation = await self.contracts.negotiation(participant_id, agreement.negotiation_id)
        if negotiation is None:
            return
        revocation = await self.repo.revocation(participant_id, agreement_id)
        assert revocation is not None  # written before its delivery starts
        document = {"@type": REVOCATION_TYPE, "agreementId": agreement_id, "reason": revocation["reason"],
                    "revokedAt": revocation["revokedAt"], "revokedBy": participant.did}
        signer = participant.signer
        signed = proof.sign(document, signer.key, verification_method=signer.key_id, created=revocation["revokedAt"])
        url = f"{negotiation.counterparty_address}/tds/revocations"
        attempt = 0
        while True:
            try:
                response = await self.client.request("POST", url, json_body=signed, signer=participant.signer)
                if response.status == 200:
                    receipt = response.json().get("deletionReceipt")
                    await self._acknowledged(participant, agreement, receipt)
                    return
                error = f"answered {response.status}"
            except PeerError as exc:
                error = exc.message
            attempt += 1
            await self.repo.revocation_attempted(participant_id, agreement_id)
            log.info("revocation not delivered; retrying", agreement=agreement_id, error=error, attempt=attempt)
            await asyncio.sleep(_backoff(attempt))

    async def _acknowledged(self, participant: ParticipantRuntime, agreement: AgreementRecord, receipt: Any) -> None:
        """Keep the consumer's deletion receipt if it verifies (a signed log entry and head)."""
        valid = False
        if isinstance(receipt, dict) and isinstance(receipt.get("entry"), dict):
            try:
                entry = msgspec.convert(receipt["entry"], ledger.Entry)
                head = receipt.get("head") or {}
                document = await self.resolver.resolve(agreement.consumer_did)
                valid = (entry.kind == "delete" and ledger.entry_hash(entry) == entry.hash
                         and head.get("hash") == entry.hash and head_verifier(document)(head))
            except (msgspec.ValidationError, PeerError, ValueError):
                valid = False
        status = "acknowledged" if valid else "acknowledged-without-valid-receipt"
        await self.repo.revocation_answered(participant.id, agreement.id, status,
                                            msgspec.json.encode(receipt).decode() if receipt else None)
        log.info("revocation acknowledged", agreement=agreement.id, deletion_receipt_valid=valid)

    async def on_revocation(self, participant: ParticipantRuntime, caller: str, body: Any) -> dict[str, Any]:
        """Consumer side: block, delete, log, answer with the deletion receipt."""
        if not isinstance(body, dict) or not isinstance(body.get("agreementId"), str):
            raise BadRequest("a revocation names the agreementId", path="agreementId")
        agreement = await self.contracts.agreement(participant.id, body["agreementId"])
        if agreement is None or agreement.role != Role.CONSUMER or agreement.provider_did != caller:
            raise NotFound("no such agreement")
        document = await self.resolver.resolve(caller)
        try:
            proof.verify(body, proof.key_resolver(document))
        except proof.ProofError as exc:
            raise Unauthorized(f"the revocation's proof does not verify: {exc}") from exc
        # The provider's words, shown to the consumer's operator: bounded, and no control characters (a reason
        # printed on a terminal must not steer it).
        reason = "".join(c if c.isprintable() else " " for c in str(body.get("reason", ""))[:1000])
        revoked = next_state(agreement.state, AgreementEvent.REVOCATION_RECEIVED)  # allowed in every state
        received_at = now_text(self.clock())

        def block(db: Database) -> None:
            store.set_agreement_state(db, participant.id, agreement.id, revoked)
            store.received_revocation(db, participant.id, agreement.id, reason, received_at)

        # Blocked first (no use is permitted from here on, and no transfer may bring more), with the reason on
        # record, then deleted.
        await self.repo.write(block, durable=True)
        deleted = await self.destroy_data(participant, agreement.id)
        now = self.clock()
        usage = self.usage

        def apply(db: Database) -> dict[str, Any]:
            earlier = store.revocation(db, participant.id, agreement.id)
            if earlier is not None and earlier["deletionReceipt"]:
                return dict(earlier["deletionReceipt"])  # revoked before: the same receipt again
            store.set_agreement_state(db, participant.id, agreement.id, revoked)
            usage.append_duty(db, participant.id, agreement.id, "revoked", f"revoked by the provider: {reason}", now)
            entry = usage.append_duty(db, participant.id, agreement.id, "delete",
                                      f"data deleted after revocation ({deleted.describe()})", now)
            return {"entry": msgspec.to_builtins(entry)}

        receipt = await self.repo.write(apply, durable=True)
        if "head" not in receipt:
            head = await self.repo.head_at(participant.id, agreement.id, receipt["entry"]["seq"])
            receipt = {**receipt, "head": head}
            await self.repo.applied_revocation(participant.id, agreement.id, reason, now_text(now),
                                               msgspec.json.encode(receipt).decode())
            log.info("agreement revoked by the provider: use blocked, data deleted", agreement=agreement.id,
                     bytes_deleted=deleted.bytes_removed, key_destroyed=deleted.key_destroyed)
            self.notify(participant.id, agreement.id)
        return {"deletionReceipt": receipt}


def beyond_allowance(agreement: AgreementRecord, entries: list[ledger.Entry], consumer: PeerFacts,
                     now: datetime) -> list[str]:
    """The permitted uses among *entries* that the agreement's policy does not allow, judged by monitoring
    the whole history (count, time window, purpose, prohibitions), one line per use. What the policy asks of
    the *consumer* (its region, verified claims) is what the provider knows of it now."""
    from usage_policies import Request, check_history, events_from_log, parse_policy

    uses = {f"#{e.seq}": e for e in entries if e.permitted_use}
    if not uses:
        return []
    try:
        policy = parse_policy(agreement.agreement)
    except PolicyError as exc:
        return [f"the agreement's policy cannot be read: {exc}"]

    def request_of(entry: ledger.Entry) -> Request:
        # As the consumer's node asks for the use (connector.services.usage), from the provider's knowledge.
        asked = consumer.request(action=entry.action or entry.kind, target=agreement.asset_id,
                                 export_destination=consumer.verified_region)
        return msgspec.structs.replace(asked, purpose=entry.purpose or None)

    result = check_history(policy, events_from_log(entries, request_of), now)
    return [f"use {v.event} ({uses[v.event].at}, purpose {uses[v.event].purpose or '(none)'}): {v.reason}"
            for v in result.violations if v.kind in ("unpermitted", "prohibited") and v.event in uses]
