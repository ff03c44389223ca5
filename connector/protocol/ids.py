"""The identifiers the node writes into JSON-LD documents, and how it reads them back (pure).

A JSON-LD processor reads every ``@id`` (and every term typed ``@id``: an offer's or agreement's ``target``,
the process ids) as an IRI. A relative reference such as ``"qi-2026"`` is resolved against whatever base
the processor has, or refused (W3C JSON-LD 1.1 §4.1.2; jsonld.js in safe mode, Digital Bazaar's Data
Integrity libraries). So every id the node mints is an absolute IRI, as in the DSP 2025-1 examples
(``urn:uuid:…``):

==========================  ====================================================================
dataset (``@id`` in the     ``urn:tds:asset:<provider DID>:<asset id>`` — the provider's DID makes it
catalog, ``target``)        unique beyond the catalog; the asset id is percent-encoded (RFC 3986 §2.1)
offer (``@id`` of an        ``urn:tds:offer:<contract definition>:<asset id>:<version>`` — the version
``Offer``)                  changes when the contract policy's terms do
process and agreement ids   ``urn:uuid:<random UUID>`` (RFC 9562)
catalog, data service       ``<provider DID>#catalog``, ``<provider DID>#dsp`` (DID URLs)
==========================  ====================================================================

The node reads what peers send as they wrote it: a dataset id it did not mint is kept as it is, relative
or not, and names the provider's asset of that id (``"qi-2026"``: an older node of its own, or the DSP
compatibility kit); an offer id ``CD:ASSET:VERSION`` without the ``urn:tds:offer:`` prefix (the node's own
older ids, the kit's) is read as before.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

ASSET_PREFIX = "urn:tds:asset:"
OFFER_PREFIX = "urn:tds:offer:"
#: What an asset id keeps unescaped in a URN: RFC 3986 §3.3 ``pchar`` besides the unreserved characters
#: (RFC 8141 §2: the namespace-specific string is made of ``pchar``).
_PCHAR = ":@!$&'()*+,;="
#: An absolute IRI: a scheme, a colon, no white space (RFC 3987 §2.2; as JSON-LD processors test it).
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


def is_absolute(iri: str) -> bool:
    """Whether *iri* is an absolute IRI (has a scheme), as a JSON-LD processor reads ``@id`` values."""
    return bool(_ABSOLUTE.match(iri))


def dataset_iri(provider: str, asset_id: str) -> str:
    """The id under which provider *provider* (a DID) shows its asset *asset_id* in catalogs and agreements."""
    return f"{ASSET_PREFIX}{provider}:{quote(asset_id, safe=_PCHAR)}"


def local_asset_id(provider: str, dataset_id: str) -> str:
    """The asset id of *provider* (a DID) that *dataset_id* names: its own ``urn:tds:asset:`` id, or an id
    the peer wrote as the asset id itself (relative, as older nodes and the compatibility kit do).

    The comparison is made on percent-decoded text: a ``did:web`` with a port holds ``%3A``, which a peer
    may send decoded once it passed through a URL path (``GET …/catalog/datasets/:id``)."""
    prefix = unquote(f"{ASSET_PREFIX}{provider}:")
    decoded = unquote(dataset_id)
    if decoded.startswith(prefix):
        return decoded[len(prefix):]
    return dataset_id


def same_dataset(provider: str, a: str, b: str) -> bool:
    """Whether dataset ids *a* and *b* name the same asset of *provider* (one may be an older relative id)."""
    return a == b or local_asset_id(provider, a) == local_asset_id(provider, b)


def offer_iri(definition_id: str, asset_id: str, version: str) -> str:
    """Our offer id for *asset_id* under contract definition *definition_id* at policy *version*."""
    return f"{OFFER_PREFIX}{definition_id}:{asset_id}:{version}"


def offer_parts(offer_id: str) -> tuple[str, str | None]:
    """The contract definition and the asset an offer id of ours names (``[urn:tds:offer:]CD:ASSET[:VERSION]``);
    an id of another form is its own definition id, and names no asset."""
    rest = offer_id[len(OFFER_PREFIX):] if offer_id.startswith(OFFER_PREFIX) else offer_id
    head, sep, tail = rest.partition(":")
    if not sep or not head:
        return offer_id, None
    asset = tail.split(":", 1)[0] if tail else None
    return head, asset or None
