"""Attack: a fuzz of every DSP route of a participant with RFC 9421-signed requests, as a real peer signs them.

Bodies start from the valid examples of the DSP 2025-1 artifacts (``tests/shared/dsp-2025-1/*/example/``),
with the process ids of real negotiations and transfers, and hypothesis mutates them with a fixed seed
(``derandomize``) and a fixed budget: fields dropped, replaced or added with wrong types, text in other
scripts, lone surrogates, huge and long numbers, deep nesting, odd process ids and query parameters. Each
request is signed by the participant's agreed peer (its real key), by a stranger's fresh did:key, or not
at all, and goes to the provider and to the consumer side. Every answer must be no server error, no
step of a process may fail afterwards (an error in the node's log), and a refusal on a DSP path must be
the DSP error type of that protocol area (``CatalogError``, ``ContractNegotiationError``,
``TransferError``, valid against its schema, with a code and a reason); on the project's own extensions
(``…/tds/``) a JSON error naming what is wrong.

The node-wide budget for unknown peers is raised so that the stranger is not throttled into 429s that
would hide the routes; a 429 would still be an acceptable refusal.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
from attack_setup import agreement_with_data
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from connector.config import DspSection
from connector.identity import did as dids
from connector.net import signing
from connector.protocol import statements
from connector.testing import dsp_validator, free_port, shared_dir

#: Requests hypothesis draws per route and node.
EXAMPLES = 50
DSP = "/participants/{name}/api/dsp/2025-1/"
#: The example each route's bodies start from (None: a route without a body). A route added to the node
#: and missing here fails the test, so that the fuzz keeps covering every route.
EXAMPLES_BY_ROUTE: dict[str, str | None] = {
    "POST catalog/request": "catalog/example/catalog-request-message.json",
    "GET catalog/datasets/{id}": None,
    "POST negotiations/request": "negotiation/example/contract-request-message_initial.json",
    "POST negotiations/offers": "negotiation/example/contract-offer-message_initial.json",
    "GET negotiations/{pid}": None,
    "POST negotiations/{pid}/request": "negotiation/example/contract-request-message.json",
    "POST negotiations/{pid}/offers": "negotiation/example/contract-offer-message.json",
    "POST negotiations/{pid}/events": "negotiation/example/contract-negotiation-event-message.json",
    "POST negotiations/{pid}/agreement": "negotiation/example/contract-agreement-message.json",
    "POST negotiations/{pid}/agreement/verification":
        "negotiation/example/contract-agreement-verification-message.json",
    "POST negotiations/{pid}/termination": "negotiation/example/contract-negotiation-termination-message.json",
    "POST transfers/request": "transfer/example/transfer-request-message.json",
    "GET transfers/{pid}": None,
    "POST transfers/{pid}/start": "transfer/example/transfer-start-message.json",
    "POST transfers/{pid}/completion": "transfer/example/transfer-completion-message.json",
    "POST transfers/{pid}/termination": "transfer/example/transfer-termination-message.json",
    "POST transfers/{pid}/suspension": "transfer/example/transfer-suspension-message.json",
    "POST tds/handshake": "self-description",
    "POST tds/usage-receipts": "receipts",
    "POST tds/revocations": "revocation",
    "POST tds/credentials": "credential",
    "POST tds/credentials/requests": "credential request",
    "POST tds/credentials/presentation": "presentation",
    "POST tds/gossip": "gossip digest",
    "POST tds/sandbox/queries": "sandbox query",
    "POST tds/statements": "statement",
    "POST tds/statements/answers": "statement answer",
}
ERROR_TYPES = {"catalog": "CatalogError", "negotiations": "ContractNegotiationError", "transfers": "TransferError"}
OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
ODD_PIDS = ["urn:uuid:00000000-0000-0000-0000-000000000000", "x", " ", "..", "../../did.json", "%", "é\u0663",
            "a" * 600, "\u0000", "urn:uuid:", "FINALIZED"]
#: Loopback callback addresses a signer cannot put into a request's @target-uri as they are.
ODD_CALLBACKS = ["http://127.0.0.1:1/a b", "http://127.0.0.1:1/\u00e9", "http://127.0.0.1:1/%zz", "http://[::1",
                 "http://127.0.0.1:1/\u0000", "http://127.0.0.1:1/a\tb", "http://127.0.0.1:1/<x>", "http://127.0.0.1:1/{x}",
                 "http://127.0.0.1:1/?a=\u00b9", "http://127.0.0.1:1#frag"]
ODD_TEXT = ["", " ", "\u0000", "\ud800", "\u00b9", "\u0663", "😀" * 50, "x" * 5000, "../../etc/passwd",
            "http://127.0.0.1:1/callback", "did:web:%ZZ", "did:key:z6Mk", "urn:uuid:", "ContractRequestMessage",
            "REQUESTED", "FINALIZED", "ACCEPTED", "use", "P-1D", "1e999"]
ODD_NUMBERS = ["\u00b9", "\u00b2", "\u0663", "\uff11", "-1", "+1", "1e3", " 1", "1_0", "9" * 40, "", "0", "1",
               "500", "501"]
ODD_RAW = [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"', b"[" * 80 + b"]" * 80, b"1" * 5000]


def junk() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                       st.sampled_from(ODD_TEXT))
    return st.one_of(leaves, st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8),
                     st.just(_nested(70)))


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value that a mutation can touch."""
    out = [at]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*at, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*at, i))
    return out


def _mutate(body: Any, kind: str, pick: int, value: Any, key: str) -> Any:
    paths = _paths(body)
    path = paths[pick % len(paths)]
    if not path:
        return value if kind == "replace" else body
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "drop":
        del parent[last]
    elif kind == "replace":
        parent[last] = value
    elif isinstance(parent, dict):  # "add": a field of another type beside it
        parent[key] = value
    return body


@dataclass(frozen=True)
class Signer:
    key: SigningKey
    key_id: str


@dataclass
class Report:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


class DspFuzzer:
    def __init__(self, public_url: str, name: str, signers: dict[str, Signer | None], pids: list[str],
                 bases: dict[str, Any], routes: list[str]) -> None:
        self.public_url = public_url
        self.name = name
        self.signers = signers
        self.pids = pids + ODD_PIDS
        self.bases = bases
        self.routes = routes
        self.session = requests.Session()
        self.report = Report()
        self.validator = dsp_validator()

    def run(self) -> Report:
        for route in self.routes:
            self.fuzz(route)
            self.odd_addresses(route)
        return self.report

    def odd_addresses(self, route: str) -> None:
        """Every odd pid and callback address once, in an otherwise valid message of the agreed peer (and
        the pid in the path): what a node stores of them is what it later puts into the URLs of its own
        signed requests to that peer."""
        method, _, tail = route.partition(" ")
        base = self.bases.get(route)
        for pid in ODD_PIDS:
            body = None if base is None else self._body(base, {"providerPid": pid, "consumerPid": pid}, [])
            self.send(method, self._url(tail, pid, {}), None if body is None else json.dumps(body).encode(),
                      "agreed peer", tail)
        if isinstance(base, dict) and "callbackAddress" in base:
            for address in ODD_CALLBACKS:
                body = {**self._body(base, {"consumerPid": f"urn:uuid:{uuid.uuid4()}"}, []),
                        "callbackAddress": address}
                self.send(method, self._url(tail, "x", {}), json.dumps(body).encode(), "agreed peer", tail)

    def _url(self, tail: str, path_id: str, query: dict[str, str]) -> str:
        # Dots escaped too: a client would drop a ".." segment before sending, and the signature with it.
        segment = quote(path_id, safe="").replace(".", "%2E")
        path = re.sub(r"{\w+}", segment, DSP.format(name=self.name) + tail)
        return self.public_url + path + (f"?{urlencode(query)}" if query else "")

    def fuzz(self, route: str) -> None:
        method, _, tail = route.partition(" ")
        base = self.bases.get(route)
        pid_fields = st.fixed_dictionaries({"providerPid": st.sampled_from(self.pids),
                                            "consumerPid": st.sampled_from(self.pids)})
        mutation = st.tuples(st.sampled_from(["drop", "replace", "add"]), st.integers(0, 10_000), junk(),
                             st.text(max_size=10))
        # A third each: the example with drawn pids only (so that odd pids reach the state machines), with
        # mutations besides, and bytes that are no message at all.
        body = st.none() if base is None else st.one_of(
            pid_fields.map(lambda pids: self._body(base, pids, [])),
            st.tuples(pid_fields, st.lists(mutation, min_size=1, max_size=4)).map(
                lambda drawn: self._body(base, *drawn)),
            st.sampled_from(ODD_RAW))
        query = st.just({}) if tail != "catalog/request" else st.dictionaries(
            st.sampled_from(["offset", "limit"]), st.sampled_from(ODD_NUMBERS), max_size=2)
        ids = st.sampled_from(["qi", *self.pids])

        @given(signer=st.sampled_from(sorted(self.signers)), path_id=ids, query=query, body=body,
               ascii_only=st.booleans())
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def send(signer: str, path_id: str, query: dict[str, str], body: Any, ascii_only: bool) -> None:
            url = self._url(tail, path_id, query)
            if body is None or isinstance(body, bytes):
                raw = body
            else:  # not ASCII-escaped, a lone surrogate becomes bytes that are not UTF-8
                raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
            self.send(method, url, raw, signer, tail)

        send()

    @staticmethod
    def _body(base: Any, pids: dict[str, str], mutations: list[tuple[str, int, Any, str]]) -> Any:
        body = copy.deepcopy(base)
        for name, pid in pids.items():
            if isinstance(body, dict) and name in body:
                body[name] = pid
        for kind, pick, value, key in mutations:
            body = _mutate(body, kind, pick, copy.deepcopy(value), key)
        return body

    def send(self, method: str, url: str, raw: bytes | None, who: str, tail: str) -> None:
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        signer = self.signers[who]
        if signer is not None:
            headers = signing.sign_request(method, url, raw, key=signer.key, key_id=signer.key_id, now=time.time(),
                                           headers=headers)
        prepared = requests.Request(method, url, data=raw, headers=headers).prepare()
        prepared.url = url  # as signed: requests would unescape %2E and the like
        response = self.session.send(prepared, timeout=15)
        self.report.requests += 1
        self.report.statuses[response.status_code] += 1
        problem = self.check(response, tail)
        if problem:
            self.report.failures.append(f"{method} {url[:200]} as {who} with {raw[:300] if raw else raw!r}: "
                                        f"{response.status_code} {problem}: {response.text[:500]}")

    def check(self, response: requests.Response, tail: str) -> str | None:
        if response.status_code >= 500:
            return "server error"
        try:
            answer = response.json()
        except ValueError:
            return "not JSON"
        area = tail.partition("/")[0]
        if response.status_code < 400:
            if isinstance(answer, dict) and answer.get("@type") in ("ContractNegotiation", "TransferProcess",
                                                                    "Catalog", "Dataset"):
                return self._invalid(answer)
            return None
        if area in ERROR_TYPES:
            if not isinstance(answer, dict) or answer.get("@type") != ERROR_TYPES[area]:
                return f"not a {ERROR_TYPES[area]}"
            if not (isinstance(answer.get("code"), str) and answer.get("reason") and answer["reason"][0]):
                return "no code or reason"
            return self._invalid(answer)
        if not (isinstance(answer, dict) and answer.get("error") and answer.get("message")):
            return "no error and message"
        return None

    def _invalid(self, answer: dict[str, Any]) -> str | None:
        try:
            self.validator.validate(answer)
        except Exception as exc:
            return f"not valid against the DSP schema: {str(exc).splitlines()[0]}"
        return None


def _example(name: str, loopback: str) -> Any:
    """A DSP example whose URLs all point at a closed loopback port (the fuzzed node calls back there)."""
    text = (shared_dir() / "dsp-2025-1" / name).read_text()
    return json.loads(re.sub(r"https?://([A-Za-z0-9-]+\.)*example\.com", loopback, text))


def _routes(node: Any) -> list[str]:
    found = set()
    for runner in node._runners:
        for route in runner.app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter") or ""
            if path.startswith(DSP) and route.method != "HEAD":
                found.add(f"{route.method} {path.removeprefix(DSP)}")
    return sorted(found)


def failed_steps(err: str) -> list[str]:
    """Error lines on stderr: a step of a process that failed unexpectedly after its request was answered
    (a message the node accepted but cannot act on) shows only here."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [f"{line.get('event')}: {str(line.get('exception', ''))[-600:]}" for line in lines
            if line.get("level") in ("error", "critical")]


async def test_fuzzing_the_dsp_routes_with_signed_requests_finds_no_server_error(nodes, capfd):
    budget = DspSection(unknown_peer_rate_per_s=1e6, unknown_peer_burst=10**6, unknown_peer_open_negotiations=10**6)
    settings_ = {"dsp_rate_per_s": 1e6, "dsp_burst": 10**6, "dsp": budget}
    provider, consumer = await nodes.start("acme", **settings_), await nodes.start("parts", **settings_)
    agreement = await agreement_with_data(provider, consumer, OPEN)
    routes = _routes(provider.node)
    assert set(routes) == set(EXAMPLES_BY_ROUTE), "a DSP route the fuzz does not know"

    loopback = f"http://127.0.0.1:{free_port()}"
    stranger_key = SigningKey.generate()
    stranger = Signer(stranger_key, dids.signing_key_id(dids.did_key_for(bytes(stranger_key.verify_key))))
    pids: list[str] = []
    for running in (provider, consumer):
        p = running.participant
        for record in [*await running.node.contracts.negotiations(p.id),
                       *await running.node.transfers_repo.find(p.id)]:
            pids += [pid for pid in (record.provider_pid, record.consumer_pid) if pid]
    assert len(pids) >= 4
    bases: dict[str, Any] = {route: _example(name, loopback) for route, name in EXAMPLES_BY_ROUTE.items()
                             if name and name.endswith(".json")}
    # The provider's real offer and agreement, so that unmutated requests go as deep as a peer's would.
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]
    bases["POST negotiations/request"]["offer"] = offer
    bases["POST transfers/request"].update(agreementId=agreement, format="HttpData-PULL")
    del bases["POST transfers/request"]["dataAddress"]
    from datetime import UTC, datetime

    from connector.identity import vc

    credentials = {}
    for target, peer in ((provider, consumer), (consumer, provider)):
        credentials[target.participant.did] = (await peer.client.issue_credential(
            target.participant.did, "membership", {"dataSpace": "urn:tds:space:fuzz"}))["document"]
    capfd.readouterr()
    reports = []
    for target, peer in ((provider, consumer), (consumer, provider)):
        answered = "c" * 43  # a challenge the target never handed out
        extension_bases = {
            "POST tds/handshake": {  # with credentials beside it, as a node holding some sends it
                "selfDescription": peer.participant.self_description(datetime.now(UTC)), "challenge": "p" * 43,
                "presentation": vc.present([], holder=peer.participant.signer, domain=target.participant.did,
                                           challenge=answered, now=datetime.now(UTC))},
            "POST tds/usage-receipts": {"agreementId": agreement, "entries": [], "heads": []},
            "POST tds/revocations": {"agreementId": agreement, "reason": "fuzz"},
            "POST tds/credentials": {"credential": credentials[target.participant.did]},
            "POST tds/credentials/requests": {"kind": "region", "claims": {"region": "CN-GD"}},
            "POST tds/gossip": target.node.directory.view(target.participant.id).digest(),
            "POST tds/sandbox/queries": {"agreementId": agreement, "query": "SELECT count(*) FROM data",
                                         "parameters": {}},
            "POST tds/statements": {"@type": statements.STATEMENT_TYPE, "id": "urn:uuid:fuzz", "agreement": agreement,
                                    "provider": peer.participant.did, "consumer": target.participant.did,
                                    "period": {"label": "2026-11", "start": "2026-11-01T00:00:00Z",
                                               "end": "2026-11-02T00:00:00Z"},
                                    "receipts": {"first": 1, "last": 1, "head": "0" * 64, "uses": 1},
                                    "queries": [], "transfers": [], "lines": [], "total": "0",
                                    "proof": {"type": "DataIntegrityProof", "cryptosuite": "eddsa-jcs-2022",
                                              "verificationMethod": peer.participant.key_id,
                                              "proofValue": "z" + "1" * 86}},
            "POST tds/statements/answers": {"@type": statements.ACCEPTANCE_TYPE, "statement": "urn:uuid:fuzz",
                                            "agreement": agreement, "consumer": peer.participant.did,
                                            "statementDigest": "sha-256:" + "0" * 64},
            "POST tds/credentials/presentation": {"challenge": answered, "presentation": vc.present(
                [], holder=peer.participant.signer, domain=target.participant.did, challenge=answered,
                now=datetime.now(UTC))},
        }
        signers = {"agreed peer": Signer(peer.participant.keys.signing, peer.participant.key_id),
                   "stranger": stranger, "unsigned": None}
        fuzzer = DspFuzzer(target.public_url, target.participant.name, signers, pids,
                           {**bases, **extension_bases}, routes)
        reports.append(await asyncio.to_thread(fuzzer.run))

    failures = [f for r in reports for f in r.failures]
    statuses = sum((r.statuses for r in reports), Counter())
    assert failures == [], f"{len(failures)} failures, the first:\n\n" + "\n\n".join(failures[:5])
    assert failed_steps(capfd.readouterr().err) == []
    assert sum(statuses.values()) >= 2 * len(routes) * EXAMPLES * 0.9
    assert {200, 201, 400, 401, 404} <= set(statuses), statuses
