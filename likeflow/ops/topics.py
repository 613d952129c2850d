"""Creates the contract's topics (idempotent) and checks partition counts before the job runs."""

from __future__ import annotations

import asyncio
import logging
import socket

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


async def ensure_topics(settings: Settings, warnings: list[str] | None = None) -> dict[str, int]:
    """Create missing topics with `settings.partitions` and `settings.replication_factor`;
    return {topic: partition count}.

    Raises TopicSetupError when the cluster has fewer brokers than the replication factor, or a
    topic keyed by user does not have the partition count of the table co-partitioned with it
    (`user_state`: LIKEFLOW_PARTITIONS). Other differences from the settings (replication,
    partitions of the other topics) are logged and appended to `warnings`, each with its fix.
    """
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="likeflow-admin")
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster())["brokers"])
        if settings.replication_factor > brokers:
            # The broker would refuse CreateTopics anyway (INVALID_REPLICATION_FACTOR), and Faust
            # would fail later on its changelogs: say so once, with the fix.
            raise TopicSetupError(
                f"LIKEFLOW_REPLICATION_FACTOR={settings.replication_factor} but the cluster at "
                f"{settings.kafka_bootstrap} has {brokers} broker(s): lower the factor or add brokers"
            )
        existing = set(await admin.list_topics())
        missing = [s for s in TOPIC_SPECS if settings.topic(s.name) not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        settings.topic(s.name),
                        s.partition_count(settings),
                        settings.replication_factor,
                        topic_configs=settings.topic_configs(s.configs),
                    )
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
        # aiokafka reports refused credentials and a broker that is down alike ("unable to
        # bootstrap"); a listener that accepts TCP connections is up, so retrying will not help.
        if any(_accepts_connections(address) for address in settings.kafka_bootstrap.split(",")):
            raise TopicSetupError(
                f"Kafka at {settings.kafka_bootstrap} accepts connections but refused topic setup: "
                f"{exc!r}. Do LIKEFLOW_KAFKA_SECURITY_PROTOCOL and the credentials match its "
                "listener (docs/security.md)?"
            ) from exc
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} refused topic setup: {exc!r}. "
            "Is the broker up (`make stack-up`), and do LIKEFLOW_KAFKA_SECURITY_PROTOCOL and the "
            "credentials match its listener (docs/security.md)?"
        ) from exc
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    replicas = {t["topic"]: min((len(p["replicas"]) for p in t["partitions"]), default=0) for t in described}
    for problem in layout_problems(settings, counts, replicas):
        log.warning("%s", problem)
        if warnings is not None:
            warnings.append(problem)
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


def layout_problems(settings: Settings, partitions: dict[str, int], replicas: dict[str, int]) -> list[str]:
    """What differs between the existing topics and the settings, each with how to fix it:
    fewer replicas than LIKEFLOW_REPLICATION_FACTOR, or a partition count other than the one
    the job would create (the co-partitioned topics are refused separately)."""
    problems = []
    for spec in TOPIC_SPECS:
        topic = settings.topic(spec.name)
        if topic not in partitions:
            continue
        if replicas[topic] != settings.replication_factor:
            problems.append(
                f"{topic} has replication factor {replicas[topic]}, LIKEFLOW_REPLICATION_FACTOR is "
                f"{settings.replication_factor}: reassign its replicas with kafka-reassign-partitions.sh "
                "(an existing topic's factor is never changed by likeflow)"
            )
        wanted = spec.partition_count(settings)
        if spec.name not in CO_PARTITIONED_TOPICS and partitions[topic] != wanted:
            why = (
                "one judge must see every creator"
                if spec.partitions == 1
                else "the tables fed from it have LIKEFLOW_PARTITIONS partitions"
            )
            problems.append(
                f"{topic} has {partitions[topic]} partitions, the job creates it with {wanted} ({why}): "
                "recreate it with the workers stopped, or set LIKEFLOW_PARTITIONS to match"
            )
    return problems


def _accepts_connections(address: str, timeout_s: float = 2.0) -> bool:
    """True when `host:port` accepts a TCP connection (the listener is up)."""
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False
