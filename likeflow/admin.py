"""Creates the contract's topics (idempotent) and checks partition counts before the job runs."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.errors import LikeflowError, ServiceUnavailable
from streams.topics import CO_PARTITIONED_TOPICS, TOPIC_SPECS

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class TopicSetupError(LikeflowError):
    """Topics exist with a layout the job cannot use; the message says what to do."""


DESCRIBE_ATTEMPTS = 50
DESCRIBE_RETRY_S = 0.2


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics with `settings.partitions`; return {topic: partition count}.

    Raises TopicSetupError when a topic keyed by user does not have the partition count of the
    table co-partitioned with it (`user_state`: LIKEFLOW_PARTITIONS).
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
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} refused topic setup: {exc!r}. "
            "Is the broker up (`make stack-up`), and do LIKEFLOW_KAFKA_SECURITY_PROTOCOL and the "
            "credentials match its listener (docs/security.md)?"
        ) from exc
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    for name in CO_PARTITIONED_TOPICS:
        topic = settings.topic(name)
        if counts.get(topic) != settings.partitions:
            # The user_state table's changelog has LIKEFLOW_PARTITIONS partitions and must be
            # co-partitioned with every topic keyed by user (Faust's assignor gives partition N
            # of each to one worker), so each user's likes, controls and state live together.
            raise TopicSetupError(
                f"{topic} has {counts.get(topic)} partitions but LIKEFLOW_PARTITIONS is "
                f"{settings.partitions}: every topic keyed by user ({', '.join(CO_PARTITIONED_TOPICS)}) "
                f"must have LIKEFLOW_PARTITIONS partitions; set LIKEFLOW_PARTITIONS={counts.get(topic)} "
                "if they all agree, or recreate the odd one"
            )
    return counts
