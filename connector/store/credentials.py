"""Memberships and verified attributes in SQLite: every SQL statement of ``connector.services.credentials``.

Per participant (every query is scoped by ``participant_id``; one hosted participant never reads another's):

- as an issuer: the credentials it issued, each with its place in one of its status lists (list id and
  index), and the lists' bits (the ``encodedList`` of Bitstring Status List v1.0, kept encoded); a revocation
  sets the credential's bit and marks it revoked in one transaction;
- as a holder: the credentials it holds (imported by its operator or delivered by their issuer), those
  offered to it (delivered by issuers it does not trust beyond what it keeps unasked: never presented, until
  its operator accepts or declines them), and the requests it sent to issuers (their delivery is accepted);
- as an issuer again: the requests holders sent it, pending until its operator approves or rejects them;
- as a verifier: the issuers it trusts, for which kinds of claim (and data spaces).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from connector.errors import Conflict, TooManyRequests
from connector.identity.status_list import MIN_ENTRIES, Bitstring
from connector.store.db import Database, Store

#: Entries in one status list: the smallest the specification allows (§2.2), so a list is 16 KB of bits.
LIST_SIZE = MIN_ENTRIES


class IssuedCredential(msgspec.Struct, frozen=True, kw_only=True):
    """A credential this participant issued; ``revoked_at`` once its status bit is set."""

    id: str
    kind: str
    holder: str
    status_list: int
    status_index: int
    valid_until: str
    issued_at: str
    document: dict[str, Any]
    revoked_at: str | None = None
    delivered_at: str | None = None
    delivery_error: str = ""
    #: How the holder's node kept the last delivery: held, or offered (waiting for its operator); None: not
    #: delivered, or the holder's node did not say.
    delivered_as: str | None = None


class HeldCredential(msgspec.Struct, frozen=True, kw_only=True):
    """A credential about this participant, checked when it came in (``source``: imported or delivered)."""

    id: str
    kind: str
    issuer: str
    valid_until: str
    source: str
    received_at: str
    document: dict[str, Any]


class OfferedCredential(msgspec.Struct, frozen=True, kw_only=True):
    """A credential about this participant delivered by an issuer it does not trust, beyond those it holds
    unasked: checked as a held one is, never presented, until its operator accepts (then held) or declines it."""

    id: str
    kind: str
    issuer: str
    #: Who counts as one issuer for the bound per issuer: a did:key, or every did:web of one host.
    origin: str
    valid_until: str
    received_at: str
    document: dict[str, Any]


@dataclass(frozen=True)
class DeliveryBounds:
    """What a participant keeps of delivered credentials: *held* in all and *held_per_issuer* of one issuer;
    of those, *held_untrusted* unasked by issuers it does not trust. Beyond those, *offered* wait for its operator,
    *offered_per_issuer* of one issuer (``OfferedCredential.origin``) and *offered_keys* of did:key issuers (who
    cost nothing to make: they push out only each other's offers)."""

    held: int
    held_per_issuer: int
    held_untrusted: int
    offered: int
    offered_per_issuer: int
    offered_keys: int


class CredentialRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A holder's request for a credential of *kind* stating *claims*; pending until decided."""

    id: str
    requester: str
    kind: str
    claims: dict[str, Any]
    state: str
    received_at: str
    reason: str = ""
    credential_id: str | None = None
    decided_at: str | None = None


class TrustedIssuer(msgspec.Struct, frozen=True, kw_only=True):
    """An issuer this participant trusts for *kinds* (short names), for memberships of *spaces* (None: any)."""

    issuer: str
    kinds: list[str]
    spaces: list[str] | None = None
    added_at: str = ""


class StatusListRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    purpose: str
    size: int
    allocated: int
    encoded_list: str
    updated_at: str


_JSON_COLUMNS = {"document", "claims", "kinds", "spaces"}


def _row(record: msgspec.Struct, participant_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {"participant_id": participant_id}
    for key, value in msgspec.structs.asdict(record).items():
        row[key] = msgspec.json.encode(value).decode() if key in _JSON_COLUMNS and value is not None else value
    return row


def _record(kind: type[Any], row: dict[str, Any]) -> Any:
    values = {k: (msgspec.json.decode(v) if k in _JSON_COLUMNS and isinstance(v, str) else v)
              for k, v in row.items() if k != "participant_id"}
    return msgspec.convert(values, kind)


def _insert(db: Database, table: str, row: dict[str, Any], *, replace: bool = False) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    db.execute(f"{verb} INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))


def _one(db: Database, kind: type[Any], sql: str, params: list[Any]) -> Any | None:
    rows = list(db.query(sql, params))
    return _record(kind, rows[0]) if rows else None


def _hold(db: Database, participant_id: str, credential: HeldCredential, *, most: int,
          most_per_issuer: int) -> None:
    """Keep *credential* (replacing the one with its id, of the same issuer); Conflict beyond *most* held, or
    *most_per_issuer* from its issuer, or if a credential with its id is held from another issuer (an issuer
    chooses its credentials' ids: another's must not replace one). It is no longer offered."""
    found = db.execute("SELECT issuer FROM held_credentials WHERE participant_id = ? AND id = ?",
                       [participant_id, credential.id]).fetchone()
    if found is not None and found[0] != credential.issuer:
        raise Conflict(f"this participant holds a credential {credential.id[:200]} of another issuer ({found[0]}); "
                       "remove that one first")
    if found is None:
        total, same_issuer = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN issuer = ? THEN 1 ELSE 0 END), 0) FROM held_credentials "
            "WHERE participant_id = ?",
            [credential.issuer, participant_id]).fetchone()
        if total >= most:
            raise Conflict(f"this participant already holds {most} credentials; remove one first")
        if same_issuer >= most_per_issuer:
            raise Conflict(f"this participant already holds {most_per_issuer} credentials of "
                           f"{credential.issuer}; remove one first")
    _insert(db, "held_credentials", _row(credential, participant_id), replace=True)
    db.execute("DELETE FROM offered_credentials WHERE participant_id = ? AND id = ? AND issuer = ?",
               [participant_id, credential.id, credential.issuer])


def _answer_ask(db: Database, participant_id: str, credential: HeldCredential) -> bool:
    """Whether the participant asked *credential*'s issuer for one of its kind and still waits for it (the
    oldest such request is then answered by it)."""
    found = db.execute("SELECT seq FROM asked_credentials WHERE participant_id = ? AND issuer = ? AND kind = ? AND "
                       "credential_id IS NULL ORDER BY seq LIMIT 1",
                       [participant_id, credential.issuer, credential.kind]).fetchone()
    if found is None:
        return False
    db.execute("UPDATE asked_credentials SET credential_id = ? WHERE seq = ?", [credential.id, found[0]])
    return True


_KEY = "substr(issuer, 1, 8) = 'did:key:'"


def _drop_offered(db: Database, where: str, params: list[Any], keep: int) -> None:
    """Drop the offered credentials matching *where* but the newest *keep*."""
    db.execute(f"DELETE FROM offered_credentials WHERE seq IN (SELECT seq FROM offered_credentials WHERE {where} "
               "ORDER BY seq DESC LIMIT -1 OFFSET ?)", [*params, max(keep, 0)])


def _offer(db: Database, participant_id: str, credential: OfferedCredential, bounds: DeliveryBounds,
           now: str) -> None:
    """Offer *credential*; the expired offers, then the oldest of its issuer beyond its bound, then the oldest of
    its side (did:key issuers, or the others) beyond that side's share make room. Offered again, it keeps its
    place; Conflict if a credential with its id is offered by another issuer."""
    found = db.execute("SELECT issuer FROM offered_credentials WHERE participant_id = ? AND id = ?",
                       [participant_id, credential.id]).fetchone()
    if found is not None:
        if found[0] != credential.issuer:
            raise Conflict(f"a credential {credential.id[:200]} of another issuer is offered to this participant")
        db.execute("UPDATE offered_credentials SET kind = ?, valid_until = ?, document = ? WHERE participant_id = ? "
                   "AND id = ?", [credential.kind, credential.valid_until,
                                  msgspec.json.encode(credential.document).decode(), participant_id, credential.id])
        return
    db.execute("DELETE FROM offered_credentials WHERE participant_id = ? AND valid_until < ?", [participant_id, now])
    _drop_offered(db, "participant_id = ? AND origin = ?", [participant_id, credential.origin],
                  bounds.offered_per_issuer - 1)
    if credential.issuer.startswith("did:key:"):
        _drop_offered(db, f"participant_id = ? AND {_KEY}", [participant_id], bounds.offered_keys - 1)
    else:
        _drop_offered(db, f"participant_id = ? AND NOT {_KEY}", [participant_id],
                      bounds.offered - bounds.offered_keys - 1)
    _insert(db, "offered_credentials", _row(credential, participant_id))


class CredentialRepository:
    """Issued and held credentials, holders' requests, status lists and trusted issuers, per participant."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: Each participant's held credentials as last read (a holder presents them in every handshake), and
        #: a count of the writes to them, so that a read racing a write is not kept.
        self._held: dict[str, list[HeldCredential]] = {}
        self._held_writes: dict[str, int] = {}

    def _held_changed(self, participant_id: str) -> None:
        self._held_writes[participant_id] = self._held_writes.get(participant_id, 0) + 1
        self._held.pop(participant_id, None)

    def forget(self, participant_id: str) -> None:
        """Drop what is kept in memory of a participant that leaves the node."""
        self._held.pop(participant_id, None)
        self._held_writes.pop(participant_id, None)

    # -- issued credentials and their status lists ---------------------------------------------------------

    async def allocate_status(self, participant_id: str, now: str) -> tuple[int, int]:
        """The next free place (list id, index) in the participant's revocation lists; a new list when the
        last one is full. A place is never handed out twice, even if the credential is then not stored."""

        def allocate(db: Database) -> tuple[int, int]:
            found = db.execute("SELECT id, allocated FROM status_lists WHERE participant_id = ? AND purpose = "
                               "'revocation' AND allocated < size ORDER BY id LIMIT 1", [participant_id]).fetchone()
            if found is None:
                last = db.execute("SELECT COALESCE(MAX(id), 0) FROM status_lists WHERE participant_id = ?",
                                  [participant_id]).fetchone()[0]
                list_id, index = int(last) + 1, 0
                _insert(db, "status_lists", {"participant_id": participant_id, "id": list_id,
                                             "purpose": "revocation", "size": LIST_SIZE, "allocated": 1,
                                             "encoded_list": Bitstring(LIST_SIZE).encode(), "updated_at": now})
                return list_id, index
            list_id, index = int(found[0]), int(found[1])
            db.execute("UPDATE status_lists SET allocated = allocated + 1 WHERE participant_id = ? AND id = ?",
                       [participant_id, list_id])
            return list_id, index

        return await self.store.write(allocate)

    async def add_issued(self, participant_id: str, credential: IssuedCredential) -> None:
        row = _row(credential, participant_id)
        await self.store.write(lambda db: _insert(db, "issued_credentials", row), durable=True)

    async def issued(self, participant_id: str, *, limit: int = 1000) -> list[IssuedCredential]:
        """The participant's issued credentials, newest first."""

        def query(db: Database) -> list[IssuedCredential]:
            rows = db.query("SELECT * FROM issued_credentials WHERE participant_id = ? ORDER BY issued_at DESC, id "
                            "LIMIT ?", [participant_id, limit])
            return [_record(IssuedCredential, r) for r in rows]

        return await self.store.read(query)

    async def issued_one(self, participant_id: str, credential_id: str) -> IssuedCredential | None:
        return await self.store.read(lambda db: _one(
            db, IssuedCredential, "SELECT * FROM issued_credentials WHERE participant_id = ? AND id = ?",
            [participant_id, credential_id]))

    async def set_delivery(self, participant_id: str, credential_id: str, *, delivered_at: str | None,
                           error: str, delivered_as: str | None = None) -> None:
        await self.store.write(lambda db: db.execute(
            "UPDATE issued_credentials SET delivered_at = COALESCE(?, delivered_at), delivery_error = ?, "
            # CAST: a parameter compared with nothing has no type on PostgreSQL (SQLite needs none).
            "delivered_as = CASE WHEN CAST(? AS TEXT) IS NULL THEN delivered_as ELSE ? END "
            "WHERE participant_id = ? AND id = ?",
            [delivered_at, error[:1000], delivered_at, delivered_as, participant_id, credential_id]))

    async def revoke(self, participant_id: str, credential_id: str, now: str) -> IssuedCredential | None:
        """Set the credential's bit in its status list and mark it revoked, in one durable transaction (once:
        revoking a revoked credential changes nothing); None if the participant issued no such credential."""

        def revoke(db: Database) -> IssuedCredential | None:
            found: IssuedCredential | None = _one(
                db, IssuedCredential, "SELECT * FROM issued_credentials WHERE participant_id = ? AND id = ?",
                [participant_id, credential_id])
            if found is None or found.revoked_at is not None:
                return found
            encoded = db.execute("SELECT encoded_list FROM status_lists WHERE participant_id = ? AND id = ?",
                                 [participant_id, found.status_list]).fetchone()
            bits = Bitstring.decode(encoded[0])
            bits.set(found.status_index)
            db.execute("UPDATE status_lists SET encoded_list = ?, updated_at = ? WHERE participant_id = ? AND id = ?",
                       [bits.encode(), now, participant_id, found.status_list])
            db.execute("UPDATE issued_credentials SET revoked_at = ? WHERE participant_id = ? AND id = ?",
                       [now, participant_id, credential_id])
            return msgspec.structs.replace(found, revoked_at=now)

        return await self.store.write(revoke, durable=True)

    async def status_list(self, participant_id: str, list_id: int) -> StatusListRow | None:
        return await self.store.read(lambda db: _one(
            db, StatusListRow, "SELECT id, purpose, size, allocated, encoded_list, updated_at FROM status_lists "
            "WHERE participant_id = ? AND id = ?", [participant_id, list_id]))

    # -- held credentials ----------------------------------------------------------------------------------

    async def add_held(self, participant_id: str, credential: HeldCredential, *, most: int,
                       most_per_issuer: int) -> None:
        """Keep *credential* (replacing one with its id, of the same issuer); Conflict beyond *most* held, or
        *most_per_issuer* from its issuer. Answers a request the participant sent its issuer for one of its kind."""

        def insert(db: Database) -> None:
            _hold(db, participant_id, credential, most=most, most_per_issuer=most_per_issuer)
            _answer_ask(db, participant_id, credential)

        try:
            await self.store.write(insert, durable=True)
        finally:
            self._held_changed(participant_id)

    async def keep_delivered(self, participant_id: str, credential: HeldCredential, *, origin: str,
                             trusted: Collection[str], bounds: DeliveryBounds, now: str) -> Literal["held", "offered"]:
        """Keep a credential its issuer delivered, in one transaction: held if the participant holds it already,
        trusts its issuer (*trusted*), asked that issuer for one of its kind, or holds fewer than
        ``bounds.held_untrusted`` of issuers it does not trust; offered otherwise (see :func:`_offer`)."""

        def keep(db: Database) -> Literal["held", "offered"]:
            held_already = db.execute("SELECT 1 FROM held_credentials WHERE participant_id = ? AND id = ?",
                                      [participant_id, credential.id]).fetchone() is not None
            asked = not held_already and _answer_ask(db, participant_id, credential)
            if not held_already and not asked and credential.issuer not in trusted:
                issuers = [r[0] for r in db.execute("SELECT issuer FROM held_credentials WHERE participant_id = ?",
                                                    [participant_id])]
                if sum(i not in trusted for i in issuers) >= bounds.held_untrusted:
                    offered = OfferedCredential(id=credential.id, kind=credential.kind, issuer=credential.issuer,
                                                origin=origin, valid_until=credential.valid_until,
                                                received_at=credential.received_at, document=credential.document)
                    _offer(db, participant_id, offered, bounds, now)
                    return "offered"
            _hold(db, participant_id, credential, most=bounds.held, most_per_issuer=bounds.held_per_issuer)
            return "held"

        try:
            return await self.store.write(keep, durable=True)
        finally:
            self._held_changed(participant_id)

    async def offered(self, participant_id: str) -> list[OfferedCredential]:
        """The credentials offered to the participant, newest first."""

        def query(db: Database) -> list[OfferedCredential]:
            rows = db.query("SELECT id, kind, issuer, origin, valid_until, received_at, document FROM "
                            "offered_credentials WHERE participant_id = ? ORDER BY seq DESC", [participant_id])
            return [_record(OfferedCredential, r) for r in rows]

        return await self.store.read(query)

    async def offered_one(self, participant_id: str, credential_id: str) -> OfferedCredential | None:
        return await self.store.read(lambda db: _one(
            db, OfferedCredential, "SELECT id, kind, issuer, origin, valid_until, received_at, document FROM "
            "offered_credentials WHERE participant_id = ? AND id = ?", [participant_id, credential_id]))

    async def accept_offered(self, participant_id: str, credential: HeldCredential, *, most: int,
                             most_per_issuer: int) -> bool:
        """Hold an offered credential and stop offering it, in one transaction (the operator's choice: not bound
        by the credentials held of issuers the participant does not trust); False if it is no longer offered."""

        def accept(db: Database) -> bool:
            if db.execute("SELECT 1 FROM offered_credentials WHERE participant_id = ? AND id = ? AND issuer = ?",
                          [participant_id, credential.id, credential.issuer]).fetchone() is None:
                return False
            _hold(db, participant_id, credential, most=most, most_per_issuer=most_per_issuer)
            return True

        try:
            return await self.store.write(accept, durable=True)
        finally:
            self._held_changed(participant_id)

    async def decline_offered(self, participant_id: str, credential_id: str) -> bool:
        return await self.store.write(lambda db: bool(db.execute(
            "DELETE FROM offered_credentials WHERE participant_id = ? AND id = ?",
            [participant_id, credential_id]).rowcount))

    async def add_asked(self, participant_id: str, *, issuer: str, request_id: str, kind: str, now: str,
                        most: int) -> None:
        """Remember a request the participant sent *issuer* (its DID) for a credential of *kind*: its delivery is
        accepted. At most *most* are remembered (the oldest forgotten first)."""

        def insert(db: Database) -> None:
            _insert(db, "asked_credentials", {"participant_id": participant_id, "issuer": issuer,
                                              "request_id": request_id, "kind": kind, "asked_at": now})
            db.execute("DELETE FROM asked_credentials WHERE seq IN (SELECT seq FROM asked_credentials WHERE "
                       "participant_id = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)", [participant_id, most])

        await self.store.write(insert)

    async def held(self, participant_id: str) -> list[HeldCredential]:
        """The participant's credentials, newest first (kept in memory until one of them changes here; on SQLite,
        which this process alone writes)."""
        cached = self._held.get(participant_id)
        if cached is not None:
            return list(cached)

        def query(db: Database) -> list[HeldCredential]:
            rows = db.query("SELECT * FROM held_credentials WHERE participant_id = ? ORDER BY received_at DESC, id",
                            [participant_id])
            return [_record(HeldCredential, r) for r in rows]

        writes = self._held_writes.get(participant_id, 0)
        found = await self.store.read(query)
        # Not on PostgreSQL: other processes of the node share the store, and their writes do not reach this memory.
        if self._held_writes.get(participant_id, 0) == writes and not self.store.postgres:
            self._held[participant_id] = found
        return list(found)

    async def held_one(self, participant_id: str, credential_id: str) -> HeldCredential | None:
        return await self.store.read(lambda db: _one(
            db, HeldCredential, "SELECT * FROM held_credentials WHERE participant_id = ? AND id = ?",
            [participant_id, credential_id]))

    async def remove_held(self, participant_id: str, credential_id: str) -> bool:
        try:
            return await self.store.write(lambda db: bool(db.execute(
                "DELETE FROM held_credentials WHERE participant_id = ? AND id = ?",
                [participant_id, credential_id]).rowcount))
        finally:
            self._held_changed(participant_id)

    # -- holders' requests (issuer side) -------------------------------------------------------------------

    async def add_request(self, participant_id: str, request: CredentialRequest, *, most_pending: int,
                          most_per_requester: int) -> None:
        """Store a pending request; 429 beyond *most_pending* pending, or *most_per_requester* from one holder."""
        row = _row(request, participant_id)

        def insert(db: Database) -> None:
            total, mine = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN requester = ? THEN 1 ELSE 0 END), 0) FROM credential_requests "
                "WHERE participant_id = ? "
                "AND state = 'pending'", [request.requester, participant_id]).fetchone()
            if total >= most_pending:
                raise TooManyRequests(f"{most_pending} requests are waiting for a decision; try again later",
                                      retry_after=3600, limit="credential-requests")
            if mine >= most_per_requester:
                raise TooManyRequests(f"{most_per_requester} of your requests are waiting for a decision",
                                      retry_after=3600, limit="credential-requests")
            try:
                _insert(db, "credential_requests", row)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"request {request.id} exists already") from exc

        await self.store.write(insert)

    async def requests(self, participant_id: str, *, state: str | None = None, limit: int = 1000
                       ) -> list[CredentialRequest]:
        def query(db: Database) -> list[CredentialRequest]:
            where, params = "participant_id = ?", [participant_id]
            if state is not None:
                where += " AND state = ?"
                params.append(state)
            rows = db.query(f"SELECT * FROM credential_requests WHERE {where} ORDER BY received_at DESC, id LIMIT ?",
                            [*params, limit])
            return [_record(CredentialRequest, r) for r in rows]

        return await self.store.read(query)

    async def request(self, participant_id: str, request_id: str) -> CredentialRequest | None:
        return await self.store.read(lambda db: _one(
            db, CredentialRequest, "SELECT * FROM credential_requests WHERE participant_id = ? AND id = ?",
            [participant_id, request_id]))

    async def decide_request(self, participant_id: str, request_id: str, *, state: str, now: str, reason: str = "",
                             credential_id: str | None = None) -> bool:
        """Move a pending request to *state* (compare and set: False if it is no longer pending)."""
        return await self.store.write(lambda db: bool(db.execute(
            "UPDATE credential_requests SET state = ?, decided_at = ?, reason = ?, credential_id = ? "
            "WHERE participant_id = ? AND id = ? AND state = 'pending'",
            [state, now, reason[:1000], credential_id, participant_id, request_id]).rowcount))

    # -- trusted issuers (verifier side) -------------------------------------------------------------------

    async def trusted(self, participant_id: str) -> list[TrustedIssuer]:
        def query(db: Database) -> list[TrustedIssuer]:
            rows = db.query("SELECT issuer, kinds, spaces, added_at FROM trusted_issuers WHERE participant_id = ? "
                            "ORDER BY issuer", [participant_id])
            return [_record(TrustedIssuer, r) for r in rows]

        return await self.store.read(query)

    async def trust(self, participant_id: str, entry: TrustedIssuer, *, most: int) -> None:
        """Trust an issuer (replacing what it was trusted for); Conflict beyond *most* issuers."""
        row = _row(entry, participant_id)

        def insert(db: Database) -> None:
            exists = db.execute("SELECT 1 FROM trusted_issuers WHERE participant_id = ? AND issuer = ?",
                                [participant_id, entry.issuer]).fetchone()
            count = db.execute("SELECT COUNT(*) FROM trusted_issuers WHERE participant_id = ?",
                               [participant_id]).fetchone()[0]
            if exists is None and count >= most:
                raise Conflict(f"this participant already trusts {most} issuers; remove one first")
            _insert(db, "trusted_issuers", row, replace=True)

        await self.store.write(insert)

    async def distrust(self, participant_id: str, issuer: str) -> bool:
        return await self.store.write(lambda db: bool(db.execute(
            "DELETE FROM trusted_issuers WHERE participant_id = ? AND issuer = ?", [participant_id, issuer]).rowcount))
