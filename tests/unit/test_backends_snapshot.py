"""Snapshots of HTTP backends with a fake streaming client, into a temporary own-files folder: the
snapshot file and its address, the byte limit, a backend that fails — no node, no sockets."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.errors import BadRequest, PayloadTooLarge, PeerError
from connector.services import backends

URL = "https://backend.internal/qi.csv"


class Body:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class Answer:
    def __init__(self, status: int, pieces: list[bytes]) -> None:
        self.status = status
        self.content = Body(pieces)


class BackendClient:
    """Streams canned pieces; keeps the URLs asked for and whether they went through the backend session."""

    def __init__(self, status: int = 200, pieces: list[bytes] | None = None, *, fail: bool = False) -> None:
        self.answer = Answer(status, pieces or [])
        self.fail = fail
        self.asked: list[tuple[str, bool]] = []

    @contextlib.asynccontextmanager
    async def stream(self, url: str, *, backend: bool = False) -> AsyncIterator[Answer]:
        self.asked.append((url, backend))
        if self.fail:
            raise PeerError(f"{url} is unreachable")
        yield self.answer


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


async def test_a_snapshot_is_named_by_its_digest_and_keeps_its_origin(tmp_path):
    client = BackendClient(pieces=[b"lot,defects\n", b"L1,0\n"])
    address = await backends.snapshot(client, tmp_path, "qi/2026", URL, limit=1000)
    digest = hashlib.sha256(b"lot,defects\nL1,0\n").hexdigest()
    path = tmp_path / backends.SNAPSHOTS / "qi_2026" / f"{digest}.bin"
    assert address["type"] == "File" and address["path"] == str(path) and address["origin"] == URL
    assert address["sha256"] == digest and address["size"] == 17
    assert path.read_bytes() == b"lot,defects\nL1,0\n"
    assert client.asked == [(URL, True)]  # the backend session: the node's own listeners are out of reach


async def test_data_over_the_limit_is_refused_and_leaves_nothing(tmp_path):
    client = BackendClient(pieces=[b"x" * 600, b"x" * 600])
    with pytest.raises(PayloadTooLarge):
        await backends.snapshot(client, tmp_path, "big", URL, limit=1000)
    assert files_in(tmp_path) == []


async def test_a_backend_answering_an_error_is_a_bad_request(tmp_path):
    with pytest.raises(BadRequest) as info:
        await backends.snapshot(BackendClient(404), tmp_path, "qi", URL, limit=1000)
    assert info.value.path == "dataAddress.url" and "404" in info.value.message
    assert files_in(tmp_path) == []


async def test_an_unreachable_backend_is_a_bad_request(tmp_path):
    with pytest.raises(BadRequest, match="could not be read"):
        await backends.snapshot(BackendClient(fail=True), tmp_path, "qi", URL, limit=1000)


@pytest.mark.parametrize("url", ["", None])
async def test_an_address_without_a_url_is_a_bad_request(tmp_path, url):
    client = BackendClient()
    with pytest.raises(BadRequest, match="needs a url"):
        await backends.snapshot(client, tmp_path, "qi", url, limit=1000)  # type: ignore[arg-type]
    assert client.asked == []
