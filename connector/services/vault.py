"""The vault: received data, sealed at rest under a data key per agreement, in one place.

:class:`Vault` is what the node builds and the services use: where an agreement's data lives
(:meth:`Vault.agreement_dir`, :meth:`Vault.partial_path`), what a participant holds (:meth:`Vault.usage`,
:meth:`Vault.payload`), writing and reading it with the participant's vault key
(:meth:`Vault.open_partial`, :meth:`Vault.keep`, :meth:`Vault.open_reader`), deleting an agreement's data
(:meth:`Vault.destroy`: the transfers bringing it are stopped, then its key and its bytes go) and sealing
files received before the vault was encrypted at rest (:meth:`Vault.seal_unsealed`). The functions below it
are the I/O shell of the file format (:mod:`connector.payload.vaultfile`, pure) that it is made of.

Layout: ``DATA_DIR/vault/PARTICIPANT/AGREEMENT/`` holds the agreement's files, each beside its plaintext
``.bundle.json`` (manifest, signed envelope, the provider's DID document), the partial files of transfers
still arriving (``.TRANSFER.part``) and ``.key``: the agreement's data key, wrapped by the participant's
vault key and bound to the agreement id. The vault key is derived from the participant's X25519 key
(sealed on disk by the node key) and never stored. Folder names come from peer-chosen ids through
:func:`safe_name`.

Writing (a receiving data plane): :func:`open_partial` opens or resumes a partial file, the receiver hands
it verified plaintext chunks in order (:meth:`VaultWriter.write`: sealed, written unbuffered, the write-back of
what was written begun every few MiB), then :func:`place` makes it durable (fsync) and moves it under its
final name. Reading: :func:`open_reader`, then :meth:`VaultReader.chunk` (or :func:`stream` into an HTTP
response). Deleting: :func:`destroy` unlinks the key first and makes that durable, then removes the
bytes; from the moment the key is gone, whatever is left on disk can no longer be read.

Folder-level changes (creating a key, dropping an unused one, destroying) take one lock, so a failed pull
tidying up cannot take the key from under another transfer of the same agreement that is just starting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import re
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from connector import filemodes
from connector.errors import StorageError, TdsError
from connector.logging import get_logger
from connector.payload import sealing, vaultfile

if TYPE_CHECKING:
    from aiohttp import web

    from connector.participant import ParticipantRuntime

KEY_FILE = ".key"
#: The most a received chunk is written at once. Larger writes (a whole 1 MiB chunk) took the kernel three to
#: four times as long per byte on the development machine's file system (ext4, Linux 6.18), measured.
WRITE_SIZE = 256 * 1024
#: Every this many bytes written, their write-back to disk is begun (:func:`_write_back`), so that it runs while
#: the transfer goes on and the fsync that ends the transfer waits for the last few MiB only, not the whole file.
WRITEBACK_BYTES = 8 * 1024 * 1024
_KEY_FORMAT = "tds-vault-data-key-v1"
#: A wrapped key file is tiny; anything bigger is not one (bounds what is read).
_MAX_KEY_FILE = 4096
_folder_lock = threading.Lock()
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

log = get_logger(component="vault")


class VaultWriteError(StorageError):
    """The vault could not write received data: the disk or its quota is full, an I/O error, a read-only file
    system, a permission. The message names the error and the agreement's folder (relative to the data folder),
    never the data. Not the peer's fault, and not for good: a transfer that meets it discards its partial file
    and tries again (:mod:`connector.services.receiver`)."""

    def __init__(self, error: OSError, folder: Path) -> None:
        self.errno = error.errno
        name = errno.errorcode.get(error.errno or 0, "")
        #: The error alone, e.g. "No space left on device (ENOSPC)" (what a peer may be told).
        self.what = (error.strerror or str(error) or type(error).__name__) + (f" ({name})" if name else "")
        super().__init__(f"writing in {shown_folder(folder)} failed: {self.what}")


class DataKeyError(StorageError):
    """An agreement's data key does not open with the participant's vault key: its data cannot be stored or
    read here, and trying again does not change that."""


def shown_folder(folder: Path) -> str:
    """An agreement's folder as a log line or reason names it: ``vault/PARTICIPANT/AGREEMENT`` (relative to the
    data folder, so that no absolute path of the node travels to a peer); any other folder as it is."""
    parts = folder.parts
    return "/".join(parts[-3:]) if len(parts) >= 3 and parts[-3] == "vault" else str(folder)


@contextlib.contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """Translate a failed write under *folder* into :class:`VaultWriteError`."""
    try:
        yield
    except OSError as exc:
        raise VaultWriteError(exc, folder) from exc


def safe_name(text: str) -> str:
    """A file or folder name from a peer-chosen id (agreement, asset, transfer): only ``[A-Za-z0-9._-]``,
    never starting with a dot (no ``..``, and no clash with the vault's own hidden files such as ``.key``)."""
    name = _SAFE.sub("_", text)[:150] or "_"
    return "_" + name[1:] if name.startswith(".") else name


#: A vault key, or several: the current one first (it wraps new data keys), then those of X25519 keys a key
#: rotation retired, which still open the data keys not yet re-wrapped (:func:`rewrap`).
VaultKeys = bytes | Sequence[bytes]


def _all(keys: VaultKeys) -> Sequence[bytes]:
    return (keys,) if isinstance(keys, bytes) else keys


def vault_key(participant: ParticipantRuntime) -> bytes:
    """The participant's vault key (derived from its X25519 private key; never stored)."""
    return vaultfile.vault_key(bytes(participant.keys.agreement), participant.id)


def vault_keys(participant: ParticipantRuntime) -> tuple[bytes, ...]:
    """The participant's vault key, then those of the old X25519 keys it still keeps after a key rotation."""
    keys = participant.keys  # read once: a rotation replaces it as a whole
    return (vaultfile.vault_key(bytes(keys.agreement), participant.id),
            *(vaultfile.vault_key(bytes(old), participant.id) for _, old in keys.retired_agreement))


class Vault:
    """A node's vault (``DATA_DIR/vault/``): one folder per participant, in it one per agreement.

    *key_of* gives a participant's vault key (:func:`vault_key` in a running node). *stop_receiving*
    terminates a participant's transfers that still bring an agreement's data and says how many (the transfer
    service's); it is called before that data is deleted, so that nothing arrives afterwards. Methods that
    touch the file system block (callers on the event loop run them in a thread) unless they are ``async``.
    """

    def __init__(self, data_dir: Path, *, key_of: Callable[[ParticipantRuntime], VaultKeys],
                 stop_receiving: Callable[[ParticipantRuntime, str, str], Awaitable[int]]) -> None:
        self.root = data_dir / "vault"
        self._key_of = key_of
        self._stop_receiving = stop_receiving

    # -- where things are ---------------------------------------------------------------------------------

    def participant_dir(self, participant_name: str) -> Path:
        """Everything a participant received."""
        return self.root / safe_name(participant_name)

    def agreement_dir(self, participant: ParticipantRuntime, agreement_id: str) -> Path:
        """Each agreement's data apart, so that it can be deleted as a whole."""
        return self.participant_dir(participant.name) / safe_name(agreement_id)

    def partial_path(self, participant: ParticipantRuntime, agreement_id: str, transfer_id: str) -> Path:
        """Where a transfer writes until its last chunk is verified (hidden: never taken for a payload)."""
        return self.agreement_dir(participant, agreement_id) / f".{safe_name(transfer_id)}.part"

    def usage(self, participant: ParticipantRuntime) -> int:
        """Bytes a participant holds in the vault (what the fair-use quota counts)."""
        root = self.participant_dir(participant.name)
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0

    def payload(self, participant: ParticipantRuntime, agreement_id: str) -> Path | None:
        """The received data of an agreement, if a transfer has placed it, verified, in the vault."""
        folder = self.agreement_dir(participant, agreement_id)
        if not folder.is_dir():
            return None
        payloads = sorted(p for p in folder.iterdir()
                          if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".bundle.json"))
        return payloads[0] if payloads else None

    # -- writing and reading ------------------------------------------------------------------------------

    def writer(self, participant: ParticipantRuntime, agreement_id: str, partial: Path, *, chunk_size: int,
               received: int) -> VaultWriter:
        """The partial file *partial* of a transfer, open to continue at plaintext byte *received* (see
        :func:`open_partial`). The caller closes it."""
        with _writing(partial.parent):
            return open_partial(partial, self._key_of(participant), agreement_id, chunk_size=chunk_size,
                                received=received)

    def keep(self, partial: Path, name: str, bundle: dict[str, Any]) -> Path:
        """Place a complete partial file under *name* (made safe) in its agreement's folder, with its bundle
        (manifest, signed envelope, the provider's DID document) written beside it first. Returns the path."""
        final = partial.parent / safe_name(name)
        tmp_bundle = partial.with_suffix(".bundle")
        try:
            with _writing(partial.parent):
                # Synced before it is renamed, as the payload is; place() syncs the folder after both renames.
                filemodes.write_private(tmp_bundle, json.dumps(bundle, indent=1).encode(), durable=True)
                os.replace(tmp_bundle, partial.parent / f"{final.name}.bundle.json")
                place(partial, final)
        except VaultWriteError:
            with contextlib.suppress(OSError):
                tmp_bundle.unlink(missing_ok=True)
                if not final.exists():  # a bundle of no file (beside an earlier file of this name it stays)
                    (partial.parent / f"{final.name}.bundle.json").unlink(missing_ok=True)
            raise
        return final

    def discard_partial(self, participant: ParticipantRuntime, agreement_id: str, transfer_id: str) -> None:
        """Remove a transfer's partial file, and the agreement's data key if nothing else uses it (done at once,
        so that a terminated transfer has left nothing by the time anyone sees it TERMINATED, and so that a
        failed write frees the space the file took). A file that cannot be removed is logged, not raised."""
        partial = self.partial_path(participant, agreement_id, transfer_id)
        try:
            partial.unlink(missing_ok=True)
            forget_unused_key(partial.parent)  # a pull that failed before anything was kept leaves nothing
        except OSError as exc:
            log.error("partial file not removed", folder=shown_folder(partial.parent),
                      error=exc.strerror or type(exc).__name__)

    def reader(self, participant: ParticipantRuntime, path: Path, agreement_id: str) -> VaultReader:
        """A vault file of the participant's, opened and its first and last chunks checked (see
        :func:`open_reader`). The caller closes it."""
        return open_reader(path, self._key_of(participant), agreement_id)

    # -- deleting, sealing --------------------------------------------------------------------------------

    async def destroy_agreement_data(self, participant: ParticipantRuntime, agreement_id: str) -> Deletion:
        """Delete an agreement's received data: the transfers still bringing it are stopped, then its data key
        goes (from then on nothing left is readable), then its folder. Says how many bytes went and whether a
        key was destroyed."""
        stopped = await self._stop_receiving(participant, agreement_id,
                                             "the agreement's data is being deleted here (revoked or due)")
        if stopped:
            log.info("transfers stopped before deletion", participant=participant.name, agreement=agreement_id,
                     count=stopped)
        deletion = await asyncio.to_thread(destroy, self.agreement_dir(participant, agreement_id), agreement_id)
        if deletion.key_destroyed:
            log.info("data key destroyed", participant=participant.name, agreement=agreement_id,
                     bytes_removed=deletion.bytes_removed)
        return deletion

    async def rewrap(self, participant: ParticipantRuntime) -> int:
        """After a key rotation: wrap the participant's data keys under its current vault key (:func:`rewrap`);
        returns how many opened under none of its keys."""
        done = await asyncio.to_thread(rewrap, self.participant_dir(participant.name), vault_keys(participant))
        if done.rewrapped or done.unopened:
            log.info("data keys re-wrapped", participant=participant.name, rewrapped=done.rewrapped,
                     unopened=done.unopened)
        return done.unopened

    async def seal_unsealed(self, participants: Iterable[ParticipantRuntime],
                            agreement_ids: Callable[[str], Awaitable[Iterable[str]]]) -> None:
        """Seal files received before the vault was encrypted at rest (a no-op when there are none).

        *agreement_ids* gives a participant's agreements (by participant id), asked only if it has such a
        file: a file is sealed under the agreement whose folder it is in; one of no known agreement stays."""
        for participant in participants:
            found = await asyncio.to_thread(unsealed_files, self.participant_dir(participant.name))
            if not found:
                continue
            agreements = {self.agreement_dir(participant, a): a for a in await agreement_ids(participant.id)}
            for path in found:
                agreement_id = agreements.get(path.parent)
                if agreement_id is None:
                    log.warning("unsealed vault file of no known agreement left as it is", path=str(path))
                    continue
                try:
                    size = await asyncio.to_thread(seal_in_place, path, self._key_of(participant), agreement_id)
                except (OSError, TdsError) as exc:  # the node still starts; the file stays unusable, as before
                    log.error("vault file could not be sealed", path=str(path), error=str(exc)[:300])
                    continue
                log.info("vault file sealed at rest", participant=participant.name, agreement=agreement_id,
                         bytes=size)


# -- the data key of an agreement -------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key(folder: Path, vault_key: VaultKeys, agreement_id: str | None = None) -> bytes | None:
    """The agreement's data key, or None if it has none (never written, or destroyed). With several vault keys,
    the first one under which it opens.

    Without *agreement_id*, the id recorded beside the wrapped key is used (unwrapping still checks that
    the key was wrapped for it); raises :class:`StorageError` if the key does not open.
    """
    path = folder / KEY_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw) if len(raw) <= _MAX_KEY_FILE else None
        if not isinstance(record, dict) or record.get("format") != _KEY_FORMAT:
            raise ValueError("not a wrapped data key")
        label = str(record["agreement"]) if agreement_id is None else agreement_id
        wrapped = base64.b64decode(record["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataKeyError(f"the agreement's data key does not open: {exc}") from exc
    return _unwrap_any(_all(vault_key), wrapped, label)[1]


def _unwrap_any(keys: Sequence[bytes], wrapped: bytes, label: str) -> tuple[int, bytes]:
    """The data key and the index of the first vault key it opens under."""
    error: Exception = DataKeyError("no vault key")
    for index, key in enumerate(keys):
        try:
            return index, sealing.unwrap(key, wrapped, label)
        except sealing.SealError as exc:
            error = exc
    raise DataKeyError(f"the agreement's data key does not open: {error}")


def key_agreement_id(folder: Path) -> str | None:
    """The agreement id recorded beside a wrapped data key (not secret; unwrapping checks it)."""
    try:
        with open(folder / KEY_FILE, "rb") as f:
            record = json.loads(f.read(_MAX_KEY_FILE))
    except (OSError, ValueError):
        return None
    found = record.get("agreement") if isinstance(record, dict) else None
    return found if isinstance(found, str) else None


def _ensure_key(folder: Path, vault_key: VaultKeys, agreement_id: str) -> bytes:
    """The agreement's data key, created (written durably, mode 0600) if it has none yet. Caller holds the lock."""
    found = read_key(folder, vault_key, agreement_id)
    if found is not None:
        return found
    filemodes.make_dir(folder)
    key = sealing.new_data_key()
    _write_key(folder, _all(vault_key)[0], key, agreement_id)
    return key


def _write_key(folder: Path, vault_key: bytes, key: bytes, agreement_id: str) -> None:
    """Write the data key *key* wrapped under *vault_key* as the folder's ``.key``: beside it first, synced, then
    renamed over it, so that a crash leaves the old wrap or the new one, never neither."""
    record = {"format": _KEY_FORMAT, "agreement": agreement_id,
              "wrapped": base64.b64encode(sealing.wrap(vault_key, key, agreement_id)).decode()}
    tmp = folder / f"{KEY_FILE}.tmp"
    fd = filemodes.open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        try:
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / KEY_FILE)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk must not leave a stray file that keeps the folder
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


class Rewrap(msgspec.Struct, frozen=True):
    """What :func:`rewrap` did: data keys moved under the current vault key, and those it could not open."""

    rewrapped: int
    unopened: int


def rewrap(participant_folder: Path, keys: Sequence[bytes]) -> Rewrap:
    """After a key rotation: every data key of the participant that opens under an older vault key (``keys[1:]``)
    is wrapped under the current one (``keys[0]``), one agreement folder at a time, each written beside the old
    wrap and renamed over it (see :func:`_write_key`). Killed midway, it leaves each key under the old vault key
    or the new one, both of which open it; run again (at the next start), it finishes. A key that opens under
    none is left as it was and counted."""
    done = unopened = 0
    for folder in sorted(participant_folder.iterdir()) if participant_folder.is_dir() else ():
        with _folder_lock:  # no data key is created, dropped or destroyed meanwhile
            path = folder / KEY_FILE
            if not folder.is_dir() or not path.is_file():
                continue
            try:
                with open(path, "rb") as f:
                    record = json.loads(f.read(_MAX_KEY_FILE + 1))
                label = str(record["agreement"])
                index, key = _unwrap_any(keys, base64.b64decode(record["wrapped"], validate=True), label)
            except (ValueError, KeyError, TypeError, DataKeyError):
                unopened += 1
                continue
            if index == 0:
                continue
            with _writing(folder):
                _write_key(folder, keys[0], key, label)
            done += 1
    return Rewrap(done, unopened)


# -- writing ----------------------------------------------------------------------------------------------


def _write_back(fd: int, offset: int, length: int) -> None:
    """Have the kernel begin writing this range of the file to disk now, without waiting for it (and let go of
    what of it is on disk already: received data is not read back while it arrives). Durability still comes
    from the fsync when the file is placed; this only leaves that fsync less to wait for."""
    if hasattr(os, "posix_fadvise"):  # Linux: DONTNEED starts the write-back of the range's dirty pages
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class VaultWriter:
    """A partial vault file being written, one verified plaintext chunk after the other. A failed write, flush
    or close raises :class:`VaultWriteError` (naming the file's folder)."""

    def __init__(self, fh: IO[bytes], header: vaultfile.Header, key: bytes, next_index: int,
                 folder: Path = Path()) -> None:
        self._fh, self.header, self._key, self.next_index = fh, header, key, next_index
        self.folder = folder
        self.closed = False
        #: Where the file ends (the next chunk goes there), and up to where its write-back was begun.
        self._end = self._handed = vaultfile.physical_offset(header, next_index * header.chunk_size)

    @property
    def received(self) -> int:
        """Plaintext bytes in the file: where a resumed transfer continues (a chunk boundary until the end)."""
        return self.next_index * self.header.chunk_size

    def write(self, index: int, plaintext: bytes | memoryview, *, last: bool) -> None:
        """Seal and append chunk *index* (chunks come in order; every one but the last is full-size)."""
        if index != self.next_index or self.closed:
            raise StorageError(f"vault file: chunk {index} written out of order (expected {self.next_index})")
        sealed = memoryview(vaultfile.seal(self._key, self.header, index, plaintext, last=last))
        self._end += len(sealed)
        with _writing(self.folder):
            while sealed:  # unbuffered: straight to the file system (a short write writes the rest next)
                sealed = sealed[self._fh.write(sealed[:WRITE_SIZE]):]
            if self._end - self._handed >= WRITEBACK_BYTES:
                _write_back(self._fh.fileno(), self._handed, self._end - self._handed)
                self._handed = self._end
        self.next_index += 1
        if last:
            self.closed = True

    def flush(self) -> None:
        with _writing(self.folder):
            self._fh.flush()

    def close(self) -> None:
        with _writing(self.folder):  # the file is closed even when its last flush fails
            self._fh.close()

    def __enter__(self) -> VaultWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_partial(path: Path, vault_key: VaultKeys, agreement_id: str, *, chunk_size: int,
                 received: int) -> VaultWriter:
    """Open the partial vault file *path* to continue at plaintext byte *received* (a chunk boundary).

    A new file gets a header with a fresh file id (and the agreement a data key, if it has none yet). An
    existing one is cut back to the last whole chunk at or before *received*; anything past the resume
    point was never confirmed. The writer's :attr:`~VaultWriter.received` is where to continue: lower than
    *received* only if the file lost its tail (or was lost entirely) since.
    """
    with _writing(path.parent), _folder_lock:  # a full disk, a read-only file system: VaultWriteError
        data_key = _ensure_key(path.parent, vault_key, agreement_id)
        # Opened (or created, 0600) without truncating: an existing partial file is resumed below. Unbuffered:
        # every chunk is one write, and nothing waits in the process for a flush.
        fh = os.fdopen(filemodes.open_private(path, os.O_RDWR), "r+b", buffering=0)  # closed by the writer
    try:
        with _writing(path.parent):
            header: vaultfile.Header | None = None
            with contextlib.suppress(vaultfile.VaultFileError):
                header = vaultfile.parse_header(fh.read(vaultfile.HEADER_SIZE))
            index = 0
            if header is not None and header.chunk_size == chunk_size:
                size = os.fstat(fh.fileno()).st_size
                index = min(received // chunk_size, vaultfile.whole_chunks(header, size))
                index = _last_good(fh, header, vaultfile.file_key(data_key, header), index)
            if header is None or index == 0:  # starting over: a fresh file id, so a fresh file key
                header = vaultfile.Header(chunk_size, os.urandom(vaultfile.FILE_ID_SIZE))
                fh.seek(0)
                fh.truncate(0)
                fh.write(header.encode())
            at = vaultfile.physical_offset(header, index * chunk_size)
            fh.truncate(at)
            fh.seek(at)
            return VaultWriter(fh, header, vaultfile.file_key(data_key, header), index, path.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # its own failing flush must not hide why the file was not opened
            fh.close()
        raise


def _last_good(fh: IO[bytes], header: vaultfile.Header, key: bytes, index: int) -> int:
    """How many of the first *index* chunks to keep: the file's length says what was written, but after a
    power loss a tail written and not yet synced may read back as zeros, so the chunks are checked from
    the end back to the last one that opens (usually the first one tried)."""
    while index > 0:
        fh.seek(vaultfile.physical_offset(header, (index - 1) * header.chunk_size))
        try:
            vaultfile.open_chunk(key, header, index - 1, fh.read(header.sealed_chunk_size), last=False)
            return index
        except sealing.SealError:
            index -= 1
    return 0


def place(partial: Path, final: Path) -> None:
    """Make a complete partial file durable, then move it under its final name."""
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    _fsync_dir(final.parent)


def forget_unused_key(folder: Path) -> None:
    """Drop the agreement's key and folder if nothing else is left in it (a pull that failed early)."""
    with _folder_lock:
        if not folder.is_dir() or any(p.name != KEY_FILE for p in folder.iterdir()):
            return
        (folder / KEY_FILE).unlink(missing_ok=True)
        folder.rmdir()


def unsealed_files(participant_folder: Path) -> list[Path]:
    """Received files under a participant's vault folder that are still plaintext (received before the
    vault was encrypted at rest): what :func:`seal_in_place` is for."""
    found = []
    for folder in participant_folder.iterdir() if participant_folder.is_dir() else ():
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".bundle.json") and (
                    not is_vault_file(path)):
                found.append(path)
    return found


def seal_in_place(path: Path, vault_key: VaultKeys, agreement_id: str, chunk_size: int = 1024 * 1024) -> int:
    """Seal a plaintext received file under its agreement's data key, keeping its name: written beside it,
    made durable, then renamed over it (a crash leaves the plaintext, sealed again at the next start).
    Returns the plaintext's size."""
    sealing_path = path.with_name(f".{path.name}.sealing")
    with open(path, "rb") as source, open_partial(sealing_path, vault_key, agreement_id, chunk_size=chunk_size,
                                                  received=0) as out:
        size = os.fstat(source.fileno()).st_size
        chunks = max(1, -(-size // chunk_size))
        for index in range(chunks):
            out.write(index, source.read(chunk_size), last=index == chunks - 1)
    place(sealing_path, path)
    return size


# -- reading ----------------------------------------------------------------------------------------------


class VaultReader:
    """A complete vault file opened for reading, chunk by chunk (constant memory)."""

    def __init__(self, path: Path, data_key: bytes) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        try:
            header = vaultfile.parse_header(os.pread(self._fd, vaultfile.HEADER_SIZE, 0))
            self.layout = vaultfile.layout(header, os.fstat(self._fd).st_size)
        except vaultfile.VaultFileError as exc:
            os.close(self._fd)
            raise StorageError(f"the received data cannot be read: {exc}") from exc
        self._key = vaultfile.file_key(data_key, header)

    @property
    def size(self) -> int:
        """The plaintext's length."""
        return self.layout.size

    @property
    def chunks(self) -> int:
        return self.layout.chunks

    def chunk(self, index: int) -> bytes:
        """The plaintext of chunk *index*; :class:`StorageError` if it does not open (damaged or tampered)."""
        offset, length = self.layout.span(index)
        sealed = os.pread(self._fd, length, offset)
        try:
            return vaultfile.open_chunk(self._key, self.layout.header, index, sealed,
                                        last=self.layout.is_last(index))
        except sealing.SealError as exc:
            raise StorageError(f"the received data is damaged or was tampered with at rest "
                               f"(chunk {index} does not open)") from exc

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> VaultReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_reader(path: Path, vault_key: VaultKeys, agreement_id: str | None = None) -> VaultReader:
    """Open a vault file with its agreement's key (beside it), checking its first and last chunks at once:
    a wrong key, a damaged header or a file cut short fails here, before anything is released."""
    data_key = read_key(path.parent, vault_key, agreement_id)
    if data_key is None:
        raise StorageError("the received data has no key (it was deleted)")
    reader = VaultReader(path, data_key)
    try:
        reader.chunk(0)
        reader.chunk(reader.chunks - 1)
    except BaseException:
        reader.close()
        raise
    return reader


async def stream(reader: VaultReader, response: web.StreamResponse) -> None:
    """Write the plaintext of *reader* to *response*, each chunk read and opened off the event loop.

    A chunk that does not open raises :class:`StorageError` after the earlier chunks were sent: the
    caller must abort the response (its Content-Length is then never reached).
    """
    loop = asyncio.get_running_loop()
    for index in range(reader.chunks):
        await response.write(await loop.run_in_executor(None, reader.chunk, index))


# -- deleting ---------------------------------------------------------------------------------------------


class Deletion(msgspec.Struct, frozen=True):
    bytes_removed: int
    key_destroyed: bool

    def describe(self) -> str:
        """For the signed usage-log entry: what was deleted, and that the key went first."""
        if self.key_destroyed:
            return f"data key destroyed, {self.bytes_removed} bytes removed"
        return f"{self.bytes_removed} bytes"


def destroy(folder: Path, agreement_id: str) -> Deletion:
    """Delete an agreement's data: its key first (unlinked, the folder synced), then every file.

    A folder whose key belongs to another agreement (two ids that make the same folder name) is left
    alone: deleting one agreement's data never touches another's."""
    with _folder_lock:
        if not folder.is_dir():
            return Deletion(0, False)
        owner = key_agreement_id(folder)
        if owner is not None and owner != agreement_id:
            return Deletion(0, False)
        size = 0
        for p in folder.rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # a partial file being renamed or discarded meanwhile
                size += p.stat().st_size if p.is_file() else 0
        key = folder / KEY_FILE
        destroyed = key.exists()
        key.unlink(missing_ok=True)
        _fsync_dir(folder)
        shutil.rmtree(folder)
        _fsync_dir(folder.parent)
        return Deletion(size, destroyed)


# -- offline: tools and tests with the data folder, no running node ------------------------------------------


def offline_vault_key(data_dir: Path, participant_name: str) -> tuple[bytes, ...]:
    """A participant's vault keys from a node's data folder (its node key unseals the participant's keys): the
    current one, then those of old X25519 keys still kept after a key rotation."""
    from connector.bootstrap import keys_dir, node_key
    from connector.identity.keys import load_keys

    keys = load_keys(keys_dir(data_dir, participant_name), node_key(data_dir))
    return (vaultfile.vault_key(bytes(keys.agreement), participant_name),
            *(vaultfile.vault_key(bytes(old), participant_name) for _, old in keys.retired_agreement))


def offline_reader(data_dir: Path, path: Path) -> VaultReader:
    """Open a vault file under ``DATA_DIR/vault/PARTICIPANT/AGREEMENT/`` with the keys in *data_dir*."""
    root = (data_dir / "vault").resolve()
    relative = path.resolve()
    if not relative.is_relative_to(root) or len(relative.relative_to(root).parts) != 3:
        raise StorageError(f"{path} is not a file of the vault in {data_dir}")
    relative = relative.relative_to(root)
    return open_reader(path, offline_vault_key(data_dir, relative.parts[0]))


def is_vault_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return vaultfile.is_vault_file(f.read(len(vaultfile.MAGIC)))


def read_all(reader: VaultReader) -> Iterator[bytes]:
    """Yield the plaintext chunk by chunk."""
    for index in range(reader.chunks):
        yield reader.chunk(index)
