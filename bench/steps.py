"""Per-step CPU of likeflow's own code per like, in process, on the benchmark's data (no broker).

Each step runs over the same decoded likes, timed with the process CPU clock; "handlers" runs the
real batch handlers (`PromptLikes`, `CountCreatorEvents`) over fetched-like batches with the
producer's record batches built for real but not sent, Redis and the audit trail stubbed.
Run in the job's virtualenv: `.venv/bin/python -m bench.steps [--likes N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from faust.types import TP

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


class _RecordingBuilder:
    def __init__(self, builder: Any) -> None:
        self._builder = builder
        self.values: list[bytes | None] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any = ()) -> Any:
        self.values.append(value)
        return self._builder.append(key=key, value=value, timestamp=timestamp, headers=headers or [])


class _UnsentProducer(AIOKafkaProducer):  # type: ignore[misc]
    """Builds record batches exactly like the real producer; `send_batch` keeps the count
    records (for the counting handler) and drops the rest."""

    counts: list[tuple[int, bytes]]

    def create_batch(self) -> Any:
        return _RecordingBuilder(super().create_batch())

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        if topic == "creator-events":
            self.counts = [*getattr(self, "counts", []), *((partition, v) for v in batch.values)]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[()] = ()


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
    from streams.events import CountRecord, CreatorEvent, Invalid, Like
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
    records: list[tuple[int, CountRecord]] = []

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
    from streams.events import CountRecord

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
            record=CountRecord.from_json(raw),
            policy=policy,
            effects=Effects(),
            ceiling=ceiling,
        )


async def _handlers(raw: list[tuple[bytes, bytes]], n: int, batch: int, settings: Any) -> float:
    """The real batch handlers over `raw` likes, with their own changelog store, in batches."""
    from agents.count_creator_events import CountCreatorEvents
    from agents.prompt_likes import PromptLikes
    from agents.retention import RetentionSweeper
    from likeflow.connections import pseudonymizer
    from likeflow.domain.prompt_ids import prompt_ids_for
    from likeflow.domain.quality.sources import SourceReports
    from likeflow.engine import ChangelogStore, KeyPartitioner, Turn
    from likeflow.metrics import Metrics
    from likeflow.policies import input_limits_from, policies_from, pricing_from, quality_policies_from
    from likeflow.sinks.dead_letters import DeadLetterSink
    from tables.codecs import CreatorCountsCodec, ErasureLedgerCodec, UserStateCodec

    producer = _UnsentProducer(bootstrap_servers="127.0.0.1:1")
    metrics = Metrics()

    def table(name: str) -> Any:
        store = SimpleNamespace(data={}, _key_partition={})
        return SimpleNamespace(data=store, changelog_topic=SimpleNamespace(get_topic_name=lambda: name))

    user_states = ChangelogStore(table("user_state"), UserStateCodec(), lambda: producer)
    counts = ChangelogStore(table("creator_counts"), CreatorCountsCodec(), lambda: producer)
    erasures = ChangelogStore(table("erasure_ledger"), ErasureLedgerCodec(), lambda: producer)
    pseudonymize = pseudonymizer(settings)
    guards, ranking = policies_from(settings)
    windows, judging = quality_policies_from(settings)
    maps = _Mappings(settings)

    class _Noop:
        async def append(self, *args: Any) -> None: ...

        async def write(self, *args: Any) -> bool:
            return True

        async def write_windows(self, *args: Any) -> int:
            return 0

        def hold_windows(self, *args: Any) -> None: ...

        async def flush(self) -> None: ...

    ctx = SimpleNamespace(
        settings=settings,
        metrics=metrics,
        dead_letters=DeadLetterSink("dlq", KeyPartitioner(settings.partitions), metrics),
        prompt_store=_Noop(),
        quality_store=_Noop(),
        audit=_Noop(),
        guards=guards,
        ranking=ranking,
        pricing=pricing_from(settings),
        windows=windows,
        judging=judging,
        video_mappings=maps,
        pseudonymize=pseudonymize,
        retention=RetentionSweeper(user_states, 30 * 86_400_000, on_expired=lambda n: None),
        producer=lambda: producer,
        user_states=user_states,
        limits=input_limits_from(settings),
        erasures=erasures,
        prompt_ids=prompt_ids_for(pseudonymize),
        creator_weight=lambda creator_id: 1.0,
    )
    partition_of = KeyPartitioner(settings.partitions)
    reports = SourceReports("likes", settings.partitions, lambda c: partition_of(c.encode()))
    prompt_likes = PromptLikes(ctx, user_states, reports)  # type: ignore[arg-type]
    counting = CountCreatorEvents(ctx, counts)  # type: ignore[arg-type]
    fetched = [_Record("likes", partition_of(k), i, k, v) for i, (k, v) in enumerate(raw)]
    started = time.process_time()
    counted_offset = 0
    for start in range(0, n, batch):
        chunk: dict[TP, list[_Record]] = {}
        for record in fetched[start : start + batch]:
            chunk.setdefault(TP("likes", record.partition), []).append(record)
        complete = await prompt_likes.process(chunk)
        await complete(Turn(None))
        # What the completion sent to creator-events, fed to the counting handler as a fetch.
        sent = {}
        for k, record in reports_sent(producer):
            sent.setdefault(TP("creator-events", k), []).append(
                _Record("creator-events", k, counted_offset, None, record)
            )
            counted_offset += 1
        if sent:
            await (await counting.process(sent))(Turn(None))
    return (time.process_time() - started) / n * 1e6


class _Mappings:
    def __init__(self, settings: Any) -> None:
        from likeflow.policies import input_limits_from
        from likeflow.replicas.video_mappings import VideoMappings

        self._replica = VideoMappings(input_limits_from(settings))
        ds = DataSet(videos=5_000, creators=500)
        for body in mappings(ds, int(time.time() * 1000) - 3_600_000):
            self._replica.apply(body["video_id"].encode(), orjson.dumps(body))
        self.ready = asyncio.Event()
        self.ready.set()

    def get(self, video_id: str) -> Any:
        return self._replica.get(video_id)


def reports_sent(producer: Any) -> list[tuple[int, bytes]]:
    """The count records the last completion built (taken from the producer's batches)."""
    out = getattr(producer, "counts", [])
    producer.counts = []
    return out


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
