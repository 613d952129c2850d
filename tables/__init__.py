"""Faust table declarations: user state, erasure ledger, creator counts and standings, waiting likes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from config import Settings

USER_STATE_TABLE = "user_state"
ERASURE_LEDGER_TABLE = "erasure_ledger"
CREATOR_COUNTS_TABLE = "creator_counts"
CREATOR_STANDING_TABLE = "creator_standing"
MAPPING_WAITS_TABLE = "mapping_waits"
# A compacted changelog keeps a user's overwritten and deleted states until the cleaner runs;
# these bound it (docs/privacy.md): every record is compacted within a day (Kafka rolls the
# active segment for it), and a tombstone itself is dropped a day after that.
USER_STATE_CHANGELOG_CONFIGS = {
    "max.compaction.lag.ms": str(24 * 3600 * 1000),
    "delete.retention.ms": str(24 * 3600 * 1000),
}


@dataclass(frozen=True, slots=True)
class Tables:
    """The Faust tables of one app (values are JSON-ready dicts; keys are str ids)."""

    user_state: Any
    erasure_ledger: Any
    creator_counts: Any
    creator_standing: Any
    mapping_waits: Any


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    """Declare the changelog-backed tables; partitions follow the settings so sources co-partition."""

    def table(
        name: str,
        help_text: str,
        partitions: int | None = None,
        configs: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        # Raw tables hold the bytes a `ChangelogStore` writes (likeflow/engine/state.py): Faust's
        # recovery and standbys copy their changelog records into storage as they are.
        schema: Any = (
            faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
            if raw
            else faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
        )
        return app.Table(
            name,
            default=None,
            key_type=bytes if raw else str,
            value_type=bytes if raw else None,
            schema=schema,
            partitions=partitions or settings.partitions,
            help=help_text,
            extra_topic_configs=settings.topic_configs(configs),
        )

    return Tables(
        user_state=table(
            USER_STATE_TABLE,
            "user pseudonym -> seen likes, recent prompts, affinity, consent",
            configs=USER_STATE_CHANGELOG_CONFIGS,
            raw=True,
        ),
        # Never expires (compacted, no tombstones): an erasure must outlive the user's state,
        # which retention deletes, so that a pre-erasure like replayed later is still ignored.
        erasure_ledger=table(
            ERASURE_LEDGER_TABLE, "user pseudonym -> ts of the user's latest erasure request", raw=True
        ),
        creator_counts=table(
            CREATOR_COUNTS_TABLE, "window rows, dedupe entries and partition clocks", raw=True
        ),
        # Co-partitioned with the single-partition `creator-windows` topic.
        creator_standing=table(
            CREATOR_STANDING_TABLE,
            "creator_id -> horizon windows, demotion state, served verdict",
            partitions=1,
        ),
        # Co-partitioned with `likes`: each waiting like in its like's partition.
        mapping_waits=table(
            MAPPING_WAITS_TABLE, "like offset -> a like waiting for its video's mapping", raw=True
        ),
    )
