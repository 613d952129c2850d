"""`GET /users/{user_id}/profile`: what the job holds about a user (the right of access, docs/profile.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents.context import PipelineContext
from agents.decoding import wall_clock_ms
from likeflow.domain.profile.view import profile_document
from likeflow.domain.user_state import UserState
from likeflow.engine import KeyPartitioner
from streams.topics import LIKES


def user_profile(
    ctx: PipelineContext,
    user_id: str,
    owned: Iterable[int],
    *,
    rebalancing: bool = False,
    now_ms: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for raw `user_id`, answered by a worker that owns the partitions
    `owned` of `likes` (and so the users' states of those partitions).

    The state is looked up by the user's pseudonym on the partition Kafka's default partitioner
    gives the raw id (where the user's likes, controls, engagement and orders are applied). 200:
    `profile_document` of the state (an empty profile when nothing is held: `held` false) with the
    pseudonym and the partition, never the raw id; 404 when another worker owns that partition
    (the body names it); 503 while partitions are being reassigned or restored.
    """
    settings = ctx.settings
    partition = KeyPartitioner(settings.partitions)(user_id.encode())
    likes = settings.topic(LIKES)
    if rebalancing:
        return 503, {
            "error": "the worker is rebalancing or restoring its tables; ask again in a few seconds",
            "partition": partition,
        }
    if partition not in set(owned):
        return 404, {
            "error": f"this worker does not own partition {partition} of {likes}, where this user's "
            "state is kept: ask the worker that owns it (likeflow profile --url)",
            "partition": partition,
        }
    user = ctx.pseudonymize(user_id)
    state = ctx.user_states.get(partition, user)
    document = profile_document(
        state if state is not None else UserState(),
        wall_clock_ms() if now_ms is None else now_ms,
        ctx.ranking.affinity_half_life_ms,
    )
    return 200, {"user": user, "partition": partition, "held": state is not None, **document}
