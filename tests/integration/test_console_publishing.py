"""The console's publishing pages on real nodes: an upload becomes an offered asset, a policy built from the
templates is previewed and saved, offers are added and deleted, and what a traversal, an oversized upload, a
path outside the data roots, bad options and another participant's token get."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import aiohttp
import pytest
from markupsafe import escape

from connector.http.console import publishing
from usage_policies import templates
from usage_policies.words import describe


def upload(fields: dict[str, str], content: bytes | None, filename: str = "qi 2026.csv") -> aiohttp.BytesPayload:
    """A multipart form as a browser sends it: the file's name as it is, quoted, not percent-encoded (aiohttp's
    FormData would encode it)."""
    boundary = "tds" + os.urandom(8).hex()
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
             + b"\r\n" for name, value in fields.items()]
    if content is not None:
        quoted = filename.replace('"', "%22")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                     "Content-Type: text/csv\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return aiohttp.BytesPayload(body, content_type=f"multipart/form-data; boundary={boundary}")


async def console(node, token: str, method: str, path: str, data=None) -> tuple[int, str, dict]:
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.node.management_url}{path}", data=data,
                                                        headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


def uploaded_files(node, name: str = "acme") -> list:
    root = node.data_dir / "files" / name / publishing.UPLOADS
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_an_uploaded_file_becomes_an_asset_that_peers_are_offered(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    content = os.urandom(50_000)
    title = "<script>alert(1)</script> QI"
    status, _, headers = await console(provider, provider.token, "POST", "/console/publishing/assets", upload(
        {"id": "qi-2026", "title": title, "description": "Quality inspection", "content_type": "",
         "data_class": "important", "keywords": "quality, 质量\uff0cinspection"}, content))
    assert status == 303 and headers["Location"] == "/console/publishing"
    [asset] = await provider.client.entries("assets")
    assert asset["id"] == "qi-2026" and asset["title"] == title and asset["contentType"] == "text/csv"
    assert asset["dataClass"] == "important" and asset["keywords"] == ["quality", "质量", "inspection"]
    [saved] = uploaded_files(provider)
    assert saved.name == "qi_2026.csv" and asset["dataAddress"] == {"type": "File", "path": str(saved)}
    assert hashlib.sha256(await asyncio.to_thread(saved.read_bytes)).digest() == hashlib.sha256(content).digest()

    # a policy from the form, then an offer naming the upload
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/policies",
                                 {"id": "open", "action": "save"})
    assert status == 303
    status, page, _ = await console(provider, provider.token, "GET", "/console/publishing/offers/new")
    assert status == 200 and 'name="assets" multiple' in page and '<option value="qi-2026">' in page
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/offers",
                                 {"id": "cd", "access": "open", "contract": "open", "assets": "qi-2026"})
    assert status == 303
    [offer] = await provider.client.entries("contract-definitions")
    assert offer["assets"] == ["qi-2026"] and offer["contractPolicyId"] == "open"
    catalog = await consumer.client.catalog(provider.public_url)
    [dataset] = catalog["dataset"]
    assert dataset["@id"].endswith(":qi-2026") and title in json.dumps(dataset, ensure_ascii=False)

    status, page, _ = await console(provider, provider.token, "GET", "/console/publishing")
    assert status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt; QI" in page and "<script>alert" not in page
    assert "qi_2026.csv" in page and 'data-offer="cd"' in page


async def test_a_policy_is_previewed_as_odrl_and_in_words_then_saved(nodes):
    provider = await nodes.start("acme")
    form = {"id": "rnd", "purposes": "R&D, safety", "max_uses": "3", "for_duration": "P30D",
            "no_export_outside": "CN", "log_uses": "1", "action": "preview"}
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/policies", form)
    expected = templates.policy_from_options(["R&D", "safety"], 3, "P30D", export_region="CN", log_uses=True)
    assert status == 200
    assert escape(json.dumps(expected, indent=2, ensure_ascii=False)) in page
    sentences = describe(expected, "en")
    assert sentences and all(escape(s) in page for s in sentences)
    assert 'value="R&amp;D, safety"' in page  # the form comes back as it was filled in
    assert await provider.client.entries("policies") == []  # a preview saves nothing

    status, _, headers = await console(provider, provider.token, "POST", "/console/publishing/policies",
                                       {**form, "action": "save"})
    assert status == 303 and headers["Location"] == "/console/publishing"
    [saved] = await provider.client.entries("policies")
    assert saved["id"] == "rnd"
    assert {k: v for k, v in saved["policy"].items() if k != "@id"} == expected

    status, page, _ = await console(provider, provider.token, "GET", "/console/publishing")
    assert all(escape(s) in page for s in sentences)


@pytest.mark.parametrize(("fields", "message"), [
    ({"id": "p", "max_uses": "0"}, "whole number, 1 or more"),
    ({"id": "p", "max_uses": "three"}, "whole number, 1 or more"),
    ({"id": "p", "for_duration": "thirty days"}, "not an xsd:duration"),
    ({"id": "", "action": "save"}, "Give the policy an id"),
    ({"id": "bad id!", "action": "save"}, "id"),
])
async def test_bad_policy_options_show_the_form_again_with_the_reason(nodes, fields, message):
    provider = await nodes.start("acme")
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/policies",
                                    {"action": "preview", **fields})
    assert status == 400 and message in page and 'id="policy-error"' in page and "Traceback" not in page
    assert await provider.client.entries("policies") == []


async def test_an_upload_named_as_a_path_is_refused_and_nothing_is_written(nodes):
    provider = await nodes.start("acme")
    for name in ("../../etc/x", "..\\..\\x", "/etc/x", ".."):
        status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                        upload({"id": "qi"}, b"data", filename=name))
        assert status == 400, name
        assert "plain name" in page and "<html" in page
    assert uploaded_files(provider) == [] and await provider.client.entries("assets") == []
    assert not (provider.data_dir.parent / "etc").exists() and not (provider.data_dir / "files" / "etc").exists()


async def test_an_upload_over_the_size_limit_is_a_413_page(nodes):
    provider = await nodes.start("acme", max_request_bytes=64 * 1024)
    status, page, headers = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                          upload({"id": "big"}, os.urandom(100_000)))
    assert status == 413 and headers["Content-Type"].startswith("text/html")
    assert "larger than this node accepts (65536 bytes)" in page
    assert uploaded_files(provider) == [] and await provider.client.entries("assets") == []
    status, page, _ = await console(provider, provider.token, "GET", "/console/publishing/assets/new")
    assert status == 200 and "at most 64.0 KiB" in page


async def test_uploads_together_are_bounded_by_the_vault_quota(nodes):
    """A hosted participant cannot fill the host's disk with uploads: together they count against its quota."""
    provider = await nodes.start("acme", vault_quota_bytes=150_000)
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                 upload({"id": "one"}, os.urandom(100_000)))
    assert status == 303
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                    upload({"id": "two"}, os.urandom(100_000)))
    assert status == 413 and "Uploads together may hold at most" in page
    assert [a["id"] for a in await provider.client.entries("assets")] == ["one"]
    assert len(uploaded_files(provider)) == 1
    # Deleting the asset deletes its uploaded file, and frees the room it took.
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/assets/one/delete", {})
    assert status == 303 and uploaded_files(provider) == []
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                 upload({"id": "two"}, os.urandom(100_000)))
    assert status == 303


async def test_uploads_sent_at_once_are_bounded_by_the_vault_quota_too(nodes):
    """Attack: send many uploads at once, so that each measures the uploads before the others are written."""
    provider = await nodes.start("acme", vault_quota_bytes=150_000)
    answers = await asyncio.gather(*(console(provider, provider.token, "POST", "/console/publishing/assets",
                                             upload({"id": f"a{i}"}, os.urandom(100_000))) for i in range(8)))
    assert sorted(status for status, _, _ in answers) == [303] + [413] * 7
    assert sum(f.stat().st_size for f in uploaded_files(provider)) == 100_000


async def test_a_path_must_lie_in_the_participants_data_roots(nodes):
    provider = await nodes.start("acme")
    for path in ("/etc/passwd", "../tds.toml", "../../acme/tds.toml"):
        status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                        upload({"id": "x", "path": path}, None))
        assert status == 400 and "<html" in page, path
    assert await provider.client.entries("assets") == []
    await asyncio.to_thread((provider.data_dir / "files" / "acme" / "inside.bin").write_bytes, b"x" * 100)
    status, _, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                 upload({"id": "inside", "path": "inside.bin"}, None))
    assert status == 303
    assert [a["id"] for a in await provider.client.entries("assets")] == ["inside"]
    # neither a file nor a path, or both: said so
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                    upload({"id": "none"}, None))
    assert status == 400 and "Upload a file or give the path" in page
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                    upload({"id": "both", "path": "inside.bin"}, b"x"))
    assert status == 400 and "not both" in page
    # an id the API refuses: its message, and the upload removed again
    status, page, _ = await console(provider, provider.token, "POST", "/console/publishing/assets",
                                    upload({"id": "bad id!"}, b"x"))
    assert status == 400 and "id" in page and uploaded_files(provider) == []


async def test_deleting_what_an_offer_names_is_refused_naming_the_offer(nodes):
    host = await nodes.start("acme")
    other = await nodes.host(host, "sme-one")
    await asyncio.to_thread((host.data_dir / "files" / "acme" / "a.bin").write_bytes, b"x" * 10)
    await host.client.add_asset({"id": "a", "dataAddress": {"type": "File", "path": "a.bin"}})
    await host.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await host.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open", assets=["a"])
    for kind, entry in (("policies", "open"), ("assets", "a")):
        status, page, _ = await console(host, host.token, "POST", f"/console/publishing/{kind}/{entry}/delete")
        assert status == 409, kind
        assert "Still in use" in page and 'id="references"' in page and "<code>cd</code>" in page
    # another participant of the node: none of these exist for it
    for kind, entry in (("policies", "open"), ("assets", "a"), ("offers", "cd")):
        status, page, _ = await console(host, other.token, "POST", f"/console/publishing/{kind}/{entry}/delete")
        assert status == 404 and "<html" in page, kind
    status, _, _ = await console(host, host.token, "POST", "/console/publishing/things/x/delete")
    assert status == 400
    status, _, _ = await console(host, host.token, "POST", "/console/publishing/offers/cd/delete")
    assert status == 303
    for kind, entry in (("policies", "open"), ("assets", "a")):
        status, _, _ = await console(host, host.token, "POST", f"/console/publishing/{kind}/{entry}/delete")
        assert status == 303, kind
    assert await host.client.entries("assets") == [] and await host.client.entries("policies") == []


@pytest.mark.parametrize(("raw", "expected"), [
    ("report.csv", "report.csv"),
    ("质量 数据.csv", "质量_数据.csv"),
    (".hidden", "hidden"),
    ("a<b>:c|d?.txt", "a_b_c_d_.txt"),
    ("...", None),
    ("-", "-"),
    ("../../etc/x", None),
    ("..\\x", None),
    ("/etc/passwd", None),
    ("..", None),
])
def test_upload_names_are_plain_names(raw, expected):
    assert publishing.upload_name(raw) == expected


def test_an_uploaded_file_another_asset_still_names_is_kept(tmp_path):
    own = tmp_path / "files" / "acme"
    folder = own / publishing.UPLOADS / "ab12"
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("x")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("y")

    def asset(path) -> dict:
        return {"dataAddress": {"type": "File", "path": str(path)}}

    publishing.remove_upload(own, asset(folder / "data.csv"), [asset(folder / "data.csv")])
    assert (folder / "data.csv").exists()          # another asset names it
    publishing.remove_upload(own, asset(outside), [])
    assert outside.exists()                         # not an upload: never touched
    publishing.remove_upload(own, {"dataAddress": {"type": "HttpData"}}, [])
    publishing.remove_upload(own, asset(folder / "data.csv"), [asset(outside)])
    assert not folder.exists()
