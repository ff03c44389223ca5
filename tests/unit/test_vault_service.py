"""The vault service on a temporary folder: where an agreement's data lives, what a participant holds, and
deleting (transfers stopped, key first, then the bytes) — real sealing, no node, no sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services import vault
from connector.services.vault import Vault
from connector.store.repository import Participant

CHUNK = 1024


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:example.org:participants:{name}", legal_name=name.title(),
                         region="CN")
    return ParticipantRuntime(record, ParticipantKeys.generate(), "https://example.org")


class Stops:
    """A stand-in for the transfer service's ``stop_receiving``: records the calls, answers how many stopped."""

    def __init__(self, answer: int = 0) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.answer = answer
        self.key_present: list[bool] = []
        self.vault: Vault | None = None

    async def __call__(self, participant: ParticipantRuntime, agreement_id: str, reason: str) -> int:
        self.calls.append((participant.name, agreement_id, reason))
        if self.vault is not None:
            folder = self.vault.agreement_dir(participant, agreement_id)
            self.key_present.append((folder / vault.KEY_FILE).exists())
        return self.answer


@pytest.fixture
def alice() -> ParticipantRuntime:
    return runtime("alice")


@pytest.fixture
def stops() -> Stops:
    return Stops()


@pytest.fixture
def the_vault(tmp_path: Path, stops: Stops) -> Vault:
    made = Vault(tmp_path, key_of=vault.vault_key, stop_receiving=stops)
    stops.vault = made
    return made


def receive(v: Vault, participant: ParticipantRuntime, agreement_id: str, data: bytes, *,
            transfer_id: str = "t1", name: str = "data.csv") -> Path:
    """What a receiving data plane does: a partial file, sealed chunk by chunk, then kept under its name."""
    partial = v.partial_path(participant, agreement_id, transfer_id)
    pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    with v.writer(participant, agreement_id, partial, chunk_size=CHUNK, received=0) as out:
        for index, piece in enumerate(pieces):
            out.write(index, piece, last=index == len(pieces) - 1)
    return v.keep(partial, name, {"manifest": {"size": len(data)}})


def plaintext(v: Vault, participant: ParticipantRuntime, path: Path, agreement_id: str) -> bytes:
    with v.reader(participant, path, agreement_id) as reader:
        return b"".join(vault.read_all(reader))


def test_each_agreement_has_its_own_folder_under_the_participant(the_vault, alice, tmp_path):
    assert the_vault.participant_dir("alice") == tmp_path / "vault" / "alice"
    assert the_vault.agreement_dir(alice, "urn:uuid:a1") == tmp_path / "vault" / "alice" / "urn_uuid_a1"
    partial = the_vault.partial_path(alice, "urn:uuid:a1", "../t1")
    assert partial == tmp_path / "vault" / "alice" / "urn_uuid_a1" / "._._t1.part"


def test_kept_data_is_sealed_beside_its_bundle_and_reads_back(the_vault, alice):
    data = bytes(range(256)) * 10
    path = receive(the_vault, alice, "urn:uuid:a1", data, name="../qi.csv")
    assert path.parent == the_vault.agreement_dir(alice, "urn:uuid:a1") and path.name == "_._qi.csv"
    assert (path.parent / "_._qi.csv.bundle.json").is_file()
    assert data not in path.read_bytes()  # sealed at rest
    assert plaintext(the_vault, alice, path, "urn:uuid:a1") == data
    assert not the_vault.partial_path(alice, "urn:uuid:a1", "t1").exists()


async def test_destroy_stops_transfers_then_removes_key_then_bytes(the_vault, alice, stops, monkeypatch):
    path = receive(the_vault, alice, "urn:uuid:a1", b"x" * 3000)
    folder = path.parent
    held = sum(p.stat().st_size for p in folder.iterdir())
    key_at_removal: list[bool] = []
    original = vault.shutil.rmtree

    def rmtree(target: Path) -> None:
        key_at_removal.append((Path(target) / vault.KEY_FILE).exists())
        original(target)

    monkeypatch.setattr(vault.shutil, "rmtree", rmtree)
    deletion = await the_vault.destroy_agreement_data(alice, "urn:uuid:a1")
    assert [call[:2] for call in stops.calls] == [("alice", "urn:uuid:a1")]
    assert stops.key_present == [True]  # the transfers are stopped first, while the key is still there
    assert key_at_removal == [False]  # the key is gone before the bytes are removed
    assert deletion == vault.Deletion(bytes_removed=held, key_destroyed=True)
    assert not folder.exists()


async def test_destroying_what_was_never_received_removes_nothing(the_vault, alice, stops):
    deletion = await the_vault.destroy_agreement_data(alice, "urn:uuid:none")
    assert deletion == vault.Deletion(bytes_removed=0, key_destroyed=False)
    assert len(stops.calls) == 1  # a transfer that is just starting is stopped all the same


async def test_ids_that_make_the_same_folder_name_do_not_delete_each_others_data(the_vault, alice):
    assert the_vault.agreement_dir(alice, "urn:a") == the_vault.agreement_dir(alice, "urn/a")
    path = receive(the_vault, alice, "urn:a", b"kept")
    deletion = await the_vault.destroy_agreement_data(alice, "urn/a")
    assert deletion == vault.Deletion(bytes_removed=0, key_destroyed=False)
    assert plaintext(the_vault, alice, path, "urn:a") == b"kept"


def test_usage_counts_each_participants_own_bytes(the_vault, alice):
    bob = runtime("bob")
    assert the_vault.usage(alice) == 0
    receive(the_vault, alice, "urn:uuid:a1", b"a" * 5000)
    receive(the_vault, alice, "urn:uuid:a2", b"b" * 10)
    folder = the_vault.participant_dir("alice")
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert the_vault.usage(alice) == on_disk > 5000  # sealed files, bundles and keys all count
    assert the_vault.usage(bob) == 0
    receive(the_vault, bob, "urn:uuid:a1", b"c")
    assert the_vault.usage(alice) == on_disk


def test_payload_is_the_placed_file_not_hidden_files_or_bundles(the_vault, alice):
    assert the_vault.payload(alice, "urn:uuid:a1") is None
    partial = the_vault.partial_path(alice, "urn:uuid:a1", "t2")
    with the_vault.writer(alice, "urn:uuid:a1", partial, chunk_size=CHUNK, received=0) as out:
        out.write(0, b"x" * CHUNK, last=False)  # still arriving
    (partial.parent / "a.csv.bundle.json").write_text("{}")
    assert the_vault.payload(alice, "urn:uuid:a1") is None  # only .key, .t2.part and a bundle so far
    path = receive(the_vault, alice, "urn:uuid:a1", b"rows", name="b.csv")
    assert the_vault.payload(alice, "urn:uuid:a1") == path


def test_discarding_a_partial_file_drops_a_key_nothing_else_uses(the_vault, alice):
    partial = the_vault.partial_path(alice, "urn:uuid:a1", "t1")
    the_vault.writer(alice, "urn:uuid:a1", partial, chunk_size=CHUNK, received=0).close()
    assert (partial.parent / vault.KEY_FILE).exists()
    the_vault.discard_partial(alice, "urn:uuid:a1", "t1")
    assert not partial.parent.exists()


def test_discarding_a_partial_file_keeps_the_key_of_kept_data(the_vault, alice):
    path = receive(the_vault, alice, "urn:uuid:a1", b"kept")
    partial = the_vault.partial_path(alice, "urn:uuid:a1", "t2")
    the_vault.writer(alice, "urn:uuid:a1", partial, chunk_size=CHUNK, received=0).close()
    the_vault.discard_partial(alice, "urn:uuid:a1", "t2")
    assert not partial.exists()
    assert plaintext(the_vault, alice, path, "urn:uuid:a1") == b"kept"


async def test_files_from_before_encryption_at_rest_are_sealed_under_their_agreement(the_vault, alice):
    known = the_vault.agreement_dir(alice, "urn:uuid:a1")
    stray = the_vault.agreement_dir(alice, "urn:uuid:gone")
    for folder in (known, stray):
        folder.mkdir(parents=True)
        (folder / "data.csv").write_bytes(b"plain rows")
        (folder / "data.csv.bundle.json").write_text("{}")
    asked: list[str] = []

    async def agreement_ids(participant_id: str) -> list[str]:
        asked.append(participant_id)
        return ["urn:uuid:a1"]

    await the_vault.seal_unsealed([alice, runtime("bob")], agreement_ids)
    assert asked == ["alice"]  # bob has no such file: his agreements are not looked up
    assert vault.is_vault_file(known / "data.csv")
    assert plaintext(the_vault, alice, known / "data.csv", "urn:uuid:a1") == b"plain rows"
    assert (stray / "data.csv").read_bytes() == b"plain rows"  # of no known agreement: left as it was
    assert (known / "data.csv.bundle.json").read_text() == "{}"


_FILE_LIMIT_SCRIPT = """
import os, resource, signal, sys
from pathlib import Path
from connector.services.vault import VaultWriteError, open_partial

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails the write with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    with open_partial(Path(sys.argv[1]) / "vault" / "p" / "a" / ".t.part", os.urandom(32), "a", chunk_size=4096,
                      received=0) as out:
        for index in range(100):
            out.write(index, os.urandom(4096), last=False)
            out.flush()
except VaultWriteError as exc:
    print(exc.message)
"""


def test_a_write_the_kernel_refuses_is_a_vault_write_error_naming_the_error_and_the_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A file-size limit (RLIMIT_FSIZE) in a child process: the kernel's own refusal, as on a full disk.
    done = subprocess.run([sys.executable, "-c", _FILE_LIMIT_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "writing in vault/p/a failed: File too large (EFBIG)\n"


def test_a_partial_file_that_cannot_be_removed_is_logged_not_raised(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    parts = runtime("parts")
    store = Vault(tmp_path, key_of=vault.vault_key, stop_receiving=Stops())
    partial = store.partial_path(parts, "agreement-1", "transfer-1")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x")

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", refuse)
    store.discard_partial(parts, "agreement-1", "transfer-1")  # no exception
    assert partial.exists()


def test_a_partial_file_written_past_the_write_back_mark_reads_back_whole(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The write-back begun along the way (every WRITEBACK_BYTES) lets go of nothing that was written.
    monkeypatch.setattr(vault, "WRITEBACK_BYTES", 3 * CHUNK)
    alice = runtime("alice")
    the_vault = Vault(tmp_path, key_of=vault.vault_key, stop_receiving=Stops())
    partial = the_vault.partial_path(alice, "urn:uuid:a1", "t1")
    data = os.urandom(10 * CHUNK + 5)
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    with the_vault.writer(alice, "urn:uuid:a1", partial, chunk_size=CHUNK, received=0) as out:
        for index, chunk in enumerate(chunks):
            out.write(index, memoryview(chunk), last=index == len(chunks) - 1)
    final = the_vault.keep(partial, "data.bin", {})
    assert plaintext(the_vault, alice, final, "urn:uuid:a1") == data


def test_a_kept_files_bundle_is_synced_before_it_is_renamed_into_place_and_the_folder_after(
        the_vault: Vault, alice: ParticipantRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    # A power loss after keep() returns must not leave the bundle (manifest, envelope) renamed but empty.
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("rename", os.fspath(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    final = receive(the_vault, alice, "urn:uuid:a1", b"x" * 3000)
    bundle = str(the_vault.partial_path(alice, "urn:uuid:a1", "t1").with_suffix(".bundle"))
    synced, renamed = events.index(("fsync", bundle)), events.index(("rename", bundle))
    assert synced < renamed < events.index(("fsync", str(final.parent)), renamed)
    assert (final.parent / f"{final.name}.bundle.json").read_text() == '{\n "manifest": {\n  "size": 3000\n }\n}'
