"""The changelog bytes of the batch handlers' tables: JSON, written and read by `ChangelogStore`."""

from __future__ import annotations

from typing import Any

import orjson

from likeflow.domain.quality.counting import PartitionClock, Seen, WindowRow
from likeflow.domain.quality.engine import StoredValue
from likeflow.domain.user_state import UserState


class UserStateCodec:
    """`user_state` values: `UserState` as JSON (the shape `UserState.from_dict` reads)."""

    def encode(self, value: UserState) -> bytes:
        return value.to_json()

    def decode(self, raw: bytes) -> UserState:
        return UserState.from_dict(orjson.loads(raw))


class CreatorCountsCodec:
    """`creator_counts` values: window rows, dedupe entries and partition clocks as JSON."""

    def encode(self, value: StoredValue) -> bytes:
        return orjson.dumps(value.to_dict())

    def decode(self, raw: bytes) -> StoredValue:
        data: dict[str, Any] = orjson.loads(raw)
        if "creator_id" in data:
            return WindowRow.from_dict(data)
        if "sources" in data:
            return PartitionClock.from_dict(data)
        return Seen.from_dict(data)
