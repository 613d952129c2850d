"""Clock-only count records only when they matter: fewer records, the same windows closed at the same time."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.quality.counting import PartitionClock, WindowPolicy
from likeflow.domain.quality.engine import Effects, apply_record
from likeflow.domain.quality.index import PartitionIndex
from likeflow.domain.quality.sources import SourceReports
from likeflow.ops.backfill import DictStore
from streams.events import CountBatch, CreatorEvent

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H
CEILING = T0 + 400 * 24 * H
CREATORS = [f"c{i}" for i in range(6)]


def policy(partitions: int) -> WindowPolicy:
    sources = tuple(f"likes/{p}" for p in range(partitions))
    return WindowPolicy(size_ms=H, grace_ms=H, sources=sources)


def run(
    partitions: int, batches: list[list[tuple[int, int, str]]], refresh_s: float
) -> tuple[int, list[object], int, int]:
    """Feed `batches` of (source partition, ts, creator) prompts through SourceReports and the
    counting engine; returns (records sent, windows closed in order, the last closing batch,
    sections sent)."""
    rules = policy(partitions)
    reports = SourceReports("likes", partitions, lambda c: int(c[1:]) % partitions, rules, refresh_s)
    state = {k: (DictStore(), PartitionIndex(), PartitionClock()) for k in range(partitions)}
    offsets = dict.fromkeys(range(partitions), 0)
    sent, closed, last_closing, sections = 0, [], -1, 0
    n = 0
    for b, batch in enumerate(batches):
        for source, ts, creator in batch:
            reports.observe(source, ts)
            event = CreatorEvent(f"e{n}", f"p{n}", creator, "x", "u", "prompt", ts)
            reports.add(source, event, n)
            n += 1
        # The wall clock: a batch every 10 ms.
        for k, record in reports.records({source for source, _, _ in batch}, b * 0.01):
            sent += 1
            sections += len(record.sections)
            store, index, clock = state[k]
            effects = Effects()
            decoded = CountBatch.from_json(record.to_json())
            apply_record(
                store, index, clock, partition=k, offset=offsets[k],
                record=decoded, policy=rules, effects=effects, ceiling=CEILING,
            )  # fmt: skip
            offsets[k] += 1
            if effects.closed:
                closed += [
                    (w.creator_id, w.start_ms, w.counts["prompts"], w.revision) for w in effects.closed
                ]
                last_closing = b
    return sent, sorted(closed, key=str), last_closing, sections


def workload(seed: int, partitions: int, batches: int) -> list[list[tuple[int, int, str]]]:
    """Batches a few hundred ms of event time apart, over ~3 hours, from every source."""
    rng = random.Random(seed)
    out = []
    ts = T0
    for _ in range(batches):
        ts += rng.randint(100, 60_000)
        batch = [
            (p, ts - rng.randint(0, 5_000), rng.choice(CREATORS))
            for p in range(partitions)
            if rng.random() < 0.8
        ]
        out.append(batch)
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), partitions=st.sampled_from([1, 3, 8]))
def test_the_same_windows_close_in_the_same_batch_as_with_every_clock_sent(
    seed: int, partitions: int
) -> None:
    batches = workload(seed, partitions, 400)
    every = run(partitions, batches, refresh_s=0)  # every clock movement sent (the old rule)
    mattering = run(partitions, batches, refresh_s=1.0)
    assert every[1], "the workload spans hours: windows close"
    assert mattering[1] == every[1], "the same windows, counts and revisions"
    assert mattering[2] == every[2], "closed by the same batch"
    assert mattering[0] <= every[0]


def test_clock_only_records_do_not_grow_with_batches_times_partitions() -> None:
    partitions = 24
    batches = [[(p, T0 + b * 50, CREATORS[0]) for p in range(partitions)] for b in range(100)]  # 5 s
    every, _, _, every_sections = run(partitions, batches, refresh_s=0)
    mattering, _, _, sections = run(partitions, batches, refresh_s=60.0)
    events = partitions * len(batches)
    assert every_sections >= partitions * partitions * len(batches) // 2, "every source to every partition"
    # Each source: its events' sections (all to one partition here) plus one first report to
    # every partition; nothing more within a window and the refresh interval.
    assert sections <= events + partitions * partitions
    # One record per counting partition and batch, whatever the number of sources.
    assert every <= partitions * len(batches)
    assert mattering <= len(batches) + partitions


@settings(max_examples=200, deadline=None)
@given(
    moves=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3 * H), st.booleans(), st.booleans()), max_size=60
    )
)
def test_the_kept_watermark_inputs_match_a_walk_over_every_source(
    moves: list[tuple[int, int, bool, bool]],
) -> None:
    """`PartitionClock.moved` keeps the watermark's inputs in O(1): after any sequence of clock
    advances, idle flips, first reports and repairs down, the watermark is the full walk's."""
    rules = WindowPolicy(size_ms=H, grace_ms=H, sources=tuple(f"s{i}" for i in range(5)))
    clock = PartitionClock()
    for i, advance, idle, repair_down in moves:
        name = f"s{i}"  # s5 is not an expected source
        was_new = name not in clock.sources
        source = clock.source(name)
        old = (source.clock, source.idle)
        source.clock = max(0, source.clock - advance) if repair_down else source.clock + advance
        source.idle = idle
        clock.moved(name, old[0], old[1], was_new, rules)
        walked = PartitionClock(clock.offset, {n: dataclasses.replace(s) for n, s in clock.sources.items()})
        assert clock.watermark(rules) == walked.watermark(rules)
