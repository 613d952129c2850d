"""Check likeflow's audit evidence without trusting likeflow (docs/audit.md, "Proofs").

RFC 9162 Merkle trees (leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right)):
inclusion proofs (§2.1.3.2) and consistency proofs (§2.1.4.2), against checkpoints (tree heads)
signed with Ed25519. This one file uses nothing but the standard library and `cryptography`:
an auditor copies it and runs it with the log's public key::

    python3 audit_proof.py proof.json <public key: 64 hex digits, or a file holding them>

It exits 0 and prints `OK: ...` for a proof that holds, 1 and `FAILED: ...` otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# The first line of every signed checkpoint body (the version of the signed format).
CHECKPOINT_FORMAT: Final = "likeflow-audit-checkpoint/1"
INCLUSION_FORMAT: Final = "likeflow-audit-inclusion/1"
CONSISTENCY_FORMAT: Final = "likeflow-audit-consistency/1"
INCLUSION_FIELDS: Final = frozenset(
    {"format", "log", "leaf_index", "tree_size", "leaf_b64", "leaf_hash", "path", "checkpoint"}
)
CONSISTENCY_FIELDS: Final = frozenset({"format", "first", "second", "path"})
CHECKPOINT_FIELDS: Final = frozenset({"log", "size", "root", "head", "time_ms", "key_id", "signature"})
# The root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """The evidence does not hold (or is malformed); the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root that an inclusion proof of leaf hash `leaf` at `index` of a tree of `size` leaves
    leads to (RFC 9162 §2.1.3.2); raises ProofError when the path does not fit the tree."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not inside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the audit path is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Raises ProofError unless `path` proves leaf hash `leaf` at `index` in the tree with `root`."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError(f"the audit path of leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Raises ProofError unless `path` proves the tree of `second` leaves with `second_root`
    extends the tree of `first` leaves with `first_root` (RFC 9162 §2.1.4.2): the log only
    grew, nothing in its first `first` leaves changed."""
    if not 0 <= first <= second:
        raise ProofError(f"sizes {first} and {second} are not in order")
    if first == second:
        if path or first_root != second_root:
            raise ProofError(f"two different trees of the same size {first}")
        return
    if first == 0:
        if path:
            raise ProofError("a consistency proof from the empty tree is empty")
        return
    if not path:
        raise ProofError("empty consistency proof")
    proof = list(path)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a subtree of the new
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ProofError(f"the tree of size {second} does not extend the tree of size {first}")


def key_id(public_key: bytes) -> str:
    """A public key's id: the first 16 hex digits of SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def checkpoint_body(log: str, size: int, root: str, head: str, time_ms: int) -> bytes:
    """The bytes a checkpoint's signature covers: one field a line, UTF-8."""
    return f"{CHECKPOINT_FORMAT}\n{log}\n{size}\n{root}\n{head}\n{time_ms}\n".encode()


def _hex32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ProofError(f"{name} must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProofError(f"{name} must be 64 hex digits") from None


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{name} must be a non-negative integer")
    return value


def verify_checkpoint(doc: Any, public_key: bytes) -> tuple[str, int, bytes]:
    """Check a checkpoint's fields and Ed25519 signature with `public_key` (32 raw bytes);
    returns (log, size, root). Raises ProofError."""
    if not isinstance(doc, Mapping) or set(doc) != CHECKPOINT_FIELDS:
        found = sorted(doc) if isinstance(doc, Mapping) else type(doc).__name__
        raise ProofError(f"a checkpoint has the fields {sorted(CHECKPOINT_FIELDS)}, not {found}")
    log, size, time_ms = doc["log"], _count(doc["size"], "size"), _count(doc["time_ms"], "time_ms")
    root = _hex32(doc["root"], "root")
    _hex32(doc["head"], "head")
    if not isinstance(log, str) or "\n" in log:
        raise ProofError("log must be a one-line string")
    if doc["key_id"] != key_id(public_key):
        raise ProofError(f"signed with key {doc['key_id']!r}, not with the given key {key_id(public_key)!r}")
    try:
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        key = Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(signature, checkpoint_body(log, size, doc["root"], doc["head"], time_ms))
    except (InvalidSignature, binascii.Error, ValueError):
        raise ProofError(f"the signature of checkpoint {log} size {size} does not verify") from None
    return log, size, root


def check_inclusion_proof(doc: Any, public_key: bytes) -> str:
    """Check an inclusion proof document (`likeflow audit prove`); returns what it proved."""
    if not isinstance(doc, Mapping) or doc.get("format") != INCLUSION_FORMAT or set(doc) != INCLUSION_FIELDS:
        raise ProofError(f"not a {INCLUSION_FORMAT} document (fields {sorted(INCLUSION_FIELDS)})")
    log, size, root = verify_checkpoint(doc.get("checkpoint"), public_key)
    index = _count(doc.get("leaf_index"), "leaf_index")
    if doc.get("log") != log or doc.get("tree_size") != size:
        raise ProofError("the proof's log and tree size are not those of its checkpoint")
    try:
        leaf = base64.b64decode(str(doc.get("leaf_b64")), validate=True)
    except binascii.Error:
        raise ProofError("leaf_b64 is not base64") from None
    if _hex32(doc["leaf_hash"], "leaf_hash") != leaf_hash(leaf):
        raise ProofError("leaf_hash is not the hash of the leaf's bytes")
    path = doc.get("path")
    if not isinstance(path, list):
        raise ProofError("path must be a list")
    verify_inclusion(index, size, leaf_hash(leaf), [_hex32(p, "path") for p in path], root)
    return f"leaf {index} ({len(leaf)} bytes) is in {log} at size {size}, checkpoint signed"


def check_consistency_proof(doc: Any, public_key: bytes) -> str:
    """Check a consistency proof document between two signed checkpoints of one log."""
    if (
        not isinstance(doc, Mapping)
        or doc.get("format") != CONSISTENCY_FORMAT
        or set(doc) != CONSISTENCY_FIELDS
    ):
        raise ProofError(f"not a {CONSISTENCY_FORMAT} document (fields {sorted(CONSISTENCY_FIELDS)})")
    log1, first, root1 = verify_checkpoint(doc.get("first"), public_key)
    log2, second, root2 = verify_checkpoint(doc.get("second"), public_key)
    if log1 != log2:
        raise ProofError(f"checkpoints of two logs: {log1} and {log2}")
    path = doc.get("path")
    if not isinstance(path, list):
        raise ProofError("path must be a list")
    verify_consistency(first, second, root1, root2, [_hex32(p, "path") for p in path])
    return f"{log1} at size {second} extends itself at size {first}, both checkpoints signed"


def check_document(doc: Any, public_key: bytes) -> str:
    """An inclusion or consistency proof, by its `format`."""
    if isinstance(doc, Mapping) and doc.get("format") == CONSISTENCY_FORMAT:
        return check_consistency_proof(doc, public_key)
    return check_inclusion_proof(doc, public_key)


def parse_public_key(text: str) -> bytes:
    """32 raw bytes from 64 hex digits (the form `likeflow audit public-key` prints)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ProofError("a public key is 64 hex digits") from None
    if len(key) != 32:
        raise ProofError("a public key is 64 hex digits")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: audit_proof.py PROOF.json PUBLIC_KEY (64 hex digits or a file)", file=sys.stderr)
        return 2
    key_arg = args[1]
    try:
        key_text = Path(key_arg).read_text() if Path(key_arg).is_file() else key_arg
        with open(args[0], "rb") as f:
            doc = json.load(f)
        print("OK: " + check_document(doc, parse_public_key(key_text)))
        return 0
    except (ProofError, ValueError) as exc:
        print(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
