"""Attack: a schema-driven fuzz of the management API, as its own tenant, another tenant, the node's admin
and a caller without a token.

schemathesis reads the OpenAPI document the node serves and, for every operation, generates requests from
it: its coverage cases (boundary values, missing and wrong-typed fields, methods the path does not have)
and a fixed number of examples per generation mode drawn by hypothesis with a fixed seed
(``derandomize``), plus a short table of hostile inputs schemathesis does not produce (other scripts'
digits in numbers, lone surrogates, NUL, invalid UTF-8). Each request is sent once with every identity.
Every answer must be no server error and must match the document: a documented status, a documented
media type, a body of the documented schema, documented headers, and 405 with ``Allow``.

Bounded so that it stays well under a minute on two cores: the fuzzer runs in a thread against a node in
this event loop, with the node's per-participant rate limit raised so that 429 does not hide the routes.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from connector.config import DspSection
from connector.http.management import PREFIX
from connector.testing import free_port

#: Examples hypothesis draws per operation and generation mode (positive, negative).
EXAMPLES = 6
#: Operations whose body names a peer the node will call: the fuzzer's peer is replaced by one of a fixed
#: set of loopback targets, so that the node never resolves or calls a host off this machine.
CALLS_PEERS = re.compile(rf"^POST {PREFIX}/(peers/verify|peers|catalog/query|negotiations|transfers|credentials/ask)$")
#: Inputs schemathesis does not generate: digits of other scripts (``str.isdigit`` accepts ``¹``, ``int``
#: refuses it), signs, exponents and overlong numbers in query parameters ...
ODD_NUMBERS = ["\u00b9", "\u00b2", "\u0663", "\uff11", "1e3", "-1", "+1", " 1", "1_0", "0x10", "9" * 40, "nan",
               "inf", ""]
#: ... and bodies that are not Unicode text, not an object, or nested too deep.
ODD_BODIES = [b'{"id": "\\ud800"}', b'{"\\udfff": 1}', b'{"id": "a\\u0000b"}', b"\xff\xfe\x00", b"[]", b"null",
              b'"x"', b"1e999", b"[" * 100 + b"]" * 100, b'{"id": ' + b"9" * 5000 + b"}", b""]


@dataclass
class Report:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, except a documented 502 of an operation that calls a peer (the loopback
    targets include a closed port and a participant that refuses unknown offers)."""
    if response.status_code == 502 and CALLS_PEERS.match(f"{case.operation.method.upper()} {case.operation.path}"):
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, unsupported_method]


class Fuzzer:
    def __init__(self, doc: dict[str, Any], base_url: str, identities: dict[str, str | None], peers: list[str],
                 protected: set[str]) -> None:
        self.schema = schemathesis.openapi.from_dict(doc)
        self.doc = doc
        self.base_url = base_url
        self.identities = identities
        self.peers = peers
        self.protected = protected
        self.session = requests.Session()
        self.report = Report()

    def run(self) -> Report:
        for result in self.schema.get_all_operations():
            operation = result.ok()
            generation = self.schema.config.generation_for(operation=operation, phase="coverage")
            for case in self.schema.iter_coverage_cases(
                operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                generation_config=generation,
            ):
                self.send(operation, case)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                self.generated(operation, mode)
            self.odd_inputs(operation)
        return self.report

    def generated(self, operation: Any, mode: GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            self.send(operation, case)

        fuzz()

    def send(self, operation: Any, case: Any) -> None:
        if CALLS_PEERS.match(operation.label) and isinstance(case.body, dict) and "peer" in case.body:
            case.body = {**case.body, "peer": self.peers[self.report.requests % len(self.peers)]}
        if case.method == "DELETE" and (case.path_parameters or {}).get("id") in self.protected:
            # Revoking a token the fuzzer sends, or removing a participant it acts as, would turn every later
            # request into a 401 or 404 and hide the routes; both are covered by their own tests.
            return
        query = case.query or {}
        if isinstance(query.get("wait"), (int, float)) or str(query.get("wait", "")).replace(".", "", 1).isdigit():
            # A long-poll on a process that exists could hold a request for up to two minutes.
            case.query = {**query, "wait": "0.2"}
        for who, token in self.identities.items():
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            case.headers = headers
            response = case.call(base_url=self.base_url, session=self.session, timeout=15)
            self.count(response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, BaseExceptionGroup) as exc:
                self.report.failures.append(f"{case.method} {case.formatted_path} as {who}: {str(exc)[:1500]}")

    def odd_inputs(self, operation: Any) -> None:
        documented = self.doc["paths"][operation.path][operation.method.lower()]
        url = self.base_url + re.sub(r"{\w+}", "odd", operation.path)
        params = [p["name"] for p in documented.get("parameters", [])
                  if p["in"] == "query" and p["schema"].get("type") in ("integer", "number")]
        sends: list[tuple[dict[str, str], bytes | None]] = [({name: odd}, None) for name in params
                                                            for odd in ODD_NUMBERS]
        if "requestBody" in documented:
            sends += [({}, body) for body in ODD_BODIES]
        for query, body in sends:
            for who, token in self.identities.items():
                headers = {"Content-Type": "application/json"}
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                response = self.session.request(operation.method.upper(), url, params=query, data=body,
                                                headers=headers, timeout=15)
                self.count(response.status_code)
                answer = response.json() if response.headers.get("Content-Type", "").startswith(
                    "application/json") else None
                readable = isinstance(answer, dict) and answer.get("error") and answer.get("message")
                if not (400 <= response.status_code < 500 and readable
                        and str(response.status_code) in documented["responses"]):
                    self.report.failures.append(f"{operation.label} as {who} with {query or body!r:.80}: "
                                                f"{response.status_code} {response.text[:300]}")

    def count(self, status: int) -> None:
        self.report.requests += 1
        self.report.statuses[status] += 1


async def test_fuzzing_the_management_api_finds_no_server_error_and_no_undocumented_answer(nodes):
    host = await nodes.start("acme", management_rate_per_s=1e6, management_burst=10**6, dsp_rate_per_s=1e6,
                             dsp_burst=10**6, dsp=DspSection(unknown_peer_rate_per_s=1e6, unknown_peer_burst=10**6))
    other = await nodes.host(host, "sme-one")
    async with aiohttp.ClientSession() as s, s.get(f"{host.node.management_url}{PREFIX}/openapi.json") as r:
        doc = await r.json()
    identities = {"own": host.token, "other tenant": other.token, "admin": host.admin_token, "none": None}
    protected = {t["id"] for t in [*await host.client.tokens(), *await other.client.tokens()]}
    protected |= {host.participant.name, other.name}
    # Loopback only: a hosted participant (answers), the node's own participant, a closed port, and peers
    # that are not URLs at all.
    peers = [other.public_url, str(host.participant.base_url), f"http://127.0.0.1:{free_port()}", "not a url",
             "did:web:127.0.0.1%3A1", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"]

    report = await asyncio.to_thread(Fuzzer(doc, host.node.management_url, identities, peers, protected).run)

    assert report.failures == [], f"{len(report.failures)} failures, the first:\n\n" + "\n\n".join(
        report.failures[:5])
    assert report.requests > 5000 and {200, 201, 204, 400, 401, 403, 404, 405, 409} <= set(report.statuses), (
        report.statuses)
    assert (await host.client.participant())["name"] == "acme"  # the fuzzer's own token survived
