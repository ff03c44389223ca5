"""A JSON-LD processor other than the node (``pyld``), run offline: its contexts come from local files only.

:class:`OfflineContexts` is pyld's document loader: the DSP 2025-1 contexts as published
(``tests/shared/dsp-2025-1/context/``), the node's own context as the package ships it, the W3C contexts
from ``tests/shared/jsonld-contexts/`` (its README names their packages). Any other URL fails the test at
once; nothing is fetched. :func:`round_trip` expands a document and compacts it again with its own
``@context``, and reports every property the processor dropped.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyld import jsonld

from connector.protocol import contexts
from connector.testing import shared_dir

SHARED = shared_dir()
W3C = SHARED / "jsonld-contexts"
#: Context URL → where the local copy is (the node's own: from the package).
LOCAL: dict[str, Path | str] = {
    contexts.DSP: SHARED / "dsp-2025-1" / "context" / "dspace.jsonld",
    contexts.DSP_ODRL_PROFILE: SHARED / "dsp-2025-1" / "context" / "odrl.jsonld",
    contexts.TDS: contexts.TDS,
    "https://www.w3.org/ns/credentials/v2": W3C / "credentials-v2.jsonld",
    "https://www.w3.org/ns/did/v1": W3C / "did-v1.jsonld",
    "https://w3id.org/security/multikey/v1": W3C / "multikey-v1.jsonld",
    "https://w3id.org/security/data-integrity/v2": W3C / "data-integrity-v2.jsonld",
    "http://www.w3.org/ns/odrl.jsonld": W3C / "odrl.jsonld",
    "https://www.w3.org/ns/odrl.jsonld": W3C / "odrl.jsonld",
}


class ContextNotLocal(AssertionError):
    """The processor asked for a context that is not among the local copies: the test is no longer offline."""


@dataclass
class OfflineContexts:
    """pyld's ``documentLoader``: local files only; every URL asked for is noted in :attr:`asked`."""

    asked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __call__(self, url: str, options: Any = None) -> dict[str, Any]:
        self.asked.append(url)
        where = LOCAL.get(url)
        if where is None:
            self.refused.append(url)
            raise ContextNotLocal(f"pyld asked for {url!r}, which is not a local context (nothing is fetched)")
        document = contexts.document(where) if isinstance(where, str) else json.loads(where.read_text("utf-8"))
        return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}


@dataclass
class RoundTrip:
    """A document expanded and compacted again: what the processor dropped on the way."""

    expanded: list[Any]
    compacted: dict[str, Any]
    dropped: list[str]


def round_trip(document: dict[str, Any], loader: OfflineContexts) -> RoundTrip:
    """Expand *document*, then compact the result with the document's own ``@context``. No base IRI is
    given, so a relative reference stays relative (and shows) instead of being resolved against a made-up
    base."""
    _forget_processed_contexts()
    dropped: list[str] = []
    options = {"documentLoader": loader, "base": None}
    expanded = jsonld.expand(copy.deepcopy(document), options, on_property_dropped=lambda p: dropped.append(str(p)))
    compacted = jsonld.compact(expanded, {"@context": document["@context"]}, options)
    return RoundTrip(expanded, compacted, dropped)


def _forget_processed_contexts() -> None:
    """Each document starts with pyld's context caches empty. pyld 3.3 merges the terms of a context that
    ``@import``s another into its cached copy of the imported one, and serves that merge to the next context
    importing it from the same active context (``ResolvedContext.get_processed`` in the ``@import`` branch of
    ``_process_context``): after a ContractRequestMessage, whose type-scoped context imports the DSP ODRL
    profile, a Dataset's type-scoped context (which imports it too) comes out without its own
    ``distribution``. Processed alone, each document expands as the JSON-LD 1.1 algorithms say."""
    jsonld._resolved_context_cache.clear()
    jsonld._inverse_context_cache.clear()
