"""The profile beyond likes, wired in-process: a like's `watch_ms`, `user-engagement`, orders routed
from `prompt-feedback` to `user-orders` (once per event id), refusal, `/users/{id}/profile` and
`likeflow profile`."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from agents.testing import InProcess, in_process
from config import load_settings
from likeflow.cli import build_parser
from likeflow.domain.affinity import scores_at
from likeflow.domain.privacy import apply_consent
from likeflow.domain.user_state import UserState
from likeflow.engine import KeyPartitioner
from likeflow.errors import EXIT_FAILED, EXIT_UNAVAILABLE
from likeflow.worker.user_profile import user_profile
from streams.events import DeadLetterReason, Invalid, UserConsent
from streams.validation import MAX_WATCH_MS, decode_like, decode_like_checked
from tests.factories import LIMITS, like_json, mapping_json
from tests.unit.loop import run

NOW = int(time.time() * 1000)
MINUTE = 60_000
KEY = "unit-test-key-" + "0123456789abcdef" * 3
HALF_LIFE_MS = 168 * 3_600_000
LIPSTICK = [
    {"product_id": "lip", "title": "口红", "category": "lipstick", "price_cents": 9900, "certified": True,
     "stock": 5},
]  # fmt: skip


@pytest.fixture
def worker() -> InProcess:
    mappings = [
        (b"v1", mapping_json("v1", ts=NOW - 3_600_000)),  # a dress at ¥129
        (b"v2", mapping_json("v2", products=LIPSTICK, ts=NOW - 3_600_000)),
    ]
    return in_process(load_settings({}, user_key=KEY), mappings)


def scores(worker: InProcess, user: str) -> dict[str, float]:
    state = worker.user_state(user)
    assert state is not None
    return {c: round(s, 6) for c, s in scores_at(state.affinity, NOW, HALF_LIFE_MS).items()}


def like(user: str, event_id: str, video: str = "v1", **extra: Any) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": video, "ts": NOW, **extra}
    return user.encode(), orjson.dumps(body)


def engagement(user: str, event_id: str, kind: str, video: str = "v2", **extra: Any) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "video_id": video, "kind": kind, "ts": NOW, **extra}
    return user.encode(), orjson.dumps(body)


def order_for(prompt: dict[str, Any], user: str, event_id: str, amount: int) -> tuple[bytes, bytes]:
    """The app's `order` feedback on `prompt`: it names the user by the raw id."""
    body = {k: prompt[k] for k in ("prompt_id", "creator_id", "product_id")}
    body |= {"event_id": event_id, "user_id": user, "kind": "order", "ts": NOW, "amount_cents": amount}
    return str(prompt["creator_id"]).encode(), orjson.dumps(body)


def outcomes(worker: InProcess, kind: str) -> dict[str, float]:
    registry = worker.ctx.metrics.registry
    found: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name == "likeflow_user_engagements":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["kind"] == kind and sample.value:
                    found[sample.labels["outcome"]] = sample.value
    return found


def cli(*argv: str) -> int:
    """`likeflow ARGV` without `main`'s logging setup (which would outlive the captured streams)."""
    args = build_parser().parse_args(argv)
    code: int = args.func(load_settings({}, user_key=KEY), args)
    return code


def reasons(worker: InProcess) -> list[str]:
    return [dict(s.headers).get("likeflow.dlq.reason", b"").decode() for s in worker.sent("likeflow-dlq")]


# -- watch_ms on likes -------------------------------------------------------------------------------


@pytest.mark.parametrize("watch_ms", [None, 0, 1, 60_000, MAX_WATCH_MS])
def test_a_like_s_watch_ms_decodes_on_both_paths(watch_ms: int | None) -> None:
    value = like_json(watch_ms=watch_ms)
    fast, checked = decode_like(b"u1", value, LIMITS), decode_like_checked(b"u1", value, LIMITS)
    assert not isinstance(fast, Invalid) and fast == checked and fast.watch_ms == watch_ms


def test_a_like_without_watch_ms_decodes_as_before() -> None:
    decoded = decode_like(b"u1", like_json(), LIMITS)
    assert not isinstance(decoded, Invalid) and decoded.watch_ms is None and decoded.action == "like"


@pytest.mark.parametrize(
    ("watch_ms", "reason"),
    [
        (True, DeadLetterReason.WRONG_TYPE),
        (1.5, DeadLetterReason.WRONG_TYPE),
        ("30000", DeadLetterReason.WRONG_TYPE),
        (-1, DeadLetterReason.INVALID_VALUE),
        (MAX_WATCH_MS + 1, DeadLetterReason.INVALID_VALUE),
    ],
)
def test_a_bad_watch_ms_is_a_dead_letter_reason(watch_ms: object, reason: DeadLetterReason) -> None:
    decoded = decode_like(b"u1", like_json(watch_ms=watch_ms), LIMITS)
    assert isinstance(decoded, Invalid) and decoded.reason == reason and "watch_ms" in decoded.error


def test_a_like_adds_its_watch_time_weight_to_the_profile(worker: InProcess) -> None:
    run(worker.run("likes", [like("plain", "e1"), like("watched", "e1", watch_ms=60_000)]))
    run(worker.run("likes", [like("glance", "e1", watch_ms=0)]))
    assert scores(worker, "plain") == {"dress": 1.0}
    assert scores(worker, "watched") == {"dress": 1.5}
    assert scores(worker, "glance") == {"dress": 0.5}
    run(worker.run("likes", [like("bad", "e1", watch_ms=-5)]))
    assert reasons(worker) == ["invalid_value"] and worker.user_state("bad") is None


# -- user-engagement -------------------------------------------------------------------------------


def test_engagement_adds_its_weight_to_the_video_s_categories_once(worker: InProcess) -> None:
    records = [
        engagement("u1", "g1", "share"),
        engagement("u1", "g2", "comment"),
        engagement("u1", "g3", "long_watch", watch_ms=180_000),
    ]
    done = run(worker.run("user-engagement", records))
    assert scores(worker, "u1") == {"lipstick": 4.5}, "2.0 + 1.5 + 1.0"
    assert sum(done.committed.values()) == 3
    topics = [s.topic for s in done.sent]
    assert "likeflow-user_state-changelog" in topics, "the state is on its changelog before the commit"
    # Redelivered (a crash before the commit): nothing counts twice.
    run(worker.run("user-engagement", records))
    assert scores(worker, "u1") == {"lipstick": 4.5}
    assert outcomes(worker, "share") == {"recorded": 1, "duplicate": 1}
    assert outcomes(worker, "long_watch") == {"recorded": 1, "duplicate": 1}
    state = worker.user_state("u1")
    assert state is not None and state.remembers("engagement:g1") and not state.remembers("g1")


def test_engagement_with_a_video_without_mapping_counts_nothing_and_creates_no_state(
    worker: InProcess,
) -> None:
    run(worker.run("user-engagement", [engagement("u2", "g1", "share", video="unknown")]))
    assert worker.user_state("u2") is None
    assert outcomes(worker, "share") == {"nothing_to_count": 1}


def test_bad_engagement_is_dead_lettered_with_its_reason_without_the_raw_id(worker: InProcess) -> None:
    bad = [
        engagement("u3", "g1", "like"),  # not an engagement kind
        (b"someone-else", engagement("u3", "g2", "share")[1]),
        engagement("u3", "g3", "long_watch", watch_ms=1.5),
    ]
    done = run(worker.run("user-engagement", [*bad, engagement("u3", "g4", "share")]))
    assert sorted(reasons(worker)) == ["key_mismatch", "unknown_enum", "wrong_type"]
    assert sum(done.committed.values()) == 4
    for letter in worker.sent("likeflow-dlq"):
        assert b"u3" not in (letter.key or b"") + (letter.value or b""), "pseudonymised at the edge"
    assert scores(worker, "u3") == {"lipstick": 2.0}


def test_the_same_user_s_likes_and_engagement_share_one_state_and_partition(worker: InProcess) -> None:
    run(worker.run("likes", [like("u4", "e1", video="v2")]))
    run(worker.run("user-engagement", [engagement("u4", "g1", "comment")]))
    assert scores(worker, "u4") == {"lipstick": 2.5}


# -- orders: prompt-feedback -> user-orders -> price bands ------------------------------------------


def prompt_of(worker: InProcess, user: str) -> dict[str, Any]:
    run(worker.run("likes", [like(user, f"like-{user}")]))
    pseudonym = worker.ctx.pseudonymize(user).encode()
    sent = [s for s in worker.sent("order-prompts") if s.key == pseudonym]
    return dict(orjson.loads(sent[-1].value or b""))


def test_an_order_reaches_the_user_s_partition_and_counts_once(worker: InProcess) -> None:
    prompt = prompt_of(worker, "buyer")
    done = run(worker.run("prompt-feedback", [order_for(prompt, "buyer", "o1", 12900)]))
    (routed,) = done.outputs("user-orders")
    pseudonym = worker.ctx.pseudonymize("buyer")
    assert routed.partition == KeyPartitioner(worker.settings.partitions)(b"buyer"), "the likes' partition"
    assert routed.key == pseudonym.encode()
    body = orjson.loads(routed.value or b"")
    assert body == {"event_id": "o1", "user_id": pseudonym, "amount_cents": 12900, "ts": NOW}
    assert b"buyer" not in (routed.value or b""), "no raw id on the internal topic"
    run(worker.route_orders())
    state = worker.user_state("buyer")
    assert state is not None and sum(c for c, _ in state.price_bands.values()) == pytest.approx(1.0)
    # The order record redelivered, and the feedback itself redelivered (sent again): once.
    run(worker.route_orders())
    run(worker.run("prompt-feedback", [order_for(prompt, "buyer", "o1", 12900)]))
    assert len(worker.sent("user-orders")) == 2
    run(worker.route_orders(worker.sent("user-orders")[1:]))
    state = worker.user_state("buyer")
    assert state is not None and sum(c for c, _ in state.price_bands.values()) == pytest.approx(1.0)
    assert outcomes(worker, "order") == {"recorded": 1, "duplicate": 2}
    status, doc = user_profile(worker.ctx, "buyer", range(worker.settings.partitions))
    assert status == 200
    assert doc["consumption_level"]["code"] == "mass" and doc["consumption_level"]["orders"] == 1.0


def test_only_verified_priced_orders_are_routed(worker: InProcess) -> None:
    prompt = prompt_of(worker, "u5")
    forged = prompt | {"product_id": "another"}
    click = order_for(prompt, "u5", "c1", 0)
    click_body = orjson.loads(click[1]) | {"kind": "click"}
    del click_body["amount_cents"]
    run(
        worker.run(
            "prompt-feedback",
            [
                order_for(forged, "u5", "o1", 5000),
                order_for(prompt, "u5", "o2", 0),
                (click[0], orjson.dumps(click_body)),
            ],
        )
    )
    assert worker.sent("user-orders") == [], "a forged order, a free order and a click say nothing"
    assert reasons(worker) == ["unknown_prompt"]


def test_an_already_pseudonymised_order_is_unroutable_and_counted(worker: InProcess) -> None:
    prompt = prompt_of(worker, "u6")
    key, value = order_for(prompt, worker.ctx.pseudonymize("u6"), "o1", 5000)
    run(worker.run("prompt-feedback", [(key, value)], headers=[("likeflow.pseudonymised", b"1")]))
    assert worker.sent("user-orders") == []
    assert outcomes(worker, "order") == {"unroutable": 1}


def test_a_user_orders_record_that_names_no_pseudonym_is_dead_lettered(worker: InProcess) -> None:
    from likeflow.engine.testing import Sent

    value = orjson.dumps({"event_id": "o1", "user_id": "raw", "amount_cents": 100, "ts": NOW})
    run(worker.route_orders([Sent(worker.topic("user-orders"), 0, b"raw", value)]))
    assert reasons(worker) == ["invalid_value"]


# -- refusal, and the right of access ---------------------------------------------------------------


def test_refusal_forgets_tags_level_and_engagement_and_records_no_more(worker: InProcess) -> None:
    prompt = prompt_of(worker, "u7")
    run(worker.run("prompt-feedback", [order_for(prompt, "u7", "o1", 12900)]))
    run(worker.route_orders())
    run(worker.run("user-engagement", [engagement("u7", f"g{i}", "share") for i in range(3)]))
    everyone = range(worker.settings.partitions)
    status, before = user_profile(worker.ctx, "u7", everyone)
    assert status == 200 and before["held"]
    assert before["interest_tags"] == ["美妆爱好者"] and before["consumption_level"] is not None
    partition = before["partition"]
    state = worker.ctx.user_states.get(partition, worker.ctx.pseudonymize("u7"))
    assert state is not None
    apply_consent(state, UserConsent("u7", prompts=True, personalized=False, ts=NOW))
    run(worker.run("user-engagement", [engagement("u7", "g9", "comment")]))
    _, after = user_profile(worker.ctx, "u7", everyone)
    assert after["consent"] == {"prompts": True, "personalized": False, "stated_ts": NOW}
    assert after["interest_tags"] == [] and after["top_categories"] == []
    assert after["consumption_level"] is None
    assert state.affinity == {} and state.price_bands == {}
    assert outcomes(worker, "comment") == {"not_personalized": 1}


def test_the_profile_page_names_the_partition_it_does_not_own(worker: InProcess) -> None:
    partition = KeyPartitioner(worker.settings.partitions)(b"u8")
    others = [p for p in range(worker.settings.partitions) if p != partition]
    status, body = user_profile(worker.ctx, "u8", others)
    assert status == 404 and body["partition"] == partition and f"partition {partition}" in body["error"]
    status, body = user_profile(worker.ctx, "u8", [partition], rebalancing=True)
    assert status == 503
    status, body = user_profile(worker.ctx, "u8", [partition], now_ms=NOW)
    assert status == 200 and not body["held"] and body["interest_tags"] == [] and body["as_of_ms"] == NOW
    assert body["user"] == worker.ctx.pseudonymize("u8") and "u8" not in orjson.dumps(body).decode()
    assert UserState().consent is None and body["consent"]["personalized"] is True


# -- likeflow profile ------------------------------------------------------------------------------


class _Answers(http.server.BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, Any]]] = {}

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, {"error": "no such page"}))
        data = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_prints_the_workers_profile_document(web: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"user": "v1.x", "partition": 3, "held": True, "interest_tags": ["美妆爱好者"]}
    _Answers.answers = {
        "/users/u%201%2F2/profile": (200, doc),
        "/users/elsewhere/profile": (404, {"error": "this worker does not own partition 5", "partition": 5}),
    }
    assert cli("profile", "u 1/2", "--url", web + "/") == 0
    assert orjson.loads(capsys.readouterr().out) == doc
    assert cli("profile", "elsewhere", "--url", web) == EXIT_FAILED
    assert "does not own partition 5" in capsys.readouterr().err


def test_the_cli_says_when_no_worker_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("profile", "u1", "--url", "http://127.0.0.1:9", "--timeout", "2") == EXIT_UNAVAILABLE
    assert "no worker answers" in capsys.readouterr().err
