"""The connector's error hierarchy.

Families follow who is at fault (see STYLE.md "Errors"). Each class carries the HTTP status it maps to
and, for DSP routes, the DSP error type; the one error middleware (``connector.http.middleware``) turns
any of them into a JSON response. Expected outcomes such as a policy deny are values, not errors.
"""

from __future__ import annotations


class TdsError(Exception):
    """Base of every error the connector raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class ConfigError(TdsError):
    """The node's configuration is invalid (names the field)."""

    code = "config"


class BadRequest(TdsError):
    """A request whose shape or content is wrong (names the field path)."""

    status = 400
    code = "bad-request"


class Unauthorized(TdsError):
    """A request without valid credentials: missing, malformed, expired, replayed or wrong signature/token."""

    status = 401
    code = "unauthorized"


class Forbidden(TdsError):
    """Valid credentials for something else: a participant's token on an admin route."""

    status = 403
    code = "forbidden"


class NotFound(TdsError):
    """Unknown resource, or one the caller may not see (never leaks which)."""

    status = 404
    code = "not-found"


class Conflict(TdsError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TdsError):
    status = 413
    code = "too-large"


class TooManyRequests(TdsError):
    """A caller went over its fair-use rate; ``retry_after`` (seconds) becomes the Retry-After header.
    ``limit`` names the budget it went over (a label of the node's ``tds_rate_limit_refusals_total``)."""

    status = 429
    code = "too-many-requests"

    def __init__(self, message: str, *, retry_after: int, limit: str = "other") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit


class LocalProtocolError(TdsError):
    """We were asked to do something the protocol does not allow (our own misuse)."""

    status = 400
    code = "local-protocol-error"


class RemoteProtocolError(TdsError):
    """A peer sent something the protocol does not allow."""

    status = 400
    code = "remote-protocol-error"


class PeerError(TdsError):
    """A peer could not be reached, refused us, or answered with something unusable."""

    status = 502
    code = "peer-error"


class OutboundRefused(PeerError):
    """An outbound URL that the node's outbound guard refuses (scheme, address range, size, redirects)."""

    status = 400
    code = "outbound-refused"


class StorageError(TdsError):
    status = 503
    code = "storage"


class SchemaVersionError(StorageError):
    """The database's schema version is not one this software can run on: newer than the newest it knows (a
    later release wrote it), or no schema version at all (negative or absurdly high: a damaged file, or not a
    TDS Connector database). Opening refuses before anything is changed."""

    code = "schema-version"

    def __init__(self, message: str, *, found: int, known: int) -> None:
        super().__init__(message)
        #: The database's ``PRAGMA user_version``.
        self.found = found
        #: The newest schema version this software knows (the number of its migrations).
        self.known = known


class BackupError(TdsError):
    """A backup cannot be made or restored as things stand (the message says why: a wrong passphrase or key, a
    damaged or hostile archive, a folder that is not empty, a data folder that changed under the backup)."""

    code = "backup"


#: The regular expressions fields are checked against, each with the rule it stands for in words.
_PATTERN_RULES: dict[str, str] = {}


def pattern_rule(pattern: str, rule: str) -> str:
    """Register *rule* (words that follow "must be") for *pattern*, so that a validation message states the rule
    rather than the regular expression; returns *pattern* (for ``msgspec.Meta(pattern=…)``)."""
    _PATTERN_RULES[pattern] = rule
    return pattern


def readable_validation(message: str) -> str:
    """A msgspec validation message with a field's regular expression replaced by its rule in words
    (``Expected `str` matching regex '^[a-z0-9]…$'`` → ``must be 1-63 lowercase letters…``); a pattern with no
    registered rule is named as a pattern."""
    import ast
    import re

    def words(match: re.Match[str]) -> str:
        try:  # msgspec quotes the pattern as Python's repr() does
            pattern = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            pattern = match.group(1)
        rule = _PATTERN_RULES.get(pattern)
        return f"must be {rule}" if rule else f"does not have the form this field takes (pattern {match.group(1)})"

    return re.sub(r"""Expected `str` matching regex ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", words, message)


def validation_error_path(message: str) -> tuple[str | None, str]:
    """Split a msgspec validation message into (dotted field path, short message).

    ``"Expected `int`, got `str` - at `$.node.port`"`` → ``("node.port", "Expected `int`, got `str`")``;
    unknown and missing fields are appended to the path they were found at; a pattern is said in words
    (:func:`readable_validation`).
    """
    import re

    text, _, where = readable_validation(message).partition(" - at ")
    match = re.match(r"`\$\.?([^`]*)`", where)
    path = match.group(1) if match and match.group(1) else None
    named = re.search(r"(unknown|missing required) field `([^`]*)`", text)
    if named:
        path = f"{path}.{named.group(2)}" if path else named.group(2)
        text = f"{named.group(1)} field"
    return path, text
