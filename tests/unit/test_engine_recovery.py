"""Recovery resumes the stream partitions only after seeking them to their committed offsets."""

from __future__ import annotations

from typing import Any

from likeflow.engine.recovery import resume_after_seek


class FakeConsumer:
    """Records the order of the calls Faust's Recovery makes at the end of a rebalance."""

    def __init__(self, committed: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._committed_offset = committed or {}

    def resume_partitions(self, tps: Any) -> None:
        self.calls.append(("resume", set(tps)))

    async def perform_seek(self) -> None:
        self.calls.append(("seek", None))

    async def seek(self, tp: str, offset: int) -> None:
        self.calls.append(("rewind", (tp, offset)))


async def faust_end_of_recovery(consumer: Any) -> None:
    # The order of faust.tables.recovery.Recovery.on_recovery_completed (0.15).
    consumer.resume_partitions({"likes-0", "likes-1"})
    await consumer.perform_seek()
    consumer.calls.append(("flow_control.resume", None))


async def test_stream_partitions_are_resumed_after_the_seek_and_before_the_flow() -> None:
    # likes-1 has no committed offset: seek_to_committed leaves it alone, so it is rewound to 0.
    consumer = FakeConsumer(committed={"likes-0": 5})
    with resume_after_seek(consumer):
        await faust_end_of_recovery(consumer)
    assert consumer.calls == [
        ("seek", None),
        ("rewind", ("likes-1", 0)),
        ("resume", {"likes-0", "likes-1"}),
        ("flow_control.resume", None),
    ]


async def test_methods_are_restored_and_a_resume_without_seek_is_applied_on_exit() -> None:
    consumer = FakeConsumer()
    with resume_after_seek(consumer):
        consumer.resume_partitions(set())
        assert consumer.calls == []
    assert consumer.calls == [("resume", set())]
    consumer.resume_partitions({"x"})
    await consumer.perform_seek()
    assert consumer.calls[-2:] == [("resume", {"x"}), ("seek", None)]
    assert "resume_partitions" not in vars(consumer) and "perform_seek" not in vars(consumer)


async def test_a_failed_seek_still_resumes() -> None:
    class Failing(FakeConsumer):
        async def perform_seek(self) -> None:
            raise TimeoutError

    consumer = Failing()
    try:
        with resume_after_seek(consumer):
            consumer.resume_partitions({"likes-0"})
            await consumer.perform_seek()
    except TimeoutError:
        pass
    assert consumer.calls == [("resume", {"likes-0"})]
