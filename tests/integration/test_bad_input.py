"""Bad input on the real broker: every bad record dead-lettered with its bytes and reason, the rest flows."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson

from config import Settings
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.sinks.dead_letter_records import without_raw_user_id
from streams.topics import DEAD_LETTERS, LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.clock import NOW
from tests.integration.harness import Consumed, Record, WorkerProcess, produce, read_topic_until, wait_until


def like_value(i: int, **over: object) -> bytes:
    body: dict[str, object] = {
        "event_id": f"bad-e{i}",
        "user_id": f"bad-u{i}",
        "video_id": "bad-v1",
        "ts": NOW,
    }
    body.update(over)
    return orjson.dumps(body)


GOOD_LIKES: list[Record] = [(f"bad-u{i}".encode(), like_value(i), []) for i in range(40)]
TRACE = [("trace-id", b"t-123"), ("source", b"app-ios")]
BAD_LIKES: list[tuple[Record, str]] = [
    ((b"bad-u100", b"{not json", TRACE), "malformed_json"),
    ((b"bad-u101", b"\xff\xfe\xfd invalid utf-8", []), "malformed_json"),
    (
        (b"bad-u102", b'{"event_id":"x","user_id":"bad-u102","video_id":"bad-v1","ts":NaN}', []),
        "malformed_json",
    ),
    (
        (
            b"bad-u103",
            b'{"event_id":"x","user_id":"bad-u103","video_id":"bad-v1","ts":' + b"7" * 5000 + b"}",
            [],
        ),
        "malformed_json",
    ),
    ((b"bad-u104", b"[" * 10_000 + b"]" * 10_000, []), "malformed_json"),
    (
        (b"bad-u105", orjson.dumps({"event_id": "x", "user_id": "bad-u105", "ts": NOW}), []),
        "missing_field",
    ),
    ((b"bad-u106", like_value(106, user_id="bad-u106", ts=str(NOW)), []), "wrong_type"),
    ((b"bad-u107", like_value(107, user_id="bad-u107", action="superlike"), []), "unknown_enum"),
    ((b"someone-else", like_value(108, user_id="bad-u108"), []), "key_mismatch"),
    ((b"bad-u109", b'{"pad":"' + b"x" * 70_000 + b'"}', []), "oversized"),
    ((b"bad-u110", like_value(110, user_id="bad-u110", ts=NOW // 1000), []), "invalid_value"),
    ((b"bad-u111", None, []), "missing_field"),
    ((b"bad-u112", b'"just a string"', []), "not_an_object"),
    # A client's clock in year 9999, and one just beyond the allowed skew (300 s).
    ((b"bad-u113", like_value(113, user_id="bad-u113", ts=253_402_300_799_000), []), "future_ts"),
    ((b"bad-u114", like_value(114, user_id="bad-u114", ts=NOW + 3_600_000), []), "future_ts"),
    # A zero-width space and a bidi override in ids.
    (("bad-u115\u200b".encode(), like_value(115, user_id="bad-u115\u200b"), []), "invalid_value"),
    ((b"bad-u116", like_value(116, user_id="bad-u116", video_id="bad-v1\u202e"), []), "invalid_value"),
    # A key far over LIKEFLOW_MAX_KEY_BYTES (its dead letter keeps the first 512 bytes).
    ((b"bad-u117" + b"k" * 100_000, like_value(117, user_id="bad-u117"), []), "oversized"),
]
PRODUCT = {
    "product_id": "bad-p1",
    "title": "T",
    "category": "dress",
    "price_cents": 500,
    "certified": True,
    "stock": 9,
}


def mapping_record(video_id: str, *, creator_id: str = "c", ts: int = NOW) -> Record:
    body = {"video_id": video_id, "creator_id": creator_id, "ts": ts, "products": [PRODUCT]}
    return video_id.encode(), orjson.dumps(body), []


BAD_MAPPINGS: list[tuple[Record, str]] = [
    (
        (
            b"bad-v5",
            orjson.dumps(
                {
                    "video_id": "bad-v5",
                    "creator_id": "c",
                    "ts": NOW,
                    # An RLO would show "¥99.00" as "00.99¥" next to the prompt's price.
                    "products": [{**PRODUCT, "title": "dress \u202e00.99\u00a5"}],
                }
            ),
            [],
        ),
        "invalid_value",
    ),
    (
        mapping_record("bad-v7", creator_id="}c{"),
        "invalid_value",
    ),
    (
        mapping_record("bad-v6", ts=NOW + 24 * 3_600_000),
        "future_ts",
    ),
    (
        (
            b"bad-v2",
            orjson.dumps(
                {
                    "video_id": "bad-v2",
                    "creator_id": "c",
                    "ts": NOW,
                    "products": [{**PRODUCT, "stock": -1}],
                }
            ),
            [],
        ),
        "invalid_value",
    ),
    (
        (
            b"bad-v3",
            orjson.dumps(
                {
                    "video_id": "bad-v3",
                    "creator_id": "c",
                    "ts": NOW,
                    "products": [{**PRODUCT, "price_cents": 0}],
                }
            ),
            [],
        ),
        "invalid_value",
    ),
    (
        (
            b"bad-v4",
            orjson.dumps(
                {
                    "video_id": "bad-v4",
                    "creator_id": "c",
                    "ts": NOW,
                    "products": [{**PRODUCT, "offer": "free"}],
                }
            ),
            [],
        ),
        "unknown_enum",
    ),
]


def interleave(good: list[Record], bad: list[Record]) -> list[Record]:
    out: list[Record] = []
    for i, record in enumerate(good):
        out.append(record)
        if i % 3 == 0 and bad:
            out.append(bad.pop(0))
    return out + bad


async def test_bad_records_are_dead_lettered_and_valid_ones_still_prompt(
    worker: WorkerProcess, settings: Settings, pseudonym: Pseudonymizer
) -> None:
    pid_before = worker.proc.pid if worker.proc else None
    dlq_before = worker.metric_sum("likeflow_dead_letters_total")
    good_mapping: Record = (
        b"bad-v1",
        orjson.dumps({"video_id": "bad-v1", "creator_id": "c", "ts": NOW, "products": [PRODUCT]}),
        [],
    )
    await produce(settings, settings.topic(VIDEO_PRODUCTS), [good_mapping] + [r for r, _ in BAD_MAPPINGS])
    await wait_until(
        lambda: (
            worker.metric_sum("likeflow_dead_letters_total", topic=settings.topic(VIDEO_PRODUCTS))
            >= len(BAD_MAPPINGS)
        ),
        60,
        "bad mappings to be dead-lettered",
        worker,
    )
    await wait_until(
        lambda: (worker.health() or {}).get("video_mappings", 0) >= 1,
        30,
        "the good mapping",
        worker,
    )

    await produce(settings, settings.topic(LIKES), interleave(GOOD_LIKES, [r for r, _ in BAD_LIKES]))
    injected = len(BAD_LIKES) + len(BAD_MAPPINGS)
    await wait_until(
        lambda: worker.metric_sum("likeflow_dead_letters_total") - dlq_before >= injected,
        60,
        "every bad record",
        worker,
    )

    good_users = {pseudonym(f"bad-u{i}") for i in range(len(GOOD_LIKES))}

    def prompted(records: list[Consumed]) -> set[str]:
        return {orjson.loads(r.value)["user_id"] for r in records if r.value} & good_users

    prompts = await read_topic_until(
        settings,
        settings.topic(ORDER_PROMPTS),
        lambda rs: prompted(rs) == good_users,
        60,
        "every valid prompt",
    )
    assert prompted(prompts) == good_users

    # Dead letters of `likes` carry the pseudonym where the raw id was (docs/privacy.md), every
    # other byte as received; those of `video-products` are the original bytes, untouched.
    expected_by_key: dict[bytes | None, tuple[bytes | None, Record, str]] = {}
    for (key, value, headers), reason in BAD_LIKES:
        # An oversized key is cut to LIKEFLOW_MAX_KEY_BYTES before it is pseudonymised.
        cut = key[: settings.max_key_bytes] if key is not None else None
        dead_key, dead_value, _ = without_raw_user_id(cut, value, pseudonym)
        expected_by_key[dead_key] = (dead_value, (key, value, headers), reason)
    for mapping, reason in BAD_MAPPINGS:
        expected_by_key[mapping[0]] = (mapping[1], mapping, reason)

    def mine(records: list[Consumed]) -> list[Consumed]:
        return [r for r in records if r.key in expected_by_key]

    dead = mine(
        await read_topic_until(
            settings,
            settings.topic(DEAD_LETTERS),
            lambda rs: len(mine(rs)) >= injected,
            30,
            "every dead letter",
        )
    )
    assert len(dead) == injected
    assert worker.metric_sum("likeflow_dead_letters_total") - dlq_before == injected
    reasons: Counter[str] = Counter()
    for record in dead:
        expected_value, (key, value, headers), reason = expected_by_key[record.key]
        header_map = dict(record.headers)
        if key is not None and len(key) > settings.max_key_bytes:
            assert header_map["likeflow.dlq.key_size"] == str(len(key)).encode()
        if expected_value is not None and len(expected_value) > settings.max_record_bytes:
            # Cut to fit, with what identifies the whole: its size and SHA-256.
            assert header_map["likeflow.dlq.value_size"] == str(len(expected_value)).encode()
            digest = hashlib.sha256(expected_value).hexdigest().encode()
            assert header_map["likeflow.dlq.value_sha256"] == digest
            expected_value = expected_value[: settings.max_record_bytes]
        assert record.value == expected_value
        assert b"bad-u" not in b"%r %r" % (record.key, record.value), "a raw user id in a dead letter"
        assert header_map["likeflow.dlq.reason"] == reason.encode()
        assert header_map["likeflow.dlq.error"]
        assert header_map["likeflow.dlq.topic"] in (
            settings.topic(LIKES).encode(),
            settings.topic(VIDEO_PRODUCTS).encode(),
        )
        assert int(header_map["likeflow.dlq.offset"]) >= 0 and int(header_map["likeflow.dlq.partition"]) >= 0
        for name, original in headers:
            assert header_map[name] == original
        reasons[reason] += 1
    assert reasons == Counter(reason for _, reason in BAD_LIKES + BAD_MAPPINGS)
    assert worker.alive() and worker.proc is not None and worker.proc.pid == pid_before
