"""`likeflow dlq`'s rules: reading dead letters back, filters, the export format, replay decisions."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, Pseudonymizer
from likeflow.ops.dlq_records import (
    ALREADY_REPLAYED,
    NO_SOURCE,
    NO_SUCH_PARTITION,
    NOT_AN_INPUT,
    PSEUDONYMISED_TWICE,
    REPLAYED_FROM_HEADER,
    STILL_INVALID,
    TRUNCATED,
    TWICE_IN_RUN,
    DeadLetter,
    ExportFormatError,
    Filter,
    ReplayItem,
    Target,
    age_text,
    earlier_entries,
    export_line,
    ledger_entry,
    outgoing_headers,
    parse_export_line,
    parse_offsets,
    plan_replay,
    replay_headers,
    summarise,
)
from likeflow.sinks.dead_letter_records import dead_letter_headers, fitted, pseudonymised_header
from streams.validation import InputLimits, decode_like

PSEUDONYM = Pseudonymizer(b"k" * 16 + b"0123456789abcdef", 1)
NOW = 1_795_000_000_000
USER = PSEUDONYM("u42")


def letter(
    value: bytes | None,
    *,
    key: bytes | None = None,
    reason: str = "malformed_json",
    topic: str = "likes",
    offset: int = 7,
    ts: int = NOW,
    original: list[tuple[str, bytes]] | None = None,
    marked: bool = True,
    extra: list[tuple[str, bytes]] | None = None,
) -> DeadLetter:
    """A dead letter laid out as the sink lays it out."""
    headers = dead_letter_headers(
        original or [], reason=reason, error="boom", topic=topic, partition=3, offset=99
    )
    if marked:
        headers = pseudonymised_header(headers)
    return DeadLetter(
        "likeflow-dlq",
        1,
        offset,
        ts,
        USER.encode() if key is None else key,
        value,
        tuple(headers + (extra or [])),
    )


def like_body(**changes: object) -> bytes:
    body = {"event_id": "e1", "user_id": USER, "video_id": "v9", "ts": NOW - 1_000, **changes}
    return orjson.dumps(body)


TARGETS = {
    "likes": Target(
        "likes",
        4,
        user_keyed=True,
        names_user=True,
        decode=lambda k, v: decode_like(k, v, InputLimits().at(NOW)),
    )
}


def test_a_dead_letter_reads_back_its_reason_source_and_original_headers() -> None:
    dead = letter(b"{oops", original=[("trace", b"t-1")])
    assert (dead.reason, dead.error, dead.source_topic, dead.source_partition, dead.source_offset) == (
        "malformed_json",
        "boom",
        "likes",
        3,
        99,
    )
    assert dead.coordinates == "likeflow-dlq/1/7"
    # The original headers and the pseudonym marker go back; what the sink added does not.
    assert outgoing_headers(dead) == [("trace", b"t-1"), (PSEUDONYMISED_HEADER, b"1")]
    assert not dead.truncated


def test_an_original_contract_header_is_kept_the_sinks_own_is_not() -> None:
    dead = letter(b"{}", original=[("likeflow.contract", b"1"), ("x", b"y")])
    assert outgoing_headers(dead) == [("likeflow.contract", b"1"), ("x", b"y"), (PSEUDONYMISED_HEADER, b"1")]


def test_filters_by_reason_topic_time_and_offsets() -> None:
    a = letter(b"1", reason="malformed_json", offset=5, ts=NOW)
    b = letter(b"2", reason="wrong_type", topic="prompt-feedback", offset=6, ts=NOW + 10)
    assert [x.offset for x in (a, b) if Filter(reasons=frozenset({"wrong_type"})).matches(x)] == [6]
    assert [x.offset for x in (a, b) if Filter(source_topics=frozenset({"likes"})).matches(x)] == [5]
    assert [x.offset for x in (a, b) if Filter(since_ms=NOW + 1).matches(x)] == [6]
    assert [x.offset for x in (a, b) if Filter(until_ms=NOW + 10).matches(x)] == [5]
    assert [x.offset for x in (a, b) if Filter(partition=1, offsets=(6, 9)).matches(x)] == [6]
    assert not Filter(partition=0).matches(a)
    assert parse_offsets("42") == (42, 42) and parse_offsets("40-45") == (40, 45)
    for bad in ("x", "5-3", "-1"):
        with pytest.raises(ValueError):
            parse_offsets(bad)


def test_summary_counts_by_source_and_reason_with_age_and_replays() -> None:
    letters = [
        letter(b"1", offset=1, ts=NOW - 5000),
        letter(b"2", offset=2, ts=NOW),
        letter(b"3", reason="late"),
    ]
    groups = summarise(letters, {"likeflow-dlq/1/2": {}})
    assert list(groups) == [("likes", "late"), ("likes", "malformed_json")]
    group = groups[("likes", "malformed_json")]
    assert (group.count, group.replayed, group.oldest_ms, group.newest_ms) == (2, 1, NOW - 5000, NOW)
    assert [age_text(ms) for ms in (5_000, 120_000, 7_200_000, 3 * 86_400_000)] == ["5s", "2m", "2h", "3d"]


@pytest.mark.parametrize(
    ("value", "fmt"),
    [(b'{"a": 1}', "json"), (b"{not json", "text"), (b"\xff\xfe", "base64"), (None, "null")],
)
def test_an_export_line_reads_back_as_what_replay_sends_unedited(value: bytes | None, fmt: str) -> None:
    dead = letter(value, key=b"\xff" if fmt == "base64" else None, original=[("bin", b"\x00\xff")])
    line = export_line(dead)
    doc = orjson.loads(line)
    assert doc["value_format"] == fmt
    assert doc["dlq"] == {"topic": "likeflow-dlq", "partition": 1, "offset": 7, "timestamp": NOW}
    assert doc["source"] == {"topic": "likes", "partition": 3, "offset": 99}
    item = parse_export_line(line)
    assert item == ReplayItem.of(dead)
    assert not item.edited
    assert item.key == dead.key
    # JSON is sent compact (the form orjson writes); every other value byte for byte.
    assert item.value == (orjson.dumps(orjson.loads(value)) if fmt == "json" and value else value)


def test_an_edited_line_is_marked_edited() -> None:
    doc = orjson.loads(export_line(letter(b'{"user_id": "x", "ts": "yesterday"}')))
    doc["value"]["ts"] = NOW
    item = parse_export_line(orjson.dumps(doc))
    assert item.edited and orjson.loads(item.value or b"")["ts"] == NOW
    # A broken line of text repaired into JSON.
    doc = orjson.loads(export_line(letter(b"{broken")))
    doc["value_format"], doc["value"] = "json", {"fixed": True}
    assert parse_export_line(orjson.dumps(doc)).value == b'{"fixed":true}'


@pytest.mark.parametrize(
    "line",
    [b"nope", b"[]", b'{"dlq": 1, "source": {}}', b'{"dlq": {"topic": "t"}, "source": {}}'],
)
def test_a_broken_export_line_says_what_is_wrong(line: bytes) -> None:
    with pytest.raises(ExportFormatError):
        parse_export_line(line)


def test_a_repaired_like_is_sent_and_a_still_broken_one_is_refused_unless_forced() -> None:
    fixed = ReplayItem.of(letter(like_body()))
    broken = ReplayItem.of(letter(like_body(ts="yesterday"), offset=8))
    plan = plan_replay([fixed, broken], TARGETS, {})
    assert [p.outcome for p in plan] == ["send", "refuse"]
    assert plan[1].problems == (STILL_INVALID,) and "wrong_type" in plan[1].details[0]
    forced = plan_replay([broken], TARGETS, {}, force=True)
    assert forced[0].send and forced[0].forced == (STILL_INVALID,)


def test_a_dead_letter_in_the_ledger_is_skipped_unless_forced() -> None:
    item = ReplayItem.of(letter(like_body()))
    [planned] = plan_replay([item], TARGETS, {item.dlq: {"run": "r1"}})
    assert (planned.outcome, planned.problems) == ("skip", (ALREADY_REPLAYED,))
    # The dead letter as it is (still invalid) was replayed after a repair: skipped too.
    broken = ReplayItem.of(letter(like_body(ts="yesterday")))
    [unrepaired] = plan_replay([broken], TARGETS, {item.dlq: {"run": "r1"}})
    assert (unrepaired.outcome, unrepaired.problems) == ("skip", (ALREADY_REPLAYED, STILL_INVALID))
    [again] = plan_replay([item], TARGETS, {item.dlq: {"run": "r1"}}, force=True)
    assert again.send and again.forced == (ALREADY_REPLAYED,)
    # The same dead letter twice in one run goes once, force or not.
    assert [p.outcome for p in plan_replay([item, item], TARGETS, {}, force=True)] == ["send", "refuse"]
    assert plan_replay([item, item], TARGETS, {})[1].problems == (TWICE_IN_RUN,)


def test_a_pseudonym_without_its_marker_would_be_pseudonymised_twice() -> None:
    unmarked = ReplayItem.of(letter(like_body(), marked=False))
    [planned] = plan_replay([unmarked], TARGETS, {})
    assert planned.problems == (PSEUDONYMISED_TWICE,)
    assert "is a pseudonym" in planned.details[0]
    # A raw id (a record whose id could not be pseudonymised) goes as it is: pseudonymised once.
    raw = ReplayItem.of(
        letter(orjson.dumps({**orjson.loads(like_body()), "user_id": "u9"}), key=b"u9", marked=False)
    )
    assert plan_replay([raw], TARGETS, {})[0].send


def test_records_with_nowhere_to_go_or_cut_are_refused_even_forced() -> None:
    elsewhere = ReplayItem.of(letter(b"x", topic="audit-log", reason="not_an_audit_entry"))
    nowhere = ReplayItem.of(DeadLetter("likeflow-dlq", 0, 1, NOW, b"k", b"v", ()))
    _, cut_value, cut = fitted(None, like_body() + b" " * 100, max_key_bytes=0, max_value_bytes=50)
    truncated = ReplayItem.of(letter(cut_value, extra=cut))
    outside = ReplayItem.of(letter(like_body(), offset=9))
    outside = dataclasses.replace(outside, partition=4)
    plan = plan_replay([elsewhere, nowhere, truncated, outside], TARGETS, {}, force=True)
    assert [p.problems[0] for p in plan] == [NOT_AN_INPUT, NO_SOURCE, TRUNCATED, NO_SUCH_PARTITION]
    assert not any(p.send for p in plan)


def test_replay_headers_name_the_dead_letter_once() -> None:
    item = ReplayItem.of(letter(like_body(), original=[(REPLAYED_FROM_HEADER, b"old/0/1")]))
    assert replay_headers(item) == [(PSEUDONYMISED_HEADER, b"1"), (REPLAYED_FROM_HEADER, b"likeflow-dlq/1/7")]


def test_a_ledger_entry_keeps_digests_not_content_and_every_earlier_replay() -> None:
    [planned] = plan_replay([ReplayItem.of(letter(like_body()))], TARGETS, {})
    first = orjson.loads(
        ledger_entry(planned, run_id="r1", by="ops", host="h", at_ms=NOW, sent_partition=3, sent_offset=120)
    )
    assert first["sent"]["partition"] == 3 and first["sent"]["offset"] == 120 and first["by"] == "ops"
    assert USER not in orjson.dumps(first).decode(), "no record content in the ledger"
    second = orjson.loads(
        ledger_entry(
            planned,
            run_id="r2",
            by="ops",
            host="h",
            at_ms=NOW + 1,
            sent_partition=3,
            sent_offset=121,
            earlier=earlier_entries(first),
        )
    )
    third = earlier_entries(second)
    assert third is not None and [e["run"] for e in third] == ["r2", "r1"]
