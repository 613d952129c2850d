"""The audit hash chain: an intact chain verifies, any alteration is caught, foreign records are skipped."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.audit import (
    GENESIS,
    GENESIS_HASH,
    MAX_FOREIGN_KEPT,
    AuditError,
    BreakReason,
    Entry,
    Head,
    VerifyResult,
    encode_entry,
    entry_hash,
    extend,
    head_of,
    verify,
)


def prompt(i: int) -> bytes:
    return orjson.dumps(
        {"prompt_id": f"p{i}", "user_id": f"u{i % 3}", "price_cents": 100 + i, "score": i / 7}
    )


def feedback(i: int) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "kind": "order", "amount_cents": 500 + i})


def chain(n: int = 10) -> list[bytes]:
    """Prompts and feedback appended in batches, as the agents do."""
    entries, head = extend(GENESIS, "prompt", [prompt(i) for i in range(n // 2)])
    more, head = extend(head, "feedback", [feedback(i) for i in range(n - n // 2)])
    return entries + more


def at(entries: list[bytes], base: int = 100) -> list[tuple[int, bytes]]:
    return [(base + i, e) for i, e in enumerate(entries)]


def test_intact_chain_verifies_with_count_and_head() -> None:
    entries = chain()
    result = verify(at(entries))
    assert result.ok and result.count == 10
    assert result.head == head_of(entries[-1])
    assert result.head.seq == 9


def test_entry_format() -> None:
    entries, head = extend(GENESIS, "prompt", [b'{"b": 1, "a": [1.5, "x"]}'])
    doc = orjson.loads(entries[0])
    assert doc == {
        "seq": 0,
        "kind": "prompt",
        "record": {"a": [1.5, "x"], "b": 1},
        "prev": GENESIS_HASH,
        "hash": head.hash,
    }
    assert entries[0].startswith(b'{"hash":')  # canonical: keys sorted, no whitespace


def test_extend_continues_a_chain_like_one_batch() -> None:
    one, head_one = extend(GENESIS, "prompt", [prompt(i) for i in range(4)])
    first, mid = extend(GENESIS, "prompt", [prompt(i) for i in range(2)])
    second, head_two = extend(mid, "prompt", [prompt(i) for i in range(2, 4)])
    assert one == first + second and head_one == head_two


def test_empty_chain_is_intact() -> None:
    assert verify([]) == verify([], GENESIS)
    assert verify([]).ok and verify([]).count == 0 and verify([]).head == GENESIS


def test_bad_input_is_refused() -> None:
    with pytest.raises(AuditError):
        extend(GENESIS, "prompt", [b"not json"])
    with pytest.raises(AuditError):
        extend(GENESIS, "click", [prompt(1)])  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [0, 3, 9])
def test_altering_one_byte_of_a_record_is_caught_at_its_offset(index: int) -> None:
    entries = chain()
    # One byte inside the record: a user id or an event id.
    entries[index] = (
        entries[index].replace(b'"user_id":"u', b'"user_id":"v').replace(b'"event_id":"e', b'"event_id":"f')
    )
    result = verify(at(entries))
    assert result.first_break is not None
    assert result.first_break.offset == 100 + index
    assert result.first_break.reason is BreakReason.BAD_HASH
    assert result.count == index


def first_problem(result: VerifyResult) -> int | None:
    """The offset of the first break or foreign record (what an operator is shown first)."""
    offsets = [f.offset for f in result.foreign]
    if result.first_break is not None:
        offsets.append(result.first_break.offset)
    return min(offsets, default=None)


def test_every_single_byte_change_is_caught() -> None:
    entries = chain(4)
    target = entries[2]
    for pos in range(len(target)):
        for new in {target[pos] ^ 1, ord("E") if target[pos] == ord("e") else target[pos] ^ 2}:
            tampered = [*entries[:2], target[:pos] + bytes([new]) + target[pos + 1 :], entries[3]]
            result = verify(at(tampered))
            assert not result.ok and first_problem(result) == 102, (pos, new)
            if result.foreign:
                # No longer an entry: skipped, and the next one does not follow the last verified.
                assert [f.offset for f in result.foreign] == [102], (pos, new)
                assert result.first_break is not None, (pos, new)
                assert (result.first_break.offset, result.first_break.reason) == (103, BreakReason.SEQ_GAP)


def test_content_preserving_rewrite_is_caught() -> None:
    entries, _ = extend(GENESIS, "feedback", [b'{"x": 1e16}'])
    assert b"1e16" in entries[0] or b"1e+16" in entries[0]
    tampered = entries[0].replace(b"e16", b"E16").replace(b"e+16", b"E+16")
    result = verify([(0, tampered)])
    assert result.first_break is not None and result.first_break.reason is BreakReason.NOT_CANONICAL
    spaced = verify([(0, entries[0].replace(b",", b", "))])
    assert spaced.first_break is not None and spaced.first_break.reason is BreakReason.NOT_CANONICAL


def test_changing_prev_is_caught() -> None:
    entries = chain()
    doc = orjson.loads(entries[4])
    doc["prev"] = "f" * 64
    entries[4] = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    result = verify(at(entries))
    # Matching neither its hash nor the chain, the altered entry reads as a foreign record (as
    # the writer would skip it); the chain breaks at the next entry, which links to what is gone.
    assert [f.offset for f in result.foreign] == [104]
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (105, BreakReason.SEQ_GAP)


def test_an_entry_that_links_but_does_not_match_its_hash_is_a_break() -> None:
    entries = chain()
    doc = orjson.loads(entries[4])
    doc["record"]["price_cents"] = 1
    entries[4] = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    result = verify(at(entries))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (104, BreakReason.BAD_HASH)


def test_forged_prev_with_recomputed_hash_is_a_prev_mismatch() -> None:
    """A writer that extended another head (a forked chain) hashes correctly but does not link."""
    entries = chain()
    fork, _ = extend(Head(4, "a" * 64), "prompt", [prompt(99)])
    entries[5] = fork[0]
    result = verify(at(entries))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (105, BreakReason.PREV_MISMATCH)


def test_dropping_an_entry_is_caught_at_the_next_one() -> None:
    entries = chain()
    del entries[6]
    result = verify(at(entries))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (106, BreakReason.SEQ_GAP)
    assert "seq 7, expected 6" in result.first_break.detail


def test_dropping_the_genesis_entry_is_caught() -> None:
    result = verify(at(chain()[1:]))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (100, BreakReason.SEQ_GAP)


def test_swapping_two_entries_is_caught_at_the_first() -> None:
    entries = chain()
    entries[2], entries[3] = entries[3], entries[2]
    result = verify(at(entries))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (102, BreakReason.SEQ_GAP)


def test_inserting_a_well_formed_entry_is_caught() -> None:
    entries = chain()
    # The forger links the new entry correctly; the original that follows no longer fits.
    inserted, _ = extend(head_of(entries[4]), "feedback", [feedback(77)])
    entries.insert(5, inserted[0])
    result = verify(at(entries))
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (106, BreakReason.SEQ_GAP)


def test_duplicated_entry_is_caught() -> None:
    entries = chain()
    entries.insert(3, entries[3])
    result = verify(at(entries))
    assert result.first_break is not None and result.first_break.offset == 104


JUNK = [
    b"",
    b"null",
    b"{}",
    b"[1]",
    b'{"seq": 0}',
    b"\xff\xfe",
    b'{"event_id":"e1","user_id":"u1","video_id":"v"}',
]


@pytest.mark.parametrize("junk", JUNK)
def test_a_record_that_is_not_an_entry_is_foreign_and_the_chain_is_verified_across_it(junk: bytes) -> None:
    entries = chain(4)
    result = verify(at([entries[0], junk, *entries[1:], junk]))
    assert result.intact and not result.ok
    assert result.count == 4 and result.head == head_of(entries[-1])
    assert [f.offset for f in result.foreign] == [101, 105] and result.foreign_count == 2
    assert all(f.reason for f in result.foreign)


@pytest.mark.parametrize("junk", JUNK)
def test_an_entry_replaced_by_a_foreign_record_still_breaks_the_chain(junk: bytes) -> None:
    entries = chain(4)
    entries[1] = junk
    result = verify(at(entries))
    assert [f.offset for f in result.foreign] == [101]
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.reason) == (102, BreakReason.SEQ_GAP)
    assert result.count == 1


def test_foreign_records_say_why() -> None:
    entries = chain(2)
    result = verify(at([b"not json", entries[0], b'{"seq": 0}', entries[1]]))
    assert result.intact and result.count == 2
    reasons = {f.offset: f.reason for f in result.foreign}
    assert reasons[100].startswith("not JSON")
    assert reasons[102].startswith("expected fields") and "['seq']" in reasons[102]


def test_foreign_records_are_all_counted_and_the_first_ones_listed() -> None:
    entries = chain(2)
    many = [entries[0], *[b"x"] * (MAX_FOREIGN_KEPT + 5), entries[1]]
    result = verify(at(many, 0))
    assert result.intact and result.count == 2
    assert result.foreign_count == MAX_FOREIGN_KEPT + 5 and len(result.foreign) == MAX_FOREIGN_KEPT
    assert [f.offset for f in result.foreign] == list(range(1, MAX_FOREIGN_KEPT + 1))


def test_foreign_records_after_a_break_are_not_walked() -> None:
    entries = chain(4)
    del entries[1]
    result = verify(at([*entries, b"junk"]))
    assert result.first_break is not None and result.first_break.offset == 101
    assert result.foreign == () and result.foreign_count == 0


def test_head_of_refuses_a_damaged_entry() -> None:
    entries = chain(2)
    with pytest.raises(AuditError):
        head_of(entries[1].replace(b'"event_id":"e', b'"event_id":"f'))


def test_verify_from_a_known_head() -> None:
    entries = chain()
    result = verify(at(entries[5:]), start=head_of(entries[4]))
    assert result.ok and result.count == 5 and result.head == head_of(entries[-1])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(json_values.map(lambda v: orjson.dumps({"v": v})), min_size=1, max_size=8),
    data=st.data(),
)
def test_property_any_chain_verifies_and_any_byte_flip_is_caught(
    records: list[bytes], data: st.DataObject
) -> None:
    entries, head = extend(GENESIS, "feedback", records)
    result = verify(at(entries, 0))
    assert result.ok and result.count == len(records) and result.head == head
    index = data.draw(st.integers(0, len(entries) - 1))
    pos = data.draw(st.integers(0, len(entries[index]) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = list(entries)
    raw = bytearray(tampered[index])
    raw[pos] ^= 1 << bit
    tampered[index] = bytes(raw)
    broken = verify(at(tampered, 0))
    # An entry altered into something that is no entry at all is foreign; the entry after it
    # (if any) then breaks the chain.
    assert not broken.ok and first_problem(broken) == index
    assert broken.count == index


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.dictionaries(
            st.text(max_size=8),
            st.integers(-(2**63), 2**63 - 1)
            | st.text(max_size=10)
            | st.floats(allow_nan=False, allow_infinity=False),
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    ),
    kind=st.sampled_from(["prompt", "feedback"]),
)
def test_extend_builds_exactly_the_canonical_entries(records: list[dict[str, object]], kind: str) -> None:
    """extend assembles entry bytes by hand: they must equal encode_entry of the same entries."""
    head = GENESIS
    entries, _ = extend(head, kind, [orjson.dumps(r) for r in records])  # type: ignore[arg-type]
    for raw, data in zip(records, entries, strict=True):
        seq = head.next_seq
        digest = entry_hash(head.hash, seq, kind, raw)
        assert data == encode_entry(Entry(seq, kind, raw, head.hash, digest))
        head = Head(seq, digest)
