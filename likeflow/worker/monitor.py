"""Periodic gauges of one worker: consumer lag from the broker, table sizes, demoted creators."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from likeflow.metrics import Metrics

log = logging.getLogger(__name__)


class Monitor:
    """Refreshes the gauges that no agent sets as a side effect of its work."""

    def __init__(
        self,
        app: Any,
        kafka: Mapping[str, Any],
        metrics: Metrics,
        tables: dict[str, Any],  # name -> something with len() (and .values() for standings)
        source_topics: Iterable[str],
    ) -> None:
        self._app = app
        self._kafka = kafka  # client arguments from likeflow.connections.kafka_client_kwargs
        self._metrics = metrics
        self._tables = tables
        self._sources = set(source_topics)
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        # The last lag sample, (topic, partition) -> (committed, end), and when it was taken
        # (time.monotonic()): the stall watchdog judges progress from it.
        self.offsets: dict[tuple[str, int], tuple[int, int]] = {}
        self.offsets_at = 0.0
        self._exported: set[tuple[str, int]] = set()  # lag series this worker currently shows

    async def refresh(self) -> None:
        """One refresh; Kafka errors are logged and retried next time, never raised."""
        for name, table in self._tables.items():
            self._metrics.table_keys.labels(name).set(len(table))
        standing = self._tables.get("creator_standing")
        if standing is not None:
            demoted = sum(
                1
                for value in list(standing.values())
                if isinstance(value, dict) and (value.get("standing") or {}).get("demoted")
            )
            self._metrics.creators_demoted.set(demoted)
        try:
            await self._refresh_lag()
        except KafkaError as exc:
            log.warning("consumer lag not refreshed: %s", exc)

    async def _refresh_lag(self) -> None:
        # Lag as Kafka tools report it: log end offset minus the group's committed offset, read
        # from the broker, for the source partitions this worker owns (so N workers never
        # report one partition twice).
        owned = [
            TopicPartition(tp.topic, tp.partition)
            for tp in self._app.consumer.assignment()
            if tp.topic in self._sources
        ]
        self._drop_lag_except({(tp.topic, tp.partition) for tp in owned})
        if not owned:
            self.offsets, self.offsets_at = {}, time.monotonic()
            return
        if self._clients is None:
            admin = AIOKafkaAdminClient(**self._kafka)
            await admin.start()
            offsets = AIOKafkaConsumer(**self._kafka, enable_auto_commit=False)
            await offsets.start()
            self._clients = (admin, offsets)
        admin, offsets = self._clients
        committed = await admin.list_consumer_group_offsets(self._app.conf.id, partitions=owned)
        ends = await offsets.end_offsets(owned)
        sample: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in owned:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            self.show_lag(tp.topic, tp.partition, max(0, ends[tp] - position))
            sample[(tp.topic, tp.partition)] = (position, ends[tp])
        self.offsets, self.offsets_at = sample, time.monotonic()

    def show_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the lag gauge of an owned partition (records)."""
        self._metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        self._exported.add((topic, partition))

    def forget_revoked(self, revoked: Iterable[Any]) -> None:
        """On a rebalance: stop showing the lag of partitions this worker gave up (their next
        owner reports them), so no alert fires on a number that is no longer this worker's."""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._drop_lag_except(self._exported - gone)
        self.offsets = {k: v for k, v in self.offsets.items() if k not in gone}

    def _drop_lag_except(self, kept: set[tuple[str, int]]) -> None:
        for topic, partition in self._exported - kept:
            try:
                self._metrics.consumer_lag.remove(topic, str(partition))
            except KeyError:
                pass  # never set
        self._exported &= kept

    async def close(self) -> None:
        """Close the Kafka clients."""
        if self._clients is not None:
            admin, offsets = self._clients
            await admin.close()
            await offsets.stop()
