"""The batch engine: how likeflow bends Faust to deliver fetched batches, keep state and send outputs.

Everything that reaches below Faust's public API lives in this package, and its private names
are listed in one module (`internals`). Handlers and the worker use only what is imported here:

- the contract (`contract`): `BatchHandler.process(batch) -> Completion`, `Records`, `Turn`,
  and `StageTimer` (where a batch's time goes: `STAGES`, plus the handlers' own);
- delivery (`delivery`): `BatchRouter`, `install_batch_transport`, `kafka_producer`, the
  consumer's commit rule (offsets only behind every acknowledged output);
- recovery (`recovery`): `SeekFirstTableManager` (stream partitions resume after the seek);
- state (`state`): `ChangelogStore` (decoded values in memory, one changelog record per
  changed key per flush), and `put_for_event` / `delete_for_event` (`faust_tables`) for
  Faust agents that write tables from a batch of events;
- outputs (`outputs`): `OutputBatch` (one produce request per partition per batch),
  `KeyPartitioner`, `DeliveryError`;
- the in-process harness (`testing`): handlers run over fake records, a fake producer and
  real `ChangelogStore`s, with their outputs, state and commits observable.
"""

from likeflow.engine.contract import STAGES, BatchHandler, Completion, OnStage, Records, StageTimer, Turn
from likeflow.engine.delivery import BatchConsumer, BatchRouter, install_batch_transport, kafka_producer
from likeflow.engine.faust_tables import delete_for_event, put_for_event
from likeflow.engine.outputs import (
    REFUSALS,
    DeliveryError,
    KeyPartitioner,
    OnRefused,
    OutputBatch,
    OutputProducer,
    OutRecord,
)
from likeflow.engine.recovery import SeekFirstTableManager
from likeflow.engine.state import ChangelogStore, Codec, Snapshot

__all__ = [
    "REFUSALS",
    "STAGES",
    "BatchConsumer",
    "BatchHandler",
    "BatchRouter",
    "ChangelogStore",
    "Codec",
    "Completion",
    "DeliveryError",
    "KeyPartitioner",
    "OnRefused",
    "OnStage",
    "OutRecord",
    "OutputBatch",
    "OutputProducer",
    "Records",
    "SeekFirstTableManager",
    "Snapshot",
    "StageTimer",
    "Turn",
    "delete_for_event",
    "install_batch_transport",
    "kafka_producer",
    "put_for_event",
]
