"""Benchmark harness: likeflow against the raw-consumer ceilings and a Quix Streams peer.

All contenders read the same pre-produced likes from the same local broker. Throughput is the
likes between the 5% and 95% marks of the backlog / the seconds between them (likeflow: likes
consumed by its metrics; the Quix peer: its prompts seen by an observer; raw consumers: records
in-process), and CPU per like of the contender, the broker and Redis is taken over the same
window; latency is event ts -> arrival on the output topic at fixed offered rates.
Run from the repo root: `make bench` (or `make bench-quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench import cpu, outputs, partitions, report, stages
from bench.generate import DataSet, likes, mappings
from config import child_env  # stdlib only: importable from the bench virtualenv too

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BOOTSTRAP = "127.0.0.1:9092"
PARTITIONS = 4
# Name prefixes of everything a run creates (topics, consumer groups, Redis keys): dropped at the
# end, so the local stack does not grow from run to run (a broker with thousands of partition
# logs and a Redis with millions of keys would slow the next run down).
CREATED: list[str] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def create_topics(prefix: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def preproduce(prefix: str, ds: DataSet) -> int:
    """Mappings, then likes (timestamps spread over the last hour), as fast as the producer goes."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, max_batch_size=256 * 1024, acks=1)
    await producer.start()
    now = int(time.time() * 1000)
    try:
        for video in mappings(ds, now - 2 * 3_600_000):
            await producer.send(
                prefix + "video-products",
                orjson.dumps(video),
                key=video["video_id"].encode(),
                timestamp_ms=video["ts"],
            )
        n = 0
        step = 3_600_000 / ds.likes
        start = now - 3_600_000
        for key, value in likes(ds, start, step):
            await producer.send(prefix + "likes", value, key=key, timestamp_ms=int(start + n * step))
            n += 1
            if n % 100_000 == 0:
                log(f"produced {n} likes")
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def raw_aiokafka(prefix: str, n: int) -> dict[str, Any]:
    """The ceiling for an aiokafka-based job: consume and decode, nothing else; likes/s and CPU
    per like (this process, the broker, Redis) between the 5% and 95% consumed marks."""
    consumer = AIOKafkaConsumer(
        prefix + "likes",
        bootstrap_servers=BOOTSTRAP,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    seen, first = 0, 0.0
    lo, hi = (int(n * share) for share in cpu.WINDOW)
    marks: dict[int, float] = {}
    sampler = cpu.sampler_for([os.getpid()])
    try:
        with sampler:
            while seen < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batch.values():
                    for r in records:
                        orjson.loads(r.value)
                        seen += 1
                        if seen == 1:
                            first = time.perf_counter()
                        if seen == lo or seen == hi:
                            marks[seen] = time.time()
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - first
    return {
        "likes": seen,
        "seconds": elapsed,
        "rate_first_to_last": seen / elapsed,
        **sampler.window(marks[lo], marks[hi], hi - lo),
    }


def raw_confluent(prefix: str, n: int) -> dict[str, Any]:
    """The ceiling for a Python process: librdkafka's consumer, decode only; likes/s and CPU per
    like (this process with librdkafka's threads, the broker, Redis) between the 5% and 95% marks."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"raw-ck-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([prefix + "likes"])
    seen, first = 0, 0.0
    lo, hi = (int(n * share) for share in cpu.WINDOW)
    marks: dict[int, float] = {}
    sampler = cpu.sampler_for([os.getpid()])
    try:
        with sampler:
            while seen < n:
                for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                    if msg.error():
                        continue
                    orjson.loads(msg.value())
                    seen += 1
                    if seen == 1:
                        first = time.perf_counter()
                    if seen == lo or seen == hi:
                        marks[seen] = time.time()
    finally:
        consumer.close()
    elapsed = time.perf_counter() - first
    return {
        "likes": seen,
        "seconds": elapsed,
        "rate_first_to_last": seen / elapsed,
        **sampler.window(marks[lo], marks[hi], hi - lo),
    }


async def observe(
    topic: str, until_quiet_s: float, expected: int | None, timeout_s: float
) -> list[tuple[float, bytes]]:
    """(arrival wall time, value) of records arriving on `topic`, until quiet or `expected` seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now = time.time()
            for records in batch.values():
                out.extend((now, r.value) for r in records)
                last = time.monotonic()
            if expected is not None and len(out) >= expected:
                break
            if out and time.monotonic() - last > until_quiet_s:
                break
    finally:
        await consumer.stop()
    return out


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(port: int, name: str) -> float:
    """Sum of the samples of `name` (a metric name, or a name with the first labels, as in
    `likeflow_creator_events_total{kind="prompt"`, or with all of them) on the worker's /metrics."""
    return metric_in(stages.scrape(port), name)


def metric_in(text: str, name: str) -> float:
    """`metric` over a /metrics text already scraped."""
    follows = ",}" if "{" in name and not name.endswith("}") else "{ "
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and len(line) > len(name) and line[len(name)] in follows
    )


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 60) -> None:
    """SIGTERM each child, wait up to `grace_s` for all, then SIGKILL those still running.

    A worker with large tables can take longer than a minute to shut down cleanly; the
    measurement is already taken, so it must not fail the run.
    """
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} did not stop within {grace_s:.0f} s of SIGTERM; killing it")
            proc.kill()
            proc.wait()


# The benchmarked workers' log level (`--worker-log-level`); quiet by default so that logging
# is not part of what is measured.
WORKER_LOG_LEVEL = ["warning"]


def start_worker(
    prefix: str, app_id: str, port: int, workdir: Path, name: str = "", store: str = "memory://"
) -> subprocess.Popen[bytes]:
    env = {
        "LIKEFLOW_TOPIC_PREFIX": prefix,
        "LIKEFLOW_APP_ID": app_id,
        "LIKEFLOW_WEB_PORT": str(port),
        "LIKEFLOW_REDIS_PREFIX": app_id,
        "LIKEFLOW_STORE": store,
        "LIKEFLOW_DATA_DIR": str(workdir / (name or app_id)),
        "LIKEFLOW_LOG_LEVEL": WORKER_LOG_LEVEL[0],
        # Each worker's stable group identity, as the manifests give it: one restarted under
        # the same name (the kill -9 measurement) gets its partitions back without a rebalance.
        "LIKEFLOW_INSTANCE_ID": name or app_id,
    }
    return subprocess.Popen(
        [str(ROOT / ".venv/bin/likeflow"), "worker", "--quiet"],
        env=child_env(env),
        cwd=ROOT,
        stdout=(workdir / f"{name or app_id}.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


async def likeflow_throughput(
    prefix: str, n: int, workdir: Path, workers: int = 1, store: str = "memory://"
) -> dict[str, Any]:
    """All features on: join, guards, prompts, Redis serving, creator counters and judging.

    Done when every like is accounted for (prompted, skipped or a duplicate) and every prompt
    is counted by the creator counters. With `workers` > 1 the processes share one consumer
    group, so the partitions are spread over them; the rate is the whole group's. With one
    worker, the worker is then killed with SIGKILL and a new one started on the same state
    directory: `recovery_s` is the time until it reports ready (tables restored).
    """
    env_prefix = prefix
    await _ensure_likeflow_topics(env_prefix)
    ports = [16066 + 10 * i for i in range(workers)]
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    CREATED.append(app_id)
    likes_metric = 'likeflow_records_consumed_total{topic="' + env_prefix + 'likes"}'
    accounted_metrics = (
        "likeflow_prompts_emitted_total",
        "likeflow_likes_skipped_total",
        "likeflow_duplicate_likes_total",
    )
    # Every topic the run writes to: the job's outputs under the prefix, and the app's own
    # (changelogs, Faust's leader topic); its inputs are not outputs.
    inputs = {prefix + t for t in ("likes", "video-products", "quix-prompts")}

    def output_topic(topic: str) -> bool:
        return (topic.startswith(prefix) and topic not in inputs) or topic.startswith(app_id + "-")

    offsets_before = await outputs.end_offsets(BOOTSTRAP, output_topic)
    procs = [start_worker(env_prefix, app_id, port, workdir, f"{app_id}-{port}", store) for port in ports]
    sampler = cpu.sampler_for([proc.pid for proc in procs])
    sampler.__enter__()
    # (wall time, likes consumed, the /metrics texts) of each poll of the workers.
    polls: list[tuple[float, float, list[str]]] = []
    try:
        first = done = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            # Twice a second, one scrape per worker: each costs the worker a full /metrics exposition.
            await asyncio.sleep(0.5)
            try:
                texts = [stages.scrape(port) for port in ports]
            except OSError:
                continue
            consumed = sum(metric_in(text, likes_metric) for text in texts)
            accounted = sum(metric_in(text, m) for text in texts for m in accounted_metrics)
            polls.append((time.time(), consumed, texts))
            if consumed and not first:
                first = time.perf_counter()
            if accounted >= n * 0.999:
                emitted = sum(metric_in(text, "likeflow_prompts_emitted_total") for text in texts)
                counted = sum(
                    metric_in(text, 'likeflow_creator_events_total{kind="prompt"') for text in texts
                )
                if counted >= emitted:
                    done = time.perf_counter()
                    break
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"a worker exited; see the logs in {workdir}")
        sampler.stop()
        prompts = sum(metric(port, "likeflow_prompts_emitted_total") for port in ports)
        tables: dict[str, int] = {}
        for port in ports:
            health = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())  # noqa: S310
            for name, size in health["tables"].items():
                tables[name] = tables.get(name, 0) + size
        counts = [(t, c) for t, c, _ in polls]
        lo, hi = (cpu.mark_time(counts, n * share) for share in cpu.WINDOW)
        result: dict[str, Any] = {
            "likes": n,
            "workers": workers,
            "store": store,
            "seconds": done - first,
            "rate_first_to_last": n / (done - first),
            **sampler.window(lo, hi, n * (cpu.WINDOW[1] - cpu.WINDOW[0])),
            "prompts": prompts,
            "peak_rss_mb": max(rss_peak_mb(proc.pid) for proc in procs),
            "tables": tables,
            "stages": _stages_between(polls, lo, hi, prefix),
        }
        offsets_after = await outputs.settled_offsets(BOOTSTRAP, output_topic)
        if workers == 1:
            procs[0].kill()
            procs[0].wait()
            started = time.perf_counter()
            procs[0] = start_worker(env_prefix, app_id, ports[0], workdir, f"{app_id}-{ports[0]}", store)
            ready, assigned = await _until_ready(ports[0], procs[0])
            result["recovery_s"] = ready - started
            # Static membership: the restarted worker (same LIKEFLOW_INSTANCE_ID) is handed the
            # killed one's partitions when it joins; what follows the assignment is the restore.
            result["restore_s"] = ready - assigned
            result["recovered_rss_mb"] = rss_peak_mb(procs[0].pid)
            log(
                f"recovery after kill -9 ({store}): ready after {result['recovery_s']:.1f} s, "
                f"tables restored in {result['restore_s']:.1f} s after the assignment"
            )
    finally:
        sampler.stop()
        stop_all(procs)
    # Read back once the workers are gone (records the restarted worker wrote are past `after`).
    written = await outputs.read_back(BOOTSTRAP, offsets_before, offsets_after)
    result["outputs"] = outputs.per_like(
        written, n, lambda t: t.removeprefix(prefix).replace(app_id, "<app_id>")
    )
    return result


def _stages_between(
    polls: list[tuple[float, float, list[str]]], start: float, end: float, prefix: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """The stage breakdown between the last poll at or before wall time `start` and the first at
    or after `end` (one worker's, or the sum over several: histograms add)."""
    before = next((p for p in reversed(polls) if p[0] <= start), polls[0])
    after = next((p for p in polls if p[0] >= end), polls[-1])
    return stages.breakdown(_merged(before[2]), _merged(after[2]), prefix)


def _merged(texts: list[str]) -> stages.Snapshot:
    """The stage histograms of several workers' /metrics texts, added up."""
    out: stages.Snapshot = {}
    for text in texts:
        for key, h in stages.parse(text).items():
            mine = out.setdefault(key, stages.Histogram())
            mine.sum += h.sum
            mine.count += h.count
            for le, c in h.buckets.items():
                mine.buckets[le] = mine.buckets.get(le, 0.0) + c
    return out


async def _until_ready(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 600
) -> tuple[float, float]:
    """perf_counter() when the worker's /ready first answers 200, and when its /health first
    showed partitions assigned (the rebalance that follows the killed member's session timeout)."""
    deadline = time.monotonic() + timeout_s
    assigned = 0.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the restarted worker exited with {proc.returncode}")
        try:
            if not assigned:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:  # noqa: S310
                    if orjson.loads(resp.read()).get("assigned_partitions"):
                        assigned = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return time.perf_counter(), assigned or time.perf_counter()
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the restarted worker was not ready within {timeout_s:.0f} s")


async def _ensure_likeflow_topics(prefix: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/likeflow"),
        "topics",
        env=child_env({"LIKEFLOW_TOPIC_PREFIX": prefix}),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()


async def quix_throughput(prefix: str, n: int, workdir: Path) -> dict[str, Any]:
    """The Quix Streams peer on the same likes: likes/s and CPU per like (the peer's process, the
    broker, Redis) between the arrivals of its 5% and 95% prompts (read by an observer; prompts
    per like are constant over the run, so that window holds 90% of the likes)."""
    await create_topics(prefix, ["quix-prompts"])
    group = f"quix-{uuid.uuid4().hex[:6]}"
    CREATED.append(group)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.quix_peer", BOOTSTRAP, prefix, group, str(workdir / group)],
        cwd=ROOT,
        stdout=(workdir / f"{group}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    sampler = cpu.sampler_for([proc.pid])
    try:
        with sampler:
            arrivals = await observe(prefix + "quix-prompts", until_quiet_s=15, expected=None, timeout_s=3600)
    finally:
        stop_all([proc])
    if len(arrivals) < 2:
        raise RuntimeError(
            f"the Quix peer produced {len(arrivals)} prompts; see {workdir / (group + '.log')}"
        )
    elapsed = arrivals[-1][0] - arrivals[0][0]
    lo, hi = (int(len(arrivals) * share) for share in cpu.WINDOW)
    share = (hi - lo) / len(arrivals)
    return {
        "likes": n,
        "seconds": elapsed,
        "rate_first_to_last": n / elapsed,
        "prompts": len(arrivals),
        **sampler.window(arrivals[lo][0], arrivals[hi - 1][0], n * share),
    }


async def likeflow_latency(steps: list[tuple[int, float]], workdir: Path) -> dict[str, dict[str, Any]]:
    """p50/p99/p999 like ts -> prompt arrival at fixed offered rates (rate, seconds), on a fresh
    namespace; `lag_at_end` is how many of a step's likes the worker had not consumed when the
    step's last like was sent (it grows when the worker does not keep up). Per step also the
    batch stage breakdown (`stages`: deltas of the worker's stage histograms between the step's
    start and the end of its observation) and CPU µs per like sent (worker, broker, Redis) over
    the same span."""
    prefix = f"lat-{uuid.uuid4().hex[:6]}."
    CREATED.append(prefix)
    ds = DataSet(likes=0, users=200_000, videos=5_000, creators=500)
    await _ensure_likeflow_topics(prefix)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=1, acks=1)
    await producer.start()
    now = int(time.time() * 1000)
    for video in mappings(ds, now - 3_600_000):
        await producer.send(prefix + "video-products", orjson.dumps(video), key=video["video_id"].encode())
    await producer.flush()
    port, app_id = 16067, f"bench-lat-{uuid.uuid4().hex[:6]}"
    CREATED.append(app_id)
    proc = start_worker(prefix, app_id, port, workdir)
    results: dict[str, dict[str, Any]] = {}
    sampler = cpu.sampler_for([proc.pid], "worker")
    sampler.__enter__()
    try:
        await asyncio.sleep(8)
        likes_metric = 'likeflow_records_consumed_total{topic="' + prefix + 'likes"}'
        for rate, seconds in steps:
            consumed_before = metric(port, likes_metric)
            stages_before, step_wall = stages.snapshot(port), time.time()
            observer = asyncio.create_task(
                observe(prefix + "order-prompts", until_quiet_s=3, expected=None, timeout_s=seconds + 30)
            )
            sent, started = 0, time.perf_counter()
            # Prompts carry a pseudonym, not the user id: a step's prompts are told apart by
            # their like ts (every like of this step is stamped after this moment).
            step_start_ms = int(time.time() * 1000)
            while (elapsed := time.perf_counter() - started) < seconds:
                due = int(elapsed * rate)
                while sent < due:
                    user = f"l{rate}-u{sent}"
                    body = {
                        "event_id": f"l{rate}-{sent}",
                        "user_id": user,
                        "video_id": f"v{sent % 5000}",
                        "ts": int(time.time() * 1000),
                    }
                    await producer.send(prefix + "likes", orjson.dumps(body), key=user.encode())
                    sent += 1
                await asyncio.sleep(0.001)
            await producer.flush()
            lag_at_end = sent - (metric(port, likes_metric) - consumed_before)
            waited = {
                t: metric(port, 'likeflow_batch_backpressure_seconds_sum{topic="' + prefix + t + '"}')
                for t in ("likes", "creator-events", "prompt-feedback")
            }
            log(f"time the fetch loop waited for room so far, by topic: {waited}")
            arrivals = await observer
            step_stages = stages.breakdown(stages_before, stages.snapshot(port), prefix)
            step_cpu = sampler.per_like_us(step_wall, time.time(), sent)
            mine = [(t, orjson.loads(v)) for t, v in arrivals]
            mine = [(t, p) for t, p in mine if p["like_ts"] >= step_start_ms]
            lat = sorted(t - p["like_ts"] / 1000 for t, p in mine)
            # Where it goes: like -> the worker's decision (fetch, queue, batch), and decision ->
            # seen by a consumer (the changelog ack before the send, the send, the consumer's fetch).
            to_decision = sorted((p["emitted_ts"] - p["like_ts"]) / 1000 for _, p in mine)
            to_consumer = sorted(t - p["emitted_ts"] / 1000 for t, p in mine)
            if not lat:
                # The worker is still behind on the previous rate's backlog: nothing to measure.
                log(f"latency at {rate}/s: no prompt arrived within the observation window")
                results[str(rate)] = {
                    "offered_per_s": rate,
                    "prompts": 0,
                    "stages": step_stages,
                    "cpu_us_per_like": step_cpu,
                }
                continue
            q = (
                statistics.quantiles(lat, n=1000)
                if len(lat) >= 1000
                else [lat[int(len(lat) * i / 1000)] for i in range(1, 1000)]
            )
            results[str(rate)] = {
                "offered_per_s": rate,
                "seconds": seconds,
                "prompts": len(lat),
                "p50_ms": q[499] * 1000,
                "p99_ms": q[989] * 1000,
                "p999_ms": q[998] * 1000,
                "lag_at_end": lag_at_end,
                "p50_to_decision_ms": to_decision[len(to_decision) // 2] * 1000,
                "p50_decision_to_consumer_ms": to_consumer[len(to_consumer) // 2] * 1000,
                "stages": step_stages,
                "cpu_us_per_like": step_cpu,
            }
            log(
                f"latency at {rate}/s for {seconds:.0f} s: p50 {results[str(rate)]['p50_ms']:.1f} ms, "
                f"p99 {results[str(rate)]['p99_ms']:.1f} ms, lag at the end {lag_at_end}; p50 like -> decision "
                f"{results[str(rate)]['p50_to_decision_ms']:.1f} ms, decision -> consumer "
                f"{results[str(rate)]['p50_decision_to_consumer_ms']:.1f} ms"
            )
            means = {st: round(v["mean_ms"], 1) for st, v in step_stages.get("likes", {}).items()}
            log(f"likes batch stages at {rate}/s, mean ms per batch: {means}; CPU µs/like {step_cpu}")
    finally:
        sampler.stop()
        await producer.stop()
        stop_all([proc])
    return results


def versions() -> dict[str, str]:
    names = ["faust-streaming", "aiokafka", "quixstreams", "confluent-kafka", "orjson"]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "n/a"
    likeflow_python = subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            "-c",
            "import faust, aiokafka; print(faust.__version__, aiokafka.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if len(likeflow_python) == 2:
        out["faust-streaming"], out["aiokafka (likeflow venv)"] = likeflow_python
    return out


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpus": os.cpu_count(),
        "mem_gb": round(int(mem) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": "3.9.1 (local KRaft, same machine)",
    }


def per_step_cpu(workdir: Path) -> dict[str, float]:
    """µs of CPU per like by step of likeflow's own code (bench/steps.py, in the job's venv)."""
    out = workdir / "steps.json"
    log("per-step CPU of likeflow's own code (bench/steps.py)")
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "bench.steps", "--likes", "60000", "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    figures: dict[str, float] = json.loads(out.read_text())
    return figures


def partition_counts(workdir: Path, counts: str, likes: int) -> dict[str, Any]:
    """Count records and handler CPU per like at each partition count of `counts` ("4,64,256")
    and event-time rate (bench/partitions.py's defaults), in process over `likes` likes each
    (bench/partitions.py, in the job's venv)."""
    if not counts.strip():
        return {}
    out = workdir / "partitions.json"
    log(f"count records and handler CPU per like at {counts} partitions (bench/partitions.py)")
    subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            "-m",
            "bench.partitions",
            "--partitions",
            counts,
            "--likes",
            str(likes),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    figures: dict[str, Any] = json.loads(out.read_text())
    for n, r in figures.items():
        log(
            f"{n} (partitions@event likes/s): {r['count_records_per_like']:.3f} count records/like, "
            f"handlers {r['handlers_cpu_us_per_like']:.1f} µs/like"
        )
    return figures


def write_report(results: dict[str, Any], stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    t = results["throughput"]
    md = [
        f"# Benchmark {stamp} ({results['mode']})",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Versions: {results['versions']}",
        "",
        f"Data: {results['dataset']}",
        "",
        *report.throughput_rows(t),
        "",
    ]
    if results.get("latency"):
        md += [
            "| offered likes/s | seconds | prompts | p50 ms | p99 ms | p999 ms | lag at the end (likes) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        md += [
            f"| {r['offered_per_s']} | {r.get('seconds', 0):.0f} | {r['prompts']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['p999_ms']:.1f} | {r.get('lag_at_end', 'n/a')} |"
            if r["prompts"]
            else f"| {r['offered_per_s']} | {r.get('seconds', 0):.0f} | 0 | not observed | not observed | not observed | n/a |"
            for r in results["latency"].values()
        ]
        md.append("")
    lf_runs = {name: r for name, r in t.items() if name.startswith("likeflow")}
    md += [
        "| likeflow run | store | peak RSS MB | ready after kill -9 s (of which table restore) | table keys |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    md += [
        f"| {name} | {r.get('store', 'memory://')} | {r.get('peak_rss_mb', 0):.0f} | "
        + (f"{r['recovery_s']:.1f} ({r['restore_s']:.1f})" if "recovery_s" in r else "n/a")
        + f" | {r.get('tables')} |"
        for name, r in lf_runs.items()
    ]
    if results.get("steps_cpu_us_per_like"):
        md += ["", "| likeflow step (in process, no broker) | µs of CPU per like |", "| --- | ---: |"]
        md += [f"| {step} | {us:.1f} |" for step, us in results["steps_cpu_us_per_like"].items()]
    md += report.sections(results)
    path = RESULTS / f"{stamp}.md"
    path.write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh(
            list(t), [r["rate"] for r in t.values()], color=["#c44" if k == "likeflow" else "#888" for k in t]
        )
        ax.set_xlabel("likes per second (same broker, same data)")
        ax.set_title(f"likeflow vs baselines ({results['mode']}, {results['machine']['cpus']} cores)")
        fig.tight_layout()
        fig.savefig(RESULTS / f"{stamp}.png", dpi=100)
    except ImportError:
        log("matplotlib missing: no chart")
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k likes, one latency rate: a few minutes")
    parser.add_argument(
        "--only-likeflow", action="store_true", help="skip the baselines (for iterating on the job)"
    )
    parser.add_argument(
        "--workers", default="1", help="comma list of likeflow group sizes to measure, e.g. 1,2"
    )
    parser.add_argument(
        "--likes", type=int, help="likes of the data set (users 2/5 of it, 5,000 videos, 500 creators)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the fixed-rate latency runs")
    parser.add_argument("--no-steps", action="store_true", help="skip the per-step CPU table")
    parser.add_argument("--latency", help="latency steps as RATE:SECONDS[,RATE:SECONDS]")
    parser.add_argument("--latency-only", action="store_true", help="only the latency steps (printed)")
    parser.add_argument(
        "--stores", default="memory://,rocksdict://", help="comma list of LIKEFLOW_STORE values to measure"
    )
    parser.add_argument(
        "--partitions",
        default=partitions.DEFAULT_PARTITIONS,
        help="partition counts at which to measure count records and handler CPU per like, in process "
        "(bench/partitions.py); empty to skip",
    )
    parser.add_argument(
        "--worker-log-level", default="warning", help="LIKEFLOW_LOG_LEVEL of the benchmarked workers"
    )
    args = parser.parse_args()
    WORKER_LOG_LEVEL[0] = args.worker_log_level
    sizes = [int(w) for w in args.workers.split(",")]
    # Quick: 200k likes, so one worker runs for tens of seconds (a steady state, and the
    # twice-a-second sampling of its progress is a small part of the measurement).
    ds = DataSet(likes=200_000, users=80_000, videos=5_000, creators=500) if args.quick else DataSet()
    if args.likes:
        ds = DataSet(likes=args.likes, users=max(1, args.likes * 2 // 5), videos=5_000, creators=500)
    # (offered likes/s, seconds): the latency target is p99 at 2,000/s for 60 s, and no
    # growing lag at 5,000/s.
    steps = (
        [(int(r), float(sec)) for r, sec in (step.split(":") for step in args.latency.split(","))]
        if args.latency
        else [(2000, 60.0), (5000, 30.0)]
        if args.quick
        else [(1000, 30.0), (2000, 60.0), (5000, 60.0), (10000, 30.0)]
    )
    if args.latency_only:
        log(f"latency only: {steps}")
        workdir = Path(tempfile.mkdtemp(prefix="likeflow-bench-"))
        try:
            print(json.dumps(await likeflow_latency(steps, workdir), indent=2))
        finally:
            await drop_created()
        return
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    CREATED.append(prefix)
    workdir = Path(tempfile.mkdtemp(prefix="likeflow-bench-"))
    log(f"data: {ds}; topics {prefix}*; logs in {workdir}")
    await create_topics(prefix, ["likes", "video-products"])
    n = await preproduce(prefix, ds)
    throughput: dict[str, Any] = {}
    if not args.only_likeflow:
        log("raw aiokafka consumer")
        throughput["raw aiokafka"] = await raw_aiokafka(prefix, n)
        log("raw confluent-kafka consumer")
        throughput["raw confluent-kafka"] = raw_confluent(prefix, n)
        log("Quix Streams peer pipeline")
        throughput["quix streams peer"] = await quix_throughput(prefix, n, workdir)
    stores = args.stores.split(",")
    for size in sizes:
        for store in stores if size == 1 else stores[:1]:
            # Each run reads the same pre-produced likes with its own consumer group.
            name = "likeflow" if size == 1 else f"likeflow, {size} workers"
            if store != stores[0]:
                name += f", {store}"
            log(f"{name} (all features, store {store})")
            throughput[name] = await likeflow_throughput(prefix, n, workdir, size, store)
    for name, r in throughput.items():
        log(f"{name}: {r['rate']:,.0f} likes/s")
    try:
        steps_cpu = {} if args.no_steps else per_step_cpu(workdir)
        # Quick: 30k likes per run (count records per like hardly depend on it: they are per batch).
        by_partitions = partition_counts(workdir, args.partitions, 30_000 if args.quick else 60_000)
        latency = {} if args.no_latency else await likeflow_latency(steps, workdir)
    except BaseException:
        await drop_created()
        raise
    results = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "versions": versions(),
        "dataset": ds.__dict__ if hasattr(ds, "__dict__") else str(ds),
        "throughput": throughput,
        "steps_cpu_us_per_like": steps_cpu,
        "latency": latency,
        "partitions": by_partitions,
    }
    path = write_report(results, time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    log(f"report: {path}")
    print(path.read_text())
    await drop_created()


async def drop_created() -> None:
    """Delete the run's topics and Redis keys (CREATED); a failure is reported, not raised."""
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if any(p in t for p in CREATED)]
            for start in range(0, len(topics), 200):
                await admin.delete_topics(topics[start : start + 200], timeout_ms=60_000)
        finally:
            await admin.close()
        keys = 0
        for name in CREATED:
            found = subprocess.run(
                ["redis-cli", "--scan", "--pattern", f"{name}*"], capture_output=True, text=True, check=True
            ).stdout.split()
            for start in range(0, len(found), 1000):
                subprocess.run(
                    ["redis-cli", "unlink", *found[start : start + 1000]], capture_output=True, check=True
                )
            keys += len(found)
        log(f"dropped {len(topics)} topics and {keys} Redis keys of this run")
    except (OSError, subprocess.CalledProcessError, KafkaError) as exc:
        log(f"could not drop this run's topics and keys ({exc!r}); `make stack-clean` wipes them")


if __name__ == "__main__":
    asyncio.run(main())
