"""Window math, per-source lateness, idle sources and the crash-safe rules of the creator counters."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.quality.counting import (
    Outcome,
    PartitionClock,
    Seen,
    SourceClock,
    WindowPolicy,
    WindowRow,
    classify,
    closing,
)
from likeflow.domain.quality.engine import (
    Effects,
    StoredValue,
    apply_record,
    load_clock,
    repair_partition,
)
from likeflow.domain.quality.index import PartitionIndex
from likeflow.domain.quality.windows import Counts, rates, total, window_start
from streams.events import CountBatch, CountRecord, CreatorEvent, CreatorEventKind
from tables.codecs import CreatorCountsCodec

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H  # an hour boundary
SOURCES = ("likes/0", "prompt-feedback/0")
POLICY = WindowPolicy(
    size_ms=H, grace_ms=H, retention_ms=7 * 24 * H, dedupe_horizon_ms=24 * H, sources=SOURCES
)
CODEC = CreatorCountsCodec()
# The newest event time accepted (the worker's clock plus the skew): far beyond every workload.
CEILING = T0 + 400 * 24 * H


class LogStore:
    """The engine's Store with a changelog: each flush appends the changed keys (row, dedupe,
    clock order) as encoded bytes, like `likeflow.engine.ChangelogStore`."""

    def __init__(self) -> None:
        self.values: dict[str, StoredValue] = {}
        self.dirty: dict[str, int] = {}
        self.log: list[tuple[str, bytes | None]] = []

    def get(self, key: str) -> StoredValue | None:
        return self.values.get(key)

    def put(self, key: str, value: StoredValue, order: int) -> None:
        self.values[key] = value
        self.dirty[key] = order

    def delete(self, key: str, order: int) -> None:
        self.values.pop(key, None)
        self.dirty[key] = order

    def flush(self) -> int:
        for key in sorted(self.dirty, key=self.dirty.__getitem__):
            value = self.values.get(key)
            self.log.append((key, None if value is None else CODEC.encode(value)))
        self.dirty.clear()
        return len(self.log)

    @classmethod
    def restored(cls, log: list[tuple[str, bytes | None]]) -> LogStore:
        store = cls()
        for key, raw in log:
            if raw is None:
                store.values.pop(key, None)
            else:
                store.values[key] = CODEC.decode(raw)
        store.log = list(log)
        return store


def event(event_id: str, kind: str, ts: int, creator: str = "c1", amount: int = 0) -> CreatorEvent:
    return CreatorEvent(event_id, f"p-{event_id}", creator, "x", "v1.u", kind, ts, amount)  # type: ignore[arg-type]


def record(source: str, *events: CreatorEvent, clock: int | None = None, idle: bool = False) -> CountRecord:
    clocks, high = [], 0
    for e in events:
        high = max(high, e.ts)
        clocks.append(high)
    return CountRecord(source, clock if clock is not None else high, list(events), clocks, idle)


def run(
    records: Sequence[CountRecord | CountBatch],
    store: LogStore | None = None,
    start: int = 0,
    ceiling: int = CEILING,
) -> tuple[LogStore, Effects]:
    """Apply `records[start:]` as one batch of the handler: load, repair, apply, flush."""
    store = store or LogStore()
    index = PartitionIndex.rebuild(store.values.items())
    clock = load_clock(store, 0)
    effects = Effects()
    repair_partition(store, index, clock, partition=0, ceiling=ceiling, policy=POLICY, effects=effects)
    for offset, r in enumerate(records[start:], start):
        apply_record(
            store,
            index,
            clock,
            partition=0,
            offset=offset,
            record=r,
            policy=POLICY,
            effects=effects,
            ceiling=ceiling,
        )
    store.flush()
    return store, effects


def windows(store: LogStore) -> dict[tuple[str, int], dict[str, int]]:
    return {
        (v.creator_id, v.start_ms): v.counts.to_dict()
        for v in store.values.values()
        if isinstance(v, WindowRow)
    }


def test_window_start_is_the_tumbling_boundary() -> None:
    assert window_start(T0, H) == T0
    assert window_start(T0 + H - 1, H) == T0
    assert window_start(T0 + H, H) == T0 + H


def test_counts_and_rates() -> None:
    c = Counts()
    kinds: tuple[CreatorEventKind, ...] = ("prompt", "prompt", "prompt", "prompt", "click", "click")
    for kind in kinds:
        c.add_event(kind, 0)
    c.add_event("order", 1999)
    assert c == Counts(prompts=4, clicks=2, orders=1, gmv_cents=1999)
    assert rates(c) == {"ctr": 0.5, "conversion": 0.5, "return_rate": 0.0, "complaint_rate": 0.0}
    assert rates(Counts()) == {"ctr": None, "conversion": None, "return_rate": None, "complaint_rate": None}
    assert total([c, c]).gmv_cents == 3998


def test_a_window_closes_when_every_source_passed_it() -> None:
    clock = PartitionClock(sources={"likes/0": SourceClock(T0 + 5 * H)})
    assert closing(clock, POLICY) == [], "the feedback source has not been heard from: nothing closes"
    clock.source("prompt-feedback/0").clock = T0 + 2 * H
    # The lowest source's watermark is T0 + H: the window [T0, T0 + H) has ended before it.
    assert closing(clock, POLICY) == [T0]
    clock.source("prompt-feedback/0").clock = T0 + 4 * H
    assert closing(clock, POLICY) == [T0 + H, T0 + 2 * H]
    assert clock.closed_until == T0 + 3 * H


def test_an_idle_source_does_not_hold_windows_open() -> None:
    clock = PartitionClock(
        sources={"likes/0": SourceClock(T0 + 5 * H), "prompt-feedback/0": SourceClock(T0, True)}
    )
    assert closing(clock, POLICY)[-1] == T0 + 3 * H
    clock.sources = {"likes/0": SourceClock(0, True), "prompt-feedback/0": SourceClock(0, True)}
    assert clock.watermark(POLICY) is None, "no source has a clock yet: nothing to close by"


def test_when_every_source_is_idle_the_highest_clock_closes_windows() -> None:
    # The last active source goes idle after the others: its windows must still close (the
    # others have caught up), or they would wait for the next record of any source.
    clock = PartitionClock(
        sources={"likes/0": SourceClock(T0 + 2 * H, True), "prompt-feedback/0": SourceClock(T0 + 6 * H, True)}
    )
    assert clock.watermark(POLICY) == T0 + 5 * H
    assert closing(clock, POLICY)[-1] == T0 + 4 * H
    # A later record of the slower source still counts (not late against its own clock); its
    # window is revised, as for any idle source's record.
    clock.source("likes/0").idle = False
    assert clock.watermark(POLICY) == T0 + H


def test_an_event_is_late_only_against_its_own_source() -> None:
    clock = PartitionClock(offset=10, closed_until=T0 - 6 * H)
    # Its source's clock is T0 + 2H + 5: the window [T0, T0+H) ended before that minus the grace.
    assert (
        classify(
            clock,
            None,
            None,
            offset=11,
            index=0,
            ts=T0 + 30,
            source_clock=T0 + 2 * H + 5,
            policy=POLICY,
            ceiling=CEILING,
        )
        == Outcome.LATE
    )
    # 1 h 59 min behind its source, but its window [T0+H, T0+2H) is still open for it.
    assert (
        classify(
            clock,
            None,
            None,
            offset=11,
            index=0,
            ts=T0 + H + 6,
            source_clock=T0 + 2 * H + 5,
            policy=POLICY,
            ceiling=CEILING,
        )
        == Outcome.COUNTED
    )


def test_feedback_hours_behind_the_likes_is_not_late() -> None:
    """The issue's scenario: six hours of likes first, then the matching feedback."""
    likes = [record("likes/0", event(f"prompt:{h}", "prompt", T0 + h * H + 60_000)) for h in range(6)]
    feedback = [record("prompt-feedback/0", event(f"f{h}", "click", T0 + h * H + 120_000)) for h in range(6)]
    truly_late = record("prompt-feedback/0", event("old", "click", T0 - 3 * H))
    store, effects = run([*likes, *feedback, truly_late])
    assert [o for _, o in effects.outcomes].count(Outcome.LATE) == 1
    assert [e.event_id for e, _, _ in effects.late] == ["old"]
    assert all(w["prompts"] == 1 and w["clicks"] == 1 for w in windows(store).values())


def test_redelivery_is_recognised_whichever_write_survived_a_crash() -> None:
    clock = PartitionClock(offset=10)
    row = WindowRow("c1", T0, Counts(prompts=3), last_offset=12, last_index=1)
    args: dict[str, Any] = {"ts": T0, "source_clock": T0, "policy": POLICY, "ceiling": CEILING}
    assert classify(clock, None, None, offset=9, index=0, **args) == Outcome.REDELIVERED, "the clock says so"
    assert classify(clock, row, None, offset=12, index=1, **args) == Outcome.REDELIVERED, "only the row"
    assert classify(clock, row, None, offset=12, index=0, **args) == Outcome.REDELIVERED
    seen = Seen(12, 1, T0, "likes/0")
    assert classify(clock, row, seen, offset=12, index=1, **args) == Outcome.REDELIVERED
    assert classify(clock, row, None, offset=12, index=2, **args) == Outcome.COUNTED, (
        "a later event of the record"
    )
    assert classify(clock, row, None, offset=13, index=0, **args) == Outcome.COUNTED


def test_an_upstream_duplicate_is_a_duplicate_even_within_one_record() -> None:
    twice = record("prompt-feedback/0", event("f1", "click", T0), event("f1", "click", T0 + 1))
    store, effects = run([twice])
    assert [o for _, o in effects.outcomes] == [Outcome.COUNTED, Outcome.DUPLICATE]
    assert windows(store)[("c1", T0)]["clicks"] == 1


def test_a_record_of_an_idle_source_revises_a_closed_window() -> None:
    quiet = record("prompt-feedback/0", idle=True, clock=0)
    likes = [record("likes/0", event(f"prompt:{h}", "prompt", T0 + h * H)) for h in range(4)]
    store, effects = run([quiet, *likes])
    first = [(w.start_ms, w.revision) for w in effects.closed]
    assert (T0, 1) in first, "feedback idle: the likes close the windows"
    store, more = run([quiet, *likes, record("prompt-feedback/0", event("f1", "click", T0 + 10))])
    assert windows(store)[("c1", T0)]["clicks"] == 1, "not late for its own source: counted"
    assert [(w.start_ms, w.revision, w.counts["clicks"]) for w in more.closed][-1] == (T0, 2, 1)


@pytest.mark.parametrize("jump_days", [1, 365])
def test_a_big_jump_closes_at_most_the_retained_windows(jump_days: int) -> None:
    clock = PartitionClock(sources={s: SourceClock(T0) for s in SOURCES}, closed_until=T0 - H)
    for s in SOURCES:
        clock.sources[s].clock = T0 + jump_days * 24 * H
    starts = closing(clock, POLICY)
    assert len(starts) <= POLICY.retention_ms // H
    assert starts == sorted(starts)


def test_old_windows_and_dedupe_entries_expire_by_event_time() -> None:
    first = record("likes/0", event("prompt:a", "prompt", T0))
    feedback = record("prompt-feedback/0", event("f1", "click", T0))
    later = [record(s, event(f"{s}-late", "click", T0 + 9 * 24 * H)) for s in SOURCES]
    store, effects = run([first, feedback, *later])
    assert ("c1", T0) not in windows(store), "older than the retention behind the watermark"
    assert "s|f1" not in store.values, "older than the dedupe horizon behind its source"
    assert effects.removed["c1"] == {T0}


def test_a_copy_after_a_crash_that_lost_the_dedupe_entry_is_not_counted_again() -> None:
    """Kill -9 after the row reached the changelog but before its dedupe entry and the clock did:
    the redelivered event restores the entry, so a later copy of it is a duplicate."""
    click = record("prompt-feedback/0", event("f1", "click", T0))
    store, _ = run([click])
    rows_only = LogStore.restored([(k, v) for k, v in store.log if k.startswith("w|")])
    again, effects = run([click, record("prompt-feedback/0", event("f1", "click", T0 + 5))], rows_only)
    assert [o for _, o in effects.outcomes] == [Outcome.REDELIVERED, Outcome.DUPLICATE]
    assert windows(again)[("c1", T0)]["clicks"] == 1


# --- the exactness claim, checked against every crash point --------------------------------------


def workload(seed: int) -> list[CountRecord]:
    """Records of two sources over a few hours: duplicates, disorder, late events, idle markers.

    The likes source reports offsets (prompts of a like are de-duplicated by them), re-sending
    a prompt with the offset of the like that first produced it; feedback is de-duplicated by id.
    """
    rng = random.Random(seed)
    out: list[CountRecord] = []
    clocks = {s: T0 for s in SOURCES}
    like_offset = 0
    sent: list[tuple[CreatorEvent, int]] = []  # prompts of the likes source, with their like offset
    for n in range(40):
        source = rng.choice(SOURCES)
        if rng.random() < 0.1:
            out.append(CountRecord(source, clocks[source], [], [], idle=True))
            continue
        events, cl, offsets = [], [], []
        for i in range(rng.randint(0, 4)):
            ts = clocks[source] + rng.randint(-2 * H, 20 * 60_000)  # out of order, sometimes late
            clocks[source] = max(clocks[source], ts)
            if source.startswith("likes"):
                like_offset += 1
                if sent and rng.random() < 0.15:  # a duplicate like: its prompt re-sent as it was
                    again, first_offset = rng.choice(sent)
                    events.append(again)
                    offsets.append(first_offset)
                    if rng.random() < 0.5:  # a redelivered record: its like reported again
                        cl.append(clocks[source])
                        events.append(event(f"like:{again.event_id}", "like", again.ts, again.creator_id))
                        offsets.append(first_offset)
                else:
                    prompt = event(f"prompt:{n}-{i}", "prompt", ts, rng.choice(["c1", "c2"]))
                    sent.append((prompt, like_offset))
                    # The like and its prompt, from one record: one offset, each kind counted.
                    cl.append(clocks[source])
                    events.append(event(f"like:{n}-{i}", "like", ts, prompt.creator_id))
                    offsets.append(like_offset)
                    events.append(prompt)
                    offsets.append(like_offset)
            else:
                eid = (
                    f"{source}-{n}-{i}"
                    if rng.random() > 0.15 or not out
                    else rng.choice(out[-1].events or [event("z", "click", ts)]).event_id
                )
                kind = rng.choice(["click", "order", "return", "booking", "trial", "cancellation", "no_show"])
                amount = rng.randint(1, 9_999) if kind in ("order", "booking") else 0
                events.append(event(eid, kind, ts, rng.choice(["c1", "c2"]), amount))
                offsets.append(-1)
            cl.append(clocks[source])
        out.append(CountRecord(source, clocks[source], events, cl, False, offsets))
    return out


def test_a_like_and_its_prompt_from_one_record_both_count_and_each_once() -> None:
    ts = T0 + 5
    liked = CountRecord(
        "likes/0", ts, [event("like:a", "like", ts), event("prompt:a", "prompt", ts)], [ts, ts], False, [7, 7]
    )
    skipped = CountRecord("likes/0", ts, [event("like:b", "like", ts)], [ts], False, [8])
    again = CountRecord("likes/0", ts, [event("like:a", "like", ts), event("like:b", "like", ts)], [ts, ts],
                        False, [7, 8])  # fmt: skip
    store, effects = run([liked, skipped, again])
    assert windows(store)[("c1", T0)] == Counts(likes=2, prompts=1).to_dict()
    assert [o for _, o in effects.outcomes][-2:] == [Outcome.DUPLICATE, Outcome.DUPLICATE]


def test_a_prompt_re_sent_for_a_duplicate_like_counts_once() -> None:
    first = CountRecord("likes/0", T0, [event("prompt:a", "prompt", T0)], [T0], False, [7])
    again = CountRecord("likes/0", T0 + 5, [event("prompt:a", "prompt", T0)], [T0 + 5], False, [7])
    store, effects = run([first, again])
    assert [o for _, o in effects.outcomes] == [Outcome.COUNTED, Outcome.DUPLICATE]
    assert windows(store)[("c1", T0)]["prompts"] == 1
    assert not any(k.startswith("s|") for k in store.values), "no dedupe entry for prompts"


def grouped(records: list[CountRecord], seed: int) -> list[CountBatch]:
    """`records` as the handlers now write them: consecutive records in one `CountBatch`."""
    rng = random.Random(seed)
    out: list[CountBatch] = []
    i = 0
    while i < len(records):
        n = rng.randint(1, 5)
        out.append(CountBatch(records[i : i + n]))
        i += n
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 6),
    crash_at=st.floats(0, 1),
    commit_lag=st.integers(0, 3),
    batched=st.booleans(),
)
def test_counts_are_exact_after_a_crash_at_any_changelog_prefix(
    seed: int, batch: int, crash_at: float, commit_lag: int, batched: bool
) -> None:
    """Process in batches (one flush each), crash with only a prefix of the changelog written and
    the committed offset a few batches behind it, restore, and process again from the commit: the
    windows equal those of the run without a crash. `batched`: the records as the handlers write
    them, several sources' sections in one record (an event's stamp is the record's offset and
    its index across the sections), which count as the same records one by one."""
    expected, _ = run(workload(seed))
    records: Sequence[CountRecord | CountBatch] = grouped(workload(seed), seed) if batched else workload(seed)
    store = LogStore()
    index, clock = PartitionIndex(), PartitionClock()
    flushed_at: list[tuple[int, int]] = []  # (next offset, log length) after each batch
    for start in range(0, len(records), batch):
        for offset in range(start, min(start + batch, len(records))):
            apply_record(
                store, index, clock, partition=0, offset=offset,
                record=records[offset], policy=POLICY, effects=Effects(), ceiling=CEILING,
            )  # fmt: skip
        flushed_at.append((min(start + batch, len(records)), store.flush()))
    assert windows(store) == windows(expected)
    cut = int(len(store.log) * crash_at)
    # Offsets are committed only after their batch's changelog records are acknowledged.
    durable = [offset for offset, length in flushed_at if length <= cut]
    committed = durable[-1 - commit_lag] if len(durable) > commit_lag else 0
    after, _ = run(records, LogStore.restored(store.log[:cut]), committed)
    assert windows(after) == windows(expected)


def test_a_count_record_written_before_batching_decodes_as_one_section() -> None:
    old = record("likes/3", event("prompt:a", "prompt", T0), clock=T0 + 5)
    decoded = CountBatch.from_json(old.to_json())
    assert decoded.sections == [old] and decoded.key == b"likes"
    assert CountBatch.from_json(CountBatch([old, old]).to_json()).sections == [old, old]


def test_a_redelivered_event_serves_its_row_again() -> None:
    """Killed after the counts reached the changelog but before Redis was written: the
    redelivered record is not counted again, but its window is served again."""
    click = record("prompt-feedback/0", event("f1", "click", T0))
    store, _ = run([click])
    again, effects = run([click], LogStore.restored(store.log))
    assert [o for _, o in effects.outcomes] == [Outcome.REDELIVERED]
    assert effects.changed["c1"][T0].counts.clicks == 1
    assert windows(again)[("c1", T0)]["clicks"] == 1


def test_the_first_closing_closes_every_window_held() -> None:
    """A watermark that first moves several windows at once (its other sources were idle) closes
    all of them, not only the last."""
    quiet = record("prompt-feedback/0", idle=True, clock=0)
    likes = [record("likes/0", event(f"prompt:{h}", "prompt", T0 + h * H)) for h in (0, 1)]
    jump = record("likes/0", clock=T0 + 5 * H)
    _, effects = run([quiet, *likes, jump])
    assert [w.start_ms for w in effects.closed] == [T0, T0 + H]


# --- the time ceiling: records and state stamped in the future ----------------------------------

YEAR_9999 = 253_402_300_799_000  # 9999-12-31T23:59:59Z, as a hostile like once carried
NOW = T0 + 10 * H
NOW_CEILING = NOW + 300_000  # the worker's clock plus the default 5-minute skew


def old_version_state(*, closed: int = YEAR_9999) -> LogStore:
    """What an earlier version left after counting a like stamped in year 9999 on `likes/0`: the
    source's clock (and, with every other source idle, the watermark) in year 9999, a window row
    and a dedupe entry there, and the real windows the jump expired already gone."""
    store = LogStore()
    clock = PartitionClock(
        offset=41,
        sources={
            "likes/0": SourceClock(YEAR_9999, False, 17),
            "prompt-feedback/0": SourceClock(NOW - 2 * H, True),
        },
        closed_until=closed,
    )
    junk_start = window_start(YEAR_9999, H)
    store.put("w|c1|" + str(junk_start), WindowRow("c1", junk_start, Counts(prompts=1), 40, 0, 1), 0)
    store.put("w|c2|" + str(NOW - 3 * H), WindowRow("c2", NOW - 3 * H, Counts(clicks=2), 39, 0, 0), 0)
    store.put("s|hostile-click", Seen(40, 1, YEAR_9999, "prompt-feedback/0"), 1)
    store.put("s|fine-click", Seen(39, 0, NOW - 3 * H + 5, "prompt-feedback/0"), 1)
    store.put("p|0", clock, 2)
    store.flush()
    return LogStore.restored(store.log)


def test_an_event_beyond_the_ceiling_is_not_counted_and_moves_no_clock() -> None:
    hostile = CountRecord(
        "likes/0", YEAR_9999, [event("prompt:x", "prompt", YEAR_9999)], [YEAR_9999], False, [3]
    )
    later = record("likes/0", event("prompt:y", "prompt", NOW - 10 * 60_000))
    store, effects = run([hostile, later], ceiling=NOW_CEILING)
    assert [o for _, o in effects.outcomes] == [Outcome.FUTURE, Outcome.COUNTED]
    assert [(e.event_id, source) for e, _, source in effects.future] == [("prompt:x", "likes/0")]
    assert "beyond the newest event time accepted" in effects.future[0][1]
    assert effects.late == [], "a future event is not late: it has its own outcome and dead-letter reason"
    assert effects.repaired_records == 1, "the record's clocks were brought down to the ceiling"
    clock = load_clock(store, 0)
    assert clock.sources["likes/0"].clock == NOW_CEILING
    assert windows(store) == {("c1", window_start(NOW - 10 * 60_000, H)): Counts(prompts=1).to_dict()}


def test_a_count_record_with_a_clock_from_year_9999_no_longer_makes_its_source_late() -> None:
    """A record an earlier version wrote after a like stamped in year 9999: its events are fine,
    its clocks are not. They are brought down to the ceiling: the events and the later records
    of the source count."""
    ts = NOW - 20 * 60_000
    poisoned = CountRecord("likes/0", YEAR_9999, [event("prompt:a", "prompt", ts)], [YEAR_9999], False, [5])
    after = CountRecord(
        "likes/0", YEAR_9999, [event("prompt:b", "prompt", ts + 60_000)], [YEAR_9999], False, [6]
    )
    store, effects = run([poisoned, after], ceiling=NOW_CEILING)
    assert [o for _, o in effects.outcomes] == [Outcome.COUNTED, Outcome.COUNTED]
    assert effects.repaired_records == 2
    assert windows(store)[("c1", window_start(ts, H))]["prompts"] == 2
    # Without a ceiling (the old version), every prompt of the source was late, for good.
    _, unbounded = run([poisoned, after], ceiling=YEAR_9999)
    assert [o for _, o in unbounded.outcomes] == [Outcome.LATE, Outcome.LATE]


def test_a_stored_clock_from_year_9999_is_repaired_on_load() -> None:
    store = old_version_state()
    index = PartitionIndex.rebuild(store.values.items())
    clock = load_clock(store, 0)
    effects = Effects()
    assert repair_partition(
        store, index, clock, partition=0, ceiling=NOW_CEILING, policy=POLICY, effects=effects
    )
    assert clock.sources["likes/0"].clock == NOW_CEILING
    assert clock.sources["likes/0"].offset == 17, "the prompts' dedupe offset is not a time: kept"
    assert clock.sources["prompt-feedback/0"].clock == NOW - 2 * H, "a clock under the ceiling is kept"
    # The feedback source is idle, so the watermark follows likes/0, now at the ceiling.
    assert clock.closed_until == window_start(NOW_CEILING - POLICY.grace_ms, H)
    assert clock.offset == 41
    assert effects.repaired_partitions == 1 and effects.dropped_rows == 1
    junk_start = window_start(YEAR_9999, H)
    assert effects.removed == {"c1": {junk_start}}, "Redis loses the junk window too"
    assert set(windows(store)) == {("c2", NOW - 3 * H)}, "the real window stays"
    assert "s|hostile-click" not in store.values and "s|fine-click" in store.values
    assert junk_start not in index.windows and index.by_creator.get("c1") is None
    assert store.values["p|0"] is clock and store.dirty["p|0"] == 2, "the repaired clock is written"
    again = Effects()
    assert not repair_partition(
        store, index, clock, partition=0, ceiling=NOW_CEILING + H, policy=POLICY, effects=again
    ), "idempotent: a later ceiling finds nothing to repair"
    assert again.repaired_partitions == 0 and not again.removed


def test_closed_until_is_set_back_to_what_the_repaired_clocks_give() -> None:
    clock = PartitionClock(
        sources={"likes/0": SourceClock(YEAR_9999), "prompt-feedback/0": SourceClock(T0 + 3 * H)},
        closed_until=window_start(YEAR_9999, H),
    )
    assert clock.repair(NOW_CEILING, POLICY)
    assert clock.closed_until == T0 + 2 * H, "the slower active source holds the watermark again"
    never_heard = PartitionClock(sources={"likes/0": SourceClock(YEAR_9999)}, closed_until=YEAR_9999)
    assert never_heard.repair(NOW_CEILING, POLICY)
    assert never_heard.closed_until == 0, "the feedback source never reported: it holds every window"
    fine = PartitionClock(sources={"likes/0": SourceClock(NOW)}, closed_until=NOW - 2 * H)
    assert not fine.repair(NOW_CEILING, POLICY) and fine.closed_until == NOW - 2 * H


def test_after_the_repair_the_source_counts_and_its_windows_close_again() -> None:
    """The issue's case on the counters: after a year-9999 like every later prompt of the
    partition was late, also after a restart. The repaired partition counts them and closes
    their windows as the sources move on."""
    store = old_version_state()
    ts = NOW - 5 * 60_000
    prompt = CountRecord("likes/0", ts, [event("prompt:new", "prompt", ts, "c3")], [ts], False, [18])
    click = record("prompt-feedback/0", event("click:new", "click", ts + 60_000, "c3"))
    store, effects = run(
        [*[CountRecord("likes/0", 0, [], [])] * 42, prompt, click], store, start=42, ceiling=NOW_CEILING
    )
    assert [o for _, o in effects.outcomes] == [Outcome.COUNTED, Outcome.COUNTED]
    assert windows(store)[("c3", window_start(ts, H))] == Counts(prompts=1, clicks=1).to_dict()
    # Two hours later both sources have moved on: the window closes for the judge.
    later = NOW + 2 * H
    moves = [CountRecord(s, later, [], []) for s in SOURCES]
    store, effects = run(
        [*[CountRecord("likes/0", 0, [], [])] * 44, *moves], store, start=44, ceiling=later + 300_000
    )
    assert ("c3", window_start(ts, H), 1) in [(w.creator_id, w.start_ms, w.revision) for w in effects.closed]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 6), crash_at=st.floats(0, 1))
def test_repair_and_ceiling_keep_counts_exact_at_any_crash_point(
    seed: int, batch: int, crash_at: float
) -> None:
    """An old version's state (clocks, a row and a dedupe entry in year 9999), then a workload
    with hostile records (an event and clocks in year 9999): processed in batches with a crash
    at any changelog prefix and a restart from the last durable commit, the windows equal those
    of the run without a crash; nothing beyond the ceiling is ever counted or kept."""
    rng = random.Random(seed)
    records = workload(seed)
    for _ in range(3):
        source = rng.choice(SOURCES)
        hostile = event(f"hostile-{rng.random()}", "click" if "feedback" in source else "prompt", YEAR_9999)
        offsets = [-1]  # de-duplicated by event id (an offset would pass every later like's)
        records.insert(
            rng.randrange(len(records) + 1),
            CountRecord(source, YEAR_9999, [hostile], [YEAR_9999], False, offsets),
        )
    ceiling = T0 + 30 * H
    initial = old_version_state(closed=window_start(YEAR_9999, H))
    first = len(initial.log)
    # The old state's clock had applied offsets up to 41: the workload continues from there.
    padded = [CountRecord("likes/0", 0, [], [])] * 42 + records
    expected, _ = run(padded, LogStore.restored(initial.log), 42, ceiling)
    store = LogStore.restored(initial.log)
    index = PartitionIndex.rebuild(store.values.items())
    clock = load_clock(store, 0)
    flushed_at: list[tuple[int, int]] = []
    for begin in range(42, len(padded), batch):
        effects = Effects()
        repair_partition(store, index, clock, partition=0, ceiling=ceiling, policy=POLICY, effects=effects)
        for offset in range(begin, min(begin + batch, len(padded))):
            apply_record(
                store,
                index,
                clock,
                partition=0,
                offset=offset,
                record=padded[offset],
                policy=POLICY,
                effects=effects,
                ceiling=ceiling,
            )
        flushed_at.append((min(begin + batch, len(padded)), store.flush()))
    cut = first + int((len(store.log) - first) * crash_at)
    durable = [offset for offset, length in flushed_at if length <= cut]
    committed = durable[-1] if durable else 42
    after, _ = run(padded, LogStore.restored(store.log[:cut]), committed, ceiling)
    assert windows(after) == windows(expected)
    assert all(start <= ceiling for _, start in windows(after))
    restored_clock = load_clock(after, 0)
    assert (
        all(s.clock <= ceiling for s in restored_clock.sources.values())
        and restored_clock.closed_until <= ceiling
    )
    assert not any(isinstance(v, Seen) and v.ts > ceiling for v in after.values.values())
