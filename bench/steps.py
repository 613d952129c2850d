"""Per-step CPU of likeflow's own code per like, in process, on the benchmark's data (no broker).

Each step runs over the same decoded likes, timed with the process CPU clock; "handlers" runs the
real batch handlers (`PromptLikes`, `CountCreatorEvents`) over fetched-like batches on the engine's
in-process harness (`agents.testing`), record batches built for real but not sent, Redis and the
audit trail kept in memory.
Run in the job's virtualenv: `.venv/bin/python -m bench.steps [--likes N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.generate import DataSet, likes, mappings
from config import load_settings

STEP_ORDER = (
    "decode_like",
    "pseudonymize",
    "join lookup",
    "state load (first sight of a user)",
    "decide (guards, ranking, ids, copy, the prompt's JSON)",
    "state encode (once per user per batch)",
    "count record (build + encode)",
    "count apply (creator side)",
)


def _cpu(fn: Callable[[], Any], n: int) -> float:
    started = time.process_time()
    fn()
    return (time.process_time() - started) / n * 1e6


async def measure(n: int, batch: int) -> dict[str, float]:
    """µs of CPU per like, by step, and for the handlers end to end."""
    from likeflow.domain.decide import Duplicate, decide
    from likeflow.domain.prompt_ids import prompt_ids_for
    from likeflow.domain.pseudonym import Pseudonymizer
    from likeflow.domain.quality.sources import SourceReports
    from likeflow.domain.user_state import UserState
    from likeflow.engine import KeyPartitioner
    from streams.events import CountBatch, CreatorEvent, Invalid, Like
    from streams.validation import InputLimits, decode_like, decode_mapping
    from tables.codecs import UserStateCodec

    ds = DataSet(likes=n, users=max(1, n * 2 // 5), videos=5_000, creators=500)
    now = int(time.time() * 1000)
    maps: dict[str, Any] = {}
    for body in mappings(ds, now - 3_600_000):
        decoded = decode_mapping(body["video_id"].encode(), orjson.dumps(body), InputLimits().at(now))
        if not isinstance(decoded, Invalid) and hasattr(decoded, "products"):
            maps[decoded.video_id] = decoded
    raw = list(likes(ds, now - 3_600_000, 3_600_000 / n))
    # A fixed key of the bench's own (the worker refuses keys of few distinct characters).
    settings = load_settings({}, user_key="bench-key-" + "0123456789abcdef" * 3)
    from likeflow.policies import policies_from, quality_policies_from

    guards, ranking = policies_from(settings)
    windows, _ = quality_policies_from(settings)
    pseudonymize = Pseudonymizer(settings.user_key.encode(), 1)
    prompt_ids = prompt_ids_for(pseudonymize)
    codec = UserStateCodec()
    out: dict[str, float] = {}

    decoded_likes: list[Any] = []
    limits = InputLimits().at(now)
    out["decode_like"] = _cpu(lambda: decoded_likes.extend(decode_like(k, v, limits) for k, v in raw), n)
    users: list[str] = []
    out["pseudonymize"] = _cpu(lambda: users.extend(pseudonymize(like.user_id) for like in decoded_likes), n)
    joined: list[Any] = []
    out["join lookup"] = _cpu(lambda: joined.extend(maps.get(like.video_id) for like in decoded_likes), n)
    encoded_empty = codec.encode(UserState())
    states: dict[str, UserState] = {}

    def load() -> None:
        for user in users:
            if user not in states:
                states[user] = codec.decode(encoded_empty)

    out["state load (first sight of a user)"] = _cpu(load, n)
    pseudonymized = [
        Like(like.event_id, u, like.video_id, like.ts) for like, u in zip(decoded_likes, users, strict=True)
    ]
    decisions: list[Any] = []

    def decide_all() -> None:
        for like, mapping in zip(pseudonymized, joined, strict=True):
            if mapping is not None:
                decisions.append(
                    decide(
                        states[like.user_id],
                        like,
                        mapping,
                        creator_weight=1.0,
                        now_ms=now,
                        guards=guards,
                        ranking=ranking,
                        prompt_ids=prompt_ids,
                    )
                )

    out["decide (guards, ranking, ids, copy, the prompt's JSON)"] = _cpu(decide_all, n)

    def encode_states() -> None:
        for start in range(0, n, batch):
            for user in {like.user_id for like in pseudonymized[start : start + batch]}:
                codec.encode(states[user])

    out["state encode (once per user per batch)"] = _cpu(encode_states, n)
    prompts = [d.prompt for d in decisions if not isinstance(d, Duplicate) and getattr(d, "prompt", None)]
    partition_of = KeyPartitioner(settings.partitions)
    records: list[tuple[int, CountBatch]] = []

    def count_records() -> None:
        reports = SourceReports("likes", settings.partitions, lambda c: partition_of(c.encode()))
        for start in range(0, len(prompts), batch // 4 or 1):
            for prompt in prompts[start : start + batch // 4 or 1]:
                reports.observe(0, prompt.like_ts)
                reports.add(0, CreatorEvent.for_prompt(prompt), 0)
            for k, record in reports.records({0}):
                record.to_json()
                records.append((k, record))

    out["count record (build + encode)"] = _cpu(count_records, n)
    encoded_records = [(k, r.to_json()) for k, r in records]
    out["count apply (creator side)"] = _cpu(lambda: _count(encoded_records, windows), n)
    out["total of the steps"] = sum(out[s] for s in STEP_ORDER)
    out["handlers (prompt_likes + count_creator_events, real code)"] = await _handlers(
        raw, n, batch, settings
    )
    return out


def _count(encoded: list[tuple[int, bytes]], policy: Any) -> None:
    from likeflow.domain.quality.counting import PartitionClock
    from likeflow.domain.quality.engine import Effects, apply_record
    from likeflow.domain.quality.index import PartitionIndex
    from likeflow.ops.backfill import DictStore
    from streams.events import CountBatch

    stores: dict[int, Any] = {}
    ceiling = int(time.time() * 1000) + 300_000  # the worker's clock plus the default skew
    for offset, (k, raw) in enumerate(encoded):
        store = stores.setdefault(k, (DictStore(), PartitionIndex(), PartitionClock()))
        apply_record(
            store[0],
            store[1],
            store[2],
            partition=k,
            offset=offset,
            record=CountBatch.from_json(raw),
            policy=policy,
            effects=Effects(),
            ceiling=ceiling,
        )


async def _handlers(raw: list[tuple[bytes, bytes]], n: int, batch: int, settings: Any) -> float:
    """The real batch handlers over `raw` likes on the engine's in-process harness (record
    batches built for real, not sent), in fetched batches; each batch's count records are then
    counted as the worker's `creator-events` consumer would."""
    from agents.testing import in_process
    from likeflow.engine import KeyPartitioner
    from likeflow.engine.testing import FakeProducer

    ds = DataSet(videos=5_000, creators=500)
    published = [
        (body["video_id"].encode(), orjson.dumps(body))
        for body in mappings(ds, int(time.time() * 1000) - 3_600_000)
    ]
    worker = in_process(settings, published, producer=FakeProducer(encode=True))
    harness, partition_of = worker.harness, KeyPartitioner(settings.partitions)
    # Fetched batches are built before the clock starts: the handlers' CPU is what is measured.
    fetched = [
        harness.batch("likes", raw[start : start + batch], partition_of) for start in range(0, n, batch)
    ]
    started = time.process_time()
    for records in fetched:
        await harness.deliver(worker.handlers.likes, records)
        await worker.count()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--likes", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--repeat", type=int, default=3, help="runs; each step's lowest figure is reported")
    args = parser.parse_args()
    runs = [asyncio.run(measure(args.likes, args.batch)) for _ in range(args.repeat)]
    # The machine is shared (noise of ±30% between runs): the lowest figure is the step's cost.
    figures = {step: min(run[step] for run in runs) for step in runs[0]}
    print(f"| step | µs/like ({args.likes:,} likes, batches of {args.batch}) |")
    print("| --- | ---: |")
    for step, value in figures.items():
        print(f"| {step} | {value:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
