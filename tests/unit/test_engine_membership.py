"""The static identity guard: a replaced member stops instead of taking its identity back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from config import load_settings
from config.settings import HOSTNAME_IDENTITY
from likeflow.engine.membership import DuplicateInstanceError, guard_static_identity
from likeflow.errors import EXIT_DUPLICATE_IDENTITY


class Coordinator:
    """aiokafka's GroupCoordinator as the guard sees it: a member id, a rejoin, DescribeGroups."""

    def __init__(self) -> None:
        self.group_id = "g"
        self.member_id = ""
        self.joins = 0
        self.members: list[str] = []  # what DescribeGroups answers
        self.describe_fails = False
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _do_rejoin_group(self, subscription: Any) -> bool:
        self.joins += 1
        self.member_id = f"w1-{self.joins}"
        return True

    async def _send_req(self, request: Any) -> Any:
        if self.describe_fails:
            raise OSError("coordinator gone")
        members = [(m, "client", "host", b"", b"") for m in self.members]
        return SimpleNamespace(groups=[(0, "g", "Stable", "consumer", "faust", members)])


async def guarded() -> tuple[Coordinator, list[DuplicateInstanceError]]:
    coordinator = Coordinator()
    lost: list[DuplicateInstanceError] = []
    guard_static_identity(coordinator, "w1", lost.append)
    assert await coordinator._do_rejoin_group(None)
    return coordinator, lost


async def test_a_member_replaced_by_a_live_duplicate_reports_it_and_never_rejoins() -> None:
    coordinator, lost = await guarded()
    coordinator.member_id = ""  # "unknown member": aiokafka reset it
    coordinator.members = ["w1-other", "w2-x"]
    rejoin = asyncio.ensure_future(coordinator._do_rejoin_group(None))
    await asyncio.sleep(0.01)
    assert len(lost) == 1 and "LIKEFLOW_INSTANCE_ID='w1'" in str(lost[0]) and "w1-other" in str(lost[0])
    assert lost[0].exit_code == EXIT_DUPLICATE_IDENTITY == 78
    assert not rejoin.done() and coordinator.joins == 1, "waits for the close, never rejoins"
    coordinator._closing.set_result(None)
    assert await rejoin is False


async def test_a_member_whose_own_session_expired_rejoins() -> None:
    coordinator, lost = await guarded()
    coordinator.member_id = ""
    coordinator.members = ["w2-x"]  # the group removed this member; nobody else holds w1
    assert await coordinator._do_rejoin_group(None)
    assert coordinator.joins == 2 and not lost


async def test_a_reset_in_an_ordinary_rebalance_rejoins() -> None:
    coordinator, lost = await guarded()
    coordinator.member_id = ""  # illegal generation: reset, but the group still lists this member
    coordinator.members = ["w1-1", "w2-x"]
    assert await coordinator._do_rejoin_group(None)
    assert not lost


async def test_a_group_that_cannot_be_described_does_not_block_the_rejoin() -> None:
    coordinator, lost = await guarded()
    coordinator.member_id = ""
    coordinator.describe_fails = True
    assert await coordinator._do_rejoin_group(None)
    assert not lost


def test_the_host_name_identity() -> None:
    import socket

    assert load_settings({"LIKEFLOW_INSTANCE_ID": HOSTNAME_IDENTITY}).instance_id == socket.gethostname()
    assert load_settings({"LIKEFLOW_INSTANCE_ID": "likeflow-0"}).instance_id == "likeflow-0"
    assert load_settings({}).instance_id == ""
