"""``tds policy add``'s price options, ``tds statements`` / ``tds statement …`` against a scripted management
client (no node), and ``tds statement verify FILE`` offline: what each prints, the body each sends, and the
one-line error (exit 2, nothing sent) for every bad value."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from nacl.signing import SigningKey

from connector import cli
from connector.identity import did as dids
from connector.identity import proof
from connector.protocol import statements
from usage_policies import pricing
from usage_policies import templates as T

NODE = ("--node", "http://127.0.0.1:1", "--token", "t")
STATEMENT = "urn:uuid:6c1f8a2e-0000-4000-8000-000000000001"
AGREEMENT = "urn:uuid:agreement-1"


class Scripted:
    """The management client: records each call, answers what the test gave it."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return self.answers.get(name)

        return call


def run(monkeypatch: pytest.MonkeyPatch, client: Scripted, *args: str) -> Result:
    monkeypatch.setattr(cli, "_call", lambda data_dir, node_url, token, fn, admin=False: asyncio.run(fn(client)))
    return CliRunner().invoke(cli.main, list(args))


# -- tds policy add with a price ----------------------------------------------------------------------------------

def added_policy(monkeypatch: pytest.MonkeyPatch, *options: str) -> dict[str, Any]:
    client = Scripted(add_policy={"id": "paid"})
    result = run(monkeypatch, client, "policy", "add", "paid", *options, *NODE)
    assert result.exit_code == 0, result.output
    [(name, (policy_id, body), _)] = client.calls
    assert (name, policy_id) == ("add_policy", "paid")
    return body  # type: ignore[no-any-return]


def test_the_users_example_puts_a_post_paid_price_per_use_in_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    body = added_policy(monkeypatch, "--purpose", "R&D", "--price-per-use", "2.50", "--currency", "CNY")
    assert body == T.policy_from_options(["R&D"], price=T.price_duty("2.50", "CNY"))
    [permission] = body["permission"]
    [duty] = permission["duty"]
    assert duty["action"] == "odrl:compensate"


def test_every_price_option_reaches_the_duty(monkeypatch: pytest.MonkeyPatch) -> None:
    body = added_policy(monkeypatch, "--price-per-gb", "0.80", "--currency", "CNY", "--tier", "100:0.50",
                        "--tier", "1000:0.30", "--rounding", "0.1 half-even", "--billing-period", "P1W")
    assert body["permission"][0]["duty"] == [T.price_duty("0.80", "CNY", per="gigabyte", period="P1W",
                                                          rounding="0.1 half-even", tiers=["100:0.50", "1000:0.30"])]


def test_a_prepaid_price_is_due_before_use(monkeypatch: pytest.MonkeyPatch) -> None:
    body = added_policy(monkeypatch, "--price-per-period", "100", "--currency", "CNY", "--prepaid")
    [duty] = body["permission"][0]["duty"]
    assert {"leftOperand": "odrl:event", "operator": "lt", "rightOperand": {"@id": "odrl:policyUsage"}} \
        in duty["constraint"]


def test_a_price_per_query_goes_on_the_sandboxs_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    body = added_policy(monkeypatch, "--sandbox", "--epsilon-per-query", "0.5", "--epsilon-total", "5",
                        "--price-per-query", "1.20", "--currency", "CNY")
    [permission] = body["permission"]
    assert permission["action"] == "odrl:aggregate"
    assert permission["duty"] == [T.price_duty("1.20", "CNY", per="query")]


@pytest.mark.parametrize(("options", "error"), [
    (("--price-per-use", "2.50"), "--price-per-use needs --currency CODE (e.g. CNY)"),
    (("--price-per-use", "-1", "--currency", "CNY"),
     "--price-per-use must be a plain non-negative decimal number, not '-1'"),
    (("--price-per-gb", "1e3", "--currency", "CNY"),
     "--price-per-gb must be a plain non-negative decimal number, not '1e3'"),
    (("--price-per-use", "2", "--price-per-gb", "3", "--currency", "CNY"),
     "give one price per policy, not --price-per-use and --price-per-gb"),
    (("--currency", "CNY", "--tier", "10:1"), "--currency, --tier describe a price: add --price-per-use, "
                                              "--price-per-query, --price-per-gb or --price-per-period AMOUNT"),
    (("--price-per-query", "1", "--currency", "CNY"),
     "--price-per-query prices the queries of the data sandbox: add --sandbox (and its options)"),
    (("--price-per-use", "1", "--currency", "CNY", "--rounding", "0.03 half-up"),
     "--rounding's quantum must be 1, 0.1, … or 0.000001, not 0.03"),
    (("--price-per-use", "1", "--currency", "CNY", "--rounding", "cents"),
     "--rounding must be '<quantum> <mode>' with mode one of half-up, half-even, up, down, ceiling, floor, not "
     "'cents'"),
    (("--price-per-use", "1", "--currency", "CNY", "--tier", "10"), "--tier: a price tier is '<from>:<unit price>', "
                                                                    "not '10'"),
    (("--price-per-use", "1", "--currency", "CNY", "--tier", "0:1"),
     "--tier: price tiers start at distinct quantities above 0 (at most 16)"),
    (("--price-per-use", "1", "--currency", "CNY", "--prepaid", "--tier", "5:1"),
     "--tier shapes the statements that settle a post-paid price; a --prepaid price is due before use: leave "
     "them out"),
    (("--price-per-use", "1", "--currency", "C NY"), "--currency must be a code such as CNY, not 'C NY'"),
])
def test_a_bad_price_option_is_one_readable_line_and_nothing_is_sent(
        monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...], error: str) -> None:
    client = Scripted()
    result = run(monkeypatch, client, "policy", "add", "paid", *options, *NODE)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error}\n")
    assert client.calls == []


def test_a_price_with_a_policy_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"permission": [{"action": "use"}]}))
    result = run(monkeypatch, Scripted(), "policy", "add", "paid", "--file", str(tmp_path / "p.json"),
                 "--price-per-use", "1", "--currency", "CNY", *NODE)
    assert result.exit_code == 2 and "with --file, write the compensate duty in the file" in result.stderr


# -- tds statements, tds statement … against a scripted client ---------------------------------------------------

SUMMARY = {"id": STATEMENT, "agreement": AGREEMENT, "role": "provider", "state": "delivered",
           "counterparty": "did:web:parts", "period": {"label": "2026-11", "start": "2026-11-01T00:00:00.000000Z",
                                                       "end": "2026-11-20T10:00:00.000000Z"},
           "currency": "CNY", "quantities": {"use": "12", "gigabyte": "1.5"},
           "lines": [{"basis": "use", "quantity": "12", "unitPrice": "2.50", "tiers": [], "amount": "30.00",
                      "currency": "CNY"},
                     {"basis": "gigabyte", "quantity": "1.5", "unitPrice": "1", "tiers": ["1:0.5"],
                      "amount": "1.25", "currency": "CNY"}],
           "total": "31.25", "share": None, "reason": "", "issued": "2026-11-20T10:00:00Z",
           "updated": "2026-11-20T10:00:01Z"}


def test_statements_lists_one_line_each_and_passes_the_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Scripted(statements=[SUMMARY])
    result = run(monkeypatch, client, "statements", "--agreement", AGREEMENT, "--period", "2026-11", "--role",
                 "provider", *NODE)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"{STATEMENT}  2026-11  provider  delivered  31.25 CNY  (12 uses, 1.5 GB)  "
                             f"agreement {AGREEMENT}\n")
    assert client.calls == [("statements", (), {"agreement": AGREEMENT, "period": "2026-11", "role": "provider"})]


def test_statements_json_is_the_apis_list(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(monkeypatch, Scripted(statements=[SUMMARY]), "statements", "--json", *NODE)
    assert result.exit_code == 0 and json.loads(result.stdout) == [SUMMARY]


@pytest.mark.parametrize(("args", "error"), [
    (("statements", "--period", "2026-13"), "--period: a period is written 2026-11, 2026-W48 or 2026-11-30, not "
                                            "'2026-13'"),
    (("statements", "--host-report", "--role", "provider"),
     "--host-report sums every hosted participant's statements: leave out --agreement and --role"),
    (("statement", "issue", "--agreement", AGREEMENT, "--until", "2026-11-20T10:00:00"),
     "--until must be 'now' or an ISO 8601 date-time with its time zone (2026-11-30T00:00:00Z), not "
     "'2026-11-20T10:00:00'"),
    (("statement", "dispute", STATEMENT, "--reason", "x" * 1001), "--reason must hold 1 to 1000 characters"),
    (("statement", "dispute", STATEMENT, "--reason", "  "), "--reason must hold 1 to 1000 characters"),
    (("participant", "share", "acme", "101"), "PERCENT must lie between 0 and 100"),
    (("participant", "share", "acme", "ten"), "PERCENT must be a plain non-negative decimal number, not 'ten'"),
])
def test_a_bad_value_is_refused_before_the_node_is_asked(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                                         error: str) -> None:
    client = Scripted()
    result = run(monkeypatch, client, *args, *NODE)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error}\n")
    assert client.calls == []


def test_statement_issue_says_what_was_billed(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Scripted(issue_statement=SUMMARY)
    result = run(monkeypatch, client, "statement", "issue", "--agreement", AGREEMENT, "--until", "now", *NODE)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"statement {STATEMENT} for agreement {AGREEMENT}, 2026-11 (2026-11-01T00:00:00.000000Z "
                             "to 2026-11-20T10:00:00.000000Z): 31.25 CNY for 12 uses, 1.5 GB; delivered\n")
    assert client.calls == [("issue_statement", (AGREEMENT,), {"until": "now"})]


@pytest.mark.parametrize(("message", "said"), [
    ('the billing period ends at 2027-01-01T00:00:00.000000Z, which has not passed; give until ("now" or a time) to '
     "close the stretch early",
     "the billing period ends at 2027-01-01T00:00:00.000000Z, which has not passed; give --until now (or a time) to "
     "close the stretch early"),
    ("there is nothing to bill up to 2026-11-01T00:00:00.000000Z", "there is nothing to bill up to "
     "2026-11-01T00:00:00.000000Z (--until)"),
])
def test_statement_issue_names_its_until_option_where_the_api_names_its_field(
        monkeypatch: pytest.MonkeyPatch, message: str, said: str) -> None:
    from connector.client import ClientError

    class Refusing(Scripted):
        async def issue_statement(self, *args: Any, **kwargs: Any) -> Any:
            raise ClientError(400, message, path="$.until")

    result = run(monkeypatch, Refusing(), "statement", "issue", "--agreement", AGREEMENT, *NODE)
    assert isinstance(result.exception, ClientError) and str(result.exception) == said


def test_statement_show_names_lines_receipts_share_and_the_disputes_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {**SUMMARY, "role": "consumer", "state": "disputed",
             "share": {"platform": "did:web:host", "percent": "10", "platformAmount": "3.13",
                       "providerAmount": "28.12"},
             "document": {"receipts": {"first": 1, "last": 14, "head": "sha-256:" + "ab" * 32, "uses": 12},
                          "previous": None},
             "answer": {"problems": [{"rule": "count", "detail": "the receipts 1 to 14 hold 11 permitted uses, not 12",
                                      "contested": ["1-14"], "expected": "11"}],
                        "consumerTotal": "28.75", "disputed": "2026-11-20T10:00:02Z"}}
    result = run(monkeypatch, Scripted(statement=found), "statement", "show", STATEMENT, *NODE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"statement {STATEMENT} (consumer)"
    assert "  receipts        1 to 14 (12 permitted uses; last entry sha-256:abababababababab…)" in lines
    assert "  line            12 uses at 2.50 CNY = 30.00 CNY" in lines
    assert "  line            1.5 GB at 1 CNY (tiers 1:0.5) = 1.25 CNY" in lines
    assert "  total           31.25 CNY" in lines
    assert "  platform share  10% to did:web:host: 3.13 CNY; the provider's 28.12 CNY" in lines
    assert "  answer          disputed 2026-11-20T10:00:02Z; the consumer's own total 28.75" in lines
    assert "  problem         count: the receipts 1 to 14 hold 11 permitted uses, not 12 (contests 1-14)" in lines


def test_statement_export_csv_writes_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    csv = "statement,agreement,period,basis,quantity,unit_price,amount,currency,state\r\n" \
          f"{STATEMENT},{AGREEMENT},2026-11,use,12,2.50,30.00,CNY,accepted\r\n"
    client = Scripted(export_statement_csv=csv)
    out = tmp_path / "s.csv"
    result = run(monkeypatch, client, "statement", "export", STATEMENT, "--format", "csv", "-o", str(out), *NODE)
    assert result.exit_code == 0 and result.stdout == f"statement {STATEMENT} written to {out} (csv)\n"
    assert out.read_text().splitlines() == csv.splitlines()
    assert client.calls == [("export_statement_csv", (STATEMENT,), {})]


def test_the_host_report_sums_each_participant(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"participants": [{"name": "acme", "did": "did:web:acme", "earned": {"CNY": "27.00"},
                                "platformShare": {"CNY": "3.00"}, "owes": {}, "statements": 2}],
              "platform": {"CNY": "3.00"}}
    client = Scripted(statements_report=report)
    result = run(monkeypatch, client, "statements", "--host-report", "--period", "2026-11", *NODE)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "statements of 2026-11",
        "  acme  earned 27.00 CNY  platform share 3.00 CNY  owes 0  (2 statements)",
        "  platform total 3.00 CNY"]
    assert client.calls == [("statements_report", ("2026-11",), {})]


# -- tds statement verify FILE (offline) --------------------------------------------------------------------------

def _party() -> tuple[SigningKey, str]:
    key = SigningKey.generate()
    return key, dids.did_key_for(bytes(key.verify_key))


def _signed(document: dict[str, Any], key: SigningKey, did: str) -> dict[str, Any]:
    return proof.sign(document, key, verification_method=dids.signing_key_id(did), created="2026-11-20T10:00:00Z")


def exported(*, answer: str | None = "accepted") -> dict[str, Any]:
    """A statement of 12 uses at 2.50 CNY between two did:key parties, with the consumer's signed *answer*."""
    (provider_key, provider), (consumer_key, consumer) = _party(), _party()
    term = pricing.PriceTerm(basis=pricing.Basis.USE, unit_price=pricing.parse_decimal("2.50", "price"),
                             currency="CNY")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    document = statements.build(
        statement_id=STATEMENT, agreement=AGREEMENT, provider=provider, consumer=consumer, start=start,
        end=datetime(2026, 11, 20, tzinfo=UTC), label="2026-11", previous=None, terms=[term],
        evidence=statements.Evidence(receipts=statements.ReceiptRange(first=1, last=14, head="sha-256:ab", uses=12)),
        issued=datetime(2026, 11, 20, tzinfo=UTC))
    signed = _signed(document, provider_key, provider)
    reply = None
    if answer == "accepted":
        reply = _signed(statements.acceptance(signed, accepted=datetime(2026, 11, 21, tzinfo=UTC)), consumer_key,
                        consumer)
    elif answer == "disputed":
        problem = statements.Problem(rule="count", detail="the receipts 1 to 14 hold 11 permitted uses, not 12",
                                     contested=("1-14",), expected="11")
        reply = _signed(statements.dispute(signed, [problem], disputed=datetime(2026, 11, 21, tzinfo=UTC),
                                           own_total="27.50"), consumer_key, consumer)
    return statements.bundle(signed, reply, {})


def verify(tmp_path: Path, document: Any) -> Result:
    path = tmp_path / "statement.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return CliRunner().invoke(cli.main, ["statement", "verify", str(path)])


def test_verify_prints_the_statement_its_answer_and_that_the_signatures_verify(tmp_path: Path) -> None:
    result = verify(tmp_path, exported())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"statement {STATEMENT}", f"  agreement  {AGREEMENT}", "  total      30.00 CNY",
        "  answer     accepted by the consumer", "  signatures verified"]


def test_verify_names_each_problem_of_a_dispute(tmp_path: Path) -> None:
    result = verify(tmp_path, exported(answer="disputed"))
    assert result.exit_code == 0, result.output
    assert "  answer     disputed by the consumer\n    count: the receipts 1 to 14 hold 11 permitted uses, not 12\n" \
        in result.stdout


def test_verify_json_of_an_unanswered_statement(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(exported(answer=None)))
    result = CliRunner().invoke(cli.main, ["statement", "verify", "--json", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"statement": STATEMENT, "agreement": AGREEMENT, "total": "30.00",
                                         "currency": "CNY", "answer": "none", "problems": [], "verified": True}


@pytest.mark.parametrize(("tamper", "reason"), [
    (lambda b: b["statement"].update(total="3.00"), "the provider's signature does not verify"),
    (lambda b: b["statement"]["lines"][0].update(quantity="1"), "the provider's signature does not verify"),
    (lambda b: b["answer"].update(total="1.00"), "the consumer's signature does not verify"),
    (lambda b: b.update(answer={**exported()["answer"]}), "the answer is not by the statement's consumer"),
    (lambda b: b.update({"@type": "Nothing"}), "not a usage statement or an exported statement"),
])
def test_verify_of_a_tampered_file_exits_1_with_the_reason(tmp_path: Path, tamper: Any, reason: str) -> None:
    bundle = exported()
    tamper(bundle)
    result = verify(tmp_path, bundle)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {tmp_path / 'statement.json'}: ") and reason in result.stderr, \
        result.stderr


def test_verify_of_a_file_that_is_not_json_is_a_usage_error(tmp_path: Path) -> None:
    result = verify(tmp_path, "{not json")
    assert result.exit_code == 2 and "is not a JSON file" in result.stderr


def test_participant_list_shows_a_platform_share(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"name": "acme", "did": "did:web:h", "legalName": "ACME Co.", "region": "CN-GD", "platformShare": None},
            {"name": "sme-one", "did": "did:web:h:sme-one", "legalName": "SME One", "region": "CN-GD-SZ",
             "platformShare": "10"}]
    result = run(monkeypatch, Scripted(participants=rows), "participant", "list", *NODE)
    assert result.stdout.splitlines() == ["acme  did:web:h  ACME Co.  CN-GD",
                                          "sme-one  did:web:h:sme-one  SME One  CN-GD-SZ  platform share 10%"]


def test_participant_share_sends_the_percent_with_the_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Scripted(set_platform_share={"name": "sme-one", "platformShare": "2.5"})
    with_admin: list[bool] = []

    def call(data_dir: Any, node_url: Any, token: Any, fn: Any, *, admin: bool = False) -> Any:
        with_admin.append(admin)
        return asyncio.run(fn(client))

    monkeypatch.setattr(cli, "_call", call)
    result = CliRunner().invoke(cli.main, ["participant", "share", "sme-one", "2.5%", *NODE])
    assert result.exit_code == 0 and result.stdout == "participant sme-one: platform share 2.5%\n"
    assert client.calls == [("set_platform_share", ("sme-one", "2.5"), {})] and with_admin == [True]
