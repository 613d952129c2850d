"""Dead-letter layout (original headers, contract, reason, error, source) and its user-id scrubbing."""

from __future__ import annotations

import orjson

from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, Pseudonymizer, edge_pseudonym
from likeflow.sinks.dead_letter_records import (
    MAX_ERROR_BYTES,
    dead_letter_headers,
    original_headers,
    pseudonymised_header,
    without_raw_user_id,
)


def test_original_headers_come_first_then_the_reason() -> None:
    headers = dead_letter_headers(
        [("trace", b"abc")],
        reason="malformed_json",
        error="bad",
        topic="likes",
        partition=2,
        offset=41,
    )
    assert headers == [
        ("trace", b"abc"),
        ("likeflow.contract", b"1"),
        ("likeflow.dlq.reason", b"malformed_json"),
        ("likeflow.dlq.error", b"bad"),
        ("likeflow.dlq.topic", b"likes"),
        ("likeflow.dlq.partition", b"2"),
        ("likeflow.dlq.offset", b"41"),
    ]


def test_header_shapes_are_normalised() -> None:
    assert original_headers(None) == []
    assert original_headers({"a": b"1"}) == [("a", b"1")]
    assert original_headers([("a", "text")]) == [("a", b"text")]


def test_long_errors_are_truncated() -> None:
    headers = dict(dead_letter_headers(None, reason="r", error="x" * 5000, topic="t", partition=0, offset=0))
    assert len(headers["likeflow.dlq.error"]) == MAX_ERROR_BYTES


KEY = b"k" * 32


def _pseudonymize(user_id: str) -> str:
    return Pseudonymizer(KEY, 1)(user_id)


def test_a_parseable_dead_letter_keeps_everything_but_the_raw_user_id() -> None:
    value = orjson.dumps({"event_id": "e1", "user_id": "alice", "video_id": "v1", "ts": "bad"})
    key, scrubbed, changed = without_raw_user_id(b"alice", value, _pseudonymize)
    assert changed and key == _pseudonymize("alice").encode()
    assert scrubbed is not None and b"alice" not in scrubbed
    assert orjson.loads(scrubbed) == {
        "event_id": "e1",
        "user_id": _pseudonymize("alice"),
        "video_id": "v1",
        "ts": "bad",
    }


def test_a_broken_dead_letter_loses_the_keys_id_where_it_appears() -> None:
    key, scrubbed, changed = without_raw_user_id(b"alice", b'{"user_id": "alice", "ts": 1', _pseudonymize)
    assert changed and scrubbed is not None and b"alice" not in scrubbed and b"alice" not in (key or b"")
    # No key and no JSON: nothing to find the id by; kept as received (docs/privacy.md).
    assert without_raw_user_id(None, b"\xff\xfe", _pseudonymize) == (None, b"\xff\xfe", False)


def test_pseudonyms_are_not_pseudonymised_twice() -> None:
    p = _pseudonymize("alice")
    value = orjson.dumps({"user_id": p})
    assert without_raw_user_id(p.encode(), value, _pseudonymize) == (p.encode(), value, False)
    headers = pseudonymised_header([("trace", b"1")])
    assert pseudonymised_header(headers) == headers == [("trace", b"1"), (PSEUDONYMISED_HEADER, b"1")]
    # The edge takes a marked pseudonym as it is, and pseudonymises everything else.
    assert edge_pseudonym(p, headers, _pseudonymize) == p
    assert edge_pseudonym(p, {PSEUDONYMISED_HEADER: b"1"}, _pseudonymize) == p
    assert edge_pseudonym(p, [], _pseudonymize) == _pseudonymize(p)
    assert edge_pseudonym("alice", headers, _pseudonymize) == p
