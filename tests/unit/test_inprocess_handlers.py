"""The like and feedback handlers in-process (no broker): erasure ledger, repaired feedback, rate cap."""

from __future__ import annotations

import time

import orjson

from agents.testing import InProcess, in_process
from config import load_settings
from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER
from likeflow.engine import KeyPartitioner
from tests.factories import mapping_json
from tests.unit.loop import run

HOUR = 3_600_000
NOW = int(time.time() * 1000)
KEY = "unit-test-key-" + "0123456789abcdef" * 3


def worker(**settings: object) -> InProcess:
    return in_process(
        load_settings({}, user_key=KEY, **settings), [(b"v1", mapping_json("v1", ts=NOW - HOUR))]
    )


def like(user: str, event_id: str, ts: int) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": "v1", "ts": ts}
    return user.encode(), orjson.dumps(body)


def total(w: InProcess, name: str, **labels: str) -> float:
    return sum(
        s.value
        for m in w.ctx.metrics.registry.collect()
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def changelog_writes(w: InProcess) -> int:
    return sum(1 for topic, *_ in w.producer.sent if topic.endswith("-changelog"))


def test_a_new_state_sees_the_erasure_ledger() -> None:
    """Retention deleted an erased user's state; the ledger still says when they were erased: a
    like from before it, replayed, is skipped, and nothing of it is recorded."""
    w = worker()
    user = w.ctx.pseudonymize("gone")
    partition = KeyPartitioner(w.settings.partitions)(b"gone")  # where the user's likes land
    w.ctx.erasures.put(partition, user, NOW - HOUR)
    run(w.run("likes", [like("gone", "before", NOW - 2 * HOUR), like("gone", "after", NOW - 60_000)]))
    assert total(w, "likeflow_likes_skipped_total", reason="erased") == 1
    assert total(w, "likeflow_prompts_emitted_total") == 1
    state = w.ctx.user_states.get(partition, user)
    assert state is not None and state.erased_ts == NOW - HOUR and not state.remembers("before")


def test_a_repaired_feedback_dead_letter_counts_when_published_again() -> None:
    """A feedback dead letter carries the user's pseudonym and the pseudonymised header: published
    again, it is taken as is, and its prompt id still checks."""
    w = worker()
    run(w.run("likes", [like("u1", "l1", NOW - 60_000)]))
    (prompt,) = [orjson.loads(v or b"") for topic, _, _, v, _ in w.producer.sent if topic == "order-prompts"]
    feedback = {"event_id": "f1", "prompt_id": prompt["prompt_id"], "creator_id": prompt["creator_id"],
                "product_id": prompt["product_id"], "user_id": prompt["user_id"], "kind": "click",
                "ts": NOW}  # fmt: skip
    record = (prompt["creator_id"].encode(), orjson.dumps(feedback))
    run(w.run("prompt-feedback", [record], headers=[(PSEUDONYMISED_HEADER, b"1")]))
    assert total(w, "likeflow_dead_letters_total", topic="prompt-feedback") == 0
    # Without the header the pseudonym would be pseudonymised again and match no prompt.
    run(w.run("prompt-feedback", [record]))
    assert total(w, "likeflow_dead_letters_total", topic="prompt-feedback", reason="unknown_prompt") == 1


def test_a_rate_limited_like_writes_no_state() -> None:
    """A user at the cap keeps liking: each like is skipped without re-sending the user's state."""
    w = worker(max_likes_per_user=3)
    run(w.run("likes", [like("busy", f"e{i}", NOW - HOUR + i) for i in range(3)]))
    written = changelog_writes(w)
    for i in range(3, 6):
        run(w.run("likes", [like("busy", f"e{i}", NOW - HOUR + i)]))
    assert total(w, "likeflow_likes_skipped_total", reason="rate_limited") == 3
    assert changelog_writes(w) == written
