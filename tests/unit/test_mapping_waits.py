"""The join that waits and remembers: versioned mappings, and likes held for their video's mapping."""

from __future__ import annotations

import time
from typing import cast

import orjson
import pytest

from agents.testing import InProcess, in_process
from config import ConfigError, load_settings
from likeflow.domain.mapping_versions import Version, insert, version_at
from likeflow.domain.waiting import WaitingLike, WaitList
from likeflow.engine.testing import Delivered, Sent
from likeflow.replicas.joined import JoinedMappings
from likeflow.replicas.video_mappings import VideoMappings
from tests.factories import mapping_json
from tests.unit.loop import run

NOW = int(time.time() * 1000)
MINUTE = 60_000
KEY = "unit-test-key-" + "0123456789abcdef" * 3
WAITS = "likeflow-mapping_waits-changelog"


def like(user: str, event_id: str, video: str = "v9", ts: int = NOW - MINUTE) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body)


def product(product_id: str) -> dict[str, object]:
    return {"product_id": product_id, "title": "碎花连衣裙", "category": "dress", "price_cents": 12900,
            "certified": True, "stock": 5}  # fmt: skip


def replica(w: InProcess) -> VideoMappings:
    """The worker's replica of `video-products` (the join's creator side)."""
    return cast(JoinedMappings, w.ctx.video_mappings).creators


def publish(w: InProcess, video: str, ts: int, *products: str) -> None:
    """A `video-products` record reaching the worker's replica (no products: a removal at `ts`)."""
    replica(w).apply(video.encode(), mapping_json(video, ts=ts, products=[product(p) for p in products]))


def worker(**overrides: object) -> InProcess:
    return in_process(load_settings({}, user_key=KEY, **overrides))


def metric(w: InProcess, name: str, **labels: str) -> float:
    return w.ctx.metrics.registry.get_sample_value(name, labels) or 0.0


def prompted_products(done: Delivered) -> list[str]:
    return [orjson.loads(s.value or b"")["product_id"] for s in done.outputs("order-prompts")]


# -- versions (pure) -------------------------------------------------------------------------------


def test_a_like_joins_the_version_valid_at_its_ts_and_an_early_like_the_first() -> None:
    versions: list[Version[str]] = []
    for ts, mapping in ((100, "a"), (300, None), (200, "b"), (400, "c")):
        insert(versions, Version(ts, mapping), history_ms=10_000, max_versions=8)
    assert [v.ts for v in versions] == [100, 200, 300, 400]
    found = [version_at(versions, ts) for ts in (50, 100, 250, 300, 350, 10_000)]
    assert [v.mapping if v else "-" for v in found] == ["a", "a", "b", None, None, "c"]
    assert version_at([], 5) is None


def test_versions_are_kept_for_the_history_and_at_most_max_versions() -> None:
    versions: list[Version[int]] = []
    for ts in range(0, 1000, 100):
        insert(versions, Version(ts, ts), history_ms=250, max_versions=8)
    # The newest is 900: versions valid after 650 stay, with the one valid at 650 (600).
    assert [v.ts for v in versions] == [600, 700, 800, 900]
    dropped = insert(versions, Version(950, 950), history_ms=10_000, max_versions=2)
    assert [v.ts for v in versions] == [900, 950] and [v.ts for v in dropped] == [600, 700, 800]
    insert(versions, Version(950, -1), history_ms=10_000, max_versions=2)
    assert versions[-1] == Version(950, -1), "the same ts replaces its version"


# -- the wait list (pure) --------------------------------------------------------------------------


def test_the_wait_list_hands_out_mapped_and_expired_likes_once() -> None:
    waits = WaitList(max_waiting=3)
    a, b, c = (WaitingLike(f"e{i}", "u", v, 1, i, until) for i, (v, until) in enumerate(
        [("v1", 1_000), ("v2", 2_000), ("v1", 5_000)]))  # fmt: skip
    for w in (a, b, c):
        waits.add(0, w)
    waits.add(0, a)
    assert len(waits) == 3 and not waits.has_room() and waits.holds(0, 1)
    assert waits.due_partitions(500) == set()
    waits.mapped("v1")
    assert waits.due_partitions(500) == {0}
    assert waits.due(0) == [a, c]
    assert waits.due_partitions(1_500) == set(), "a was handed out: its deadline is stale"
    assert waits.due_partitions(2_000) == {0} and waits.due(0) == [b] and waits.due(0) == []
    for w in (a, b, c):
        waits.settled(0, w.offset)
    assert len(waits) == 0 and waits.has_room()
    assert WaitingLike.from_json(a.to_json()) == a


# -- the prompt handler, in process ----------------------------------------------------------------


def test_a_like_before_its_mapping_waits_and_gets_its_prompt_when_the_mapping_arrives() -> None:
    w = worker()
    first = run(w.run("likes", [like("u1", "e1")]))
    assert not first.outputs("order-prompts") and list(first.committed.values()) == [1]
    (entry,) = first.outputs(WAITS)
    assert entry.value is not None, "held in the changelogged table before the offset commits"
    assert metric(w, "likeflow_mapping_waits_total", outcome="waiting") == 1
    assert run(w.tick()).outputs("order-prompts") == []
    publish(w, "v9", NOW, "p1")
    joined = run(w.tick())
    assert prompted_products(joined) == ["p1"]
    assert metric(w, "likeflow_mapping_waits_total", outcome="joined") == 1
    assert metric(w, "likeflow_prompts_emitted_total") == 1
    state = w.user_state("u1")
    assert state is not None and state.remembers("e1")
    # The entry goes once the decision is out, on the next delivery of its partition.
    settled = run(w.tick())
    assert [s.value for s in settled.outputs(WAITS)] == [None] and len(w.handlers.likes.due_partitions()) == 0


def test_a_like_whose_mapping_never_comes_is_skipped_after_the_grace() -> None:
    w = worker(mapping_grace_s=0.05)
    run(w.run("likes", [like("u1", "e1")]))
    time.sleep(0.06)
    done = run(w.tick())
    assert not done.outputs("order-prompts")
    assert metric(w, "likeflow_likes_skipped_total", reason="no_mapping") == 1
    assert metric(w, "likeflow_mapping_waits_total", outcome="expired") == 1


def test_waiting_is_bounded_and_can_be_turned_off() -> None:
    w = worker(mapping_waits_max=1)
    batch = w.harness.batch(w.topic("likes"), [like("u1", "e1"), like("u2", "e2")])
    run(w.harness.deliver(w.handlers.likes, batch))
    redelivered = run(w.harness.deliver(w.handlers.likes, {tp: rs[:1] for tp, rs in batch.items()}))
    assert not redelivered.outputs(WAITS), "a redelivered waiting like is the entry already held"
    assert metric(w, "likeflow_mapping_waits_total", outcome="waiting") == 2
    assert metric(w, "likeflow_mapping_waits_total", outcome="refused") == 1
    assert metric(w, "likeflow_likes_waiting") == 1
    off = worker(mapping_grace_s=0)
    run(off.run("likes", [like("u1", "e1")]))
    assert metric(off, "likeflow_likes_skipped_total", reason="no_mapping") == 1


CHANGELOGS: dict[int, list[Sent]] = {}  # id(worker) -> every changelog record its tables hold


def restarted(old: InProcess) -> InProcess:
    """A new worker whose tables are restored from `old`'s changelogs (kill -9 and restart)."""
    new = worker()
    stores = {s.changelog_topic: s for s in (new.ctx.user_states, new.ctx.mapping_waits)}
    changelog = CHANGELOGS.get(id(old), []) + [s for s in old.producer.sent if s.topic in stores]
    CHANGELOGS[id(new)] = changelog
    for tp, records in new.harness.refetch(changelog).items():
        stores[tp.topic].apply_changelog(tp.partition, records)
    return new


def test_a_waiting_like_survives_a_crash_and_a_decision_is_not_made_twice() -> None:
    w = worker()
    run(w.run("likes", [like(f"u{i}", f"e{i}") for i in range(8)]))  # over every partition
    after = restarted(w)
    publish(after, "v9", NOW, "p1")
    decided = run(after.tick())
    assert prompted_products(decided) == ["p1"] * 8, "the restored entries are decided when the mapping comes"
    # Killed again before the entry was deleted: the next owner decides it again, and the user's
    # state (on the changelog before the prompt) makes that a re-send of the same prompt.
    again = restarted(after)
    publish(again, "v9", NOW, "p1")
    resent = run(again.tick())
    assert [s.value for s in resent.outputs("order-prompts")] == [
        s.value for s in decided.outputs("order-prompts")
    ]
    assert metric(again, "likeflow_duplicate_likes_total") == 8
    assert metric(again, "likeflow_prompts_emitted_total") == 0


def test_a_like_joins_its_version_and_a_replay_decides_as_the_original_did() -> None:
    t0 = NOW - 60 * MINUTE
    w = worker()
    publish(w, "v9", t0, "p-old")
    publish(w, "v9", t0 + 30 * MINUTE, "p-new")
    done = run(w.run("likes", [like("u1", "e1", ts=t0 + 10 * MINUTE), like("u2", "e2", ts=t0 + 40 * MINUTE)]))
    assert prompted_products(done) == ["p-old", "p-new"]
    # A removal is a version: likes in it have no products; a re-add serves the likes after it.
    publish(w, "v9", t0 + 45 * MINUTE)
    publish(w, "v9", t0 + 50 * MINUTE, "p-back")
    later = run(
        w.run("likes", [like("u3", "e3", ts=t0 + 47 * MINUTE), like("u4", "e4", ts=t0 + 55 * MINUTE)])
    )
    assert prompted_products(later) == ["p-back"]
    assert metric(w, "likeflow_likes_skipped_total", reason="no_mapping") == 1
    assert w.ctx.video_mappings.get("v9") is not None
    # A tombstone forgets the video: its next likes wait for a new mapping.
    replica(w).apply(b"v9", None)
    run(w.run("likes", [like("u5", "e5", ts=t0 + 56 * MINUTE)]))
    assert metric(w, "likeflow_mapping_waits_total", outcome="waiting") == 1


def test_the_settings_bound_the_wait() -> None:
    with pytest.raises(ConfigError, match="MAPPING_GRACE_S"):
        load_settings({}, mapping_grace_s=601)
    with pytest.raises(ConfigError, match="MAPPING_WAITS_MAX"):
        load_settings({}, mapping_waits_max=0)
    assert load_settings({}).mapping_grace_s == 5.0
