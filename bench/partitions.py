"""Count records and handler CPU per like at several partition counts, in process (no broker).

For each partition count N the real batch handlers run on the engine's in-process harness
(`agents.testing.in_process`, record batches built for real by `FakeProducer(encode=True)`, not
sent): the bench's generated likes arrive in fetched batches of `LIKEFLOW_BATCH_MAX` records in
like order, each record in the partition its key hashes to (so one batch holds records of many
partitions, as a fetch of a steady stream does), and after each batch the `creator-events`
records it sent are delivered to the counting handler (`worker.count()`), as the worker's
consumer of that topic would. Count records carry counts and each source's event-time clock to
every counting partition, so how many there are depends on N and on how fast event time moves
per batch: each N runs at each `--event-rates` (likes per second of event time; "hour" spreads
the likes over one hour, as the throughput run's pre-produced backlog is; 2000 is a live feed at
the latency target's rate). The first batch is a warm-up, not measured: it carries every
source's first report to every counting partition (P x P clock-only sections, once per worker
start).
Run in the job's virtualenv: `.venv/bin/python -m bench.partitions [--partitions 4,64,256]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import orjson

from bench.generate import DataSet, likes, mappings

DEFAULT_PARTITIONS = "4,64,256"
DEFAULT_EVENT_RATES = "hour,2000"
HOUR_MS = 3_600_000
# A fixed key of the bench's own (the worker refuses keys of few distinct characters).
USER_KEY = "bench-key-" + "0123456789abcdef" * 3


def event_step_ms(rate: str, n: int) -> float:
    """Milliseconds of event time between consecutive likes at `rate` ("hour": `n` likes over an
    hour; else likes per second)."""
    return HOUR_MS / n if rate == "hour" else 1000 / float(rate)


async def measure(partitions: int, n: int, batch: int | None = None, rate: str = "hour") -> dict[str, Any]:
    """One run at `partitions` partitions over `n` likes in batches of `batch` records (default:
    the settings' `batch_max`), event time moving at `rate` (see `event_step_ms`): count records
    per like, handler CPU µs per like (process CPU time of this process, `time.process_time`),
    and records and key+value bytes per like by topic sent in process."""
    from agents.testing import in_process
    from config import load_settings
    from likeflow.engine import KeyPartitioner
    from likeflow.engine.testing import FakeProducer
    from streams.events import CountBatch
    from streams.topics import CREATOR_EVENTS, LIKES

    settings = load_settings({}, user_key=USER_KEY, partitions=partitions)
    size = batch or settings.batch_max
    ds = DataSet(likes=n, users=max(1, n * 2 // 5), videos=5_000, creators=500)
    now = int(time.time() * 1000)
    published = [(m["video_id"].encode(), orjson.dumps(m)) for m in mappings(ds, now - 7_200_000)]
    step = event_step_ms(rate, n)
    # The last like is stamped a second before now (the worker refuses a ts ahead of its clock).
    raw = list(likes(ds, now - 1000 - int(step * n), step))
    worker = in_process(settings, published, producer=FakeProducer(encode=True))
    harness, partition_of = worker.harness, KeyPartitioner(partitions)
    # Fetched batches are built before the clock starts: the handlers' CPU is what is measured.
    fetched = [
        harness.batch(worker.topic(LIKES), raw[start : start + size], partition_of)
        for start in range(0, n, size)
    ]
    # The first batch is the warm-up, not measured: every source's first report to every
    # counting partition (one-time at a worker's start, P x P sections) goes out with it.
    await harness.deliver(worker.handlers.likes, fetched[0])
    await worker.count()
    warm_sent = len(harness.sent)
    measured = n - len(raw[:size])
    likes_cpu = count_cpu = 0.0
    for records in fetched[1:]:
        started = time.process_time()
        await harness.deliver(worker.handlers.likes, records)
        decided = time.process_time()
        await worker.count()
        likes_cpu += decided - started
        count_cpu += time.process_time() - decided
    by_topic: dict[str, dict[str, float]] = {}
    count_sent = [s for s in harness.sent[warm_sent:] if s.topic == worker.topic(CREATOR_EVENTS)]
    sections = sum(len(CountBatch.from_json(s.value or b"").sections) for s in count_sent)
    for sent in harness.sent[warm_sent:]:
        row = by_topic.setdefault(sent.topic, {"records": 0, "bytes": 0})
        row["records"] += 1
        row["bytes"] += len(sent.key or b"") + len(sent.value or b"")
    return {
        "partitions": partitions,
        "event_rate": rate,
        "likes": n,
        "batch": size,
        "partitions_per_batch": sum(len(b) for b in fetched) / len(fetched),
        "measured_likes": measured,
        "count_records": len(count_sent),
        "count_records_per_like": len(count_sent) / measured,
        "count_sections_per_like": sections / measured,
        "handlers_cpu_us_per_like": (likes_cpu + count_cpu) / measured * 1e6,
        "prompt_likes_cpu_us_per_like": likes_cpu / measured * 1e6,
        "count_creator_events_cpu_us_per_like": count_cpu / measured * 1e6,
        "by_topic": {
            topic: {
                **row,
                "records_per_like": row["records"] / measured,
                "bytes_per_like": row["bytes"] / measured,
            }
            for topic, row in sorted(by_topic.items())
        },
    }


def run(
    counts: list[int], n: int, batch: int | None = None, repeat: int = 1, rates: tuple[str, ...] = ("hour",)
) -> dict[str, dict[str, Any]]:
    """`measure` at each partition count and event rate ("N@rate"), `repeat` times each; the run
    with the least handler CPU is kept (the machine is shared: the lowest figure is the code's)."""
    out: dict[str, dict[str, Any]] = {}
    for partitions in counts:
        for rate in rates:
            runs = [asyncio.run(measure(partitions, n, batch, rate)) for _ in range(repeat)]
            out[f"{partitions}@{rate}"] = min(runs, key=lambda r: float(r["handlers_cpu_us_per_like"]))
    return out


def markdown(results: dict[str, dict[str, Any]]) -> list[str]:
    """One row per partition count."""
    if not results:
        return []
    lines = [
        "| partitions (in process, no broker) | event time likes/s | likes measured | batch | "
        "partitions per batch | count records | count records/like | sections/like | "
        "handlers CPU µs/like | of which prompt_likes | of which count_creator_events |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['partitions']} | {_rate(r['event_rate'], r['likes'])} | {r.get('measured_likes', r['likes']):,} | "
        f"{r['batch']} | {r['partitions_per_batch']:.0f} | {r['count_records']:,} | "
        f"{r['count_records_per_like']:.3f} | {r.get('count_sections_per_like', 0):.3f} | "
        f"{r['handlers_cpu_us_per_like']:.1f} | "
        f"{r['prompt_likes_cpu_us_per_like']:.1f} | {r['count_creator_events_cpu_us_per_like']:.1f} |"
        for r in results.values()
    ]
    return lines


def _rate(rate: str, n: int) -> str:
    return f"{n / 3600:.0f} (an hour)" if rate == "hour" else rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", default=DEFAULT_PARTITIONS, help="comma list of partition counts")
    parser.add_argument("--likes", type=int, default=60_000, help="likes per partition count")
    parser.add_argument("--batch", type=int, help="records per fetched batch (default: LIKEFLOW_BATCH_MAX's)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per partition count; the lowest CPU is kept"
    )
    parser.add_argument(
        "--event-rates",
        default=DEFAULT_EVENT_RATES,
        help='comma list of event-time rates: likes per second, or "hour" (the likes over one hour)',
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    counts = [int(p) for p in args.partitions.split(",") if p.strip()]
    rates = tuple(r.strip() for r in args.event_rates.split(",") if r.strip())
    results = run(counts, args.likes, args.batch, args.repeat, rates)
    print("\n".join(markdown(results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
