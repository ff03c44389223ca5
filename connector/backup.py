"""Backups of a node's data folder, made while the node runs, and their restore into a fresh folder
(``tds backup``, ``tds restore``; the archive's format is :mod:`connector.archive`).

What a backup holds: ``tds.toml``, the token files, ``keys/`` (the node key and every participant's sealed
keys), the database (``tds.db``, copied with SQLite's backup API), ``files/`` (the participants' published
files and backend snapshots) and ``vault/`` (received data, sealed, with each agreement's wrapped data key).
Not: the database's ``-wal``/``-shm`` (the copy is complete without them), partial transfers and other
temporary files, symbolic links, folders named in ``[data_roots]`` and TLS files (the operator's own).

Consistency with a running node. The database is copied first, in one read transaction: the backup is the
node as that commit left it, and everything else is taken to match it:

- keys: a participant is added by writing its keys, then its row; removed by deleting its rows, then its
  keys. Keys read after the copy therefore cover every participant in it, unless one was removed meanwhile,
  which the check below notices.
- the vault: a received file is placed (renamed into its final name, complete and synced) before the
  database records it, never changed afterwards, and deleted only with its agreement's data: the data key
  ``.key`` first, then the files. So every file the copied database names existed when it was copied, and
  is still there when its folder is archived unless its agreement's data was deleted since. Each agreement
  folder is archived files first and its key last: a key in the archive means that deletion had not begun
  when the folder's files were read, so they are all there; a folder whose key was there when its files
  were listed and is gone by the end was deleted during the backup: it is recorded as such in the archive
  and restored without its (unreadable) files, as the deleted data it is. (Deleted data never comes back
  through a backup taken after the deletion.) Files placed after the copy are archived too and are
  harmless (a transfer the copy shows still running is taken up again and replaces its file). Partial
  files of running transfers are left out: their transfers start over.
- after archiving, every participant of the copied database must have its keys in the archive, and every
  vault file it names must be there or its agreement's data deleted. Otherwise the data folder changed
  under the backup (a participant removed meanwhile) and the backup starts again, at most three times; if it
  still does not match, the folder is damaged and the backup fails, naming what is missing.

The archive is written to ``FILE.part``, synced, and only then renamed to ``FILE``: a backup that is killed
or fails never leaves a ``FILE`` that looks complete, and an earlier ``FILE`` stays as it was until the new
one replaces it whole. The database's copy is made in ``DATA_DIR/.backup/`` (the node's private folder:
it is as secret as the database) and removed at the end; one backup of a folder runs at a time.

Restoring refuses a folder that is not empty, opens the first frame (a wrong passphrase or key stops here,
before anything is written), refuses an archive of a newer schema than this release runs, then writes each
entry with mode 0600 (folders 0700), bounded in count and bytes, ``tds.toml`` last (a folder without it is
an unfinished restore, and a node refuses to start there). Any failure removes everything it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from connector import archive, filemodes
from connector.archive import Header
from connector.bootstrap import ADMIN_TOKEN_FILE, DB_FILE, TOKEN_FILE
from connector.config import CONFIG_FILE, parse_config
from connector.errors import BackupError, ConfigError, SchemaVersionError, StorageError
from connector.store import snapshot as snapshots
from connector.store.db import check_schema_version

#: The folder in a data folder where a backup copies the database (removed at the end).
WORK_DIR = ".backup"
ATTEMPTS = 3
#: The most entries a restore writes unless told otherwise.
MAX_ENTRIES = 1_000_000
#: A restore leaves at least this much of its disk free unless given --max-bytes (a node wants 1 GiB free).
RESERVE_BYTES = 1024 * 1024 * 1024
_READ = archive.FRAME_SIZE


class _Changed(Exception):
    """The data folder changed under the backup (or does not match its database): start again."""


__all__ = ["BackupError", "BackupResult", "RestoreResult", "keygen", "make_backup", "read_header", "restore"]


@dataclass
class BackupResult:
    path: Path
    files: int = 0
    folders: int = 0
    bytes: int = 0
    seconds: float = 0.0
    attempts: int = 1
    participants: list[tuple[str, str]] = field(default_factory=list)
    #: Vault folders whose agreement's data was deleted while the backup ran (restored as deleted).
    deleted: list[str] = field(default_factory=list)
    #: What was found and left out (symbolic links, unexpected entries), relative to the data folder.
    skipped: list[str] = field(default_factory=list)
    #: Folders and files the config names that a backup does not hold (data roots, TLS files).
    outside: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    about: dict[str, Any]
    files: int = 0
    folders: int = 0
    bytes: int = 0
    seconds: float = 0.0
    relocated: int = 0
    deleted: list[str] = field(default_factory=list)
    #: Files the restored config names that are not there (TLS files, data roots): to copy over by hand.
    missing: list[str] = field(default_factory=list)


# -- making a backup ----------------------------------------------------------------------------------------


def make_backup(data_dir: Path, out: Path, header: Header, key: bytes) -> BackupResult:
    """Back up the node's data folder *data_dir* (the node may be running) into *out*, encrypted under *key*
    (from :func:`connector.archive.passphrase_header` or :func:`connector.archive.recipient_header`).
    Raises :class:`BackupError` (nothing written to *out*, and no ``.part`` file left) if it cannot."""
    started = time.monotonic()
    if not (data_dir / CONFIG_FILE).is_file():
        raise BackupError(f"{data_dir} holds no node (no {CONFIG_FILE})")
    _refuse_postgres(data_dir)
    if out.absolute().parent.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"write the backup outside the data folder {data_dir} (it would hold itself)")
    part = out.with_name(out.name + ".part")
    try:
        return _make(data_dir, out, part, header, key, started)
    except OSError as exc:  # the output folder missing, not writable, a full disk …
        raise BackupError(f"the backup cannot be made: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}") from exc


def _refuse_postgres(data_dir: Path) -> None:
    """A node on PostgreSQL keeps its data on the server: a backup of the folder alone would restore a node
    without it. Its store is backed up by PostgreSQL's own means (pg_dump, base backups, a replica)."""
    from connector.bootstrap import store_location
    from connector.config import load_config
    from connector.store.pg import PgLocation

    try:
        location = store_location(data_dir, load_config(data_dir))
    except (ConfigError, StorageError):
        return  # the backup names what is wrong with the folder
    if isinstance(location, PgLocation):
        raise BackupError(f"the node's store is PostgreSQL ({location.redacted()}): back it up with pg_dump "
                          "(and the data folder's keys/ and vault/ with it); tds backup copies an SQLite node")


def _make(data_dir: Path, out: Path, part: Path, header: Header, key: bytes, started: float) -> BackupResult:
    work = filemodes.make_dir(data_dir / WORK_DIR)
    copy = work / "tds.db"
    with _exclusive(work / "lock", data_dir):
        try:
            problem = ""
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    result = _attempt(data_dir, copy, part, header, key)
                except _Changed as exc:
                    problem = str(exc)
                    continue
                result.attempts = attempt
                break
            else:
                raise BackupError(f"the data folder does not match its database: {problem} (tried {ATTEMPTS} times; "
                                  "if nothing was being removed meanwhile, the data folder is damaged)")
            os.replace(part, out)
            _fsync(out.parent)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            for leftover in (copy, copy.with_name(copy.name + "-journal")):
                leftover.unlink(missing_ok=True)
    result.path, result.seconds = out, time.monotonic() - started
    return result


@contextlib.contextmanager
def _exclusive(lock: Path, data_dir: Path) -> Iterator[None]:
    fd = filemodes.open_private(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup of {data_dir} is running") from None
        yield
    finally:
        os.close(fd)


def _attempt(data_dir: Path, copy: Path, part: Path, header: Header, key: bytes) -> BackupResult:
    try:
        snap = snapshots.copy_database(data_dir / DB_FILE, copy)
    except StorageError as exc:
        raise BackupError(exc.message) from exc
    result = BackupResult(part, participants=snap.participants)
    config_text = _read_small(data_dir / CONFIG_FILE)
    if config_text is None:
        raise BackupError(f"{data_dir / CONFIG_FILE} cannot be read")
    result.outside = _outside(data_dir, config_text)
    with _Writer(part, header, key) as writer:
        writer.record({"format": archive.FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                       "software": _software(), "schemaVersion": snap.schema_version,
                       "participants": [{"name": n, "did": d} for n, d in snap.participants],
                       "dataDir": str(data_dir.resolve()), "dataDirAsGiven": str(data_dir.absolute())})
        writer.data("tds.toml", config_text)
        for name in (TOKEN_FILE, ADMIN_TOKEN_FILE):
            token = _read_small(data_dir / name)
            if token is not None:
                writer.data(name, token)
        writer.copy("tds.db", copy)
        for top in ("keys", "files"):
            _tree(writer, data_dir, top, result)
        _vault(writer, data_dir, result)
        for name, _ in snap.participants:
            for role in ("ed25519.key", "x25519.key"):
                if f"keys/{name}/{role}" not in writer.names:
                    raise _Changed(f"participant {name!r} has no keys/{name}/{role}")
        deleted = set(result.deleted)
        for path in snap.vault_files:
            folder = path.rsplit("/", 1)[0]
            if f"{folder}/.key" in writer.names and path not in writer.names and folder not in deleted:
                raise _Changed(f"the vault file {path} named by the database is missing although its agreement's "
                               "data key is there")
        result.files, result.folders, result.bytes = writer.files, writer.folders, writer.bytes
        writer.close({"entries": writer.files + writer.folders, "bytes": writer.bytes, "deleted": result.deleted})
    return result


def _tree(writer: _Writer, data_dir: Path, top: str, result: BackupResult) -> None:
    """Archive the folder *top* of the data folder: regular files and folders, no symbolic link followed."""
    root = data_dir / top
    if not root.is_dir() or root.is_symlink():
        return
    writer.folder(top)
    for at, folders, files in os.walk(root):
        folders.sort()
        relative = Path(at).relative_to(data_dir).as_posix()
        for name in list(folders):
            if os.path.islink(os.path.join(at, name)):
                result.skipped.append(f"{relative}/{name} (symbolic link)")
                folders.remove(name)
            else:
                writer.folder(f"{relative}/{name}")
        for name in sorted(files):
            if name.startswith(".") and name.endswith(".part"):
                continue  # a snapshot being fetched
            if not writer.copy(f"{relative}/{name}", Path(at, name), skipped=result.skipped):
                continue


def _vault(writer: _Writer, data_dir: Path, result: BackupResult) -> None:
    """Archive ``vault/PARTICIPANT/AGREEMENT/``: each agreement's files, then its data key (see the module's
    docstring for why in that order)."""
    from connector.services.vault import KEY_FILE

    root = data_dir / "vault"
    if not root.is_dir() or root.is_symlink():
        return
    writer.folder("vault")
    for participant in _folders(root, result, "vault"):
        writer.folder(f"vault/{participant.name}")
        for agreement in _folders(participant, result, f"vault/{participant.name}"):
            folder = f"vault/{participant.name}/{agreement.name}"
            writer.folder(folder)
            # A folder without a key to begin with holds files received before the vault was sealed at rest
            # (sealed at the node's next start), or what a deletion interrupted by a crash left: kept as it is.
            keyed = os.path.lexists(agreement / KEY_FILE)
            with os.scandir(agreement) as entries:
                names = sorted(e.name for e in entries if not e.name.startswith("."))
            for name in names:
                writer.copy(f"{folder}/{name}", agreement / name, skipped=result.skipped)
            if not writer.copy(f"{folder}/{KEY_FILE}", agreement / KEY_FILE, skipped=result.skipped) and keyed:
                result.deleted.append(folder)


def _folders(root: Path, result: BackupResult, relative: str) -> list[Path]:
    found = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
            elif not entry.name.startswith("."):
                result.skipped.append(f"{relative}/{entry.name}")
    return sorted(found)


def _read_small(path: Path, limit: int = 1024 * 1024) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BackupError(f"{path} is larger than {limit} bytes")
    return data


def _outside(data_dir: Path, config_text: bytes) -> list[str]:
    """What the config names that a backup does not hold: data roots and TLS files."""
    try:
        config = parse_config(config_text.decode("utf-8"))
    except (ConfigError, UnicodeDecodeError) as exc:
        raise BackupError(f"{data_dir / CONFIG_FILE} is not a valid config: {exc}") from exc
    named = [p for p in (config.node.tls_cert, config.node.tls_key, config.node.tls_ca,
                         config.node.management_tls_cert, config.node.management_tls_key) if p]
    named += [p for folders in config.data_roots.values() for p in folders]
    return named


def _software() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tds-connector")
    except PackageNotFoundError:
        return "unknown"


class _Writer:
    """The archive being written to ``FILE.part``: the tar stream, cut into frames and sealed."""

    def __init__(self, path: Path, header: Header, key: bytes) -> None:
        self._fd = filemodes.open_private(path, os.O_WRONLY | os.O_TRUNC)
        self._sealer = archive.Sealer(key, header)
        self._buffer = bytearray()
        self._first = True
        self.names: set[str] = set()
        self.files = self.folders = self.bytes = 0
        self._write(self._sealer.prefix())

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self._fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def record(self, value: dict[str, Any]) -> None:
        """The first frame: what the backup is of (opened first on restore, to check the key)."""
        assert self._first
        self._first = False
        self._write(self._sealer.frame(archive.encode_record(value)))

    def _tar(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= archive.FRAME_SIZE:
            self._write(self._sealer.frame(bytes(self._buffer[:archive.FRAME_SIZE])))
            del self._buffer[:archive.FRAME_SIZE]

    def folder(self, name: str) -> None:
        self.names.add(name)
        self.folders += 1
        self._tar(archive.folder_header(name, time.time()))

    def data(self, name: str, content: bytes) -> None:
        self.names.add(name)
        self.files += 1
        self.bytes += len(content)
        self._tar(archive.file_header(name, len(content), time.time()) + content + archive.padding(len(content)))

    def copy(self, name: str, path: Path, *, skipped: list[str] | None = None) -> bool:
        """Archive the regular file *path* as *name*; False if it is not there (or not a regular file: then
        noted in *skipped*). A file that shrinks while it is read makes the backup start again."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as exc:  # ELOOP: a symbolic link
            if skipped is not None:
                skipped.append(f"{name} ({'symbolic link' if os.path.islink(path) else exc.strerror})")
            return False
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                if skipped is not None:
                    skipped.append(f"{name} (not a regular file)")
                return False
            size = info.st_size
            self._tar(archive.file_header(name, size, info.st_mtime))
            left = size
            while left:
                piece = os.read(fd, min(left, _READ))
                if not piece:
                    raise _Changed(f"{name} shrank while it was being backed up")
                self._tar(piece)
                left -= len(piece)
            self._tar(archive.padding(size))
        finally:
            os.close(fd)
        self.names.add(name)
        self.files += 1
        self.bytes += size
        return True

    def close(self, closing: dict[str, Any]) -> None:
        """End the tar stream, seal the closing record as the last frame, and make the file durable."""
        self._tar(archive.END)
        if self._buffer:
            self._write(self._sealer.frame(bytes(self._buffer)))
            self._buffer.clear()
        self._write(self._sealer.frame(archive.encode_record(closing), final=True))
        os.fsync(self._fd)


# -- restoring ----------------------------------------------------------------------------------------------


def read_header(path: Path) -> Header:
    """The header of the backup file *path* (says whether a passphrase or which private key opens it)."""
    with _open_archive(path) as fd:
        return _header(fd)[0]


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BackupError(f"{path} cannot be read: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        piece = os.read(fd, left)
        if not piece:
            break
        chunks.append(piece)
        left -= len(piece)
    return b"".join(chunks)


def _header(fd: int) -> tuple[Header, bytes]:
    first = _read_exact(fd, len(archive.MAGIC) + 2)
    length = archive.header_length(first)
    header = archive.parse_header(first + _read_exact(fd, length))
    return header, _read_exact(fd, archive.STREAM_HEADER_SIZE)


class _Frames:
    """The plaintext of an archive's tar stream, read frame by frame (the closing record kept when met)."""

    def __init__(self, fd: int, opener: archive.Opener) -> None:
        self._fd, self._opener = fd, opener
        self._buffer = bytearray()
        self.closing: dict[str, Any] | None = None

    def frame(self) -> tuple[bytes, bool]:
        length = archive.frame_length(_read_exact(self._fd, 4))
        sealed = _read_exact(self._fd, length)
        if len(sealed) != length:
            raise BackupError("the backup is cut short: its last frame is missing (the backup did not finish, or "
                              "the file was truncated)")
        return self._opener.open(sealed)

    def read(self, n: int) -> bytes:
        """*n* bytes of the tar stream, fewer only where it ends."""
        while len(self._buffer) < n and self.closing is None:
            plaintext, final = self.frame()
            if final:
                self.closing = archive.decode_record(plaintext, "closing record")
            else:
                self._buffer += plaintext
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def finish(self) -> dict[str, Any]:
        """Read to the end: nothing but zeros may follow the tar stream's end, and nothing the closing record."""
        while self.closing is None:
            rest = self.read(_READ)
            if rest.count(0) != len(rest):
                raise BackupError("the backup has data after the end of its file list: damaged or tampered with")
        if self._buffer.count(0) != len(self._buffer) or os.read(self._fd, 1):
            raise BackupError("the backup has data after its end: damaged or tampered with")
        return self.closing


def restore(path: Path, target: Path, key_of: Callable[[Header], bytes], *, max_bytes: int | None = None,
            max_entries: int = MAX_ENTRIES) -> RestoreResult:
    """Restore the backup *path* into *target* (new, or an empty folder). *key_of* is called with the archive's
    :class:`~connector.archive.Header` and returns the stream key (from a passphrase or a private key).
    Raises :class:`BackupError` for a wrong key, a damaged or hostile archive or a folder that is not empty;
    whatever was written is then removed."""
    started = time.monotonic()
    _check_empty(target)
    with _open_archive(path) as fd:
        header, stream_header = _header(fd)
        key = key_of(header)
        frames = _Frames(fd, archive.Opener(key, header, stream_header))
        plaintext, final = frames.frame()  # the wrong key stops here, before anything is written
        about = archive.decode_record(plaintext, "description")
        if final or about.get("format") != archive.FORMAT:
            raise BackupError("the backup's description is not one this release reads")
        schema = about.get("schemaVersion")
        try:
            check_schema_version(schema if isinstance(schema, int) else -1, "the backed-up database")
        except SchemaVersionError as exc:
            raise BackupError(exc.message) from exc
        created = not target.exists()
        limit = max_bytes
        try:
            filemodes.make_private(target)
            if limit is None:
                disk = os.statvfs(target)
                limit = max(0, disk.f_bavail * disk.f_frsize - RESERVE_BYTES)
            result = _extract(frames, target, about, limit, max_entries)
        except BaseException as exc:
            _remove(target, created)
            if isinstance(exc, OSError):  # not writable, a full disk …: said in one line, like the rest
                raise BackupError(f"the backup cannot be restored into {target}: {exc.strerror or exc}") from exc
            raise
    result.seconds = time.monotonic() - started
    return result


def _check_empty(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise BackupError(f"{target} exists and is not a folder: restore into a new or empty folder")
    if target.is_dir():
        with os.scandir(target) as entries:
            if next(entries, None) is not None:
                raise BackupError(f"{target} is not empty: restore into a new or empty folder")


def _remove(target: Path, created: bool) -> None:
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError), os.scandir(target) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _extract(frames: _Frames, target: Path, about: dict[str, Any], limit: int, max_entries: int) -> RestoreResult:
    result = RestoreResult(about)
    root = os.path.realpath(target)
    seen: set[str] = set()
    config: bytes | None = None
    written: list[Path] = []  # made durable together at the end (one by one while writing stalls the disk)
    folders: list[Path] = [target]
    while (member := archive.next_member(frames.read)) is not None:
        if member.name in seen:
            raise BackupError(f"the backup holds {member.name!r} twice")
        seen.add(member.name)
        if len(seen) > max_entries:
            raise BackupError(f"the backup holds more than {max_entries} entries (--max-files)")
        path = target / member.name
        if not os.path.realpath(path.parent).startswith(root + os.sep) and os.path.realpath(path.parent) != root:
            raise BackupError(f"the backup's {member.name!r} would be written outside {target}")
        if member.folder:
            result.folders += 1
            filemodes.make_dir(path)
            folders.append(path)
            continue
        if result.bytes + member.size > limit:
            raise BackupError(f"the backup holds more than {limit} bytes (--max-bytes, or the free space of "
                              f"{target}'s disk less {RESERVE_BYTES // 2**20} MiB)")
        result.files += 1
        result.bytes += member.size
        if member.name == CONFIG_FILE:
            if member.size > 1024 * 1024:
                raise BackupError("the backup's tds.toml is larger than 1 MiB")
            config = _member_bytes(frames, member.size)
            continue
        filemodes.make_dir(path.parent)
        _write_member(frames, path, member.size)
        written.append(path)
    closing = frames.finish()
    if closing.get("entries") != result.files + result.folders:
        raise BackupError(f"the backup's closing record counts {closing.get('entries')!r} entries, its file list "
                          f"{result.files + result.folders}: damaged or tampered with")
    for folder in closing.get("deleted") or []:
        if not isinstance(folder, str) or not folder.startswith("vault/"):
            raise BackupError("the backup's closing record names a folder outside the vault")
        archive.check_name(folder, folder=True)
        shutil.rmtree(target / folder, ignore_errors=True)
        result.deleted.append(folder)
    if config is None or not (target / DB_FILE).is_file():
        raise BackupError("the backup holds no tds.toml or no database: it is not a node's data folder")
    try:
        text = config.decode("utf-8")
        parsed = parse_config(text)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise BackupError(f"the backup's tds.toml is not a valid config: {exc}") from exc
    old = [str(about.get("dataDir", "")), str(about.get("dataDirAsGiven", ""))]
    if str(target.resolve()) not in old:
        try:
            result.relocated = snapshots.relocate_file_assets(target / DB_FILE, old, target.resolve())
        except StorageError as exc:
            raise BackupError(f"the backup's database cannot be opened: {exc.message}") from exc
    for named in [p for p in (parsed.node.tls_cert, parsed.node.tls_key, parsed.node.tls_ca,
                              parsed.node.management_tls_cert, parsed.node.management_tls_key) if p] + [
            p for folders in parsed.data_roots.values() for p in folders]:
        where = Path(named) if Path(named).is_absolute() else target / named
        if not where.exists():
            result.missing.append(named)
    for path in written:
        if path.exists():  # not in a folder deleted during the backup
            _fsync(path)
    for folder in folders:
        if folder.is_dir():
            _fsync(folder)
    # The config last, made durable: a folder without it is an unfinished restore, where no node starts.
    fd = filemodes.open_private(target / CONFIG_FILE, os.O_WRONLY | os.O_EXCL)
    try:
        os.write(fd, config)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync(target)
    return result


def _member_bytes(frames: _Frames, size: int) -> bytes:
    data = frames.read(size + (-size % archive.BLOCK))
    if len(data) < size:
        raise BackupError("the backup ends inside a file: damaged archive")
    return data[:size]


def _write_member(frames: _Frames, path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, filemodes.PRIVATE_FILE)
    try:
        os.fchmod(fd, filemodes.PRIVATE_FILE)
        left = size
        while left:
            piece = frames.read(min(left, _READ))
            if not piece:
                raise BackupError("the backup ends inside a file: damaged archive")
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
            left -= len(piece)
        pad = -size % archive.BLOCK
        if pad and len(frames.read(pad)) != pad:
            raise BackupError("the backup ends inside a file: damaged archive")
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- keys for backups sealed to a public key ---------------------------------------------------------------


def keygen(path: Path) -> str:
    """Make an X25519 key pair for backups: the private key into *path* (mode 0600; refuses to overwrite),
    the public key's multikey into ``PATH.pub``. Returns the public key's multikey."""
    secret = PrivateKey.generate()
    content = archive.private_key_file(secret)
    try:
        fd = filemodes.open_private(path, os.O_WRONLY | os.O_EXCL)
    except FileExistsError:
        raise BackupError(f"{path} already exists; a key file is never overwritten") from None
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    public = archive.decode_record(content, "key file")["publicKey"]
    Path(f"{path}.pub").write_text(f"{public}\n", encoding="utf-8")
    return str(public)


def public_key_from(value: str) -> bytes:
    """The X25519 public key given to ``--to-public-key``: a multikey, base64, or a file holding either."""
    candidate = Path(value)
    if len(value) < 4096 and candidate.is_file():
        raw = _read_small(candidate, archive.MAX_KEY_FILE)
        if raw is None:
            raise BackupError(f"{value} cannot be read")
        if archive.is_private_key_file(raw):
            raise BackupError(f"{value} is a private key file: give its public key ({value}.pub), and keep the "
                              "private key away from the machine that makes backups")
        try:
            return archive.parse_public_key(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BackupError(f"{value} does not hold a public key") from exc
    return archive.parse_public_key(value)


def private_key_from(path: Path) -> bytes:
    raw = _read_small(path, archive.MAX_KEY_FILE)
    if raw is None:
        raise BackupError(f"no key file {path}")
    return archive.parse_private_key_file(raw)
