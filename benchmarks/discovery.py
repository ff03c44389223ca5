"""Discovery: how fast gossip spreads the directory, and what it costs once every node knows everyone.

An in-process simulation of 100, 1,000 and 5,000 nodes (one participant each), with real keys and real
``eddsa-jcs-2022`` self-descriptions, run through the real pure gossip core (``connector.protocol.gossip``:
digests, entries, plans, the view's decisions). Each node starts knowing its own item and one bootstrap peer
(a node that joined before it), as a new member joins. In each round every node, in random order, runs one
exchange (digest, entries, items both ways) with each of ``fanout`` (3) peers picked at random from its view;
what it learns is visible at once (sequential rounds). Every item a node takes is screened and its proof
verified against the subject's DID document; each distinct signed item is verified once and the result shared
across the simulated nodes (the only shortcut; it keeps the run within two minutes).

Measured:
- rounds until every node knows every discoverable participant (all of them here). Baseline: log2(n) rounds,
  the rounds an ideal push-pull epidemic needs to reach n nodes from one (each round at least doubles the
  informed nodes). Goal: 1,000 nodes converge within 12 rounds.
- bytes each node sends per round once converged (its digests and its answers, JSON as on the wire, without
  HTTP headers), the mean over nodes of two further rounds. Baseline: one item per peer per round (what
  re-sending one's own self-description to each of the ``fanout`` peers would cost). Goal: < 64 KiB.

Run: ``python benchmarks/discovery.py`` (100 and 1,000 nodes, about 15 s). ``--sizes 100,1000,5000`` adds
5,000 nodes, which this simulation does not yet finish within two minutes (every exchange of a round is run
in one Python thread; the per-bucket entry lists dominate while views are far apart).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.identity import credentials
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import gossip as core
from connector.store.repository import Participant

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
FANOUT = 3
MAX_ROUNDS = 40
LIMITS = core.Limits()


class Verifier:
    """Signature checks, once per distinct signed item (by digest), shared by every simulated node."""

    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self.documents = documents
        self.results: dict[str, bool] = {}
        self.checks = 0

    def ok(self, item: core.Item) -> bool:
        found = self.results.get(item.digest)
        if found is None:
            self.checks += 1
            try:
                core.verify(item, self.documents[item.did], now=NOW)
                found = True
            except credentials.SelfDescriptionError:
                found = False
            self.results[item.digest] = found
        return found


def make_members(n: int, rng: random.Random) -> tuple[list[core.Item], dict[str, dict[str, Any]]]:
    items: list[core.Item] = []
    documents: dict[str, dict[str, Any]] = {}
    for i in range(n):
        name = f"m{i}"
        host = f"node{i}.example"
        record = Participant(id=name, name=name, did=f"did:web:{host}:participants:{name}", legal_name=f"Member {i}",
                             region=rng.choice(["CN-GD", "CN-JS", "DE-BY", "CN-ZJ"]), created_at="2026-01-01T00:00:00Z")
        p = ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{host}")
        screened = core.screen(credentials.issue(p.subject(), p.keys.signing, now=NOW), now=NOW, limits=LIMITS)
        assert screened.item is not None
        items.append(screened.item)
        documents[p.did] = p.did_document()
    return items, documents


def size(message: dict[str, Any]) -> int:
    """JSON bytes of *message* as sent (items counted by their canonical size)."""
    if message.get("@type") == core.ENTRIES_TYPE:
        entries = message["entries"]
        return 60 + len(json.dumps(message["buckets"])) + sum(len(e[0]) + len(e[1]) + len(e[2]) + 10 for e in entries)
    if message.get("@type") == core.ITEMS_TYPE:
        return 60 + sum(int(i.size) + 1 for i in message["items"]) + sum(len(d) + 3 for d in message["want"])
    return len(json.dumps(message, separators=(",", ":")))


def take(view: core.View, items: list[core.Item], verifier: Verifier) -> None:
    for item in items:
        if view.consider(item) is True and verifier.ok(item):
            view.put(item)


def exchange(a: core.View, b: core.View, verifier: Verifier, sent: list[int], ia: int, ib: int) -> None:
    digest = a.digest()
    sent[ia] += size(digest)
    answer = b.entries_for(digest)
    sent[ib] += size(answer)
    if not answer["buckets"]:
        return
    send, want, _ = a.plan(answer)
    if not send and not want:
        return
    sent[ia] += size({"@type": core.ITEMS_TYPE, "items": send, "want": want})
    take(b, send, verifier)
    back = b.items_for(want)
    sent[ib] += size({"@type": core.ITEMS_TYPE, "items": back, "want": []})
    take(a, back, verifier)


def simulate(n: int, seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    started = time.perf_counter()
    items, documents = make_members(n, rng)
    made = time.perf_counter() - started
    verifier = Verifier(documents)
    views = [core.View(LIMITS, own=frozenset({items[i].did})) for i in range(n)]
    index = {item.did: i for i, item in enumerate(items)}
    for i, view in enumerate(views):
        view.put(items[i])
        if i:
            view.put(items[rng.randrange(i)])  # its one bootstrap peer (verified by handshake when it joined)
    rounds = 0
    converged = False
    while rounds < MAX_ROUNDS:
        rounds += 1
        sent = [0] * n
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            peers = [index[d] for d in views[i].items if d != items[i].did]
            for j in rng.sample(peers, min(FANOUT, len(peers))):
                exchange(views[i], views[j], verifier, sent, i, j)
        if all(len(v.items) == n for v in views):
            converged = True
            break
    steady: list[float] = []
    for _ in range(2):
        sent = [0] * n
        for i in rng.sample(range(n), n):
            peers = [index[d] for d in views[i].items if d != items[i].did]
            for j in rng.sample(peers, min(FANOUT, len(peers))):
                exchange(views[i], views[j], verifier, sent, i, j)
        steady.append(sum(sent) / n)
    return {"n": n, "rounds": rounds if converged else math.inf, "steady_bytes": sum(steady) / len(steady),
            "item_bytes": sum(i.size for i in items) / n, "checks": verifier.checks, "make_s": made,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    args = parser.parse_args()
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        r = simulate(n)
        results.append(r)
        print(f"{n} nodes: converged in {r['rounds']} rounds (log2 n = {math.log2(n):.1f}); "
              f"{r['steady_bytes'] / 1024:.1f} KiB sent per node per round once converged; "
              f"{r['checks']} signature checks; keys and items {r['make_s']:.1f} s, total {r['seconds']:.1f} s",
              flush=True)
    for r in results:
        n = int(r["n"])
        baseline = math.log2(n)
        goal_met = r["rounds"] <= 12
        goal = f"goal <= 12 rounds: {'met' if goal_met else 'missed'}" if n == 1000 else "goal none: met"
        print(f"TARGET convergence_{n}: {r['rounds']} rounds; baseline {baseline:.1f} rounds; "
              f"ratio {r['rounds'] / baseline:.2f}; {goal}")
    for r in results:
        n = int(r["n"])
        kib = r["steady_bytes"] / 1024
        baseline = FANOUT * r["item_bytes"] / 1024
        print(f"TARGET converged_bytes_per_node_round_{n}: {kib:.2f} KiB; baseline {baseline:.2f} KiB; "
              f"ratio {kib / baseline:.2f}; goal < 64 KiB: {'met' if kib < 64 else 'missed'}")


if __name__ == "__main__":
    main()
