"""The like handler's CPU per like with tracing off and on (likeflow/tracing.py), in process, no broker.

The real `PromptLikes` runs on the engine's in-process harness (`agents.testing.in_process`,
record batches built for real by `FakeProducer(encode=True)`, not sent) over the bench's likes
(no `traceparent` header: the sample ratio decides) in fetched batches of `--batch`, after one
warm-up batch. Modes: `off` (the default settings), `on@0` (tracing on, ratio 0: only likes
with a sampled header would be traced, and none has one), and each `--ratios` value. Spans go
through the worker's `BatchSpanProcessor` to an exporter that encodes them to OTLP protobuf as
the OTLP/HTTP exporter does and drops the bytes (no network): the CPU is the process's
(`time.process_time`, every thread, so the exporter thread's encoding counts), flush included.
Each run is a fresh process (a run after another in one process measured up to 15% slower,
whichever mode it was); modes run interleaved, `--repeat` rounds, and each mode's lowest figure is
reported (the machine is shared). The per-like cost of `off` is the code without tracing's: compare it with the same
run on a checkout without tracing (`--modes off`, which needs nothing new from the harness).
Run in the job's virtualenv: `.venv/bin/python -m bench.tracing [--likes N] [--ratios 0.01,1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from bench.generate import DataSet, likes, mappings

USER_KEY = "bench-key-" + "0123456789abcdef" * 3


class EncodingExporter:
    """A span exporter that encodes each batch of spans to an OTLP/HTTP request body and drops it."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


async def measure(mode: str, n: int, batch: int) -> dict[str, Any]:
    """Handler CPU µs per like (prompt_likes only) in `mode`: `off`, `on@0` or a ratio."""
    from agents.testing import in_process
    from config import load_settings
    from likeflow.engine import KeyPartitioner
    from likeflow.engine.testing import FakeProducer
    from streams.topics import LIKES

    if mode == "off":
        settings = load_settings({}, user_key=USER_KEY)
    else:
        ratio = 0.0 if mode == "on@0" else float(mode)
        settings = load_settings({}, user_key=USER_KEY, tracing=True, trace_sample_ratio=ratio)
    ds = DataSet(likes=n, users=max(1, n * 2 // 5), videos=5_000, creators=500)
    now = int(time.time() * 1000)
    published = [(m["video_id"].encode(), orjson.dumps(m)) for m in mappings(ds, now - 7_200_000)]
    step = 3_600_000 / n
    raw = list(likes(ds, now - 1000 - int(step * n), step))
    exporter = EncodingExporter()
    if mode == "off":
        worker = in_process(settings, published, producer=FakeProducer(encode=True))
    else:
        worker = in_process(settings, published, producer=FakeProducer(encode=True), span_exporter=exporter)
    harness, partition_of = worker.harness, KeyPartitioner(settings.partitions)
    fetched = [
        harness.batch(worker.topic(LIKES), raw[start : start + batch], partition_of)
        for start in range(0, n, batch)
    ]
    await harness.deliver(worker.handlers.likes, fetched[0])  # warm-up
    tracing = getattr(worker.ctx, "tracing", None)  # none in a checkout without tracing
    if tracing is not None:
        tracing.provider.force_flush()
    spans_before = exporter.spans
    measured = sum(len(r) for b in fetched[1:] for r in b.values())
    started = time.process_time()
    for records in fetched[1:]:
        await harness.deliver(worker.handlers.likes, records)
    if tracing is not None:
        tracing.provider.force_flush()
    cpu = time.process_time() - started
    if tracing is not None:
        tracing.shutdown()
    spans = exporter.spans - spans_before
    return {
        "mode": mode,
        "likes": measured,
        "cpu_us_per_like": cpu / measured * 1e6,
        "spans_per_like": spans / measured,
        "otlp_bytes_per_span": exporter.bytes / exporter.spans if exporter.spans else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--likes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--ratios", default="0.01,1", help="sample ratios to measure with tracing on")
    parser.add_argument("--modes", help="instead of off, on@0 and the ratios: these modes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved rounds; each mode's lowest is kept"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one run in this process, JSON on stdout
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one, args.likes, args.batch))))
        return
    modes = args.modes.split(",") if args.modes else ["off", "on@0", *args.ratios.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:
            command = [sys.executable, "-m", "bench.tracing", "--one", mode, "--likes", str(args.likes)]
            out = subprocess.run([*command, "--batch", str(args.batch)], check=True, capture_output=True)
            runs[mode].append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
    best = {m: min(rs, key=lambda r: float(r["cpu_us_per_like"])) for m, rs in runs.items()}
    base = best[modes[0]]["cpu_us_per_like"]
    print(
        f"| tracing (prompt_likes, {args.likes:,} likes, batches of {args.batch}) | CPU µs/like | "
        f"vs {modes[0]} | spans/like | OTLP bytes/span |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, r in best.items():
        print(
            f"| {mode} | {r['cpu_us_per_like']:.1f} | {r['cpu_us_per_like'] / base:.3f} | "
            f"{r['spans_per_like']:.3f} | {r['otlp_bytes_per_span']:.0f} |"
        )
    print(
        "all rounds (µs/like): "
        + "; ".join(f"{m} " + " ".join(f"{r['cpu_us_per_like']:.1f}" for r in rs) for m, rs in runs.items())
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"best": best, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
