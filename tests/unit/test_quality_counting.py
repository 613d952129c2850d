"""Window math, per-source lateness, idle sources and the crash-safe rules of the creator counters."""

from __future__ import annotations

import random
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
from likeflow.domain.quality.engine import Effects, StoredValue, apply_record, load_clock
from likeflow.domain.quality.index import PartitionIndex
from likeflow.domain.quality.windows import Counts, rates, total, window_start
from streams.events import CountRecord, CreatorEvent, CreatorEventKind
from tables.codecs import CreatorCountsCodec

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H  # an hour boundary
SOURCES = ("likes/0", "prompt-feedback/0")
POLICY = WindowPolicy(
    size_ms=H, grace_ms=H, retention_ms=7 * 24 * H, dedupe_horizon_ms=24 * H, sources=SOURCES
)
CODEC = CreatorCountsCodec()


class LogStore:
    """The engine's Store with a changelog: each flush appends the changed keys (row, dedupe,
    clock order) as encoded bytes, like `tables.state_store.ChangelogStore`."""

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


def event(event_id: str, kind: str, ts: int, creator: str = "c1") -> CreatorEvent:
    return CreatorEvent(event_id, f"p-{event_id}", creator, "x", "v1.u", kind, ts)  # type: ignore[arg-type]


def record(source: str, *events: CreatorEvent, clock: int | None = None, idle: bool = False) -> CountRecord:
    clocks, high = [], 0
    for e in events:
        high = max(high, e.ts)
        clocks.append(high)
    return CountRecord(source, clock if clock is not None else high, list(events), clocks, idle)


def run(
    records: list[CountRecord], store: LogStore | None = None, start: int = 0
) -> tuple[LogStore, Effects]:
    store = store or LogStore()
    index = PartitionIndex.rebuild(store.values.items())
    clock = load_clock(store, 0)
    effects = Effects()
    for offset, r in enumerate(records[start:], start):
        apply_record(
            store, index, clock, partition=0, offset=offset, record=r, policy=POLICY, effects=effects
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
            clock, None, None, offset=11, index=0, ts=T0 + 30, source_clock=T0 + 2 * H + 5, policy=POLICY
        )
        == Outcome.LATE
    )
    # 1 h 59 min behind its source, but its window [T0+H, T0+2H) is still open for it.
    assert (
        classify(
            clock, None, None, offset=11, index=0, ts=T0 + H + 6, source_clock=T0 + 2 * H + 5, policy=POLICY
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
    args: dict[str, Any] = {"ts": T0, "source_clock": T0, "policy": POLICY}
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
                else:
                    prompt = event(f"prompt:{n}-{i}", "prompt", ts, rng.choice(["c1", "c2"]))
                    sent.append((prompt, like_offset))
                    events.append(prompt)
                    offsets.append(like_offset)
            else:
                eid = (
                    f"{source}-{n}-{i}"
                    if rng.random() > 0.15 or not out
                    else rng.choice(out[-1].events or [event("z", "click", ts)]).event_id
                )
                events.append(
                    event(eid, rng.choice(["click", "order", "return"]), ts, rng.choice(["c1", "c2"]))
                )
                offsets.append(-1)
            cl.append(clocks[source])
        out.append(CountRecord(source, clocks[source], events, cl, False, offsets))
    return out


def test_a_prompt_re_sent_for_a_duplicate_like_counts_once() -> None:
    first = CountRecord("likes/0", T0, [event("prompt:a", "prompt", T0)], [T0], False, [7])
    again = CountRecord("likes/0", T0 + 5, [event("prompt:a", "prompt", T0)], [T0 + 5], False, [7])
    store, effects = run([first, again])
    assert [o for _, o in effects.outcomes] == [Outcome.COUNTED, Outcome.DUPLICATE]
    assert windows(store)[("c1", T0)]["prompts"] == 1
    assert not any(k.startswith("s|") for k in store.values), "no dedupe entry for prompts"


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 6),
    crash_at=st.floats(0, 1),
    commit_lag=st.integers(0, 3),
)
def test_counts_are_exact_after_a_crash_at_any_changelog_prefix(
    seed: int, batch: int, crash_at: float, commit_lag: int
) -> None:
    """Process in batches (one flush each), crash with only a prefix of the changelog written and
    the committed offset a few batches behind it, restore, and process again from the commit: the
    windows equal those of the run without a crash."""
    records = workload(seed)
    expected, _ = run(records)
    store = LogStore()
    index = PartitionIndex()
    clock = PartitionClock()
    flushed_at: list[tuple[int, int]] = []  # (next offset, log length) after each batch
    for start in range(0, len(records), batch):
        for offset in range(start, min(start + batch, len(records))):
            apply_record(
                store,
                index,
                clock,
                partition=0,
                offset=offset,
                record=records[offset],
                policy=POLICY,
                effects=Effects(),
            )
        flushed_at.append((min(start + batch, len(records)), store.flush()))
    cut = int(len(store.log) * crash_at)
    # Offsets are committed only after their batch's changelog records are acknowledged.
    durable = [offset for offset, length in flushed_at if length <= cut]
    committed = durable[-1 - commit_lag] if len(durable) > commit_lag else 0
    restored = LogStore.restored(store.log[:cut])
    after, _ = run(records, restored, committed)
    assert windows(after) == windows(expected)


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
