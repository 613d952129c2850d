"""Audit log v2: one record per batch and partition over a growing RFC 9162 Merkle tree, signed
checkpoints of its head, and the verification of a whole partition log (v1 chain, then v2).

A partition's v2 log is one Merkle tree over every audited record's exact bytes (leaf =
SHA-256(0x00 || bytes)). Each batch record holds its records and a canonical JSON header line
(docs/audit.md, "Format v2"): the tree size before (`first`) and after (`size`), the tree's root
and frontier after it, each record's kind, and `prev`, the `hash` of the partition's previous
record (the last v1 entry's hash for the first v2 record: the migration point). A checkpoint
signs (log, size, root, head = the hash of the record ending at size, time) with Ed25519.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from likeflow.domain.audit import (
    GENESIS_HASH,
    MAX_FOREIGN_KEPT,
    AuditError,
    Break,
    BreakReason,
    ChainVerifier,
    Foreign,
    Head,
    Kind,
    VerifyResult,
    decode_entry,
    head_of,
)
from likeflow.domain.audit_proof import (
    ProofError,
    checkpoint_body,
    key_id,
    leaf_hash,
    verify_checkpoint,
)
from likeflow.domain.merkle import extend_frontier, frontier_root

VERSION: Final = 2
# The Kafka header that names a record's format version (v1 entries have none).
VERSION_HEADER: Final = "likeflow.audit.version"
BATCH_FIELDS: Final = frozenset({"v", "first", "size", "kinds", "prev", "root", "frontier", "hash"})
KIND_CODES: Final = {"prompt": "p", "feedback": "f"}
_CANONICAL: Final = orjson.OPT_SORT_KEYS
_HEX: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TreeHead:
    """Where a partition's log ends: its tree (`size` leaves, `frontier`) and the `hash` of its
    last record (v2 batch, or v1 entry before the first batch; 64 zeros for an empty log)."""

    size: int
    frontier: tuple[bytes, ...]
    hash: str

    @property
    def root(self) -> str:
        return frontier_root(self.frontier).hex()


EMPTY_HEAD: Final = TreeHead(0, (), GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded v2 record: its header fields, its records and the header line's bytes."""

    first: int
    size: int
    kinds: str
    prev: str
    root: str
    frontier: tuple[str, ...]
    hash: str
    records: tuple[bytes, ...]
    header_line: bytes

    def header(self) -> dict[str, object]:
        return {"v": VERSION, "first": self.first, "size": self.size, "kinds": self.kinds,
                "prev": self.prev, "root": self.root, "frontier": list(self.frontier)}  # fmt: skip


def batch_hash(header: dict[str, object]) -> str:
    """SHA-256 of the canonical JSON of the header without `hash`, as hex. The root covers the
    records, so the hash covers the whole record."""
    return hashlib.sha256(orjson.dumps(header, option=_CANONICAL)).hexdigest()


def seal(head: TreeHead, items: Sequence[tuple[Kind, Sequence[bytes]]]) -> tuple[bytes, TreeHead]:
    """One v2 record with `items` ((kind, records) in order; at least one record) appended to
    the log ending at `head`, and the new head. Raises AuditError for a record with a newline
    (records are stored one per line) or an unknown kind; nothing is built then."""
    kinds: list[str] = []
    values: list[bytes] = []
    for kind, records in items:
        code = KIND_CODES.get(kind)
        if code is None:
            raise AuditError(f"kind must be one of {sorted(KIND_CODES)}, not {kind!r}")
        for raw in records:
            if b"\n" in raw:
                raise AuditError("an audited record must not contain a newline byte")
        kinds.append(code * len(records))
        values.extend(records)
    if not values:
        raise AuditError("a batch record holds at least one record")
    size, frontier = extend_frontier(head.size, head.frontier, [leaf_hash(v) for v in values])
    header: dict[str, object] = {
        "v": VERSION, "first": head.size, "size": size, "kinds": "".join(kinds), "prev": head.hash,
        "root": frontier_root(frontier).hex(), "frontier": [h.hex() for h in frontier],
    }  # fmt: skip
    digest = batch_hash(header)
    header["hash"] = digest
    line = orjson.dumps(header, option=_CANONICAL)
    return b"\n".join([line, *values]), TreeHead(size, tuple(frontier), digest)


def seal_all(
    head: TreeHead, items: Sequence[tuple[Kind, Sequence[bytes]]], max_bytes: int
) -> tuple[list[bytes], TreeHead]:
    """`seal`, cut into records of about `max_bytes` at most (a record is never split)."""
    out: list[bytes] = []
    part: list[tuple[Kind, list[bytes]]] = []
    taken = 0
    for kind, records in items:
        for raw in records:
            if part and taken + len(raw) + 1 > max_bytes:
                value, head = seal(head, part)
                out.append(value)
                part, taken = [], 0
            if part and part[-1][0] == kind:
                part[-1][1].append(raw)
            else:
                part.append((kind, [raw]))
            taken += len(raw) + 1
    if part:
        value, head = seal(head, part)
        out.append(value)
    return out, head


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def is_batch(data: bytes) -> bool:
    """Whether `data` claims to be a v2 record (its first line has `"v":2`)."""
    return b'"v":2' in data.split(b"\n", 1)[0]


def decode_batch(data: bytes) -> Batch:
    """Decode and type-check a v2 record (raises AuditError); does not check hashes or links."""
    header_line, *records = data.split(b"\n")
    try:
        doc = orjson.loads(header_line)
    except orjson.JSONDecodeError as exc:
        raise AuditError(f"header is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != BATCH_FIELDS or doc["v"] != VERSION:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise AuditError(f"expected v2 header fields {sorted(BATCH_FIELDS)}, found {found}")
    first, size, kinds, frontier = doc["first"], doc["size"], doc["kinds"], doc["frontier"]
    for name, n in (("first", first), ("size", size)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise AuditError(f"{name} must be a non-negative integer, not {n!r}")
    if not isinstance(kinds, str) or not set(kinds) <= {"p", "f"}:
        raise AuditError("kinds must be a string of p and f")
    if not size - first == len(kinds) == len(records) >= 1:
        raise AuditError(f"sizes {first}..{size}, {len(kinds)} kinds and {len(records)} records do not agree")
    if (
        not isinstance(frontier, list)
        or len(frontier) != size.bit_count()
        or not all(map(_is_hex64, frontier))
    ):
        raise AuditError(f"frontier must be {size.bit_count()} hashes of 64 hex digits")
    for name in ("prev", "root", "hash"):
        if not _is_hex64(doc[name]):
            raise AuditError(f"{name} must be 64 lowercase hex digits")
    return Batch(first, size, kinds, doc["prev"], doc["root"], tuple(frontier), doc["hash"],
                 tuple(records), header_line)  # fmt: skip


def tree_head_of(data: bytes) -> TreeHead:
    """The head a log has after its record `data` (v1 entry or v2 record); raises AuditError,
    saying why, when `data` is neither or does not match its own hash. After a v1 entry the
    tree is empty and `hash` is the entry's: the first v2 record links to it."""
    if not is_batch(data):
        return TreeHead(0, (), head_of(data).hash)
    batch = decode_batch(data)
    if batch_hash(batch.header()) != batch.hash:
        raise AuditError(f"the record ending at size {batch.size} does not match its hash")
    return TreeHead(batch.size, tuple(bytes.fromhex(h) for h in batch.frontier), batch.hash)


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head of one partition's log (`log` = "<audit topic>/<partition>")."""

    log: str
    size: int
    root: str
    head: str
    time_ms: int
    key_id: str
    signature: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"log": self.log, "size": self.size, "root": self.root, "head": self.head,
             "time_ms": self.time_ms, "key_id": self.key_id, "signature": self.signature},
            option=_CANONICAL,
        )  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        return dict(orjson.loads(self.to_json()))


def log_id(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """The Ed25519 private key from a key file's text: 64 hex digits (the 32-byte seed, what
    `make secrets` writes) or a PKCS#8 PEM. Raises AuditError (never showing the key)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except ValueError:
            raise AuditError("the audit signing key is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError("the audit signing key is not an Ed25519 key")
        return key
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise AuditError("the audit signing key must be 64 hex digits (a 32-byte Ed25519 seed) or a PEM")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_checkpoint(key: Ed25519PrivateKey, log: str, head: TreeHead, time_ms: int) -> Checkpoint:
    root = head.root
    signature = key.sign(checkpoint_body(log, head.size, root, head.hash, time_ms))
    return Checkpoint(log, head.size, root, head.hash, time_ms, key_id(public_key_bytes(key)),
                      base64.b64encode(signature).decode())  # fmt: skip


def decode_checkpoint(data: bytes) -> Checkpoint:
    """A checkpoint record's value (fields and types only; the signature is checked by
    `audit_proof.verify_checkpoint`). Raises AuditError."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AuditError(f"checkpoint is not JSON: {exc}") from None
    try:
        if not isinstance(doc, dict):
            raise TypeError
        cp = Checkpoint(**doc)
    except TypeError:
        raise AuditError("not a checkpoint: unexpected fields") from None
    if not (isinstance(cp.log, str) and isinstance(cp.size, int) and isinstance(cp.time_ms, int)
            and _is_hex64(cp.root) and _is_hex64(cp.head) and isinstance(cp.key_id, str)
            and isinstance(cp.signature, str)):  # fmt: skip
        raise AuditError("not a checkpoint: fields of the wrong type")
    return cp


# --- verification of a partition's whole log --------------------------------------------------


@dataclass(slots=True)
class LogResult:
    """What a walk of one partition's log found: its v1 chain (`v1`), then `batches` v2 records
    holding `size` leaves (the tree's `root`), `checkpoints` signed checkpoints that match it,
    the largest at `signed_size`; the first break and the foreign records skipped."""

    v1: VerifyResult
    batches: int = 0
    size: int = 0
    root: str = ""
    head: str = GENESIS_HASH
    checkpoints: int = 0
    signed_size: int = 0
    first_break: Break | None = None
    foreign: list[Foreign] = field(default_factory=list)
    foreign_count: int = 0

    @property
    def intact(self) -> bool:
        return self.first_break is None

    @property
    def ok(self) -> bool:
        return self.first_break is None and self.foreign_count == 0

    @property
    def count(self) -> int:
        """Records verified: v1 entries plus v2 leaves."""
        return self.v1.count + self.size


class LogVerifier:
    """Walks one partition's log in offset order: its v1 chain (as `ChainVerifier`), then its v2
    records, each of which must continue the tree and the hash links, and checks every signed
    checkpoint of the partition against it. The first failure is the partition's break:

    - `bad hash` / `not canonical` / `bad root`: a record altered in place (its header, or its
      records no longer give its root);
    - `missing batch`: a record starts beyond the tree's end (a batch was deleted);
    - `reordered`: that missing batch comes right after it;
    - `fork`: a record extends the tree at a size already extended (two writers, one head);
    - `prev mismatch`: it does not link to the previous record (a forged record);
    - `rewritten`: the log at a checkpoint's size is not what was signed (a tail rewritten,
      with every hash recomputed);
    - `truncated`: a checkpoint signed a size the log does not reach;
    - `bad checkpoint`: a checkpoint's signature does not verify with the public key, or two
      signed checkpoints of one size disagree (a fork signed by a zombie).
    """

    def __init__(
        self, log: str, checkpoints: Iterable[Checkpoint] = (), public_key: bytes | None = None
    ) -> None:
        self.log = log
        self._v1 = ChainVerifier()
        self._v2_started = False
        self._tree_size = 0
        self._frontier: list[bytes] = []
        self._head = GENESIS_HASH
        self._batches = 0
        self._break: Break | None = None
        self._foreign: list[Foreign] = []
        self._foreign_count = 0
        self._pending_gap: tuple[int, Batch] | None = None
        self._last_offset = -1
        self._checked = 0
        self._signed = 0
        self._by_size: dict[int, Checkpoint] = {}
        for cp in checkpoints:
            if cp.log != log:
                continue
            if public_key is not None:
                try:
                    verify_checkpoint(cp.as_dict(), public_key)
                except ProofError as exc:
                    self._break = Break(-1, BreakReason.BAD_CHECKPOINT, f"{exc} (signed at {cp.time_ms} ms)")
                    break
            seen = self._by_size.get(cp.size)
            if seen is not None and (seen.root, seen.head) != (cp.root, cp.head):
                self._break = Break(
                    -1, BreakReason.BAD_CHECKPOINT,
                    f"two signed checkpoints of size {cp.size} disagree (a fork: root {seen.root[:12]}… "
                    f"at {seen.time_ms} ms, {cp.root[:12]}… at {cp.time_ms} ms)",
                )  # fmt: skip
                break
            self._by_size[cp.size] = cp
        self._sizes = sorted(self._by_size)
        self._next_cp = 0  # index into _sizes of the next checkpoint to meet

    @property
    def broken(self) -> bool:
        """A break was found (nothing after it is checked)."""
        return self._break is not None

    def feed(self, offset: int, data: bytes) -> Break | None:
        """Check the record at `offset`; returns the log's first break (this one or an earlier one)."""
        if self._break is not None:
            return self._break
        self._last_offset = offset
        if not is_batch(data):
            if self._v2_started:
                try:
                    decode_entry(data)
                except AuditError as exc:
                    self._add_foreign(offset, str(exc))
                    return None
                self._break = Break(offset, BreakReason.VERSION, "a v1 entry after the log moved to v2")
                return self._break
            self._break = self._v1.feed(offset, data)
            return self._break
        try:
            batch = decode_batch(data)
        except AuditError as exc:
            self._add_foreign(offset, str(exc))
            return None
        if not self._v2_started:
            v1 = self._v1.result()
            self._head = v1.head.hash
            self._v2_started = True
        intact = batch_hash(batch.header()) == batch.hash
        links = batch.first == self._tree_size and batch.prev == self._head
        if not intact and not links:
            self._add_foreign(
                offset, f"record ending at size {batch.size}: matches neither its hash nor the log"
            )
            return None
        self._break = self._check(offset, batch)
        return self._break

    def _add_foreign(self, offset: int, why: str) -> None:
        self._foreign_count += 1
        if len(self._foreign) < MAX_FOREIGN_KEPT:
            self._foreign.append(Foreign(offset, why))

    def _check(self, offset: int, batch: Batch) -> Break | None:
        if orjson.dumps({**batch.header(), "hash": batch.hash}, option=_CANONICAL) != batch.header_line:
            return Break(offset, BreakReason.NOT_CANONICAL, "header bytes differ from the canonical encoding")
        if batch_hash(batch.header()) != batch.hash:
            return Break(
                offset,
                BreakReason.BAD_HASH,
                f"record ending at size {batch.size}: header does not match its hash",
            )
        if self._pending_gap is not None:
            gap_offset, gap = self._pending_gap
            if batch.first == self._tree_size and batch.prev == self._head:
                return Break(
                    gap_offset, BreakReason.REORDERED,
                    f"the record of leaves {gap.first}..{gap.size - 1} comes before the one of "
                    f"{batch.first}..{batch.size - 1} (@{offset})",
                )  # fmt: skip
            return self._missing(gap_offset, gap)
        if batch.first > self._tree_size:
            self._pending_gap = (offset, batch)
            return None
        if batch.first < self._tree_size:
            return Break(
                offset, BreakReason.FORK,
                f"record of leaves {batch.first}..{batch.size - 1} extends the tree at size {batch.first}, "
                f"which was already extended to {self._tree_size}: two writers of one head",
            )  # fmt: skip
        if batch.prev != self._head:
            return Break(
                offset, BreakReason.PREV_MISMATCH,
                f"record ending at size {batch.size}: prev {batch.prev[:12]}…, "
                f"previous record's hash {self._head[:12]}…",
            )  # fmt: skip
        size, frontier = extend_frontier(
            self._tree_size, self._frontier, [leaf_hash(r) for r in batch.records]
        )
        root = frontier_root(frontier).hex()
        if root != batch.root or [h.hex() for h in frontier] != list(batch.frontier):
            return Break(
                offset,
                BreakReason.BAD_ROOT,
                f"the records of leaves {batch.first}..{size - 1} do not give its root",
            )
        while self._next_cp < len(self._sizes) and self._sizes[self._next_cp] <= size:
            cp = self._by_size[self._sizes[self._next_cp]]
            self._next_cp += 1
            if cp.size < size or (cp.root, cp.head) != (root, batch.hash):
                return Break(
                    offset, BreakReason.REWRITTEN,
                    f"the log at size {cp.size} is not what the checkpoint signed at {cp.time_ms} ms "
                    f"(root {cp.root[:12]}…): the tail from here on was rewritten",
                )  # fmt: skip
            self._checked += 1
            self._signed = cp.size
        self._tree_size, self._frontier, self._head = size, frontier, batch.hash
        self._batches += 1
        return None

    def _missing(self, offset: int, gap: Batch) -> Break:
        return Break(
            offset, BreakReason.MISSING_BATCH,
            f"record starts at leaf {gap.first}, the tree ends at {self._tree_size}: leaves "
            f"{self._tree_size}..{gap.first - 1} are missing",
        )  # fmt: skip

    def result(self) -> LogResult:
        """What the walk found; call once the whole log was fed (a trailing gap and checkpoints
        beyond the log's end are breaks)."""
        brk = self._break
        if brk is None and self._pending_gap is not None:
            brk = self._missing(*self._pending_gap)
        if brk is None and self._next_cp < len(self._sizes):
            cp = self._by_size[self._sizes[-1]]
            brk = Break(
                self._last_offset + 1, BreakReason.TRUNCATED,
                f"the log ends at size {self._tree_size}; "
                f"a checkpoint signed at {cp.time_ms} ms covers {cp.size}",
            )  # fmt: skip
        v1 = self._v1.result()
        foreign = [*v1.foreign, *self._foreign][:MAX_FOREIGN_KEPT]
        return LogResult(
            v1=v1, batches=self._batches, size=self._tree_size, root=frontier_root(self._frontier).hex(),
            head=self._head if self._v2_started else v1.head.hash, checkpoints=self._checked,
            signed_size=self._signed, first_break=brk, foreign=foreign,
            foreign_count=v1.foreign_count + self._foreign_count,
        )  # fmt: skip


def leaves_of(data: bytes) -> tuple[int, tuple[bytes, ...]] | None:
    """The first leaf index and records of a v2 record (None for anything else)."""
    if not is_batch(data):
        return None
    try:
        batch = decode_batch(data)
    except AuditError:
        return None
    return batch.first, batch.records


__all__ = [
    "EMPTY_HEAD",
    "VERSION_HEADER",
    "Batch",
    "Checkpoint",
    "Head",
    "LogResult",
    "LogVerifier",
    "TreeHead",
    "decode_batch",
    "decode_checkpoint",
    "leaves_of",
    "load_signing_key",
    "log_id",
    "public_key_bytes",
    "seal",
    "seal_all",
    "sign_checkpoint",
    "tree_head_of",
]
