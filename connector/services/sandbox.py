"""The data sandbox ("available but invisible"): a provider's table offered for computation only, queried by the
consumer of an agreement, its rows never leaving the provider's node.

Publishing (:func:`import_table`): a ``File`` asset added with ``sandbox`` is imported once, at publish time,
into a read-only SQLite table (``connector.services.sandbox_engine.prepare_table``) in the participant's own
files, ``files/NAME/.sandbox/`` (see :data:`SANDBOX_FOLDER`); its schema is kept with the asset. Its data goes
to no one: a transfer of it is refused (``connector.services.transfer``) and the catalog says it is for
computation only, with the schema (``connector.services.catalog``).

The provider (:meth:`SandboxService.query`), on a consumer's signed request (DSP route ``…/tds/sandbox/queries``):

1. the agreement must be the participant's as provider, its consumer the caller (else 404), FINALIZED and not
   revoked (409), over a sandboxed asset (400), with an ``odrl:aggregate`` permission whose terms can be read
   (``connector.protocol.sandbox.terms_of``);
2. the query is checked against those terms and the table's schema (``check_query``: 422 naming the rule), and
   the node's export rules must let results of the asset's data class reach the consumer (403);
3. in one writer job: the use is decided by the policy engine as action ``aggregate``, counted in the
   provider's own usage chain for the agreement (``odrl:count`` reads the queries so far), and the query's
   privacy budget is spent — the sum of what the permitted queries spent must stay within ``epsilon_total``:
   those of every agreement the participant made with this consumer for this asset, so that negotiating again
   buys no fresh budget — then the entry is appended and its chain head signed, durably, before anything runs
   (a deny is an entry too, and a 403 naming the rule "policy" or "budget");
4. the checked statement runs in a worker process of its own (``sandbox_engine.Workers``: one of the spares
   started ahead of time, from the moment a participant publishes a sandbox table or the node starts with one);
   the result gets its small groups suppressed and its noise (``apply_privacy`` with ``random.SystemRandom``:
   under a privacy budget, a group leaves on its *noisy* count) and is signed with the participant's key
   (``sign_result``).

Before step 3 the query is admitted to one of the node's workers (at most ``sandbox_engine.MAX_RUNNING`` run at
once): one that finds no room within a short wait is refused with 503 and Retry-After (rule "busy"), having
been counted nowhere and spent nothing.

Every refusal is logged on the provider's node (rule, agreement, caller; never data), and those of a query under
an agreement of the caller's are entries of the chain as well (decision ``deny``; a query the engine stopped after
its budget was spent, an entry of kind ``failed``). ``tds log verify AGREEMENT`` on the provider's node checks
that chain.

The consumer (:meth:`SandboxService.ask`): sends the query to the agreement's provider as a signed request,
checks the provider's signature on the result document against the provider's DID document
(``verify_result``) and that the document is the answer to this query under this agreement, and keeps the signed
result under the provider's id for the query (``sandbox_results``: its evidence when a statement bills the query).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import BadRequest, Conflict, NotFound, PeerError, TdsError
from connector.identity import did as dids
from connector.logging import get_logger
from connector.protocol import export_control, ids
from connector.protocol import sandbox as sb
from connector.protocol.agreement_lifecycle import IN_FORCE, AgreementState
from connector.protocol.contexts import TDS_NS
from connector.protocol.errors import QueryRefused, ResultError
from connector.protocol.negotiation import Role
from connector.services import sandbox_engine
from connector.services.usage import now_text
from connector.store import sandbox as store
from connector.store.db import Database
from connector.store.records import AgreementRecord, Asset
from usage_policies import PolicyError, UsageState, World, parse_policy, plan_use
from usage_policies.evaluate import CompiledPolicy, compile_policy

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.protocol.export_control import ExportRule
    from connector.protocol.policy import PeerFacts
    from connector.services.ports import PeerRequester, Resolver
    from connector.services.usage import UsageService
    from connector.store.repository import ContractRepository
    from connector.store.usage import UsageRepository

log = get_logger(component="sandbox")

#: Where a participant's sandbox tables are kept, inside its own files (``files/NAME/.sandbox/``): removed with
#: the participant, backed up with its files, counted in what it holds; never an asset's data address itself.
SANDBOX_FOLDER = ".sandbox"
#: The DSP route, under a participant's DSP base.
QUERY_PATH = "/tds/sandbox/queries"
#: The ``@type`` of a query request.
QUERY_TYPE = TDS_NS + "SandboxQuery"
#: The ``application`` of the provider's chain entries for sandbox queries.
APPLICATION = "sandbox"
#: The action a query is decided as (ODRL ``aggregate``).
ACTION = "aggregate"
#: Most rows a CSV imported for the sandbox may have.
MAX_TABLE_ROWS = 20_000_000
#: Budget arithmetic: sums of float epsilons may be off in the last bits (0.1 + 0.2 > 0.3).
EPSILON_SLACK = 1e-9
#: How long one query may run: well within a consumer node's default wait for a peer's answer
#: (``node.outbound_timeout_s``, 10 s), so that a result is not computed, counted and lost.
QUERY_TIMEOUT_S = 5.0
#: How many checked queries a node remembers (an application tends to ask the same few queries again and again).
CHECKED_QUERIES = 256


class Refusal(QueryRefused):
    """A sandbox query refused, with the rule it broke (in the error body as ``rule``) and its status."""

    def __init__(self, rule: str, message: str, *, status: int = 422) -> None:
        super().__init__(rule, message)
        self.status = status
        self.details = {"rule": rule}


class SandboxImport(msgspec.Struct, frozen=True, kw_only=True):
    """How a CSV becomes a sandbox table: the bounds the provider declares for numeric columns (needed for sums
    and averages under differential privacy) and the columns a query may reference (None: all)."""

    bounds: dict[str, tuple[float, float]] = {}
    columns: list[str] | None = None


def table_folder(own: Path) -> Path:
    """The folder of a participant's sandbox tables, *own* being its own files folder."""
    return own / SANDBOX_FOLDER


def table_path(own: Path, asset: Asset) -> Path | None:
    """The file of *asset*'s sandbox table (None: not a sandbox asset)."""
    name = (asset.sandbox or {}).get("table")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        return None
    return table_folder(own) / name


def schema_of(asset: Asset) -> sb.TableSchema | None:
    """The schema kept with a sandbox asset (None: not a sandbox asset, or unreadable)."""
    try:
        return msgspec.convert((asset.sandbox or {}).get("schema"), sb.TableSchema)
    except (msgspec.ValidationError, ValueError, TypeError):
        return None


async def import_table(own: Path, asset_id: str, source: Path, spec: SandboxImport, *,
                       max_rows: int = MAX_TABLE_ROWS) -> dict[str, Any]:
    """Import the CSV *source* as asset *asset_id*'s sandbox table (a new file of its own under *own*'s
    :data:`SANDBOX_FOLDER`, read-only) and return what the asset keeps: ``{"table", "schema"}``. A CSV the
    engine refuses, bounds for a column that is not numeric or queryable columns the table does not have are
    a 400; nothing is left behind then."""
    name = f"{asset_id}.{secrets.token_hex(6)}.db"
    path = table_folder(own) / name
    try:
        try:
            schema = await asyncio.to_thread(sandbox_engine.prepare_table, source, path, declared=dict(spec.bounds),
                                             max_rows=max_rows)
        except BadRequest as exc:
            where = "sandboxBounds" if exc.path == "bounds" else "dataAddress.path"
            raise BadRequest(f"the CSV cannot be offered in the sandbox: {exc.message}", path=where) from exc
        if spec.columns is not None:
            by_name = {c.name.lower(): c.name for c in schema.columns}
            missing = [c for c in spec.columns if c.lower() not in by_name]
            if missing:
                raise BadRequest(f"sandboxColumns names {', '.join(repr(m) for m in missing)}, which the table does "
                                 f"not have (it has {', '.join(c.name for c in schema.columns)})",
                                 path="sandboxColumns")
            queryable = list(dict.fromkeys(by_name[c.lower()] for c in spec.columns))
            schema = sb.TableSchema(columns=schema.columns, rows_rounded=schema.rows_rounded, queryable=queryable)
    except BaseException:
        remove_table(path)
        raise
    return {"table": name, "schema": msgspec.to_builtins(schema)}


def remove_table(path: Path | None) -> None:
    """Delete a sandbox table's file (read-only, but its folder is the node's), if it is there."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _digest(text: str) -> str:
    return "sha-256:" + hashlib.sha256(text.encode()).hexdigest()


def _first_use(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class SandboxService:
    """Sandbox queries, both roles (see the module docstring).

    *contracts* holds agreements, negotiations and assets; *usage* appends to the provider's own usage chain
    (``UsageService.append_own_use``) and *usage_log* runs the writer job that does; *client* sends the
    consumer's signed request and *resolver* finds the provider's DID document; *peer_facts* is what the
    provider knows of the caller; *own_folder* gives a participant's own files folder (``files/NAME``);
    *export_rules* are the node's. *workers* run checked queries (``sandbox_engine.Workers``: a spare worker
    process started ahead of time, a bound on how many run at once; :meth:`close` ends them) for at most
    *timeout_s* seconds and *max_rows* groups, and *rng* draws the noise (``random.SystemRandom`` unless a test
    passes a seeded one)."""

    def __init__(
        self, contracts: ContractRepository, usage: UsageService, usage_log: UsageRepository, client: PeerRequester,
        resolver: Resolver, *, peer_facts: Callable[[ParticipantRuntime, str], Awaitable[PeerFacts]],
        own_folder: Callable[[ParticipantRuntime], Path], export_rules: Sequence[ExportRule] = (),
        clock: Callable[[], datetime] = _utc_now,
        workers: sandbox_engine.Workers | None = None,
        rng: random.Random | None = None, timeout_s: float = QUERY_TIMEOUT_S, max_rows: int = 10_000,
    ) -> None:
        self.contracts = contracts
        self.usage = usage
        self.usage_log = usage_log
        self.client = client
        self.resolver = resolver
        self.peer_facts = peer_facts
        self.own_folder = own_folder
        self.export_rules = tuple(export_rules)
        self.clock = clock
        self.workers = workers if workers is not None else sandbox_engine.Workers()
        self.rng = rng or random.SystemRandom()
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._compiled: dict[tuple[str, str], CompiledPolicy] = {}
        self._checked: collections.OrderedDict[bytes, sb.CheckedQuery] = collections.OrderedDict()

    @property
    def limits(self) -> sandbox_engine.Limits:
        """What each query's worker process may use (a spare waits with these set)."""
        return sandbox_engine.Limits(self.timeout_s, sandbox_engine.MEMORY_BYTES)

    async def tables_changed(self) -> None:
        """Keep the spare worker processes in step with the node's sandbox tables: started, in the background,
        while a participant offers one (so that its first query does not wait for an interpreter to start
        either); ended once none is left (a node that offers no table runs no worker, however long it idles).
        Called when the node starts and when a sandbox asset is published or deleted. The spares only save
        time: a store that cannot say is logged, and the next query starts them."""
        try:
            offered = await self.contracts.store.read(store.offers_tables)
        except TdsError as exc:
            log.warning("cannot tell whether the node offers sandbox tables", error=exc.message)
            return
        if offered:
            self.workers.prime(self.limits)
        else:
            await self.workers.drop_spares()

    async def close(self) -> None:
        """End the sandbox's worker processes (the node stops)."""
        await self.workers.close()

    # -- the provider ---------------------------------------------------------------------------------

    async def query(self, participant: ParticipantRuntime, caller_did: str, agreement_id: str, query: str,
                    template_id: str | None, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Answer *caller_did*'s query under *agreement_id* (see the module docstring): ``{"queryId", "result",
        "document", "budget"}``, the document signed by the participant. Raises a :class:`TdsError` naming why
        not (a :class:`Refusal` carries the rule)."""
        query_id = f"urn:uuid:{uuid.uuid4()}"
        try:
            return await self._query(participant, caller_did, agreement_id, query, template_id, parameters,
                                     query_id)
        except TdsError as exc:
            rule = getattr(exc, "rule", exc.code)
            # A deny by the policy or the budget is an expected answer; anything else is worth an operator's look.
            (log.info if rule in ("policy", "budget") else log.warning)(
                "sandbox query refused", participant=participant.name, agreement=agreement_id[:200], caller=caller_did,
                query=query_id, rule=rule, status=exc.status, reason=exc.message)
            raise

    async def _query(self, participant: ParticipantRuntime, caller_did: str, agreement_id: str, query: str,
                     template_id: str | None, parameters: Mapping[str, Any], query_id: str) -> dict[str, Any]:
        now = self.clock()
        agreement = await self._agreement(participant, caller_did, agreement_id)
        asset = await self.contracts.entry(participant.id, Asset, ids.local_asset_id(participant.did,
                                                                                      agreement.asset_id))
        schema = schema_of(asset) if asset is not None else None
        table = table_path(self.own_folder(participant), asset) if asset is not None else None
        if asset is None or schema is None or table is None:
            raise Refusal("not-sandbox", f"the asset of agreement {agreement.id} is not offered for computation "
                                         "in the data sandbox", status=400)
        terms = self._terms(agreement)
        described = [f"query {_digest(query)}"] + ([f"template {template_id}"] if template_id is not None else [])
        try:
            checked = self._check(query, parameters, terms, schema, template_id)
        except QueryRefused as exc:
            await self._log_refusal(participant, agreement, query_id, described, exc.rule, exc.message, now)
            raise Refusal(exc.rule, exc.message) from exc
        facts = await self.peer_facts(participant, caller_did)
        refused = export_control.refusal(self.export_rules, data_class=asset.data_class,
                                         holder_region=participant.record.region, recipient=facts.recipient_region)
        if refused:
            await self._log_refusal(participant, agreement, query_id, described, "export", refused, now)
            raise Refusal("export", refused, status=403)
        # Admitted to a worker first: a query the node has no room for now is refused (503, Retry-After) before
        # it is counted or spends budget, and is no entry of the chain (an overload writes nothing).
        async with self.workers.slot() as slot:
            decided = await self._decide(participant, agreement, facts, checked, terms, query_id, described, now)
            if decided.get("rule"):
                raise Refusal(decided["rule"], decided["reason"], status=403)
            try:
                rows = await slot.run_query(table, checked, timeout_s=self.limits.time_s,
                                            memory_bytes=self.limits.memory_bytes, max_rows=self.max_rows)
            except QueryRefused as exc:
                await self._log_failure(participant, agreement, query_id, exc, now)
                raise
        result = sb.apply_privacy(checked, rows, terms, self.rng)
        signer = participant.signer
        document = sb.result_document(agreement_id=agreement.id, provider=participant.did,
                                      consumer=agreement.consumer_did, query=query, parameters=checked.parameters,
                                      result=result, issued_at=now_text(now), template_id=checked.template_id)
        signed = sb.sign_result(document, signer.key, key_id=signer.key_id, created=now_text(now))
        log.info("sandbox query answered", participant=participant.name, agreement=agreement.id, caller=caller_did,
                 query=query_id, seq=decided["seq"], groups=len(result.rows), suppressed=result.suppressed_groups,
                 epsilon=result.epsilon_spent)
        budget: dict[str, Any] = {"queries": decided["uses"], "maxQueries": terms.max_queries}
        if terms.private:
            budget.update(epsilonUsed=decided.get("spent"), epsilonTotal=terms.epsilon_total)
        return {"queryId": query_id, "result": _result_json(result), "document": signed, "budget": budget}

    async def _agreement(self, participant: ParticipantRuntime, caller_did: str, agreement_id: str
                         ) -> AgreementRecord:
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.PROVIDER or agreement.consumer_did != caller_did:
            raise NotFound(f"no agreement {agreement_id[:200]!r} with you")
        if agreement.state == AgreementState.REVOKED:
            revocation = await self.usage_log.revocation(participant.id, agreement.id) or {}
            raise Refusal("revoked", f"this participant revoked agreement {agreement.id} at "
                                     f"{revocation.get('revokedAt', '?')} (reason: {revocation.get('reason') or 'none'}"
                                     "): no more queries run under it", status=409)
        if agreement.state not in IN_FORCE:
            raise Refusal("state", f"agreement {agreement.id} is {agreement.state}, not FINALIZED", status=409)
        return agreement

    def _terms(self, agreement: AgreementRecord) -> sb.SandboxTerms:
        try:
            terms = sb.terms_of(agreement.agreement)
        except QueryRefused as exc:
            raise Refusal(exc.rule, exc.message) from exc
        if terms is None:
            raise Refusal("terms", f"agreement {agreement.id} permits no aggregate queries (no odrl:aggregate "
                                   "permission)", status=403)
        return terms

    def _check(self, query: str, parameters: Mapping[str, Any], terms: sb.SandboxTerms, schema: sb.TableSchema,
               template_id: str | None) -> sb.CheckedQuery:
        """:func:`~connector.protocol.sandbox.check_query`, remembered for the last :data:`CHECKED_QUERIES` queries
        that passed it. The check is a function of its inputs alone (the query's text, its parameters with their
        types, the template's id, the terms and the schema), so a query asked again under the same ones gets the
        same statement without being parsed again; the key is a digest of all of them. A refusal is not
        remembered: the query is checked again (and refused again) each time."""
        # Each parameter by its type and repr, which tell 1 from 1.0 and True, and every float exactly.
        given = [[name, type(value).__name__, repr(value)] for name, value in parameters.items()]
        key = hashlib.blake2b(msgspec.json.encode([query, template_id, given, terms, schema])).digest()
        checked = self._checked.get(key)
        if checked is not None:
            self._checked.move_to_end(key)
            return checked
        checked = sb.check_query(query, parameters, terms, schema, template_id=template_id)
        self._checked[key] = checked
        if len(self._checked) > CHECKED_QUERIES:
            self._checked.popitem(last=False)
        return checked

    def _policy(self, participant_id: str, agreement: AgreementRecord) -> CompiledPolicy:
        key = (participant_id, agreement.id)
        compiled = self._compiled.get(key)
        if compiled is None:
            try:
                compiled = compile_policy(parse_policy(agreement.agreement))
            except PolicyError as exc:
                raise Refusal("terms", f"the agreement's policy cannot be evaluated: {exc}") from exc
            self._compiled[key] = compiled
        return compiled

    async def _decide(self, participant: ParticipantRuntime, agreement: AgreementRecord, facts: PeerFacts,
                      checked: sb.CheckedQuery, terms: sb.SandboxTerms, query_id: str, described: list[str],
                      now: datetime) -> dict[str, Any]:
        """Decide, count and log the query and spend its budget, in one writer job (durable): the entry and
        what became of it (``rule`` and ``reason`` on a deny)."""
        compiled = self._policy(participant.id, agreement)
        request = facts.request(action=ACTION, target=agreement.asset_id, export_destination=facts.verified_region)
        world = World(party_regions={facts.did: facts.verified_region} if facts.verified_region else {})
        outcome: dict[str, Any] = {}
        base = {"kind": "use", "use_id": query_id, "at": now_text(now), "action": ACTION, "application": APPLICATION}

        def fields(db: Database, counts: tuple[int, str | None]) -> dict[str, Any]:
            planned = plan_use(compiled, UsageState(use_count=counts[0], first_use=_first_use(counts[1]), world=world),
                               request, now, report=False)
            if not planned.decision.permitted:
                reasons = list(planned.decision.reasons) or ["no permission of the agreement applies"]
                outcome.update(rule="policy", reason="the agreement's policy does not permit this query now: "
                                                     + "; ".join(reasons))
                return {**base, "decision": "deny", "reasons": [*described, *reasons]}
            effects = ["count"]
            if checked.epsilon > 0:
                spent = store.epsilon_spent(db, participant.id, agreement.consumer_did, agreement.asset_id)
                total = terms.epsilon_total or 0.0
                if spent + checked.epsilon > total + EPSILON_SLACK:
                    why = (f"the privacy budget is spent: epsilon {spent:g} of {total:g} used, and this query needs "
                           f"{checked.epsilon:g}")
                    outcome.update(rule="budget", reason=why)
                    return {**base, "decision": "deny", "reasons": [*described, why]}
                outcome["spent"] = spent + checked.epsilon
                effects.append(store.epsilon_effect(checked.epsilon))
            return {**base, "decision": "permit", "reasons": [*described, *planned.decision.reasons],
                    "effects": effects}

        def job(db: Database) -> Any:
            return self.usage.append_own_use(db, participant, agreement.id, lambda _head, counts: fields(db, counts))

        entry = await self.usage_log.write(job, durable=True)
        outcome.update(seq=entry.seq, uses=entry.uses)
        return outcome

    async def _log_refusal(self, participant: ParticipantRuntime, agreement: AgreementRecord, query_id: str,
                           described: list[str], rule: str, message: str, now: datetime) -> None:
        """A query refused before it was decided, as a deny in the chain (not counted, no budget spent)."""
        entry = {"kind": "use", "use_id": query_id, "at": now_text(now), "action": ACTION,
                 "application": APPLICATION, "decision": "deny",
                 "reasons": [*described, f"refused ({rule}): {message}"]}
        await self._append(participant, agreement, entry)

    async def _log_failure(self, participant: ParticipantRuntime, agreement: AgreementRecord, query_id: str,
                           exc: QueryRefused, now: datetime) -> None:
        """A permitted query the engine stopped: its count and budget stay spent (what it ran may tell something)."""
        entry = {"kind": "failed", "use_id": query_id, "at": now_text(now), "action": ACTION,
                 "application": APPLICATION, "reasons": [f"the sandbox stopped the query ({exc.rule}): {exc.message}"]}
        await self._append(participant, agreement, entry)

    async def _append(self, participant: ParticipantRuntime, agreement: AgreementRecord, entry: dict[str, Any]
                      ) -> None:
        try:
            await self.usage_log.write(
                lambda db: self.usage.append_own_use(db, participant, agreement.id, lambda _head, _counts: entry),
                durable=True)
        except TdsError as exc:  # the refusal stands; the chain's own problem is logged
            log.error("sandbox refusal not logged in the usage chain", participant=participant.name,
                      agreement=agreement.id, error=exc.message)

    # -- the consumer ---------------------------------------------------------------------------------

    async def ask(self, participant: ParticipantRuntime, agreement_id: str, query: str, template_id: str | None,
                  parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Send a query to the provider of *agreement_id* (this participant its consumer) and return the verified
        answer: ``{"queryId", "result", "document", "budget"}``, the result as the provider signed it."""
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise NotFound(f"no agreement {agreement_id[:200]!r} where this participant is the consumer")
        if agreement.state not in IN_FORCE:
            raise Conflict(f"agreement {agreement.id} is {agreement.state}, not FINALIZED")
        negotiation = await self.contracts.negotiation(participant.id, agreement.negotiation_id)
        if negotiation is None or not negotiation.counterparty_address:
            raise Conflict("the provider's address is not known for this agreement")
        body: dict[str, Any] = {"@type": QUERY_TYPE, "agreementId": agreement.id, "query": query,
                                "parameters": dict(parameters)}
        if template_id is not None:
            body["templateId"] = template_id
        url = f"{negotiation.counterparty_address.rstrip('/')}{QUERY_PATH}"
        response = await self.client.request("POST", url, json_body=body, signer=participant.signer)
        try:
            answer = response.json() if response.body[:1] == b"{" else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if response.status != 200:
            raise _provider_refusal(agreement.provider_did, response.status, answer,
                                    retry_after=response.headers.get("Retry-After"))
        document = answer.get("document")
        if not isinstance(document, dict):
            raise PeerError(f"{agreement.provider_did} answered without a signed result")
        await self._verify(agreement, participant.did, document, query, template_id, parameters)
        named = answer.get("queryId")
        query_id = named if isinstance(named, str) else ""
        if 0 < len(query_id) <= 200:
            from connector.store.statements import keep_result

            # Kept as the evidence of this query, under the provider's id for it: a statement that bills the query
            # names that id, and the consumer's node checks it against what it keeps (connector.services.settlement).
            text, at = msgspec.json.encode(document).decode(), now_text(self.clock())
            await self.usage_log.write(lambda db: keep_result(db, participant.id, agreement.id, query_id, at, text))
        log.info("sandbox query answered by the provider", participant=participant.name, agreement=agreement.id,
                 query=query_id[:200])
        budget = answer.get("budget") if isinstance(answer.get("budget"), dict) else None
        result = {"columns": document["columns"], "rows": document["rows"],
                  "suppressedGroups": document.get("suppressedGroups"), "epsilonSpent": document.get("epsilonSpent"),
                  "thresholdEpsilon": document.get("thresholdEpsilon", 0.0), "noise": document.get("noise")}
        return {"queryId": query_id, "result": result, "document": document, "budget": budget}

    async def _verify(self, agreement: AgreementRecord, consumer: str, document: dict[str, Any], query: str,
                      template_id: str | None, parameters: Mapping[str, Any]) -> None:
        """The provider's signature (its DID document, resolved with the key the proof names) and that the document
        answers this query under this agreement."""
        proof = document.get("proof")
        key_id = proof.get("verificationMethod") if isinstance(proof, dict) else None
        try:
            did_document = await self.resolver.resolve(agreement.provider_did,
                                                       key_id=key_id if isinstance(key_id, str) else None)
        except (dids.DidError, TdsError) as exc:
            raise ResultError(f"the provider's DID document cannot be resolved: {exc}") from exc
        sb.verify_result(document, did_document)
        expected = {"agreement": agreement.id, "provider": agreement.provider_did, "consumer": consumer,
                    "query": query}
        wrong = [name for name, value in expected.items() if document.get(name) != value]
        if document.get("template") != template_id:
            wrong.append("template")
        shown = document.get("parameters")
        if not isinstance(shown, dict) or set(shown) != set(parameters):
            wrong.append("parameters")
        if wrong:
            raise ResultError(f"the signed result is not the answer to this query under this agreement (its "
                              f"{', '.join(wrong)} differ)")


def _result_json(result: sb.Result) -> dict[str, Any]:
    return {"columns": result.columns, "rows": result.rows, "suppressedGroups": result.suppressed_groups,
            "epsilonSpent": result.epsilon_spent, "thresholdEpsilon": result.threshold_epsilon, "noise": result.noise}


def _provider_refusal(provider: str, status: int, answer: Mapping[str, Any], *, retry_after: str | None = None
                      ) -> TdsError:
    """What the consumer's API answers when the provider did not answer the query with a result (a provider too
    busy to run it: 503 here too, with its Retry-After, 1 to 60 seconds)."""
    message = str(answer.get("message") or answer.get("reason") or "no reason given")[:1000]
    rule = answer.get("rule")
    if status == 503 and rule == "busy":
        seconds = int(retry_after) if retry_after is not None and retry_after.strip().isdigit() else 1
        return sandbox_engine.SandboxBusy(f"the provider is busy: {message}", retry_after=min(max(seconds, 1), 60))
    if status in (400, 403, 409, 422, 429) and isinstance(rule, str):
        return Refusal(rule[:64], f"the provider refused the query: {message}", status=status)
    return PeerError(f"{provider} answered the query with {status}: {message}")
