"""The vault encrypted at rest: ciphertext on disk, plaintext only through the usage API, deletion by key."""

from __future__ import annotations

import os
import stat

import aiohttp
import pytest

from connector.client import ClientError
from connector.errors import StorageError
from connector.payload import vaultfile
from connector.services import vault
from connector.testing import eventually

MARKER = b"MARKER-QI-2026 part A-17 defects 0;"
SIZE = 3 * 1024 * 1024 + 123  # four chunks of 1 MiB, the last one short
OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def pulled(provider, consumer, content=None):
    """Publish *content* on the provider, negotiate, pull: (agreement id, plaintext, vault file, transfer)."""
    content = content if content is not None else (MARKER * (SIZE // len(MARKER) + 1))[:SIZE]
    path = provider.data_dir / "files" / provider.participant.name / "qi.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    await provider.client.add_asset({"id": "qi-2026", "contentType": "text/csv",
                                     "dataAddress": {"type": "File", "path": "qi.csv"}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi-2026"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(negotiation["id"], wait_s=10))["agreement"]["@id"]
    started = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    return agreement, content, consumer.data_dir / final["vaultPath"], final


async def released(consumer, agreement, use_id):
    return b"".join([c async for c in consumer.client.use_data(agreement, use_id)])


async def test_the_vault_file_is_ciphertext_and_the_usage_api_releases_the_plaintext(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, content, stored, _ = await pulled(provider, consumer)
    raw = stored.read_bytes()
    assert raw.startswith(vaultfile.MAGIC) and vaultfile.parse_header(raw).chunk_size == 1024 * 1024
    assert MARKER[:14] not in raw and raw[vaultfile.HEADER_SIZE:][:SIZE] != content
    assert len(raw) == vaultfile.sealed_size(1024 * 1024, SIZE)
    key_file = stored.parent / vault.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    bundle = stored.with_name(stored.name + ".bundle.json")
    assert bundle.exists()  # the evidence stays readable: manifest, signed envelope, DID document
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {consumer.token}"}) as s, s.post(
            f"{consumer.node.management_url}/api/management/v1/usage",
            json={"agreementId": agreement, "useId": "u0", "deliver": True}) as r:
        assert r.status == 200 and r.headers["X-TDS-Decision"] == "permit" and r.headers["X-TDS-Log-Seq"] == "1"
        assert int(r.headers["Content-Length"]) == SIZE and r.headers["Content-Type"] == "application/octet-stream"
        assert await r.read() == content


async def test_an_empty_payload_is_sealed_too(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer, content=b"")
    assert stored.stat().st_size == vaultfile.sealed_size(1024 * 1024, 0)
    assert await released(consumer, agreement, "u0") == b""


@pytest.mark.parametrize("where", ["first chunk", "last chunk"])
async def test_a_tampered_file_is_refused_before_anything_is_released_or_counted(nodes, where):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer)
    raw = bytearray(stored.read_bytes())
    raw[vaultfile.HEADER_SIZE + 10 if where == "first chunk" else -3] ^= 0x01
    stored.write_bytes(bytes(raw))
    with pytest.raises(ClientError) as info:
        await released(consumer, agreement, "u0")
    assert info.value.status == 503 and "tampered" in info.value.message, info.value
    assert (await consumer.client.usage(agreement))["uses"] == 0  # nothing counted, nothing released


async def test_a_tampered_middle_chunk_cuts_the_stream_short_and_never_gives_wrong_bytes(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, content, stored, _ = await pulled(provider, consumer)
    chunk = 1024 * 1024 + vaultfile.TAG_SIZE
    raw = bytearray(stored.read_bytes())
    raw[vaultfile.HEADER_SIZE + 2 * chunk + 100] ^= 0x01  # one byte of chunk 2 (plaintext bytes 2 MiB…)
    stored.write_bytes(bytes(raw))
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):  # the response stops short of its Content-Length
        async for piece in consumer.client.use_data(agreement, "u0"):
            got += piece
    assert len(got) <= 2 * 1024 * 1024 and bytes(got) == content[:len(got)]  # a prefix of the truth only


async def test_a_file_cut_back_by_its_last_chunk_is_detected(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer)
    chunk = 1024 * 1024 + vaultfile.TAG_SIZE
    os.truncate(stored, vaultfile.HEADER_SIZE + 3 * chunk)  # three whole chunks: a plausible shorter file
    with pytest.raises(ClientError) as info:
        await released(consumer, agreement, "u0")
    assert info.value.status == 503 and "chunk 2 does not open" in info.value.message, info.value


async def test_revocation_destroys_the_key_then_the_bytes(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer)
    folder = stored.parent
    assert (folder / vault.KEY_FILE).exists()
    await provider.client.revoke(agreement, "supplier contract ended")

    async def deleted():
        summary = await consumer.client.usage(agreement)
        return summary if summary["latest"] and summary["latest"][0]["kind"] == "delete" else None

    entry = (await eventually(deleted))["latest"][0]
    assert "data key destroyed" in entry["reasons"][0] and "bytes removed" in entry["reasons"][0], entry
    assert not (folder / vault.KEY_FILE).exists() and not stored.exists() and not folder.exists()

    async def receipted():
        report = await provider.client.usage_report(agreement)
        return report if (report["revocation"] or {}).get("status") == "acknowledged" else None

    receipt = (await eventually(receipted))["revocation"]["deletionReceipt"]
    assert "data key destroyed" in receipt["entry"]["reasons"][0], receipt


async def test_once_the_key_is_gone_the_bytes_left_cannot_be_read(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer)
    (stored.parent / vault.KEY_FILE).unlink()  # as after a crash between destroying the key and the bytes
    with pytest.raises(StorageError, match="no key"):
        vault.open_reader(stored, vault.vault_key(consumer.participant), agreement)
    with pytest.raises(ClientError) as info:
        await released(consumer, agreement, "u0")
    assert info.value.status == 503


async def test_another_participants_vault_key_cannot_unwrap_the_data_key(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, content, stored, _ = await pulled(provider, consumer)
    other = await nodes.host(consumer, "sme-two")
    with pytest.raises(StorageError, match="does not open"):
        vault.read_key(stored.parent, vault.vault_key(other.participant), agreement)
    with pytest.raises(StorageError, match="does not open"):
        vault.open_reader(stored, vault.vault_key(provider.participant), agreement)
    with vault.open_reader(stored, vault.vault_key(consumer.participant), agreement) as reader:
        assert b"".join(vault.read_all(reader)) == content


async def test_deletion_on_schedule_destroys_the_key(nodes):
    from usage_policies import templates

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    path = provider.data_dir / "files" / provider.participant.name / "qi.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(MARKER * 100)
    await provider.client.add_asset({"id": "qi", "dataAddress": {"type": "File", "path": "qi.csv"}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("brief", templates.use_and_delete_after("qi", "PT1S"))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="brief",
                                                  assets=["qi"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(negotiation["id"], wait_s=10))["agreement"]["@id"]
    final = await consumer.client.transfer((await consumer.client.start_transfer(agreement))["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    folder = (consumer.data_dir / final["vaultPath"]).parent
    assert await released(consumer, agreement, "u0") == MARKER * 100

    async def deleted():
        summary = await consumer.client.usage(agreement)
        return summary if summary["latest"][0]["kind"] == "delete" else None

    entry = (await eventually(deleted))["latest"][0]
    assert "on schedule" in entry["reasons"][0] and "data key destroyed" in entry["reasons"][0], entry
    assert not folder.exists()


def test_a_resumed_partial_file_continues_after_its_last_whole_chunk(tmp_path):
    """The writer a receiver resumes with: a torn tail is cut back, the file opens whole in the end."""
    vault_key, agreement = os.urandom(32), "urn:uuid:a1"
    path = tmp_path / "vault" / "p" / "a1" / ".t1.part"
    path.parent.mkdir(parents=True)
    chunk = 4096
    content = os.urandom(4 * chunk + 10)
    pieces = [content[i:i + chunk] for i in range(0, len(content), chunk)]
    with vault.open_partial(path, vault_key, agreement, chunk_size=chunk, received=0) as out:
        for index in range(3):
            out.write(index, pieces[index], last=False)
    os.truncate(path, path.stat().st_size - 100)  # the third chunk torn (its tail never reached the disk)
    with vault.open_partial(path, vault_key, agreement, chunk_size=chunk, received=3 * chunk) as out:
        assert out.received == 2 * chunk
        for index in range(2, len(pieces)):
            out.write(index, pieces[index], last=index == len(pieces) - 1)
    final = path.with_name("asset")
    vault.place(path, final)
    with vault.open_reader(final, vault_key, agreement) as reader:
        assert b"".join(vault.read_all(reader)) == content



def test_a_resumed_partial_file_whose_tail_reads_back_as_zeros_resumes_before_it(tmp_path):
    """After a power loss the file may keep its length while its last chunks read back as zeros."""
    vault_key, agreement = os.urandom(32), "urn:uuid:a1"
    path = tmp_path / "vault" / "p" / "a1" / ".t1.part"
    path.parent.mkdir(parents=True)
    chunk = 4096
    content = os.urandom(4 * chunk + 10)
    pieces = [content[i:i + chunk] for i in range(0, len(content), chunk)]
    with vault.open_partial(path, vault_key, agreement, chunk_size=chunk, received=0) as out:
        for index in range(3):
            out.write(index, pieces[index], last=False)
    raw = bytearray(path.read_bytes())
    raw[vaultfile.physical_offset(vaultfile.parse_header(bytes(raw)), chunk):] = bytes(len(raw) - (
        vaultfile.HEADER_SIZE + chunk + vaultfile.TAG_SIZE))  # chunks 1 and 2 zeroed, the length kept
    path.write_bytes(bytes(raw))
    with vault.open_partial(path, vault_key, agreement, chunk_size=chunk, received=3 * chunk) as out:
        assert out.received == chunk  # only chunk 0 is kept
        for index in range(1, len(pieces)):
            out.write(index, pieces[index], last=index == len(pieces) - 1)
    final = path.with_name("asset")
    vault.place(path, final)
    with vault.open_reader(final, vault_key, agreement) as reader:
        assert b"".join(vault.read_all(reader)) == content


async def test_files_received_before_the_vault_was_sealed_are_sealed_at_the_next_start(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, plain, stored, _ = await pulled(provider, consumer)
    # As a node before the vault was encrypted left it: the plaintext under the same name, no data key.
    (stored.parent / vault.KEY_FILE).unlink()
    stored.write_bytes(plain)
    consumer = await nodes.restart(consumer)
    assert vault.is_vault_file(stored) and MARKER[:14] not in stored.read_bytes()
    assert await released(consumer, agreement, "after-upgrade") == plain


async def test_tds_use_leaves_no_partial_output_when_the_stream_is_cut(nodes, tmp_path):
    from test_cli_tour import tds

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _, stored, _ = await pulled(provider, consumer)
    chunk = 1024 * 1024 + vaultfile.TAG_SIZE
    raw = bytearray(stored.read_bytes())  # damage chunk 2 of 4: two are released, then the stream is cut
    raw[vaultfile.HEADER_SIZE + 2 * chunk + 10] ^= 1
    stored.write_bytes(bytes(raw))
    out = tmp_path / "released.csv"
    code, text = await tds(consumer, "use", agreement, "--use-id", "cut-1", "-o", str(out))
    assert code == 1 and text.startswith("error: the data was not written") and "Traceback" not in text, text
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
    code, text = await tds(consumer, "use", agreement, "--use-id", "cut-2", "-o", str(tmp_path / "no" / "x.csv"))
    assert code == 2 and "nothing was used" in text and "Traceback" not in text, text


def test_deleting_one_agreements_data_never_touches_anothers(tmp_path):
    """Two agreement ids that make the same folder name (a provider picks the ids): the key decides."""
    folder = tmp_path / "urn_uuid_1"
    vault_key = os.urandom(32)
    with vault.open_partial(folder / ".t.part", vault_key, "urn:uuid:1", chunk_size=4096, received=0) as out:
        out.write(0, b"the first agreement's data", last=True)
    assert vault.destroy(folder, "urn_uuid_1") == vault.Deletion(0, False)
    assert (folder / vault.KEY_FILE).exists() and (folder / ".t.part").exists()
    assert vault.destroy(folder, "urn:uuid:1").key_destroyed and not folder.exists()


async def test_a_pull_the_vault_cannot_take_ends_with_the_reason(nodes, monkeypatch):
    def refused(*args, **kwargs):
        raise vault.DataKeyError("the agreement's data key does not open: the data key belongs to something else")

    monkeypatch.setattr(vault, "open_partial", refused)
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    with pytest.raises(AssertionError):  # pulled() asserts COMPLETED
        await pulled(provider, consumer)
    [final] = await consumer.client.transfers()
    assert final["state"] == "TERMINATED" and "belongs to something else" in final["reason"], final
