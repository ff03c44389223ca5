"""An async client for the management API. The CLI, the demo and the examples all use it."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from connector.bootstrap import read_token
from connector.config import is_loopback_host, load_config, management_url_of
from connector.errors import ConfigError

#: Where the management API's routes start on its listener.
PREFIX = "/api/management/v1"


class ClientError(Exception):
    """The management API refused a call or could not be reached."""

    def __init__(self, status: int, message: str, path: str | None = None, body: Any = None) -> None:
        super().__init__(f"{message} (field {path})" if path else message)
        self.status = status
        self.message = message
        self.path = path
        self.body = body


#: Where the TLS library's reason goes in the message about a certificate that failed the check.
_REASON = "\x00reason\x00"


def ca_context(ca: str | Path) -> ssl.SSLContext:
    """A client context trusting the CAs in the PEM file *ca* alone (a private CA's certificate, say)."""
    try:
        # With a CA file given, the default context loads no system certificates (ssl.create_default_context).
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the CA file {ca}: cannot load it as PEM certificates: {exc}", path="ca") from exc


def pinned_context(cert: str | Path, field: str) -> ssl.SSLContext:
    """A client context that trusts exactly the first certificate of the PEM chain *cert*, whatever name it
    carries: a client on the node's own machine checks that the listener presents the certificate the node's
    config names (its name may not be the loopback address connected to, its CA not in the system store). Only
    that certificate passes (it is the sole trust anchor, and one that is no CA issues no other), within its
    validity period."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    try:
        text = Path(cert).read_text(encoding="ascii")
        first = text[text.index(begin):text.index(end) + len(end)]
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=first)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {Path(cert).name}: {exc.strerror}", path=field) from exc
    except (ValueError, ssl.SSLError) as exc:  # no PEM certificate in it (or not ASCII)
        raise ConfigError(f"{field}: {Path(cert).name} holds no PEM certificate", path=field) from exc
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the server's own certificate as the trust anchor
    return context


def same_listener(url: str, other: str) -> bool:
    """Whether two management URLs name the same listener: scheme, host and port (loopback names and
    addresses taken as one; the API's prefix and a trailing slash ignored)."""

    def key(u: str) -> tuple[str, str, int | None]:
        parts = urlsplit(u.strip())
        try:
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        except ValueError:  # a port that is not a number: a URL no listener has
            return (u, "", None)
        host = (parts.hostname or "").lower()
        return parts.scheme.lower(), "loopback" if is_loopback_host(host) else host, port

    return key(url) == key(other)


class ManagementClient:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0, ca: str | Path | None = None) -> None:
        """A client on the management listener at *base_url* acting with *token*. Over https the listener's
        certificate is checked against the CAs in the PEM file *ca* alone, or the system store without it."""
        #: The listener's URL; the API's own prefix, if given with it (copied from `tds info`), is not repeated.
        self.base_url = base_url.rstrip("/").removesuffix(PREFIX)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        #: How the listener's certificate is checked (True: the system store), and what a certificate that fails
        #: the check is, for the error.
        self._ssl: ssl.SSLContext | bool = ca_context(ca) if ca is not None else True
        trusted = f"the CAs in {ca}" if ca is not None else "the system's CAs"
        self._untrusted = (f"a certificate not trusted by {trusted}{_REASON}: give the CA certificate that issued "
                           "it (tds … --ca FILE, or TDS_CA)")

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, admin: bool = False, ca: str | Path | None = None) -> ManagementClient:
        """A client for the node in *data_dir* with its first participant's token, or the admin token. When its
        management listener serves HTTPS, it must present the certificate the folder's config names (or, with
        *ca*, one those CAs issued for the listener's address)."""
        config = load_config(data_dir)
        client = cls(management_url_of(config, to_connect=True), read_token(data_dir, admin=admin), ca=ca)
        files = config.management_tls_files
        if files is not None and ca is None:
            field = "node.management_tls_cert" if config.node.management_tls_cert else "node.tls_cert"
            client._ssl = pinned_context(files[0], field)
            client._untrusted = (f"a certificate other than the one {field} names{_REASON} (renewed since the node "
                                 "started? restart it; or give the CA that issued it: tds … --ca FILE)")
        return client

    def with_token(self, token: str, *, timeout_s: float | None = None) -> ManagementClient:
        """A client on the same listener, its certificate checked the same way, acting with *token*."""
        other = ManagementClient(self.base_url, token, timeout_s=timeout_s or self._timeout.total or 30.0)
        other._ssl, other._untrusted = self._ssl, self._untrusted
        return other

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """How this client checks the listener's certificate (for a raw request to the same listener)."""
        return self._ssl

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers,
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session

    def _unreachable(self, exc: aiohttp.ClientConnectionError) -> ClientError:
        """What a connection that failed says, in one line: a certificate not trusted names the way out."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            error = exc.certificate_error
            reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or str(error)
            return ClientError(0, f"the node's management API at {self.base_url} presented "
                                  + self._untrusted.replace(_REASON, f" ({reason})" if reason else ""))
        if isinstance(exc, aiohttp.ClientSSLError):
            return ClientError(0, f"cannot open HTTPS to the node's management API at {self.base_url} "
                                  f"({getattr(exc, 'strerror', None) or exc}); if it serves plain http, give an "
                                  "http:// URL")
        if isinstance(exc, aiohttp.ServerDisconnectedError) and self.base_url.startswith("http://"):
            return ClientError(0, f"cannot reach the node's management API at {self.base_url}: the connection was "
                                  "closed without an answer; if it serves HTTPS, give an https:// URL")
        return ClientError(0, f"cannot reach the node's management API at {self.base_url}: {exc}")

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        """The route's JSON answer (*text*: its body as text, e.g. CSV); a refusal raises :class:`ClientError`."""
        url = f"{self.base_url}{PREFIX}{path}"
        try:
            async with self._open().request(method, url, json=body) as resp:
                raw = await resp.read()
                if text and resp.status < 400:
                    return raw.decode("utf-8", errors="replace")
                try:
                    data = json.loads(raw) if raw else None
                except ValueError:  # not the node's API answering (another server on that port, a proxy's page)
                    data = None
                if resp.status >= 400:
                    data = data if isinstance(data, dict) else {}
                    message = data.get("message") or "; ".join(data.get("reasons", []))
                    if not message or (resp.status == 404 and message == resp.reason):
                        # No reason of the node's own: the URL is not (a route of) its management API.
                        message = (f"{resp.status} {resp.reason} from {url}: not a route of a TDS node's management "
                                   f"API (is {self.base_url} the node's management URL? `tds info --dir DIR` prints "
                                   "it)")
                    raise ClientError(resp.status, str(message), data.get("path"), body=data)
                return data
        except TimeoutError as exc:  # aiohttp's time limits are TimeoutErrors, some also connection errors
            raise ClientError(0, f"no answer from the node's management API within {self._timeout.total:g} s "
                                 f"({method} {url}); the node may still be working on the request") from exc
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from exc

    # hosting (admin token)

    async def add_participant(self, name: str, *, legal_name: str, region: str, industry: str = "",
                              contact: str = "", did: str | None = None) -> dict[str, Any]:
        """Host a participant; the answer holds its first token (shown once)."""
        body: dict[str, Any] = {"name": name, "legalName": legal_name, "region": region, "industry": industry,
                                "contact": contact}
        if did is not None:
            body["did"] = did
        return await self._call("POST", "/participants", body)  # type: ignore[no-any-return]

    async def participants(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/participants")  # type: ignore[no-any-return]

    async def remove_participant(self, name: str) -> dict[str, Any]:
        """Stop hosting participant *name* and delete all it has on the node (irreversible)."""
        return await self._call("DELETE", f"/participants/{name}")  # type: ignore[no-any-return]

    async def suspend_participant(self, name: str, reason: str = "") -> dict[str, Any]:
        """Suspend participant *name* (admin): not served, its tokens refused, nothing deleted."""
        return await self._call("POST", f"/participants/{name}/suspend",  # type: ignore[no-any-return]
                                {"reason": reason})

    async def resume_participant(self, name: str) -> dict[str, Any]:
        """Serve a suspended participant again (admin)."""
        return await self._call("POST", f"/participants/{name}/resume")  # type: ignore[no-any-return]

    async def rotate_keys(self, participant: str | None = None) -> dict[str, Any]:
        """Rotate the keys of *participant* (admin token), or of the token's own participant."""
        path = f"/participants/{participant}/keys/rotate" if participant else "/keys/rotate"
        return await self._call("POST", path)  # type: ignore[no-any-return]

    # the participant's own tokens

    async def create_token(self, application: str) -> dict[str, Any]:
        return await self._call("POST", "/tokens", {"application": application})  # type: ignore[no-any-return]

    async def tokens(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/tokens")  # type: ignore[no-any-return]

    async def revoke_token(self, token_id: str) -> None:
        await self._call("DELETE", f"/tokens/{token_id}")

    # the node's metrics (admin token for the tokens; admin or metrics token to read them)

    async def create_metrics_token(self, application: str) -> dict[str, Any]:
        """A token that reads the node's ``/metrics`` and nothing else (its value shown once)."""
        return await self._call("POST", "/metrics/tokens", {"application": application})  # type: ignore[no-any-return]

    async def metrics_tokens(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/metrics/tokens")  # type: ignore[no-any-return]

    async def revoke_metrics_token(self, token_id: str) -> None:
        await self._call("DELETE", f"/metrics/tokens/{token_id}")

    async def metrics(self) -> str:
        """The node's Prometheus metrics (text exposition format)."""
        try:
            async with self._open().get(f"{self.base_url}/metrics") as resp:
                text = await resp.text()
                if resp.status >= 400:
                    data = json.loads(text) if text.startswith("{") else {}
                    raise ClientError(resp.status, str(data.get("message") or resp.reason))
                return text
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from exc

    async def participant(self) -> dict[str, Any]:
        return await self._call("GET", "/participant")  # type: ignore[no-any-return]

    async def verify_peer(self, peer: str) -> dict[str, Any]:
        return await self._call("POST", "/peers/verify", {"peer": peer})  # type: ignore[no-any-return]

    async def peers(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/peers"))["peers"]  # type: ignore[no-any-return]

    async def add_peer(self, peer: str) -> dict[str, Any]:
        """Verify *peer* (a URL or a did:web) by handshake and add it to this participant's directory."""
        return (await self._call("POST", "/peers", {"peer": peer}))["entry"]  # type: ignore[no-any-return]

    async def directory(self) -> list[dict[str, Any]]:
        """The participants this participant knows of (handshakes, bootstrap peers, gossip)."""
        return (await self._call("GET", "/directory"))["entries"]  # type: ignore[no-any-return]

    # catalog entries

    async def add_asset(self, asset: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/assets", asset)  # type: ignore[no-any-return]

    async def add_policy(self, policy_id: str, policy: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/policies", {"id": policy_id, "policy": policy})  # type: ignore[no-any-return]

    async def add_contract_definition(
        self, definition_id: str, *, access_policy_id: str, contract_policy_id: str, assets: list[str]
    ) -> dict[str, Any]:
        body = {"id": definition_id, "accessPolicyId": access_policy_id, "contractPolicyId": contract_policy_id,
                "assets": assets}
        return await self._call("POST", "/contract-definitions", body)  # type: ignore[no-any-return]

    async def entries(self, kind: str) -> list[dict[str, Any]]:
        """``kind``: assets, policies or contract-definitions."""
        return await self._call("GET", f"/{kind}")  # type: ignore[no-any-return]

    async def delete_entry(self, kind: str, entry_id: str) -> None:
        """Delete an entry of *kind*; 409 (naming them) while something still needs it."""
        await self._call("DELETE", f"/{kind}/{_segment(entry_id)}")

    # peers' catalogs, negotiations, agreements

    async def catalog(self, peer: str) -> dict[str, Any]:
        return await self._call("POST", "/catalog/query", {"peer": peer})  # type: ignore[no-any-return]

    async def negotiate(self, peer: str | None, offer_id: str) -> dict[str, Any]:
        """Negotiate *offer_id* with *peer*; without a peer, with the provider of that offer in the catalog cache."""
        body = {"offerId": offer_id, **({"peer": peer} if peer else {})}
        return await self._call("POST", "/negotiations", body)  # type: ignore[no-any-return]

    # federated search

    async def search(self, q: str = "", *, region: str = "", provider: str = "", data_class: str = "",
                     industry: str = "", features: tuple[str, ...] | list[str] = (), limit: int = 50,
                     offset: int = 0) -> dict[str, Any]:
        """Offers in this participant's catalog cache matching the words and filters given."""
        params: list[tuple[str, str]] = [(k, v) for k, v in (
            ("q", q), ("region", region), ("provider", provider), ("dataClass", data_class),
            ("industry", industry)) if v]
        params += [("feature", f) for f in features]
        params += [("limit", str(limit)), ("offset", str(offset))]
        return await self._call("GET", f"/search?{urlencode(params)}")  # type: ignore[no-any-return]

    async def crawl(self) -> dict[str, Any]:
        """Crawl the known peers' catalogs now; what the crawl did."""
        return await self._call("POST", "/search/crawl")  # type: ignore[no-any-return]

    async def crawls(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/search/crawls")  # type: ignore[no-any-return]

    async def negotiation(self, negotiation_id: str, *, wait_s: float | None = None) -> dict[str, Any]:
        query = f"?wait={wait_s}" if wait_s is not None else ""
        return await self._call("GET", f"/negotiations/{negotiation_id}{query}")  # type: ignore[no-any-return]

    async def negotiations(self, state: str | None = None) -> list[dict[str, Any]]:
        query = f"?state={state}" if state else ""
        return await self._call("GET", f"/negotiations{query}")  # type: ignore[no-any-return]

    async def terminate_negotiation(self, negotiation_id: str, reason: str) -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/negotiations/{negotiation_id}/terminate", {"reason": reason}
        )

    async def agreements(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        """Every agreement with its state (revoked ones with the reason and when), or those in *states*."""
        query = f"?{urlencode({'state': ','.join(states)})}" if states else ""
        return await self._call("GET", f"/agreements{query}")  # type: ignore[no-any-return]

    async def use(self, agreement_id: str, use_id: str, *, action: str = "use", purpose: str = "",
                  deliver: bool = False) -> dict[str, Any]:
        """Decide, count and log one use (``deliver=False``: a counted use without delivery, no data
        returned). A deny comes back as a dict with ``decision: deny`` and the reasons, not as an error."""
        body = {"agreementId": agreement_id, "useId": use_id, "action": action, "purpose": purpose,
                "deliver": deliver}
        return await self._decision(body)

    async def check_use(self, agreement_id: str, *, action: str = "use", purpose: str = "") -> dict[str, Any]:
        """A dry run: what a use would be decided now (``dryRun``), nothing counted or logged. A deny comes back
        as a dict with ``decision: deny`` and the reasons, not as an error."""
        return await self._decision({"agreementId": agreement_id, "action": action, "purpose": purpose,
                                     "dryRun": True})

    async def _decision(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._call("POST", "/usage", body)  # type: ignore[no-any-return]
        except ClientError as exc:
            if exc.status == 403 and exc.body is not None:
                return exc.body
            raise

    async def use_data(self, agreement_id: str, use_id: str, *, action: str = "use", purpose: str = "",
                       chunk_size: int = 1 << 20, decision: dict[str, str] | None = None) -> Any:
        """Yield the data of a permitted use in chunks; raise :class:`ClientError` (403) on a deny. *decision*, if
        given, receives the answer's ``X-TDS-…`` headers (the use's log entry; names in lower case) before the
        first chunk."""
        body = {"agreementId": agreement_id, "useId": use_id, "action": action, "purpose": purpose,
                "deliver": True}
        try:
            answer = await self._open().post(f"{self.base_url}/api/management/v1/usage", json=body)
        except aiohttp.ClientConnectorError as exc:  # nothing was sent: the node is not there
            raise self._unreachable(exc) from exc
        async with answer as resp:
            if resp.status != 200 or resp.content_type == "application/json":
                data = json.loads(await resp.read() or b"{}")
                raise ClientError(resp.status, "; ".join(data.get("reasons", [])) or str(data.get("message")),
                                  data.get("path"), body=data)
            if decision is not None:
                decision.update({k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("x-tds-")})
            async for chunk in resp.content.iter_chunked(chunk_size):
                yield chunk

    async def usage(self, agreement_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/usage/{agreement_id}")  # type: ignore[no-any-return]

    async def usage_log(self, agreement_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/usage/{agreement_id}/log")  # type: ignore[no-any-return]

    async def revoke(self, agreement_id: str, reason: str) -> dict[str, Any]:
        return await self._call("POST", f"/agreements/{agreement_id}/revoke", {"reason": reason})  # type: ignore[no-any-return]

    async def usage_report(self, agreement_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/agreements/{agreement_id}/usage-report")  # type: ignore[no-any-return]

    async def agreement_evidence(self, agreement_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/agreements/{agreement_id}/evidence")  # type: ignore[no-any-return]

    async def agreement(self, agreement_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/agreements/{agreement_id}")  # type: ignore[no-any-return]

    # the data sandbox

    async def query(self, agreement_id: str, query: str = "", *, template_id: str | None = None,
                    parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Ask the provider of *agreement_id* an aggregate query of its data sandbox (free-form SQL, or one of the
        agreement's templates with its parameters): ``{"queryId", "result", "document", "budget"}``, the result as
        the provider signed it, its signature verified by this node. A refusal is a :class:`ClientError` whose
        ``body`` names the ``rule``."""
        body: dict[str, Any] = {"agreementId": agreement_id, "query": query}
        if template_id is not None:
            body["templateId"] = template_id
        if parameters:
            body["parameters"] = parameters
        return await self._call("POST", "/queries", body)  # type: ignore[no-any-return]

    # transfers

    async def start_transfer(self, agreement_id: str, peer: str | None = None, *, push: bool = False
                             ) -> dict[str, Any]:
        body: dict[str, Any] = {"agreementId": agreement_id}
        if peer:
            body["peer"] = peer
        if push:
            body["push"] = True
        return await self._call("POST", "/transfers", body)  # type: ignore[no-any-return]

    async def transfer(self, transfer_id: str, *, wait_s: float | None = None) -> dict[str, Any]:
        query = f"?wait={wait_s}" if wait_s is not None else ""
        return await self._call("GET", f"/transfers/{transfer_id}{query}")  # type: ignore[no-any-return]

    async def transfers(self, state: str | None = None) -> list[dict[str, Any]]:
        query = f"?state={state}" if state else ""
        return await self._call("GET", f"/transfers{query}")  # type: ignore[no-any-return]

    async def transfer_bundle(self, transfer_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/transfers/{transfer_id}/bundle")  # type: ignore[no-any-return]

    async def transfer_action(self, transfer_id: str, action: str, reason: str = "") -> dict[str, Any]:
        """``action``: suspend, resume or terminate."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/transfers/{transfer_id}/{action}", {"reason": reason}
        )

    # settlement statements (post-paid prices, ``connector.protocol.statements``)

    async def statements(self, *, agreement: str | None = None, period: str | None = None,
                         role: str | None = None) -> list[dict[str, Any]]:
        """This participant's statements (as provider and as consumer), newest first; narrowed to one
        *agreement*, one *period* label (``2026-11``) or one *role* (provider, consumer)."""
        params = {k: v for k, v in (("agreement", agreement), ("period", period), ("role", role)) if v}
        query = f"?{urlencode(params)}" if params else ""
        return (await self._call("GET", f"/statements{query}"))["statements"]  # type: ignore[no-any-return]

    async def issue_statement(self, agreement_id: str, *, until: str | None = None) -> dict[str, Any]:
        """Close the agreement's open stretch (as its provider) and send the consumer the signed statement:
        *until* ``"now"`` or an ISO 8601 time; None: the current billing period, once it has ended."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", "/statements", {"agreement": agreement_id, "until": until})

    async def statement(self, statement_id: str) -> dict[str, Any]:
        """One statement: its summary, the signed ``document`` and the signed ``answer`` (or None)."""
        return await self._call("GET", f"/statements/{_segment(statement_id)}")  # type: ignore[no-any-return]

    async def accept_statement(self, statement_id: str) -> dict[str, Any]:
        """Countersign a received statement (as its consumer)."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/statements/{_segment(statement_id)}/accept")

    async def dispute_statement(self, statement_id: str, reason: str) -> dict[str, Any]:
        """Dispute a received statement (as its consumer), giving the *reason*."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/statements/{_segment(statement_id)}/dispute", {"reason": reason})

    async def export_statement(self, statement_id: str) -> dict[str, Any]:
        """The statement, its answer and both parties' DID documents: what ``tds statement verify`` checks
        offline."""
        return await self._call(  # type: ignore[no-any-return]
            "GET", f"/statements/{_segment(statement_id)}/export?format=json")

    async def export_statement_csv(self, statement_id: str) -> str:
        """The statement's lines as CSV, for accounting."""
        return await self._call(  # type: ignore[no-any-return]
            "GET", f"/statements/{_segment(statement_id)}/export?format=csv", text=True)

    async def statements_report(self, period: str | None = None) -> dict[str, Any]:
        """(admin token) What each hosted participant earned and owes, and the platform's share, over the
        statements of *period* (all periods without it)."""
        query = f"?{urlencode({'period': period})}" if period else ""
        return await self._call("GET", f"/statements/report{query}")  # type: ignore[no-any-return]

    async def set_platform_share(self, name: str, percent: str) -> dict[str, Any]:
        """(admin token) The platform's share, in percent, of what hosted participant *name* earns as a
        provider, shown on its statements from now on."""
        return await self._call(  # type: ignore[no-any-return]
            "PUT", f"/participants/{_segment(name)}/platform-share", {"percent": percent})

    # credentials: issued, held, holders' requests, the trust list, peers' claims

    async def credentials(self) -> dict[str, Any]:
        """``{"issued": [...], "held": [...]}``: what this participant issued (with status) and holds."""
        return await self._call("GET", "/credentials")  # type: ignore[no-any-return]

    async def issue_credential(self, holder: str, kind: str, claims: dict[str, Any], *,
                               valid_until: str | None = None) -> dict[str, Any]:
        """Issue a credential (not delivered yet: :meth:`deliver_credential`); the answer holds the document."""
        body: dict[str, Any] = {"holder": holder, "kind": kind, **claims}
        if valid_until is not None:
            body["validUntil"] = valid_until
        return await self._call("POST", "/credentials/issued", body)  # type: ignore[no-any-return]

    async def issued_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/credentials/issued/{_segment(credential_id)}")  # type: ignore[no-any-return]

    async def deliver_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/credentials/issued/{_segment(credential_id)}/deliver")

    async def revoke_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/credentials/issued/{_segment(credential_id)}/revoke")

    async def import_credential(self, document: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/credentials/held", {"credential": document})  # type: ignore[no-any-return]

    async def held_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/credentials/held/{_segment(credential_id)}")  # type: ignore[no-any-return]

    async def remove_credential(self, credential_id: str) -> None:
        await self._call("DELETE", f"/credentials/held/{_segment(credential_id)}")

    async def offered_credentials(self) -> list[dict[str, Any]]:
        """Credentials offered to this participant, waiting for its decision (never presented)."""
        return await self._call("GET", "/credentials/offered")  # type: ignore[no-any-return]

    async def offered_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "GET", f"/credentials/offered/{_segment(credential_id)}")

    async def accept_credential(self, credential_id: str) -> dict[str, Any]:
        """Hold an offered credential; the answer is the held one."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/credentials/offered/{_segment(credential_id)}/accept")

    async def decline_credential(self, credential_id: str) -> None:
        await self._call("POST", f"/credentials/offered/{_segment(credential_id)}/decline")

    async def credential_requests(self, state: str = "pending") -> list[dict[str, Any]]:
        """Requests holders sent this participant: pending, approved, rejected or all."""
        return await self._call("GET", f"/credentials/requests?state={state}")  # type: ignore[no-any-return]

    async def approve_credential_request(self, request_id: str, *, valid_until: str | None = None
                                         ) -> dict[str, Any]:
        body = {"validUntil": valid_until} if valid_until is not None else {}
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/credentials/requests/{_segment(request_id)}/approve", body)

    async def reject_credential_request(self, request_id: str, reason: str = "") -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "POST", f"/credentials/requests/{_segment(request_id)}/reject", {"reason": reason})

    async def ask_credential(self, issuer: str, kind: str, claims: dict[str, Any]) -> dict[str, Any]:
        """Ask *issuer* (a DID or URL) for a credential about this participant."""
        return await self._call(  # type: ignore[no-any-return]
            "POST", "/credentials/ask", {"peer": issuer, "kind": kind, **claims})

    async def trust_list(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/trust")  # type: ignore[no-any-return]

    async def trust_issuer(self, issuer: str, claims: list[str], spaces: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"issuer": issuer, "claims": claims}
        if spaces:
            body["spaces"] = spaces
        return await self._call("POST", "/trust", body)  # type: ignore[no-any-return]

    async def distrust_issuer(self, issuer: str) -> None:
        await self._call("DELETE", f"/trust/{_segment(issuer)}")

    async def peer_claims(self, did: str | None = None) -> list[dict[str, Any]]:
        """The claims peers have shown this participant (one peer's, given its DID)."""
        query = f"?did={quote(did, safe='')}" if did else ""
        return await self._call("GET", f"/peers/claims{query}")  # type: ignore[no-any-return]


def _segment(value: str) -> str:
    """One path segment, percent-encoded (ids and DIDs hold ':' and '%')."""
    return quote(value, safe="")
