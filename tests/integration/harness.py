"""Real-broker helpers: a worker subprocess run by PID, Kafka produce/consume, metrics reads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.domain.prompt_ids import PromptIds, prompt_ids_for
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.worker.watchdog import STALL_EXIT_CODE
from streams.topics import PROMPT_FEEDBACK
from tests.integration.contract import check_consumed, check_produced, contract_name

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class WorkerProcess:
    """One `likeflow worker` subprocess, started and stopped by its own PID."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.watchdog_restarts = 0

    def start(self, timeout_s: float = 90) -> None:
        """Spawn the worker and wait until it is ready."""
        self.spawn()
        self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting (a fault test may kill it during start-up)."""
        env = {**os.environ, **self.settings.to_env()}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "likeflow", "worker", "--quiet"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Wait for Faust's "Worker ready" and /health; kill the process if it never gets there."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if "Worker ready" in self.log_path.read_text(errors="replace") and self.health():
                return
            time.sleep(0.3)
        # Never leave a half-started worker behind: the caller's cleanup does not know it.
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self) -> bool:
        """Do what a supervisor (systemd, Kubernetes, docker) does: restart the worker when its
        stall watchdog ended it. Returns whether it restarted it."""
        if self.proc is None or self.proc.poll() != STALL_EXIT_CODE:
            return False
        self.watchdog_restarts += 1
        self.start()
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def health(self) -> dict[str, Any] | None:

        try:
            with urllib.request.urlopen(self._url("/health"), timeout=2) as resp:  # noqa: S310
                data: dict[str, Any] = orjson.loads(resp.read())
                return data
        except OSError:
            return None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        with urllib.request.urlopen(self._url("/metrics"), timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        return sum(
            v
            for (n, ls), v in self.metrics().items()
            if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
        )

    def _url(self, path: str) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}{path}"


def pseudonymizer_for(settings: Settings) -> Pseudonymizer:
    """The pseudonyms the worker of `settings` gives to user ids."""
    return Pseudonymizer(settings.user_key.encode(), settings.user_key_version)


def prompt_ids_of(settings: Settings) -> PromptIds:
    """The prompt ids the worker of `settings` issues, and accepts in feedback."""
    return prompt_ids_for(pseudonymizer_for(settings))


def with_issued_prompt_ids(settings: Settings, records: Iterable[Record]) -> list[Record]:
    """Feedback `records` as an app sends them: each names a prompt the worker issued for its
    creator, product and user. A `prompt_id` the worker would not accept is replaced by the id
    of a prompt for them (the old value taken as the like's event id, so distinct stays
    distinct); records that are not feedback objects are left as they are."""
    ids, pseudonymize = prompt_ids_of(settings), pseudonymizer_for(settings)
    out: list[Record] = []
    for key, value, headers in records:
        try:
            body = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            body = None
        names = ("prompt_id", "creator_id", "product_id", "user_id")
        if isinstance(body, dict) and all(isinstance(body.get(n), str) for n in names):
            user = pseudonymize(body["user_id"])
            if not ids.verify(body["prompt_id"], body["creator_id"], body["product_id"], user):
                body["prompt_id"] = ids.issue(body["prompt_id"], body["product_id"], body["creator_id"], user)
                value = orjson.dumps(body)
        out.append((key, value, headers))
    return out


async def produce(settings: Settings, topic: str, records: Iterable[Record], *, as_sent: bool = False) -> int:
    """Send records in order (aiokafka's default murmur2 partitioner, as Faust uses); returns count.

    Feedback gets prompt ids the worker accepts (`with_issued_prompt_ids`), as the app echoes
    the id of the prompt it showed; `as_sent` sends it unchanged (forged feedback)."""
    if contract_name(settings, topic) == PROMPT_FEEDBACK and not as_sent:
        records = with_issued_prompt_ids(settings, records)
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all")
    await producer.start()
    n = 0
    try:
        for key, value, headers in records:
            check_produced(settings, topic, key, value)
            await producer.send(topic, value, key=key, headers=headers or None)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


def present(value: bytes | None) -> bytes:
    """`value`, which the test knows is a record's value and not a tombstone (None)."""
    assert value is not None, "a tombstone where a value was expected"
    return value


@dataclass
class Consumed:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


async def read_topic(settings: Settings, topic: str, timeout_s: float = 10) -> list[Consumed]:
    """Everything currently in `topic`, from the beginning to the end offsets read at the start."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    out: list[Consumed] = []
    try:
        # Every topic of a test namespace is created with settings.partitions partitions.
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    check_consumed(settings, topic, r)
                    out.append(Consumed(r.key, r.value, list(r.headers), r.partition, r.offset))
    finally:
        await consumer.stop()
    return out


async def read_topic_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[Consumed]], bool],
    timeout_s: float,
    what: str,
) -> list[Consumed]:
    """Re-read `topic` until `done(records)`: a record counted by a metric may still be in the
    worker's producer buffer, so tests wait for it on the broker itself."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_topic(settings, topic)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what} on {topic}")
        await asyncio.sleep(0.5)


def _checked(check: Callable[[], bool], worker: WorkerProcess) -> bool:
    try:
        return check()
    except OSError:
        # The worker's web port went away: it is exiting (its watchdog, say); look again later.
        time.sleep(0.5)
        if worker.alive():
            raise
        return False


async def zset_members(client: aioredis.Redis, key: str | bytes, *, desc: bool = False) -> list[bytes]:
    """The members of sorted set `key` in score order (redis-py types `zrange`'s reply as the union
    over all its flags; without scores and without decode_responses it is a list of bytes)."""
    members: list[bytes] = []
    for member in await client.zrange(key, 0, -1, desc=desc):
        assert isinstance(member, bytes), member
        members.append(member)
    return members


async def wait_until(check: Callable[[], bool], timeout_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not _checked(check, worker):
        worker.supervise()
        if not worker.alive():
            raise RuntimeError(f"worker died while waiting for {what}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}:\n{worker.tail()}")
        await asyncio.sleep(0.25)


@dataclass
class CliResult:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_cli(settings: Settings, *args: str, timeout_s: float = 120) -> CliResult:
    """Run `python -m likeflow ARGS` with `settings` as its LIKEFLOW_* environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "likeflow",
        *args,
        env={**os.environ, **settings.to_env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return CliResult(proc.returncode, stdout, stderr)
