"""Static group membership (KIP-345): a restarted worker gets its partitions back at once; a duplicate stops.

With `group.instance.id` set (LIKEFLOW_INSTANCE_ID), the group coordinator keeps a worker's
partitions assigned to its identity while it is away, for up to the session timeout, and gives
them back to the next process that joins with the same identity without a rebalance: after a
kill -9 the replacement (same StatefulSet pod name, Compose container, `make run` host) consumes
again as soon as it has joined, instead of after the dead member's session expires. A worker that
does not come back within the session timeout is removed and its partitions are rebalanced.

Two *live* processes with one identity must never take turns silently. aiokafka 0.14 sends its
heartbeats and commits without the instance id, so the broker answers the process it replaced
with "unknown member" (not "fenced instance"), and aiokafka rejoins under the same identity,
replacing the other one in turn, every few hundred milliseconds, without an error. The guard
below runs before each rejoin that follows such a reset: if the group holds another member of
this identity (the broker names static members `<instance id>-<uuid>`), this process is the one
replaced; it reports `DuplicateInstanceError` and never rejoins (the worker exits). A rejoin after
this worker's own session expired (frozen longer than the session timeout) finds no such member
and proceeds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from aiokafka.protocol.admin import DescribeGroupsRequest

from likeflow.errors import EXIT_DUPLICATE_IDENTITY, LikeflowError

log = logging.getLogger(__name__)

UNKNOWN_MEMBER_ID = ""


class DuplicateInstanceError(LikeflowError):
    """Another live worker joined the consumer group with this worker's LIKEFLOW_INSTANCE_ID."""

    exit_code = EXIT_DUPLICATE_IDENTITY


def guard_static_identity(
    coordinator: Any, instance_id: str, on_duplicate: Callable[[DuplicateInstanceError], None]
) -> None:
    """Make `coordinator` (aiokafka's GroupCoordinator, before its first join) refuse to rejoin
    under `instance_id` while another live member holds it, calling `on_duplicate` once."""
    rejoin = coordinator._do_rejoin_group
    joined_as: list[str] = []  # the member id of this process's last successful join
    lost: list[DuplicateInstanceError] = []

    async def guarded_rejoin(subscription: Any) -> bool:
        if lost:
            await coordinator._closing  # never take the identity back; the worker is exiting
            return False
        if joined_as and coordinator.member_id == UNKNOWN_MEMBER_ID:
            holders = await other_holders(coordinator, instance_id, joined_as[-1])
            if holders:
                error = DuplicateInstanceError(
                    f"another live worker joined the consumer group {coordinator.group_id!r} with "
                    f"LIKEFLOW_INSTANCE_ID={instance_id!r} (member {holders[0]}) and took this "
                    f"worker's partitions; this worker stops instead of taking them back. Give "
                    f"every worker its own identity (the StatefulSet pod name, the Compose "
                    f"container name) or leave LIKEFLOW_INSTANCE_ID unset"
                )
                lost.append(error)
                log.critical("%s", error)
                on_duplicate(error)
                await coordinator._closing
                return False
        done: bool = await rejoin(subscription)
        if done:
            joined_as.append(coordinator.member_id)
            del joined_as[:-1]
        return done

    # An instance attribute shadows the method for this coordinator only.
    coordinator._do_rejoin_group = guarded_rejoin


async def other_holders(coordinator: Any, instance_id: str, own_member_id: str) -> list[str]:
    """Members of the coordinator's group that hold `instance_id` and are not `own_member_id`
    (empty if the group cannot be described: the rejoin then proceeds, as without the guard)."""
    try:
        response = await coordinator._send_req(DescribeGroupsRequest([coordinator.group_id]))
    except Exception as exc:  # noqa: BLE001 - any failure: do not block the rejoin
        log.warning("could not describe group %s before rejoining: %r", coordinator.group_id, exc)
        return []
    prefix = f"{instance_id}-"
    return [
        member[0]
        for group in response.groups
        for member in group[5]
        if member[0].startswith(prefix) and member[0] != own_member_id
    ]


def exit_on_duplicate(error: DuplicateInstanceError) -> None:
    """Exit the process with EXIT_DUPLICATE_IDENTITY (78), without a graceful shutdown: its
    partitions belong to the other worker now, and nothing it has not committed is lost (the
    other worker consumes from the committed offsets)."""
    logging.shutdown()  # flush the log: os._exit skips every handler and finaliser
    os._exit(error.exit_code)
