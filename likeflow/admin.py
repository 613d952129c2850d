"""Creates the contract's topics (idempotent) and checks partition counts before the job runs."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from config import Settings
from likeflow.connections import kafka_client_kwargs
from streams.topics import LIKES, TOPIC_SPECS

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class TopicSetupError(RuntimeError):
    """Topics exist with a layout the job cannot use; the message says what to do."""


DESCRIBE_ATTEMPTS = 50
DESCRIBE_RETRY_S = 0.2


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics with `settings.partitions`; return {topic: partition count}.

    Raises TopicSetupError when `likes` does not have the partition count of the tables that are
    co-partitioned with it.
    """
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="likeflow-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in TOPIC_SPECS if settings.topic(s.name) not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(settings.topic(s.name), s.partition_count(settings), 1, topic_configs=s.configs)
                    for s in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:
                    raise for_code(code)(f"could not create topic {name}: {rest[:1]}")
                log.info("created topic %s", name)
        names = [settings.topic(s.name) for s in TOPIC_SPECS]
        # Right after CreateTopics the broker may describe a new topic with no partitions yet
        # (metadata not propagated); ask again briefly until every topic shows its partitions.
        for _ in range(DESCRIBE_ATTEMPTS):
            described = await admin.describe_topics(names)
            if all(t["partitions"] for t in described):
                break
            await asyncio.sleep(DESCRIBE_RETRY_S)
    except KafkaError as exc:
        raise TopicSetupError(
            f"Kafka at {settings.kafka_bootstrap} refused topic setup: {exc!r}. "
            "Is the broker up (`make stack-up`), and do LIKEFLOW_KAFKA_SECURITY_PROTOCOL and the "
            "credentials match its listener (docs/security.md)?"
        ) from exc
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    likes = settings.topic(LIKES)
    if counts.get(likes) != settings.partitions:
        # The user_state table's changelog has LIKEFLOW_PARTITIONS partitions and must be
        # co-partitioned with `likes`, so each user's likes and state live on one worker.
        raise TopicSetupError(
            f"{likes} has {counts.get(likes)} partitions but LIKEFLOW_PARTITIONS is "
            f"{settings.partitions}: set LIKEFLOW_PARTITIONS={counts.get(likes)}."
        )
    return counts
