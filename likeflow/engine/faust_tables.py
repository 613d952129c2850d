"""Writes to Faust tables as of an event, for agents that read `take_events()` batches.

Faust's `table[key] = value` takes the changelog partition and the store's partition from its
*current* event; inside a batch of events that is not the event a write is for.
"""

from __future__ import annotations

import weakref
from typing import Any

# Faust's "current event" (faust.streams.current_event() reads it); set around a table write so
# the store sees the event the write is for (likeflow.engine.internals lists it).
from faust.streams import _current_event


def put_for_event(table: Any, event: Any, key: str, value: Any) -> Any:
    """Set `table[key] = value`, logging the change to the partition `event` came from.

    `table[key] = value` takes the changelog partition from Faust's *current* event. Inside a
    `take_events()` batch that is the last event buffered, which may belong to another
    partition; writing with the event's own partition keeps each key's changelog on the
    partition its owner reads, so recovery after a rebalance restores it to the right worker.

    The write itself runs as of `event` (Faust's current-event context variable set to it): the
    RocksDB store files a key under its current event's partition and asserts there is one,
    which inside an agent reading `take_events()` there is not (the stream sets it in its own
    task), so the judge crashed on its first write with `LIKEFLOW_STORE=rocksdict://`.

    Returns Faust's future for the changelog record: awaiting it waits for the broker's ack.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        table.data[key] = value
    finally:
        _current_event.reset(token)
    return table.send_changelog(event.message.partition, key, value)


def delete_for_event(table: Any, event: Any, key: str) -> Any:
    """Delete `table[key]`, logging the tombstone to the partition `event` came from (as
    `put_for_event` does for a write; Faust's `del table[key]` would take the partition of its
    current event). Returns Faust's future for the changelog record."""
    if key in table.data:
        del table.data[key]
    return table.send_changelog(event.message.partition, key, None, value_serializer="raw")
