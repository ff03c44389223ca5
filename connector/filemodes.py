"""File modes of a node's data folder: what the node writes is readable by the node's own user alone.

Every file the node creates there is 0600 and every folder 0700, whatever the umask of the process that
runs it (a container or a service manager may well start it with ``umask 000``). Two layers, because
either alone can miss something:

- the creators of anything sensitive (keys, tokens, config, the database, the vault, partial transfers,
  snapshots) ask for the mode explicitly and set it again after creating, since a umask can only take
  bits away and a file that already existed keeps its old mode through ``O_CREAT``;
- a process that runs a node (``tds serve``, ``tds init``, :meth:`connector.node.Node.start`) narrows its
  umask with :func:`restrict_umask`, so a file made by a library (SQLite's ``-wal`` and ``-shm`` files,
  for instance) or by code that names no mode is private too.

:func:`tighten` is the upgrade path for folders made before this: a node that starts on a data folder
with looser modes narrows them and says what it changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
#: The bits that let another local user read, write or enter.
_OTHERS = 0o077
#: What :func:`tighten` walks in a data folder: everything the node alone writes. Data roots (``files/``
#: and any an admin configures) hold what the operator puts there, and are left as the operator set them.
_PRIVATE_TREES = ("keys", "vault")


def restrict_umask() -> int:
    """Narrow the process's umask so that nothing it creates is open to other local users (at least
    ``0o077``; a stricter umask is kept). Returns the umask it had."""
    old = os.umask(_OTHERS)
    os.umask(old | _OTHERS)
    return old


def make_dir(path: Path) -> Path:
    """Create folder *path* and any missing parents, each mode 0700; a folder that exists is left as it is
    (see :func:`make_private` for one that must be private). Safe when another thread creates it too."""
    missing: list[Path] = []
    at = path
    while not os.path.lexists(at):
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile (another thread, another process): not ours to change
        os.chmod(folder, PRIVATE_DIR)  # a umask such as 0o277 would have taken the owner's bits too
    return path


def make_private(path: Path) -> Path:
    """Create folder *path* (parents 0700) and make it 0700 even if it already existed with a looser
    mode: for a folder that becomes a node's data folder."""
    make_dir(path)
    os.chmod(path, PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` for a file that is the node's alone: created 0600 if missing, and set to 0600 if it
    existed (``O_CREAT`` keeps an existing file's mode). Returns the file descriptor."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write *data* as the whole content of *path* (mode 0600); *durable*: synced to the disk before returning
    (for a file then renamed into place: a power loss leaves the old file or the whole new one)."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_file(path: Path) -> None:
    """Make sure file *path* exists and is 0600, without changing its content.

    For files a library creates on first open: SQLite makes a new database 0644, and gives its ``-wal``
    and ``-shm`` files the database file's mode; an empty file made here first is a valid empty database
    whose mode they then follow.
    """
    os.close(open_private(path, os.O_RDWR))


def tighten(data_dir: Path) -> list[str]:
    """Narrow the modes of what a node keeps in *data_dir* to 0600 (files) and 0700 (folders): the folder
    itself, the files directly in it (database and its ``-wal``/``-shm``, config, tokens) and everything
    under ``keys/`` and ``vault/``. Symbolic links are neither followed nor changed. Returns what was
    changed, relative to *data_dir*, each with its old mode (``"vault (755)"``)."""
    changed: list[str] = []

    def fix(path: Path, info: os.stat_result) -> None:
        if stat.S_ISDIR(info.st_mode):
            wanted = PRIVATE_DIR
        elif stat.S_ISREG(info.st_mode):
            wanted = PRIVATE_FILE
        else:
            return  # a symlink, socket or device: not something the node writes
        mode = stat.S_IMODE(info.st_mode)
        if not mode & ~wanted:
            return
        os.chmod(path, mode & wanted)
        name = "." if path == data_dir else str(path.relative_to(data_dir))
        changed.append(f"{name} ({mode:o})")

    try:
        top = os.lstat(data_dir)
    except FileNotFoundError:
        return changed
    if not stat.S_ISDIR(top.st_mode):
        return changed
    fix(data_dir, top)
    with os.scandir(data_dir) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                fix(Path(entry.path), info)
            elif stat.S_ISDIR(info.st_mode) and entry.name in _PRIVATE_TREES:
                fix(Path(entry.path), info)
                for root, folders, files in os.walk(entry.path):  # os.walk follows no symlinked folder
                    for name in (*folders, *files):
                        path = Path(root, name)
                        fix(path, os.lstat(path))
    return changed
