"""The hot-path batch handlers run in-process: a real `PipelineContext` over fake Kafka and no Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from agents.context import PipelineContext
from agents.prompt_likes import PromptLikes
from agents.retention import RetentionSweeper
from agents.route_feedback import RouteFeedback
from config import Settings, load_settings
from likeflow.domain.privacy import DAY_MS
from likeflow.domain.prompt_ids import prompt_ids_for
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.domain.quality.sources import SourceReports
from likeflow.engine import ChangelogStore, KeyPartitioner, Records, Turn
from likeflow.engine.testing import FakeProducer, FakeTable
from likeflow.metrics import Metrics
from likeflow.policies import input_limits_from, policies_from, pricing_from, quality_policies_from
from likeflow.replicas.video_mappings import VideoMappings
from likeflow.sinks.dead_letters import DeadLetterSink
from streams.events import FEEDBACK_SOURCE, LIKES_SOURCE
from tables.codecs import ErasureLedgerCodec, UserStateCodec


class _NoServing:
    """Redis stores and the audit trail, accepting everything (this harness serves nothing)."""

    prefix = "likeflow"

    async def write(self, *args: Any) -> bool:
        return True

    async def erase(self, *args: Any) -> None: ...

    async def append(self, *args: Any) -> None: ...


@dataclass
class InProcess:
    """The like and feedback handlers of one worker, with its state, over a fake producer."""

    settings: Settings
    ctx: PipelineContext
    producer: FakeProducer
    likes: PromptLikes
    feedback: RouteFeedback
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    async def run(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """One fetched batch of `records` (key, value) of `topic`, each with `headers`, processed
        and completed."""
        from faust.types import TP

        partition_of = KeyPartitioner(self.settings.partitions)
        batch: dict[Any, list[Any]] = {}
        for key, value in records:
            partition = partition_of(key or b"")
            offset = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = offset + 1
            record = _Record(topic, partition, offset, key, value, tuple(headers))
            batch.setdefault(TP(topic, partition), []).append(record)
        handler = self.likes if topic == "likes" else self.feedback
        complete = await handler.process(cast(Records, batch))
        await complete(Turn(None))


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def in_process(settings: Settings | None = None, mappings: Sequence[tuple[bytes, bytes]] = ()) -> InProcess:
    """The handlers over `settings` (default: the defaults with a test key) and a replica that
    holds `mappings` (video-products records)."""
    settings = settings or load_settings({}, user_key="k" * 48)
    producer = FakeProducer()
    metrics = Metrics()
    pseudonymize = Pseudonymizer(settings.user_key.encode(), settings.user_key_version)
    limits = input_limits_from(settings)
    replica = VideoMappings(limits, settings.mappings_max_bytes)
    for key, value in mappings:
        replica.apply(key, value)
    replica.ready.set()

    def ceiling() -> int:
        return int(time.time() * 1000) + limits.max_skew_ms

    def store(codec: Any) -> ChangelogStore[Any]:
        table = FakeTable()
        table.kafka = producer
        return ChangelogStore(table, codec, lambda: producer)

    user_states = store(UserStateCodec(ceiling))
    guards, ranking = policies_from(settings)
    windows, judging = quality_policies_from(settings)
    serving: Any = _NoServing()
    ctx = PipelineContext(
        settings=settings,
        topics=cast(Any, None),
        tables=cast(Any, None),
        metrics=metrics,
        dead_letters=DeadLetterSink(
            "likeflow-dlq",
            KeyPartitioner(settings.partitions),
            metrics,
            user_keyed_topics=["likes"],
            pseudonymize=pseudonymize,
            user_field_topics=["prompt-feedback"],
            max_key_bytes=settings.max_key_bytes,
            max_value_bytes=settings.max_record_bytes,
        ),
        prompt_store=serving,
        guards=guards,
        ranking=ranking,
        quality_store=serving,
        windows=windows,
        judging=judging,
        video_mappings=replica,
        pseudonymize=pseudonymize,
        pricing=pricing_from(settings),
        retention=RetentionSweeper(
            user_states, settings.user_retention_days * DAY_MS, on_expired=lambda n: None
        ),
        audit=serving,
        producer=lambda: cast(Any, producer),
        user_states=user_states,
        limits=limits,
        erasures=store(ErasureLedgerCodec()),
        prompt_ids=prompt_ids_for(pseudonymize),
    )
    partition_of = KeyPartitioner(settings.partitions)
    counting = lambda creator_id: partition_of(creator_id.encode())  # noqa: E731
    likes = PromptLikes(ctx, user_states, SourceReports(LIKES_SOURCE, settings.partitions, counting))
    feedback = RouteFeedback(ctx, SourceReports(FEEDBACK_SOURCE, settings.partitions, counting))
    return InProcess(settings, ctx, producer, likes, feedback)


def run(coroutine: Any) -> Any:
    """Run `coroutine` to completion on a fresh event loop."""
    return asyncio.run(coroutine)
