"""Each hot-topic batch handler in-process through the engine's harness: outputs, state and commits."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from agents.testing import InProcess, in_process
from config import load_settings
from likeflow.domain.exposure import prompt_shown
from likeflow.engine import KeyPartitioner
from likeflow.engine.testing import Delivered
from streams.events import CountBatch
from tests.factories import mapping_json
from tests.unit.loop import run

NOW = int(time.time() * 1000)
MINUTE = 60_000
KEY = "unit-test-key-" + "0123456789abcdef" * 3


@pytest.fixture
def worker() -> InProcess:
    mappings = [(v.encode(), mapping_json(v, ts=NOW - 3_600_000)) for v in ("v1", "v2")]
    return in_process(load_settings({}, user_key=KEY), mappings)


def like(user: str, event_id: str, video: str = "v1", ts: int = NOW - MINUTE) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body)


def feedback_for(
    prompt: dict[str, object], user: str, kind: str = "click", event_id: str = "f1"
) -> tuple[bytes, bytes]:
    """The app's feedback on `prompt`: it knows its user by the raw id, not the pseudonym."""
    body = {k: prompt[k] for k in ("prompt_id", "creator_id", "product_id")}
    body |= {"event_id": event_id, "user_id": user, "kind": kind, "ts": NOW}
    return str(prompt["creator_id"]).encode(), orjson.dumps(body)


def reasons(w: InProcess) -> list[str]:
    return [dict(s.headers).get("likeflow.dlq.reason", b"").decode() for s in w.sent("likeflow-dlq")]


# -- PromptLikes -----------------------------------------------------------------------------------


def test_a_like_becomes_one_prompt_after_its_state_and_the_offset_is_committed(worker: InProcess) -> None:
    done = run(worker.run("likes", [like("u1", "e1")]))
    (prompt,) = done.outputs("order-prompts")
    body = orjson.loads(prompt.value or b"")
    assert body["video_id"] == "v1" and body["user_id"] == worker.ctx.pseudonymize("u1")
    topics = [s.topic for s in done.sent]
    assert topics.index("likeflow-user_state-changelog") < topics.index("order-prompts"), (
        "the user state that records the prompt is acknowledged before the prompt goes out"
    )
    assert len(worker.prompts.served) == 1, "served on Redis"
    assert [kind for _, kind, _ in worker.audit.appended] == ["prompt"]
    state = worker.user_state("u1")
    assert state is not None and state.remembers("e1")
    (tp,) = done.committed
    assert done.committed[tp] == 1 and tp.topic == "likes"


def test_a_redelivered_like_resends_the_same_bytes_and_decides_nothing_new(worker: InProcess) -> None:
    first = run(worker.run("likes", [like("u1", "e1")]))
    again = run(worker.run("likes", [like("u1", "e1")]))
    assert [s.value for s in again.outputs("order-prompts")] == [
        s.value for s in first.outputs("order-prompts")
    ]
    assert len(again.outputs("order-prompts")) == 1
    assert not again.outputs("likeflow-user_state-changelog"), "the state already knows the like"
    assert worker.ctx.metrics.registry.get_sample_value("likeflow_duplicate_likes_total") == 1


def test_a_like_without_mapping_is_skipped_and_committed() -> None:
    """With no grace (waiting for a late mapping: test_mapping_waits.py)."""
    worker = in_process(load_settings({}, user_key=KEY, mapping_grace_s=0))
    done = run(worker.run("likes", [like("u1", "e1", video="unknown")]))
    assert not done.outputs("order-prompts")
    assert (
        worker.ctx.metrics.registry.get_sample_value("likeflow_likes_skipped_total", {"reason": "no_mapping"})
        == 1
    )
    assert list(done.committed.values()) == [1]


def test_bad_likes_are_dead_letters_with_their_reason_and_the_rest_go_on(worker: InProcess) -> None:
    future = like("u2", "e2", ts=NOW + 3_600_000)
    done = run(worker.run("likes", [(b"u1", b"{not json"), future, like("u3", "e3")]))
    assert sorted(reasons(worker)) == ["future_ts", "malformed_json"]
    assert len(done.outputs("order-prompts")) == 1
    assert sum(done.committed.values()) >= 1 and not worker.harness.crashes


def test_an_undelivered_output_commits_nothing_and_stops_the_worker(worker: InProcess) -> None:
    worker.producer.fail = RuntimeError("broker gone")
    done = run(worker.run("likes", [like("u1", "e1")]))
    assert done.committed == {} and worker.harness.committed == {}
    assert len(worker.harness.crashes) == 1


def test_the_batch_stages_say_where_its_time_went(worker: InProcess) -> None:
    run(worker.run("likes", [like("u1", "e1")]))
    observed = {
        sample.labels["stage"]
        for metric in worker.ctx.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "likeflow_batch_stage_seconds_count" and sample.labels["topic"] == "likes"
    }
    assert observed == {"changelog_ack", "send", "outputs_ack", "audit", "redis", "turn", "complete"}


def test_a_demoted_creators_likes_get_prompts_for_its_weight_and_a_redelivery_decides_the_same() -> None:
    weights = {"c1": 0.3}
    mappings = [(b"v1", mapping_json("v1", ts=NOW - 3_600_000))]

    def demoted_worker() -> InProcess:
        return in_process(load_settings({}, user_key=KEY), mappings, creator_weight=lambda c: weights[c])

    def prompted(done: Delivered) -> set[str]:
        return {orjson.loads(s.value or b"")["user_id"] for s in done.outputs("order-prompts")}

    def skipped(w: InProcess) -> float | None:
        return w.ctx.metrics.registry.get_sample_value("likeflow_likes_skipped_total", {"reason": "demoted"})

    w = demoted_worker()
    likes = [like(f"u{i}", f"e{i}") for i in range(400)]
    first = run(w.run("likes", likes))
    shown = prompted(first)
    assert len(shown) + (skipped(w) or 0) == 400
    assert abs(len(shown) / 400 - 0.3) < 4.5 * math.sqrt(0.3 * 0.7 / 400)
    users = [w.ctx.pseudonymize(f"u{i}") for i in range(400)]
    assert shown == {u for u in users if prompt_shown(0.3, u, "v1", NOW - MINUTE)}

    # Redelivered after the creator recovered: the state decides, the same prompts byte for byte.
    weights["c1"] = 1.0
    again = run(w.run("likes", likes))
    assert sorted(s.value or b"" for s in again.outputs("order-prompts")) == sorted(
        s.value or b"" for s in first.outputs("order-prompts")
    )
    assert skipped(w) == 400 - len(shown)
    assert w.ctx.metrics.registry.get_sample_value("likeflow_duplicate_likes_total") == 400
    # Replayed onto a worker that lost the state, at the same weight: the hash decides the same.
    weights["c1"] = 0.3
    assert prompted(run(demoted_worker().run("likes", likes))) == shown


# -- RouteFeedback ---------------------------------------------------------------------------------


def test_feedback_on_an_issued_prompt_becomes_a_count_record_on_its_creators_partition(
    worker: InProcess,
) -> None:
    run(worker.run("likes", [like("u1", "e1")]))
    prompt = orjson.loads(worker.sent("order-prompts")[0].value or b"")
    before = len(worker.sent("creator-events"))
    done = run(worker.run("prompt-feedback", [feedback_for(prompt, "u1")]))
    records = [(s.partition, CountBatch.from_json(s.value or b"")) for s in done.outputs("creator-events")]
    (counting_partition,) = [p for p, r in records if r.events]
    assert [e.kind for _, r in records for c in r.sections for e in c.events] == ["click"] and len(
        worker.sent("creator-events")
    ) > before
    feedback_partition = next(iter(done.committed)).partition
    assert counting_partition == feedback_partition, "keyed by creator: the creator's partition"
    assert not worker.sent("likeflow-dlq")


def test_feedback_for_a_prompt_never_issued_is_a_dead_letter(worker: InProcess) -> None:
    run(worker.run("likes", [like("u1", "e1")]))
    prompt = orjson.loads(worker.sent("order-prompts")[0].value or b"")
    forged = prompt | {"product_id": "another-product"}
    done = run(worker.run("prompt-feedback", [feedback_for(forged, "u1")]))
    assert reasons(worker) == ["unknown_prompt"]
    assert not [s for s in done.outputs("creator-events") if CountBatch.from_json(s.value or b"").events]
    assert sum(done.committed.values()) == 1


# -- CountCreatorEvents ----------------------------------------------------------------------------


def served_totals(worker: InProcess) -> dict[str, int]:
    """Every creator window's latest served counts (the highest version wins), summed."""
    latest: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
    for update in worker.quality.flushed + worker.quality.held:
        for start, counts in update.written.items():
            key = (update.creator_id, start)
            if key not in latest or update.version >= latest[key][0]:
                latest[key] = (update.version, dict(counts))
    totals: dict[str, int] = {}
    for _, counts in latest.values():
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    return totals


def test_counts_are_exact_when_count_records_are_delivered_twice(worker: InProcess) -> None:
    run(worker.run("likes", [like(f"u{i}", f"e{i}", video=f"v{i % 2 + 1}") for i in range(20)]))
    prompts = [orjson.loads(s.value or b"") for s in worker.sent("order-prompts")]
    raw = {worker.ctx.pseudonymize(f"u{i}"): f"u{i}" for i in range(20)}
    clicks = [feedback_for(p, raw[str(p["user_id"])], event_id=f"f{i}") for i, p in enumerate(prompts[:5])]
    run(worker.run("prompt-feedback", clicks))
    records = worker.sent("creator-events")
    first = run(worker.count())
    totals = served_totals(worker)
    assert (totals["prompts"], totals["clicks"]) == (len(prompts), 5)
    assert first.outputs("likeflow-creator_counts-changelog"), "rows, dedupe entries, clocks"
    # The same count records again, as the next owner fetches them after a crash before the commit.
    again = run(worker.harness.deliver(worker.handlers.counting, worker.harness.refetch(records)))
    assert served_totals(worker) == totals, "a redelivered count record counts once"
    assert again.committed and not worker.harness.crashes


def test_counting_keeps_the_watermark_and_source_clock_gauges(worker: InProcess) -> None:
    run(worker.run("likes", [like(f"u{i}", f"e{i}") for i in range(4)]))
    run(worker.count())
    registry = worker.ctx.metrics.registry
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }
    watermarks = [v for (name, _), v in samples.items() if name == "likeflow_watermark_timestamp_seconds"]
    clocks = {
        dict(labels)["source"]: v
        for (name, labels), v in samples.items()
        if name == "likeflow_source_clock_timestamp_seconds"
    }
    assert len(watermarks) == worker.settings.partitions, "one per counting partition"
    assert clocks and all(source.startswith("likes/") for source in clocks)
    assert max(clocks.values()) == (NOW - MINUTE) / 1000, "a source's clock is its likes' event time"


def test_likes_count_once_per_like_across_a_lost_count_record_and_upstream_copies(
    worker: InProcess,
) -> None:
    """A creator's likes are exact: the user states reached the changelog but the count records
    were lost in a crash, so the batch is redelivered (its likes are duplicates now, reported
    again at their own offsets); then the app sends the same likes again (new offsets)."""
    likes = [like(f"u{i % 7}", f"e{i}", video=f"v{i % 2 + 1}") for i in range(40)]
    batch = worker.harness.batch(worker.topic("likes"), likes, KeyPartitioner(worker.settings.partitions))
    run(worker.harness.deliver(worker.handlers.likes, batch))
    worker.lose_counts()
    run(worker.harness.deliver(worker.handlers.likes, batch))  # the same records, same offsets
    run(worker.count())
    decided = served_totals(worker)
    skipped = worker.ctx.metrics.registry.get_sample_value
    unrecorded = sum(
        skipped("likeflow_likes_skipped_total", {"reason": r}) or 0
        for r in ("prompts_off", "erased", "too_late", "rate_limited")
    )
    assert decided["likes"] == len(likes) - unrecorded == 40
    assert decided["prompts"] == len(worker.sent("order-prompts")) // 2, "each prompt re-sent once"
    run(worker.run("likes", likes))  # upstream copies: duplicates at new offsets
    run(worker.count())
    assert served_totals(worker) == decided


def test_an_upstream_copy_redelivered_with_the_users_later_likes_counts_once(worker: InProcess) -> None:
    """A user's like, the app's copy of it right behind, then the user's next like; the count
    records are lost and the batch redelivered: the copy is still a copy (its offset is not the
    one its like was recorded at), so the creator counts two likes, not three."""
    first = like("u1", "e1", video="v1")
    batch = worker.harness.batch(
        worker.topic("likes"),
        [first, first, like("u1", "e2", video="v2")],
        KeyPartitioner(worker.settings.partitions),
    )
    run(worker.harness.deliver(worker.handlers.likes, batch))
    worker.lose_counts()
    run(worker.harness.deliver(worker.handlers.likes, batch))
    run(worker.count())
    assert served_totals(worker)["likes"] == 2
