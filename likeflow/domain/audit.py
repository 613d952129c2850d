"""Hash-chained audit entries: build them (`extend`) and re-walk a chain to its first break (`verify`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

import orjson

from likeflow.errors import LikeflowError

Kind = Literal["prompt", "feedback"]
KINDS: Final = frozenset({"prompt", "feedback"})
GENESIS_HASH: Final = "0" * 64
ENTRY_FIELDS: Final = frozenset({"seq", "kind", "record", "prev", "hash"})
# Canonical JSON: keys sorted, no whitespace, UTF-8, floats in their shortest round-trip form.
_CANONICAL: Final = orjson.OPT_SORT_KEYS


class AuditError(LikeflowError, ValueError):
    """A record cannot be audited (not JSON, unknown kind), or bytes are not a valid entry."""


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a chain: its `seq` and `hash`; the next entry has seq + 1 and prev = hash."""

    seq: int
    hash: str

    @property
    def next_seq(self) -> int:
        return self.seq + 1


# Before the first entry: the genesis entry has seq 0 and prev = 64 zeros.
GENESIS: Final = Head(seq=-1, hash=GENESIS_HASH)


# Foreign records a verification lists one by one (all of them are counted).
MAX_FOREIGN_KEPT: Final = 100


class BreakReason(Enum):
    """Why a chain is broken at an entry."""

    NOT_CANONICAL = "not canonical"  # the bytes differ from the canonical encoding of their content
    BAD_HASH = "bad hash"  # the entry's content does not hash to its `hash`
    SEQ_GAP = "seq gap"  # entries missing, repeated or reordered before this one
    PREV_MISMATCH = "prev mismatch"  # does not link to the previous entry (forked or forged chain)
    # Format v2 (likeflow/domain/audit_tree.py):
    BAD_ROOT = "bad root"  # a batch record's records do not give its Merkle root
    MISSING_BATCH = "missing batch"  # a batch record starts beyond the tree's end
    REORDERED = "reordered"  # batch records out of order
    FORK = "fork"  # a batch record extends the tree at a size already extended
    REWRITTEN = "rewritten"  # the log at a signed checkpoint's size is not what was signed
    TRUNCATED = "truncated"  # a signed checkpoint covers more than the log holds
    BAD_CHECKPOINT = "bad checkpoint"  # a checkpoint's signature fails, or two disagree
    VERSION = "version"  # a v1 entry after the log moved to v2


@dataclass(frozen=True, slots=True)
class Break:
    """The first entry at which a chain stops verifying."""

    offset: int
    reason: BreakReason
    detail: str


@dataclass(frozen=True, slots=True)
class Foreign:
    """A record of the audit log that is not an audit entry (not JSON, or not an entry's fields
    and types): someone else wrote it. Verification skips it and links the entries around it;
    removing or altering a real entry still breaks the chain's seq and prev links."""

    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """`count` entries verified from the start, ending at `head`; `first_break` is None when the
    chain is intact; `foreign_count` records that are not entries were skipped (the first
    `MAX_FOREIGN_KEPT` of them in `foreign`)."""

    count: int
    head: Head
    first_break: Break | None = None
    foreign: tuple[Foreign, ...] = ()
    foreign_count: int = 0

    @property
    def intact(self) -> bool:
        """No break: every entry links to the one before it."""
        return self.first_break is None

    @property
    def ok(self) -> bool:
        """Intact, and nothing but entries in the log."""
        return self.first_break is None and self.foreign_count == 0


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded audit entry."""

    seq: int
    kind: str
    record: Any
    prev: str
    hash: str


def entry_hash(prev: str, seq: int, kind: str, record: Any) -> str:
    """sha256(prev as 64 ASCII hex digits + canonical JSON of [seq, kind, record]), as hex.

    `prev` has a fixed length, so the concatenation is unambiguous; seq and kind are hashed with
    the record, so an entry cannot be moved, renumbered or relabelled without changing its hash.
    """
    body = orjson.dumps([seq, kind, record], option=_CANONICAL)
    return hashlib.sha256(prev.encode("ascii") + body).hexdigest()


def canonical_record(record: bytes) -> Any:
    """The JSON value of a record's bytes (raises AuditError when they are not JSON)."""
    try:
        return orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        raise AuditError(f"record is not JSON: {exc}") from None


def encode_entry(entry: Entry) -> bytes:
    """Canonical bytes of an entry."""
    return orjson.dumps(
        {
            "seq": entry.seq,
            "kind": entry.kind,
            "record": entry.record,
            "prev": entry.prev,
            "hash": entry.hash,
        },
        option=_CANONICAL,
    )


def extend(head: Head, kind: Kind, records: Iterable[bytes]) -> tuple[list[bytes], Head]:
    """Entries appending `records` (JSON bytes each) to the chain ending at `head`, and the new head.

    The same bytes as `encode_entry` of each `Entry` and the same hashes as `entry_hash`
    (tests/unit/test_audit_chain.py), assembled around the record's canonical JSON, which is
    encoded once.
    """
    if kind not in KINDS:
        raise AuditError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    out: list[bytes] = []
    kind_json = orjson.dumps(kind)
    for raw in records:
        record = orjson.dumps(canonical_record(raw), option=_CANONICAL)
        seq = head.next_seq
        seq_json = str(seq).encode()
        prev = head.hash.encode("ascii")
        digest = hashlib.sha256(prev + b"[" + seq_json + b"," + kind_json + b"," + record + b"]").hexdigest()
        out.append(
            b'{"hash":"' + digest.encode() + b'","kind":' + kind_json + b',"prev":"' + prev
            + b'","record":' + record + b',"seq":' + seq_json + b"}"
        )  # fmt: skip
        head = Head(seq, digest)
    return out, head


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def decode_entry(data: bytes) -> Entry:
    """Decode and type-check an entry (raises AuditError); does not check its hash or links."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AuditError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != ENTRY_FIELDS:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise AuditError(f"expected fields {sorted(ENTRY_FIELDS)}, found {found}")
    seq, kind = doc["seq"], doc["kind"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise AuditError(f"seq must be a non-negative integer, not {seq!r}")
    if kind not in KINDS:
        raise AuditError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    for name in ("prev", "hash"):
        if not _is_hex64(doc[name]):
            raise AuditError(f"{name} must be 64 lowercase hex digits")
    return Entry(seq, kind, doc["record"], doc["prev"], doc["hash"])


def head_of(data: bytes) -> Head:
    """The head a chain has after entry `data` (its last entry); raises AuditError, saying why,
    when `data` is not an entry or does not match its own hash."""
    entry = decode_entry(data)
    if entry_hash(entry.prev, entry.seq, entry.kind, entry.record) != entry.hash:
        raise AuditError(f"the entry with seq {entry.seq} does not match its hash")
    return Head(entry.seq, entry.hash)


class ChainVerifier:
    """Re-walks one chain entry by entry (for logs read incrementally); stops at the first break.

    A record that does not decode as an entry is foreign: recorded and skipped, the next entry
    must link to the last one verified. So is one shaped like an entry that neither matches its
    own hash nor links to the chain (the rule the writer uses to find a chain's head, so the two
    agree on what a chain is); an entry that links but does not match its hash is a tampered
    entry: a break.
    """

    def __init__(self, start: Head = GENESIS) -> None:
        self._head = start
        self._count = 0
        self._break: Break | None = None
        self._foreign: list[Foreign] = []
        self._foreign_count = 0

    def feed(self, offset: int, data: bytes) -> Break | None:
        """Check the record at `offset`; returns the chain's first break (this one or an earlier one)."""
        if self._break is None:
            try:
                entry = decode_entry(data)
            except AuditError as exc:
                self._add_foreign(offset, str(exc))
                return None
            links = entry.seq == self._head.next_seq and entry.prev == self._head.hash
            intact = entry_hash(entry.prev, entry.seq, entry.kind, entry.record) == entry.hash
            if not intact and not links:
                self._add_foreign(offset, f"seq {entry.seq}: matches neither its hash nor the chain")
                return None
            self._break = self._check(offset, data, entry)
            if self._break is None:
                self._count += 1
        return self._break

    def _add_foreign(self, offset: int, why: str) -> None:
        self._foreign_count += 1
        if len(self._foreign) < MAX_FOREIGN_KEPT:
            self._foreign.append(Foreign(offset, why))

    def _check(self, offset: int, data: bytes, entry: Entry) -> Break | None:
        # Every byte counts: content-preserving rewrites (1e+16 vs 1E+16, spaces) are caught too.
        if encode_entry(entry) != data:
            return Break(offset, BreakReason.NOT_CANONICAL, "bytes differ from the canonical encoding")
        if entry_hash(entry.prev, entry.seq, entry.kind, entry.record) != entry.hash:
            return Break(offset, BreakReason.BAD_HASH, f"seq {entry.seq}: content does not match its hash")
        expected = self._head.next_seq
        if entry.seq != expected:
            return Break(offset, BreakReason.SEQ_GAP, f"seq {entry.seq}, expected {expected}")
        if entry.prev != self._head.hash:
            return Break(
                offset,
                BreakReason.PREV_MISMATCH,
                f"seq {entry.seq}: prev {entry.prev[:12]}…, previous entry's hash {self._head.hash[:12]}…",
            )
        self._head = Head(entry.seq, entry.hash)
        return None

    def result(self) -> VerifyResult:
        """What the walk found so far."""
        return VerifyResult(self._count, self._head, self._break, tuple(self._foreign), self._foreign_count)


def verify(entries: Iterable[tuple[int, bytes]], start: Head = GENESIS) -> VerifyResult:
    """Re-walk `(offset, record bytes)` in log order from `start`; the first break, or the count
    and head; records that are not entries are listed as foreign and skipped."""
    verifier = ChainVerifier(start)
    for offset, data in entries:
        if verifier.feed(offset, data) is not None:
            break
    return verifier.result()
