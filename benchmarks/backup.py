"""Backup and restore speed of a data folder of a few hundred MB, beside a plain ``tar`` of the same folder.

The folder: a node made by ``tds init``, its database grown to about 100 MB (a table of random rows beside the
node's own: the backup API copies pages whatever they hold), 40 received files of 5 MiB in the vault (each
agreement folder with its key and bundle, as the node keeps them) and 10 published files of 5 MiB; all bytes
random (nothing compresses, as sealed data would not). Baselines in the same run: ``tar -cf`` of the folder
(no compression, no encryption, no consistency with a running node) and ``tar -xf`` of that tar, each also
followed by an fsync of what it wrote ("durable"), as ``tds backup`` and ``tds restore`` do.
Each figure is the median of three runs; the page cache is warm for every one. The passphrase's Argon2id
(run once per backup and once per restore) is timed on its own line and left out of the rates.

    python benchmarks/backup.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector import archive, backup  # noqa: E402
from connector.bootstrap import init_node  # noqa: E402

MiB = 1024 * 1024
RUNS = 3
PASSPHRASE = "a benchmark passphrase"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".backup" not in p.parts)


def make_folder(root: Path) -> Path:
    data_dir = root / "acme"
    init_node(data_dir, name="acme", port=0, dev_mode=True)
    db = sqlite3.connect(data_dir / "tds.db")
    with db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE bench_fill (id INTEGER PRIMARY KEY, blob BLOB)")
        db.executemany("INSERT INTO bench_fill (blob) VALUES (?)", ((os.urandom(4000),) for _ in range(25_000)))
    db.close()  # the last connection: the WAL is checkpointed into the database
    for i in range(40):
        folder = data_dir / "vault" / "acme" / f"urn_uuid_{i:04d}"
        folder.mkdir(parents=True)
        (folder / "payload.bin").write_bytes(os.urandom(5 * MiB))
        (folder / "payload.bin.bundle.json").write_text('{"manifest": {}}')
        (folder / ".key").write_text('{"format": "tds-vault-data-key-v1"}')
    for i in range(10):
        (data_dir / "files" / "acme" / f"published-{i}.csv").write_bytes(os.urandom(5 * MiB))
    return data_dir


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        data_dir = make_folder(root)
        size = folder_size(data_dir)
        header, key = archive.passphrase_header(PASSPHRASE)
        kdf = timed(lambda: header.key_from_passphrase(PASSPHRASE))
        tar_out, ours = root / "plain.tar", root / "acme.tdsbak"

        def tar_create(durable: bool = False) -> None:
            subprocess.run(["tar", "-cf", str(tar_out), "-C", str(data_dir), "."], check=True)
            if durable:
                fsync(tar_out)

        def tar_extract(durable: bool = False) -> None:
            target = root / "tar-restored"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            subprocess.run(["tar", "-xf", str(tar_out), "-C", str(target)], check=True)
            if durable:
                for path in [target, *target.rglob("*")]:
                    fsync(path)

        def our_backup() -> None:
            backup.make_backup(data_dir, ours, header, key)

        def our_restore() -> None:
            target = root / "restored"
            shutil.rmtree(target, ignore_errors=True)
            backup.restore(ours, target, lambda _: key)

        results = {}
        for name, fn in (("tar -cf", tar_create), ("tar -cf + fsync", lambda: tar_create(durable=True)),
                         ("tds backup", our_backup), ("tar -xf", tar_extract),
                         ("tar -xf + fsync", lambda: tar_extract(durable=True)), ("tds restore", our_restore)):
            results[name] = statistics.median(timed(fn) for _ in range(RUNS))
        mb = size / 1e6
        print(f"data folder: {mb:.0f} MB ({size / MiB:.0f} MiB); archive {ours.stat().st_size / 1e6:.0f} MB, "
              f"plain tar {tar_out.stat().st_size / 1e6:.0f} MB; Argon2id once: {kdf:.2f} s")
        for ours_name, base_name in (("tds backup", "tar -cf"), ("tds restore", "tar -xf")):
            rate, base = mb / results[ours_name], mb / results[f"{base_name} + fsync"]
            plain = mb / results[base_name]
            print(f"TARGET {ours_name.replace(' ', '_')}: {rate:.0f} MB/s ({results[ours_name]:.2f} s); baseline "
                  f"{base_name} + fsync {base:.0f} MB/s ({results[f'{base_name} + fsync']:.2f} s); ratio "
                  f"{rate / base:.2f}; goal >= 0.5: {'met' if rate / base >= 0.5 else 'missed'} "
                  f"(plain {base_name} {plain:.0f} MB/s, ratio {rate / plain:.2f})")


if __name__ == "__main__":
    main()
