"""ChangelogStore: one changelog record per changed key per flush, in order, restorable by Faust."""

from __future__ import annotations

import orjson
import pytest

from likeflow.domain.user_state import UserState
from likeflow.engine import ChangelogStore
from likeflow.engine.testing import FakeTable
from tables.codecs import UserStateCodec


def store_of(table: FakeTable) -> ChangelogStore[UserState]:
    return ChangelogStore(table, UserStateCodec(), producer=table.producer)


async def test_each_changed_key_is_written_once_per_flush_with_its_latest_value() -> None:
    table = FakeTable()
    store = store_of(table)
    for ts in (1, 2, 3):
        store.put(0, "u1", UserState(high_ts=ts))
    store.put(0, "u2", UserState(high_ts=9))
    await (await store.flush(0))
    assert [(p, k) for p, k, _ in table.sent] == [(0, b"u1"), (0, b"u2")]
    assert orjson.loads(table.sent[0][2] or b"")["high_ts"] == 3
    assert table.data.data[b"u1"] == table.sent[0][2], "Faust's storage holds the changelog bytes"
    assert table.data._key_partition == {b"u1": 0, b"u2": 0}
    await (await store.flush(0))
    assert len(table.sent) == 2, "nothing changed: nothing sent"


async def test_keys_go_out_in_their_write_order_class() -> None:
    table = FakeTable()
    store = store_of(table)
    store.put(1, "clock", UserState(), order=2)
    store.put(1, "seen", UserState(), order=1)
    store.put(1, "row", UserState(), order=0)
    await (await store.flush(1))
    assert [k for _, k, _ in table.sent] == [b"row", b"seen", b"clock"]


async def test_a_value_is_restored_from_the_bytes_faust_recovered() -> None:
    table = FakeTable()
    table.data.data[b"u1"] = orjson.dumps(UserState(high_ts=7))
    table.data._key_partition[b"u1"] = 2
    store = store_of(table)
    state = store.get(2, "u1")
    assert state is not None and state.high_ts == 7
    assert store.keys(2) == {"u1"}
    state.high_ts = 8
    store.forget()  # a rebalance: decoded values are dropped, storage is read again
    again = store.get(2, "u1")
    assert again is not None and again.high_ts == 7


async def test_a_delete_is_a_tombstone_and_is_gone_at_once() -> None:
    table = FakeTable()
    store = store_of(table)
    store.put(0, "u1", UserState(high_ts=1))
    await (await store.flush(0))
    store.delete(0, "u1")
    assert store.get(0, "u1") is None, "a read before the flush must not find the old value"
    await (await store.flush(0))
    assert table.sent[-1] == (0, b"u1", None) and b"u1" not in table.data.data


async def test_full_record_batches_are_split() -> None:
    table = FakeTable()
    table.kafka.batch_limit = 2
    store = store_of(table)
    for i in range(5):
        store.put(0, f"u{i}", UserState(high_ts=i))
    await (await store.flush(0))
    assert [k for _, k, _ in table.sent] == [f"u{i}".encode() for i in range(5)]


async def test_a_failed_changelog_send_fails_the_flush() -> None:
    table = FakeTable()
    table.kafka.fail = RuntimeError("broker gone")
    store = store_of(table)
    store.put(0, "u1", UserState(high_ts=1))
    acknowledged = await store.flush(0)
    with pytest.raises(RuntimeError):
        await acknowledged
