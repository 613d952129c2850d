"""The changelog bytes of the batch handlers' tables: JSON, written and read by `ChangelogStore`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from likeflow.domain.quality.counting import PartitionClock, Seen, WindowRow
from likeflow.domain.quality.engine import StoredValue
from likeflow.domain.user_state import UserState
from likeflow.domain.waiting import WaitingLike


class UserStateCodec:
    """`user_state` values: `UserState` as JSON (the shape `UserState.from_dict` reads).

    With `ceiling` (() -> the newest event time accepted, epoch ms), a state that holds a later
    one (written before future timestamps were refused) is repaired as it is read, and
    `on_repair` is told; the repair is written with the user's next change."""

    def __init__(
        self, ceiling: Callable[[], int] | None = None, on_repair: Callable[[], None] | None = None
    ) -> None:
        self._ceiling = ceiling
        self._on_repair = on_repair

    def encode(self, value: UserState) -> bytes:
        return value.to_json()

    def decode(self, raw: bytes) -> UserState:
        state = UserState.from_dict(orjson.loads(raw))
        if self._ceiling is not None:
            # Every time a state holds is at most its latest activity's: one comparison suffices.
            ceiling = self._ceiling()
            if state.last_active_ts > ceiling and state.clamp_times(ceiling) and self._on_repair:
                self._on_repair()
        return state


class ErasureLedgerCodec:
    """`erasure_ledger` values: the ts (epoch ms) of a user's latest erasure request, as text."""

    def encode(self, value: int) -> bytes:
        return str(value).encode()

    def decode(self, raw: bytes) -> int:
        return int(raw)


class WaitingLikeCodec:
    """`mapping_waits` values: a `WaitingLike` as a JSON array."""

    def encode(self, value: WaitingLike) -> bytes:
        return value.to_json()

    def decode(self, raw: bytes) -> WaitingLike:
        return WaitingLike.from_json(raw)


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
