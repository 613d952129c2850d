"""Dead-letter headers keep the original headers and name reason, error and source position."""

from __future__ import annotations

from likeflow.deadletter import MAX_ERROR_BYTES, dead_letter_headers, original_headers


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
