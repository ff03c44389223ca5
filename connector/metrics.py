"""Prometheus metrics of one node (a registry per node, so several nodes can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests_total = Counter(
            "tds_http_requests", "HTTP requests answered", ["listener", "status"], registry=self.registry
        )
        self.signature_failures = Counter(
            "tds_signature_failures", "Peer requests refused for their RFC 9421 signature", registry=self.registry
        )
        self.participants = Gauge("tds_participants", "Participants hosted by this node", registry=self.registry)
        self.gossip_refused = Counter(
            "tds_gossip_refused_items", "Gossip items refused, by reason (malformed, oversized, bad-signature, "
            "stale, over-limit)", ["reason"], registry=self.registry,
        )
        self.gossip_sent_bytes = Counter(
            "tds_gossip_sent_bytes", "Bytes of gossip messages this node sent", registry=self.registry
        )
        self.crawl_events = Counter(
            "tds_catalog_crawl_events", "Catalog crawls of known peers, and what they failed or left out",
            ["event"], registry=self.registry,
        )

    def crawl_counted(self, event: str, n: int) -> None:
        """Count *n* crawl events (crawls, failures, offers_skipped, offers_over_bound)."""
        self.crawl_events.labels(event=event).inc(n)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
