"""structlog set-up: JSON lines on stderr, with secrets redacted before anything is written.

Redaction works on every field of every line, nested values included: a field named like a credential is
replaced whole, and credentials inside text (a bearer token, an ``Authorization`` header, an RFC 9421
signature, ``token=…``, the node's own 43-character tokens) are replaced in place. Library log records
(aiohttp, asyncio), warnings, exceptions no one caught (in a thread, in the main thread, in a ``__del__``) and,
with :func:`handle_loop_exceptions`, whatever the event loop's tasks and callbacks let through go through the
same processors: nothing reaches stderr as plain text."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any


def _import_structlog() -> Any:
    """Import structlog without letting it load rich.

    structlog's console renderer imports rich when it is installed (about 90 ms and 5 MiB at start-up);
    the node logs JSON lines and never renders with rich, so rich is hidden while structlog loads. The
    CLI can still import rich afterwards.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog as module

        return module
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` raise ImportError
    try:
        import structlog as module
    finally:
        del sys.modules["rich"]
    return module


structlog = _import_structlog()

REDACTED = "[redacted]"
#: A field whose name contains one of these carries a credential: its whole value is replaced.
_SECRET_KEYS = ("token", "authorization", "secret", "password", "passphrase", "private", "signature", "seed",
                "key_bytes", "cookie", "api_key", "apikey", "api-key")
#: Credentials inside text (a message, an error, a quoted header line or dict), each replaced in place.
_CREDENTIAL = r"[A-Za-z0-9._~+/-]"
_SECRET_TEXT = (
    # An Authorization header quoted with its name, whatever its scheme (a value of 8 or more credential
    # characters: "Authorization: Bearer <token>" in a usage hint is left readable).
    (re.compile(r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?=[^\"'\r\n,;}]*[A-Za-z0-9+/=_-]{8})"
                r"[^\"'\r\n,;}]+"), r"\1" + REDACTED),
    # A credential after its scheme, also where a header value is quoted without its name ("a bearer
    # token" is prose: a credential has a digit or is 20 characters long).
    (re.compile(rf"(?i)\b(bearer|basic)(\s+)(?={_CREDENTIAL}*\d|{_CREDENTIAL}{{20}}){_CREDENTIAL}+=*"),
     r"\1\2" + REDACTED),
    # RFC 9421 signature values ("sig1=:…:"); body digests (sha-256=:…:) are not secret.
    (re.compile(r"(?i)\b(?!sha-)([a-z][a-z0-9_-]*=:)[A-Za-z0-9+/]+=*:"), r"\1" + REDACTED + ":"),
    # token=…, secret=…, password=…, api_key=… in a query string or key=value text, and quoted keys of a
    # dict or JSON text.
    (re.compile(r"(?i)\b(\w*(?:token|secret|password|api[_-]?key)=)[^&\s\"',;]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)([\"'][\w-]*(?:token|secret|password|signature|cookie)[\"']\s*:\s*[\"'])[^\"']*"),
     r"\1" + REDACTED),
    # A password in a URL (https://user:password@host/).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), r"\1" + REDACTED + "@"),
    # The node's own tokens (management, admin, transfer): 32 random bytes as 43 base64url characters.
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_=-])"), REDACTED),
)
#: What every pattern of ``_SECRET_TEXT`` needs at least one of (a word, "=", a quote, "://" or a run of 43
#: token characters): text with none of them is returned as it is, without running each pattern (most fields
#: of most lines: a route, a DID, a status, a timestamp).
_MAYBE_SECRET = re.compile(r"(?i)authorization|bearer|basic|[=\"']|://|[A-Za-z0-9_-]{43}")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_-]{43}")
#: How deep nested values are searched; anything deeper is replaced whole.
_MAX_DEPTH = 8


@functools.lru_cache(maxsize=4096)  # the same few field names on every line
def _secret_key(key: object) -> bool:
    name = str(key).lower()
    return any(s in name for s in _SECRET_KEYS)


def _maybe_secret(text: str) -> bool:
    """Whether ``_MAYBE_SECRET`` is found in *text*. ASCII text (nearly every field) is searched for the marks
    one by one, without the pattern, whose case-blind alternatives and 43-character run are tried at every
    position (several times the cost, on every field of every line); other text goes through the pattern."""
    if not text.isascii():
        return _MAYBE_SECRET.search(text) is not None
    if "=" in text or '"' in text or "'" in text or "://" in text:
        return True
    lower = text.lower()
    if "authorization" in lower or "bearer" in lower or "basic" in lower:
        return True
    return len(text) >= 43 and _TOKEN_RUN.search(text) is not None


def redact_text(text: str) -> str:
    """*text* with every credential found in it replaced by ``[redacted]``."""
    if not _maybe_secret(text):
        return text
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_key(k) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v, depth + 1) for v in value]
    # Anything else is rendered by its repr (as the JSON renderer would), searched like text.
    return redact_text(repr(value))


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace credentials in every field of a log line: a field named like one (``token``,
    ``authorization``…) whole, at any depth, and credentials found inside text (see ``_SECRET_TEXT``)."""
    for key in list(event):
        event[key] = REDACTED if _secret_key(key) else _scrub(event[key], 0)
    return event


class _Stderr:
    """``sys.stderr`` as it is when a line is written, not as it was when logging was configured (a
    test's output capture, for one, swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LibraryLogs(logging.Handler):
    """Records of the stdlib loggers of libraries (``aiohttp.*``, ``asyncio``) as JSON lines through the same
    processors, so that nothing reaches stderr as plain text or unredacted. Tracebacks are left out: an
    exception's type is kept, and its message unless it quotes a raw request (aiohttp's parser errors)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed format arguments must not lose the line
            message = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            quotes_request = any(c.__module__ == "aiohttp.http_exceptions" for c in type(exc).__mro__)
            fields["error"] = type(exc).__name__ if quotes_request else f"{type(exc).__name__}: {str(exc)[:300]}"
        structlog.get_logger("tds").log(record.levelno, message[:2000], **fields)


_library_logs = _LibraryLogs()


def _uncaught(kind: str, exc_type: type[BaseException], exc: BaseException | None,
              tb: TracebackType | None, **fields: Any) -> None:
    """One JSON line, with the traceback, for an exception no code caught."""
    error = f"{exc_type.__name__}: {str(exc)[:300]}" if exc is not None else exc_type.__name__
    structlog.get_logger("tds").error(kind, error=error, exc_info=(exc_type, exc, tb), **fields)


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    _uncaught("thread failed", args.exc_type, args.exc_value, args.exc_traceback,
              thread=args.thread.name if args.thread is not None else None)


def _unraisable(unraisable: Any) -> None:  # sys.UnraisableHookArgs
    # An exception in a __del__ or a finaliser, ignored by Python: said once, as JSON.
    _uncaught("exception ignored", unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback,
              where=(unraisable.err_msg or "")[:200] or None, object=repr(unraisable.object)[:200])


def _main_exception(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    _uncaught("uncaught exception", exc_type, exc, tb)


def loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler (:func:`handle_loop_exceptions`): what a task or a callback let through
    (a task's exception that was never retrieved, a callback that raised) as one JSON line with its traceback,
    instead of asyncio's default multi-line text."""
    exc = context.get("exception")
    fields = {name: repr(context[name])[:300] for name in ("task", "future", "handle") if name in context}
    message = str(context.get("message") or "unhandled exception in the event loop")[:500]
    if isinstance(exc, BaseException):
        _uncaught(message, type(exc), exc, exc.__traceback__, logger="asyncio", **fields)
    else:
        structlog.get_logger("tds").error(message, logger="asyncio", **fields)


def handle_loop_exceptions(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Log what the event loop (*loop*, or the running one) catches as JSON (:func:`loop_exception`)."""
    (loop or asyncio.get_running_loop()).set_exception_handler(loop_exception)


#: Raised by every :func:`configure`: a logger of :func:`get_logger` assembled before is assembled again.
_configured = 0


def configure(level: str = "info", *, json: bool = True) -> None:
    global _configured
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,  # after the traceback is text, so that it is searched too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=False,
    )
    _configured += 1  # after: a logger assembled meanwhile (another thread) is assembled again on its next line
    # Libraries log through the stdlib (aiohttp's server and access loggers, asyncio): without a handler,
    # Python prints their warnings and tracebacks as plain text on stderr.
    _library_logs.setLevel(getattr(logging, level.upper()))
    root = logging.getLogger()
    if _library_logs not in root.handlers:
        root.addHandler(_library_logs)
    # Warnings (a deprecation, an unclosed resource) go to the "py.warnings" logger, so through the handler above;
    # exceptions no code caught, in a thread, in the main thread or in a __del__, become JSON lines too.
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    sys.unraisablehook = _unraisable
    sys.excepthook = _main_exception


class _Logger:
    """structlog's logger with *bindings*, assembled once per :func:`configure` (structlog's own lazy proxy, with
    loggers not cached so that a new configuration applies to them, assembles one on every call). Processors
    still run on every line, so ``structlog.testing.capture_logs`` sees them; a new level applies at once."""

    __slots__ = ("_bindings", "_bound", "_configured")

    def __init__(self, bindings: dict[str, Any]) -> None:
        self._bindings = bindings
        self._bound: Any = None
        self._configured = -1

    def __getattr__(self, name: str) -> Any:
        if self._configured != _configured:
            self._bound = structlog.get_logger("tds", **self._bindings).bind()
            self._configured = _configured
        return getattr(self._bound, name)


def get_logger(**bindings: Any) -> Any:
    return _Logger(bindings)
