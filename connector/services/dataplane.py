"""The data plane, pull and push: the provider sends a file, the consumer verifies every chunk before
writing it. This module holds what both sides share (the failure that ends a move, the length of a payload
on the wire); the provider's side is :mod:`connector.services.sender`, the consumer's
:mod:`connector.services.receiver`, and the HTTP routes of both are :mod:`connector.http.dataplane`.
Where received bytes are kept (the partial file of a transfer, the agreement's folder, its data key, the
quota's count) is the vault's, :class:`connector.services.vault.Vault`.

Pull (``HttpData-PULL``): the consumer fetches the manifest and the signed envelope from the provider
(``GET /participants/NAME/data/:providerPid/manifest``), checks the envelope against the provider's DID
document and the binding (agreement, both pids, both DIDs), then streams the payload
(``GET …/data/:providerPid``, with a ``Range`` from its resume point) into the vault, verifying every chunk
before it is written. A bad chunk is fetched again from its offset, up to ``transfer_chunk_retries`` times,
then the transfer is terminated with the reason. After a connection drop or a restart of either node the
pull continues from the committed resume point.

Push (``HttpData-PUSH``): the same bytes travel the other way round. The provider ``PUT``s the manifest and
envelope to the consumer's inbox (``/participants/NAME/inbox/:consumerPid/manifest``), which checks them as
above and answers its resume point, then ``POST``s the (sealed) chunks from there (``?offset=N``). The inbox
receives with the same verify-before-write pipeline; for a chunk that does not verify it answers 422 with
its resume point, and the provider sends again after a pause. With every byte stored the provider notes the
push as done and the consumer completes the transfer.

Every data-plane request carries the transfer's token (``Authorization: Bearer``) *and* an RFC 9421
signature by the transfer's peer. Sealed transfers (important and core data, or ``node.encrypt_transfers``)
carry every chunk encrypted under a key for that transfer alone (:mod:`connector.payload.sealing`); the
consumer decrypts, verifies, then seals again for the vault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from connector.payload import manifest as manifests
from connector.payload import sealing

T = TypeVar("T")

SEALED_DETAIL = ("end-to-end encrypted: X25519 key agreement, HKDF-SHA256, AES-256-GCM per chunk; decrypted and "
                 "verified here")


class MoveFailed(Exception):
    """The pull or push cannot go on; the transfer is terminated with this reason."""


def wire_length(manifest: manifests.Manifest, offset: int, sealed: bool) -> int:
    """Bytes on the wire from plaintext *offset* on: the plaintext, plus a 16-byte tag per chunk if sealed."""
    length = manifest.size - offset
    if sealed:
        length += sealing.TAG_SIZE * (len(manifest.chunks) - offset // manifest.chunk_size)
    return length


class Lane:
    """One worker thread of a stream's own, off the event loop: what is given to it runs in the order given, one
    job after the other (chunks are read, sealed, opened, verified and written in order), so that the event
    loop can hand it the next chunk before the last one is done instead of waiting for each in turn.

    :meth:`close` lets the jobs already given finish, then runs *then* (closing the file they use), on the
    lane's thread: a file is never closed under a job still reading or writing it."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def run(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, job, *args)

    def close(self, then: Callable[[], object] | None = None) -> None:
        if then is not None:
            self._pool.submit(then)
        self._pool.shutdown(wait=False)
