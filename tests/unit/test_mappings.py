"""The mapping replica: newest `ts` wins, tombstones and empty lists remove, bad records are skipped."""

from __future__ import annotations

from likeflow.domain.mappings import MappingOutcome, mapping_outcome
from likeflow.replicas.video_mappings import VideoMappings
from streams.events import MappingRemoval
from streams.validation import InputLimits
from tests.factories import BASE_TS, mapping, mapping_json


def test_newest_ts_wins_and_equal_ts_reapplies() -> None:
    current = mapping("v1", ts=BASE_TS)
    assert mapping_outcome(None, current) is MappingOutcome.SET
    assert mapping_outcome(current, mapping("v1", ts=BASE_TS - 1)) is MappingOutcome.STALE
    assert mapping_outcome(current, mapping("v1", ts=BASE_TS)) is MappingOutcome.SET
    assert mapping_outcome(current, MappingRemoval("v1", BASE_TS - 1)) is MappingOutcome.STALE
    assert mapping_outcome(current, MappingRemoval("v1", None)) is MappingOutcome.REMOVED


def test_replica_applies_updates_in_any_order_to_the_same_result() -> None:
    older = mapping_json("v1", ts=BASE_TS, creator_id="c-old")
    newer = mapping_json("v1", ts=BASE_TS + 1, creator_id="c-new")
    for order in ((older, newer), (newer, older), (newer, older, newer)):
        replica = VideoMappings(InputLimits())
        for value in order:
            replica.apply(b"v1", value)
        found = replica.get("v1")
        assert found is not None and found.creator_id == "c-new"


def test_replica_removes_on_tombstone_and_empty_products_and_skips_garbage() -> None:
    replica = VideoMappings(InputLimits())
    replica.apply(b"v1", mapping_json("v1"))
    replica.apply(b"v2", mapping_json("v2"))
    replica.apply(b"v3", b"{not json")  # dead-lettered by the ingest agent, ignored here
    replica.apply(b"v1", None)
    replica.apply(b"v2", mapping_json("v2", products=[], ts=BASE_TS + 1))
    assert len(replica) == 0
    assert replica.get("v3") is None
