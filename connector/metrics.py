"""Prometheus metrics of one node (a registry per node, so several nodes can share a process).

Served on the management listener at ``/metrics``, to the node's admin token or a metrics token (README
"Monitoring"); every series is named ``tds_…``. Counters count what happened since the process started; the
processes by state and the receipt anomalies are read from the store when the metrics are scraped, so they
are the store's own figures and survive a restart. The event loop's lag is measured by :class:`LoopLag`, a
task the node starts and stops with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import connector
from connector.logging import get_logger
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState
from connector.store.stats import StoreCounts

log = get_logger(component="metrics")
#: The kinds of receipt anomaly a provider records (``connector.services.receipts``), shown at 0 until seen.
RECEIPT_ANOMALY_KINDS = ("mismatch", "forged", "fork", "reorder", "gap", "beyond-allowance")
#: Kinds of failed requests to peers (``connector.net.client``), shown at 0 until seen.
PEER_ERROR_KINDS = ("timeout", "connect", "tls", "disconnected", "refused-by-guard", "too-large", "redirects",
                    "rate-limited", "server-error", "other")
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def software_version() -> str:
    """The release this node runs (``connector.__version__``, the installed package's version: read without the
    package metadata, whose lookup took some 8 ms of every start)."""
    return connector.__version__


class _StoreFigures(Collector):
    """The processes by role and state and the receipt anomalies by kind, as last read from the store."""

    def __init__(self) -> None:
        self.counts = StoreCounts()

    def collect(self) -> Iterator[Metric]:
        for name, what, states, found in (
                ("tds_negotiations", "Contract negotiations on this node, by role and state", NegotiationState,
                 self.counts.negotiations),
                ("tds_transfers", "Transfer processes on this node, by role and state", TransferState,
                 self.counts.transfers)):
            family = GaugeMetricFamily(name, what, labels=["role", "state"])
            shown = {(role.value, state.value): 0 for role in Role for state in states} | found
            for (role, state), n in sorted(shown.items()):
                family.add_metric([role, state], n)
            yield family
        anomalies = CounterMetricFamily(
            "tds_receipt_anomalies", "Anomalies found in consumers' usage receipts (each recorded once), by kind",
            labels=["kind"])
        for kind, n in sorted(({k: 0 for k in RECEIPT_ANOMALY_KINDS} | self.counts.receipt_anomalies).items()):
            anomalies.add_metric([kind], n)
        yield anomalies


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        # HTTP, both listeners
        self.requests_total = Counter(
            "tds_http_requests", "HTTP requests answered", ["listener", "status"], registry=registry
        )
        self.request_seconds = Histogram(
            "tds_http_request_duration_seconds", "Time to answer an HTTP request (a streamed body included)",
            ["listener"], registry=registry,
        )
        self.rate_limited = Counter(
            "tds_rate_limit_refusals", "Requests refused with 429, by listener and the budget they went over",
            ["listener", "limit"], registry=registry,
        )
        self.signature_failures = Counter(
            "tds_signature_failures", "Peer requests refused for their RFC 9421 signature", registry=registry
        )
        self.participants = Gauge("tds_participants", "Participants hosted by this node", registry=registry)
        # peers and data
        self.peer_errors = Counter(
            "tds_peer_errors", "Requests to peers that failed, by kind", ["kind"], registry=registry
        )
        self.bytes_moved = Counter(
            "tds_transfer_bytes", "Payload bytes moved by transfers: sent as provider, received and verified as "
            "consumer", ["direction"], registry=registry,
        )
        self.usage_decisions = Counter(
            "tds_usage_decisions", "Uses of received data decided, by outcome", ["decision"], registry=registry
        )
        # the node itself
        self.store_commit_seconds = Histogram(
            "tds_store_commit_seconds", "Time one store commit (a group of writes) took, by whether it was fsynced",
            ["durable"], buckets=_FAST, registry=registry,
        )
        self.event_loop_lag = Histogram(
            "tds_event_loop_lag_seconds", "How late the event loop ran a timer (scheduling delay)", buckets=_LAG,
            registry=registry,
        )
        self.build_info = Gauge(
            "tds_build_info", "The node's software and schema version (always 1)", ["version", "schema"],
            registry=registry,
        )
        # discovery
        self.gossip_refused = Counter(
            "tds_gossip_refused_items", "Gossip items refused, by reason (malformed, oversized, bad-signature, "
            "stale, over-limit)", ["reason"], registry=registry,
        )
        self.gossip_sent_bytes = Counter(
            "tds_gossip_sent_bytes", "Bytes of gossip messages this node sent", registry=registry
        )
        self.directory_evicted = Counter(
            "tds_directory_evicted", "Peer directory entries learned by gossip let go to make room for newcomers "
            "in a full directory", registry=registry,
        )
        self.crawl_events = Counter(
            "tds_catalog_crawl_events", "Catalog crawls of known peers, and what they failed or left out",
            ["event"], registry=registry,
        )
        self._store = _StoreFigures()
        registry.register(self._store)
        #: The series of every request, by (listener, status), looked up once (``labels`` locks and builds a key).
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        #: The commit histogram's two series, labelled once (a commit's own figure is taken on every commit).
        self._commits = {durable: self.store_commit_seconds.labels(durable=str(durable).lower())
                         for durable in (False, True)}
        self._decided: dict[str, Counter] = {}
        # Series an alert reads are there at 0 before the first event.
        for direction in ("sent", "received"):
            self.bytes_moved.labels(direction=direction)
        for decision in ("permit", "deny"):
            self.usage_decisions.labels(decision=decision)
        for kind in PEER_ERROR_KINDS:
            self.peer_errors.labels(kind=kind)

    # -- what the node's parts tell ------------------------------------------------------------------

    def answered(self, listener: str, status: int, seconds: float, limit: str | None = None) -> None:
        """A request answered on *listener*; *limit* names the budget of a 429."""
        series = self._answered.get((listener, status))
        if series is None:  # a few listeners times the statuses the node answers with
            series = self._answered[(listener, status)] = (
                self.requests_total.labels(listener=listener, status=str(status)),
                self.request_seconds.labels(listener=listener))
        series[0].inc()
        series[1].observe(seconds)
        if limit is not None:
            self.rate_limited.labels(listener=listener, limit=limit).inc()

    def moved(self, direction: str, n: int) -> None:
        """*n* payload bytes ``sent`` or ``received``."""
        self.bytes_moved.labels(direction=direction).inc(n)

    def decided(self, decision: str) -> None:
        series = self._decided.get(decision)
        if series is None:
            series = self._decided[decision] = self.usage_decisions.labels(decision=decision)
        series.inc()

    def peer_failed(self, kind: str) -> None:
        self.peer_errors.labels(kind=kind).inc()

    def commit_took(self, seconds: float, durable: bool) -> None:
        """Called on the store's writer thread (prometheus_client's metrics are thread-safe)."""
        self._commits[durable].observe(seconds)

    def crawl_counted(self, event: str, n: int) -> None:
        """Count *n* crawl events (crawls, failures, offers_skipped, offers_over_bound)."""
        self.crawl_events.labels(event=event).inc(n)

    def built(self, version: str, schema: int) -> None:
        self.build_info.clear()
        self.build_info.labels(version=version, schema=str(schema)).set(1)

    # -- exposition ----------------------------------------------------------------------------------

    async def scrape(self, counts: Callable[[], Awaitable[StoreCounts]]) -> tuple[bytes, str]:
        """The metrics with the store's figures read afresh by *counts* (the last ones if that fails)."""
        try:
            self._store.counts = await counts()
        except Exception as exc:
            log.warning("store figures could not be read for the metrics; the last ones are shown",
                        error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return self.render()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LoopLag:
    """A task that sleeps *interval_s* again and again and tells *observe* how much later than asked it woke
    up: the event loop's scheduling delay (a blocking call, or more ready work than the loop keeps up with)."""

    def __init__(self, observe: Callable[[float], None], *, interval_s: float = 0.5,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.observe = observe
        self.interval_s = interval_s
        self.clock = clock
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="tds-event-loop-lag")

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            before = self.clock()
            await asyncio.sleep(self.interval_s)
            self.observe(max(0.0, self.clock() - before - self.interval_s))
