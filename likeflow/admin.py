"""Creates the contract's topics (idempotent) and checks partition counts before the job runs."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from config import Settings
from streams.topics import LIKES_BY_VIDEO, TOPIC_SPECS, VIDEO_PRODUCTS

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class TopicSetupError(RuntimeError):
    """Topics exist with a layout the job cannot use; the message says what to do."""


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics with `settings.partitions`; return {topic: partition count}.

    Raises TopicSetupError when the join's co-partitioned topics disagree on partition count.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="likeflow-admin")
    await admin.start()
    try:
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
        described = await admin.describe_topics([settings.topic(s.name) for s in TOPIC_SPECS])
    except KafkaError as exc:
        raise TopicSetupError(
            f"Kafka at {settings.kafka_bootstrap} refused topic setup: {exc!r}. "
            "Is the broker up? (`make stack-up`)"
        ) from exc
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    joined = (settings.topic(VIDEO_PRODUCTS), settings.topic(LIKES_BY_VIDEO))
    if counts.get(joined[0]) != counts.get(joined[1]):
        raise TopicSetupError(
            f"{joined[0]} has {counts.get(joined[0])} partitions but {joined[1]} has "
            f"{counts.get(joined[1])}: the join needs them equal. Recreate {joined[1]} "
            f"with {counts.get(joined[0])} partitions (LIKEFLOW_PARTITIONS)."
        )
    return counts
