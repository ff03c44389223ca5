"""The JSON-LD contexts the node ships: read from the package, never fetched.

* ``dspace.jsonld``: the DSP 2025-1 context (:data:`DSP`), and ``odrl.jsonld``: the DSP ODRL profile it
  imports (:data:`DSP_ODRL_PROFILE`); Apache-2.0, as published with DSP 2025-1 (erratum 1).
* ``tds-v1.jsonld``: the node's own context (:data:`TDS`), the terms under ``https://w3id.org/tds/v1#``
  (README.md beside it says what each term is and why the agreement proofs are JSON literals). The
  public listener serves it at :data:`TDS_PATH`.

A JSON-LD processor working for the node takes its contexts from :func:`document`, which knows these
and no other URL, so that no context is ever fetched over the network.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

DSP = "https://w3id.org/dspace/2025/1/context.jsonld"
DSP_ODRL_PROFILE = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
TDS = "https://w3id.org/tds/v1"
#: The namespace of the node's own terms.
TDS_NS = TDS + "#"
#: Where the public listener serves :data:`TDS` (a stable path on every node).
TDS_PATH = "/contexts/tds/v1"
#: The media type of a JSON-LD document (RFC 9110 §8.3; W3C JSON-LD 1.1 §C).
MEDIA_TYPE = "application/ld+json"

FILES = {DSP: "dspace.jsonld", DSP_ODRL_PROFILE: "odrl.jsonld", TDS: "tds-v1.jsonld"}


class UnknownContext(LookupError):
    """A context URL the node does not ship (it fetches none)."""


@functools.cache
def body(url: str) -> bytes:
    """The shipped bytes of the context at *url*; :class:`UnknownContext` for any other URL."""
    name = FILES.get(url)
    if name is None:
        raise UnknownContext(f"the JSON-LD context {url!r} is not shipped with the node (none is fetched)")
    return resources.files(__name__).joinpath(name).read_bytes()


def document(url: str) -> dict[str, Any]:
    """The context document at *url* (a fresh copy: ``{"@context": …}``), read from the package."""
    parsed: dict[str, Any] = json.loads(body(url))
    return parsed
