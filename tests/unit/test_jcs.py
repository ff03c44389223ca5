"""The canonical JSON the project hashes (``usage_policies.jcs``) is the ``rfc8785`` package's, byte for
byte and error for error, whichever way it is written."""

from __future__ import annotations

import hashlib
import random

import pytest
import rfc8785

from usage_policies import jcs, ledger


def package(value: object) -> bytes:
    return bytes(rfc8785.dumps(value))


def test_every_character_is_written_as_the_package_writes_it():
    for start in range(0, 0x110000, 256):
        text = "".join(chr(c) for c in range(start, start + 256) if not 0xD800 <= c <= 0xDFFF)
        assert jcs.canonical(text) == package(text), hex(start)
        assert jcs.canonical({"k": [text]}) == package({"k": [text]}), hex(start)


@pytest.mark.parametrize("value", [
    {}, [], "", 0, -1, True, False, None,
    2**53 - 1, -(2**53 - 1),
    {"b": 1, "a": [1, "x", None, True, {"z": {}, "y": []}]},
    {"hash": "", "seq": 3, "reasons": ["permission #1 allows this"], "first_use": None},
    # Handed to the package: floats, keys beyond ASCII (RFC 8785 sorts by UTF-16 code units), subclasses.
    1.0, 0.5, 1e21, -0.0, [1.5, 2], {"a": 0.1},
    {"é": 1, "z": 2}, {"\U0001f600": 1, "\uff61": 2, "a": 3},
    {"state": __import__("enum").Enum("E", {"A": "a"}).A.value},
    (1, 2), ("a", {"b": "c"}),
], ids=repr)
def test_documents_are_written_as_the_package_writes_them(value):
    assert jcs.canonical(value) == package(value)


@pytest.mark.parametrize("value", [
    2**53, -(2**53), 2**64, float("nan"), float("inf"), "\ud800", {"k": "a\udfff"}, {1: "a"}, object(), b"bytes",
    {"k": {1, 2}},
], ids=repr)
def test_what_rfc_8785_refuses_is_refused_with_the_packages_error(value):
    with pytest.raises(Exception) as theirs:  # whatever the package raises
        rfc8785.dumps(value)
    with pytest.raises(type(theirs.value)) as ours:
        jcs.canonical(value)
    assert str(ours.value) == str(theirs.value)


def _random_value(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(8 if depth < 4 else 4)
    if pick == 0:
        return "".join(chr(rng.choice([rng.randrange(0x20), rng.randrange(0x80), rng.randrange(0xD800),
                                       rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randrange(12)))
    if pick == 1:
        return rng.choice([rng.randrange(-(2**53) + 1, 2**53), rng.randrange(-1000, 1000)])
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return rng.choice([rng.random() * 1e6, rng.choice([1.0, 1e-7, 123456789.0])])
    if pick < 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzABC_-@:0") for _ in range(rng.randrange(1, 8)))
            for _ in range(rng.randrange(6))]
    if rng.random() < 0.2:
        keys.append(rng.choice(["é", "\uff61", "\U0001f600", "ü-key"]))
    return {k: _random_value(rng, depth + 1) for k in keys}


def test_random_documents_are_written_as_the_package_writes_them():
    rng = random.Random(8785)
    for _ in range(3000):
        value = _random_value(rng)
        assert jcs.canonical(value) == package(value), value


def test_an_entry_hash_is_the_sha256_of_the_packages_bytes():
    rng = random.Random(1)
    head = None
    for i in range(200):
        head = ledger.append(head, agreement="urn:uuid:a", kind=rng.choice(["use", "redelivery", "delete"]),
                             use_id=f"u{i}\u00e9\n\"", at="2026-03-01T09:00:00.000000Z", action="use",
                             purpose=rng.choice(["R&D", "Forschung und Entwicklung", "研发", "\U0001f52c"]),
                             application="app", decision=rng.choice(["permit", "deny"]),
                             reasons=[f"reason {i}\t\u2028"], effects=["count"])
        assert head.hash == hashlib.sha256(package(head.body())).hexdigest()


def test_a_signed_head_is_signed_over_the_packages_bytes():
    from nacl.signing import SigningKey

    from connector.identity import proof
    from connector.identity.multikey import decode_multibase

    key = SigningKey(b"\x07" * 32)
    head = ledger.append(None, agreement="urn:uuid:a", kind="use", use_id="u1", at="2026-03-01T09:00:00Z",
                         decision="permit")
    document = ledger.head_document(head, signer="did:web:example.org:participants:parts", at="2026-03-01T09:00:00Z")
    signed = proof.sign(document, key, verification_method="did:web:example.org:participants:parts#key-1",
                        created="2026-03-01T09:00:00Z")
    config = {k: v for k, v in signed["proof"].items() if k != "proofValue"}
    expected = key.sign(hashlib.sha256(package(config)).digest() + hashlib.sha256(package(document)).digest())
    assert decode_multibase(signed["proof"]["proofValue"]) == expected.signature
