"""Drops the Kafka topics and Redis keys of a session's test namespaces, so the local stack does not grow."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient

from config import Settings
from likeflow.connections import kafka_client_kwargs, redis_client

# Topics per DeleteTopics request: a session leaves ~15 per namespace (~50 partition logs), and
# one request for thousands of topics can outlast the broker's request timeout.
DELETE_BATCH = 200
REDIS_SCAN_COUNT = 1000


def namespace_topics(all_topics: Iterable[str], namespaces: Iterable[str]) -> list[str]:
    """The topics a namespace owns: its contract topics (`{ns}.likes`) and Faust's (`likeflow-{ns}-…`)."""
    prefixes = tuple(p for ns in namespaces for p in (f"{ns}.", f"likeflow-{ns}-"))
    return sorted(t for t in all_topics if t.startswith(prefixes))


async def drop_namespaces(settings: Settings, namespaces: Iterable[str]) -> tuple[int, int]:
    """Delete the namespaces' topics on `settings`' broker and their Redis keys; return (topics, keys).

    Raises RuntimeError naming the topics the broker refused to delete.
    """
    namespaces = list(namespaces)
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="likeflow-test-cleanup")
    await admin.start()
    try:
        topics = namespace_topics(await admin.list_topics(), namespaces)
        refused: list[tuple[str, int]] = []
        for start in range(0, len(topics), DELETE_BATCH):
            # Deletion is asynchronous on the broker: the topics disappear shortly after it answers.
            response = await admin.delete_topics(topics[start : start + DELETE_BATCH], timeout_ms=60_000)
            refused += [(name, code) for name, code in response.topic_error_codes if code]
        if refused:
            raise RuntimeError(f"the broker refused to delete {len(refused)} topics, e.g. {refused[:3]}")
    finally:
        await admin.close()
    keys = 0
    client = redis_client(settings)
    try:
        for ns in namespaces:
            batch = [key async for key in client.scan_iter(match=f"likeflow-{ns}*", count=REDIS_SCAN_COUNT)]
            for start in range(0, len(batch), REDIS_SCAN_COUNT):
                keys += await client.unlink(*batch[start : start + REDIS_SCAN_COUNT])
    finally:
        await client.aclose()
    return len(topics), keys
