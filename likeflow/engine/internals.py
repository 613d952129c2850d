"""Every private faust-streaming and aiokafka name the engine touches, with the versions it was written for.

The engine bends Faust through its extension points (the transport's `Consumer`, the consumer
thread, the app's `TableManager`) and, where no extension point exists, through these names.
`tests/unit/test_engine_internals.py` checks each against the installed packages and fails when
one is gone or when the engine's source touches a private name that is not listed here: before
moving a pin, re-read the engine modules that use the changed names against the new release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

# override: the engine's subclass replaces the method; read / write: an attribute of another
# object; call: a private method called from outside its class.
Use = Literal["override", "read", "write", "call"]


@dataclass(frozen=True, slots=True)
class PrivateName:
    """One private name: where it is defined (`module:Class`, or a module), how it is used, why."""

    owner: str
    name: str
    use: Use
    where: str  # the engine module that uses it
    why: str


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # -- delivery: the fetch, below Faust's per-record drain loop -------------------------------
    PrivateName(
        "faust.transport.consumer:ThreadDelegateConsumer",
        "_getmany",
        "override",
        "delivery",
        "split each fetch: batch topics to their handlers, the rest back to Faust",
    ),
    PrivateName(
        "faust.transport.consumer:Consumer",
        "_new_offset",
        "override",
        "delivery",
        "the offset to commit for a batch partition: behind every acknowledged output",
    ),
    PrivateName(
        "faust.transport.consumer:Consumer",
        "_filter_tps_with_pending_acks",
        "override",
        "delivery",
        "batch partitions have no Faust acks; they are committable when their batches are",
    ),
    PrivateName(
        "faust.transport.consumer:Consumer",
        "_read_offset",
        "write",
        "delivery",
        "a record below the read offset predates a seek and is not delivered",
    ),
    PrivateName(
        "faust.transport.drivers.aiokafka:Consumer",
        "_new_consumer_thread",
        "override",
        "delivery",
        "the consumer thread below with a bounded fetch wait and a snapshot of the partitions",
    ),
    PrivateName(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "override",
        "delivery",
        "Faust hard-codes fetch_max_wait_ms=1500: bound it",
    ),
    PrivateName(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_fetch_records",
        "override",
        "delivery",
        "fetch a copy of the active partitions; an empty set fetches nothing",
    ),
    PrivateName(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_fetch_max_wait_ms",
        "write",
        "delivery",
        "the broker-side wait of a fetch that finds no records (ms)",
    ),
    PrivateName(
        "faust.transport.drivers.aiokafka:Producer",
        "_ensure_producer",
        "call",
        "delivery",
        "the aiokafka producer inside Faust's, for batches of records per partition",
    ),
    # -- delivery: bulk restore of the handlers' tables during recovery ---------------------------
    PrivateName(
        "faust.tables.recovery:Recovery",
        "_active_events_received_at",
        "write",
        "delivery",
        "what Faust's recovery reads to report progress, set as it would be per record",
    ),
    PrivateName(
        "faust.tables.recovery:Recovery",
        "_standby_events_received_at",
        "write",
        "delivery",
        "the same for standby partitions",
    ),
    # -- recovery: the seek before the stream partitions resume -----------------------------------
    PrivateName(
        "faust.tables.recovery:Recovery",
        "_resume_streams",
        "override",
        "recovery",
        "hold the partitions' resume until the seek to the committed offsets returned",
    ),
    PrivateName(
        "faust.tables.manager:TableManager",
        "_recovery",
        "write",
        "recovery",
        "the recovery object the manager builds lazily: ours, with the seek first",
    ),
    PrivateName(
        "faust.transport.consumer:Consumer",
        "_committed_offset",
        "read",
        "recovery",
        "partitions with no committed offset are rewound to 0, where a new group starts",
    ),
    # -- membership: the static identity guard ----------------------------------------------------
    PrivateName(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_consumer",
        "read",
        "delivery",
        "the aiokafka consumer, for its group coordinator",
    ),
    PrivateName(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_coordinator",
        "read",
        "delivery",
        "the group coordinator, created by start() before the first join",
    ),
    PrivateName(
        "aiokafka.consumer.group_coordinator:GroupCoordinator",
        "_do_rejoin_group",
        "override",
        "membership",
        "shadowed per instance: no rejoin while another live member holds the identity",
    ),
    PrivateName(
        "aiokafka.consumer.group_coordinator:GroupCoordinator",
        "_send_req",
        "call",
        "membership",
        "DescribeGroups to the group's coordinator",
    ),
    PrivateName(
        "aiokafka.consumer.group_coordinator:GroupCoordinator",
        "_closing",
        "read",
        "membership",
        "resolved when the consumer closes: a replaced member waits for it instead of rejoining",
    ),
    # -- state: the handlers' tables written into Faust's stores ----------------------------------
    PrivateName(
        "faust.stores.memory:Store",
        "_key_partition",
        "write",
        "state",
        "a key's partition, so a revoked partition's keys are dropped after recovery",
    ),
    PrivateName(
        "faust.stores.rocksdb:Store",
        "_db_for_partition",
        "call",
        "state",
        "the RocksDB database of a partition",
    ),
    PrivateName(
        "faust.stores.rocksdb:Store",
        "_dbs",
        "read",
        "state",
        "the open databases, to count keys",
    ),
    PrivateName(
        "faust.streams",
        "_current_event",
        "write",
        "faust_tables",
        "a table write as of an event: the store files the key under the event's partition",
    ),
)
