"""Where a store is, when it is on PostgreSQL: the URL of ``store = "postgresql://…"`` parsed and checked. Kept
apart from :mod:`connector.store.pg` (the driver and the SQL translation), which a node on SQLite never loads."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from connector.errors import StorageError

#: The URL schemes that name a PostgreSQL store.
SCHEMES = ("postgresql", "postgres")

#: The default schema of a store URL that names none (``?schema=NAME``).
DEFAULT_SCHEMA = "tds"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def is_postgres_url(location: str) -> bool:
    return location.split(":", 1)[0].lower() in SCHEMES and "://" in location


class PgLocation(msgspec.Struct, frozen=True):
    """Where a PostgreSQL store is: the connection string (without the project's own ``schema`` parameter) and
    the schema that holds the node's tables."""
    dsn: str
    schema: str

    @classmethod
    def parse(cls, url: str, *, schema: str | None = None) -> PgLocation:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise StorageError(f"store: {parts.scheme!r} is not a PostgreSQL URL (postgresql://…)")
        query = parse_qsl(parts.query, keep_blank_values=True)
        named = [v for k, v in query if k == "schema"]
        rest = [(k, v) for k, v in query if k != "schema"]
        chosen = (schema or (named[-1] if named else DEFAULT_SCHEMA)).lower()
        if not _IDENT.match(chosen):
            raise StorageError(f"store: schema {chosen!r} must be a lower-case SQL name (letters, digits, _)")
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
        return cls(dsn=dsn, schema=chosen)

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        parts = urlsplit(self.dsn)
        netloc = parts.netloc
        if "@" in netloc:
            user, host = netloc.rsplit("@", 1)
            netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + f" (schema {self.schema})"

    @property
    def lock_key(self) -> int:
        """The advisory lock that serialises write transactions on this schema (a signed 64-bit number)."""
        digest = hashlib.blake2b(f"tds-store-writer:{self.schema}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)


def schema_for_folder(folder: str, prefix: str = DEFAULT_SCHEMA) -> str:
    """The schema of a node whose data folder is *folder* when its store comes from ``TDS_STORE``: one schema per
    folder, so nodes sharing a server stay apart, named *prefix* (the URL's ``schema``) and the folder's hash."""
    return f"{prefix[:40]}_" + hashlib.blake2b(folder.encode(), digest_size=8).hexdigest()
