"""Integration fixtures: the real local Kafka and Redis (started by `make test`), one worker per session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from config import Settings, load_settings
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.ops.topics import ensure_topics
from tests.integration.cleanup import drop_namespaces
from tests.integration.harness import WorkerProcess, reachable
from tests.integration.namespaces import SESSION_NAMESPACES, private_settings, pseudonymizer_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = load_settings()
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    if not reachable(host, int(port)):
        pytest.fail(f"no Kafka broker at {settings.kafka_bootstrap}: run `make stack-up` (or `make test`)")
    redis_hostport = settings.redis_url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    rhost, rport = redis_hostport.rsplit(":", 1)
    if not reachable(rhost, int(rport)):
        pytest.fail(f"no Redis at {settings.redis_url}: run `make stack-up` (or `make test`)")
    return settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this session's topics and Redis keys (after every fixture, so no worker still uses them).

    Without this the local broker keeps ~15 topics (~50 partition logs) per namespace and grows by
    thousands of partition logs a day, which it must load one by one at each start.
    """
    if not SESSION_NAMESPACES or session.config.getoption("--keep-test-data"):
        return
    settings = load_settings()
    try:
        topics, keys = asyncio.run(drop_namespaces(settings, SESSION_NAMESPACES))
    except Exception as exc:  # noqa: BLE001 - cleanup must not turn a green run red; it says what was left
        print(f"\n[cleanup] could not drop the test namespaces ({exc!r}); `make stack-clean` wipes them")
        return
    count = len(SESSION_NAMESPACES)
    print(f"\n[cleanup] dropped {topics} topics and {keys} Redis keys of {count} test namespaces")


@pytest.fixture(scope="session")
def settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The namespace of the session's shared worker."""
    return private_settings(base_settings, tmp_path_factory)


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    asyncio.run(ensure_topics(settings))
    log_path = Path(tmp_path_factory.mktemp("worker-log")) / "worker.log"
    proc = WorkerProcess(settings, log_path)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def private(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A fresh namespace of the test's own (topics, group, Redis keys, port, state directory): for
    tests whose event times, keys or faults must not meet another test's partitions."""
    return private_settings(base_settings, tmp_path_factory)


@pytest.fixture(scope="session")
def pseudonym(settings: Settings) -> Pseudonymizer:
    """Raw user id -> the pseudonym the session's worker stores and emits."""
    return pseudonymizer_for(settings)


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(settings.redis_url)
    yield client
    await client.aclose()
