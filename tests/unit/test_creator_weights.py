"""Each worker's replica of the creators' ranking weights, applied record by record from `creator-quality`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from likeflow.replicas.creator_weights import CreatorWeights


def verdict(creator_id: str, weight: float, **fields: Any) -> bytes:
    """A `creator-quality` record value as the judge emits it."""
    doc: dict[str, Any] = {
        "creator_id": creator_id,
        "horizon_start": 0,
        "horizon_end": 3_600_000,
        "change": "demoted" if weight < 1 else None,
        "demoted": weight < 1,
        "weight": weight,
        "score": weight,
        "reasons": [],
    }
    doc.update(fields)
    return orjson.dumps(doc)


def test_an_unknown_creator_weighs_one() -> None:
    weights = CreatorWeights()
    assert weights("never-judged") == 1.0 and len(weights) == 0
    assert not weights.ready.is_set(), "ready only once the topic has been read to its end"


def test_the_latest_record_of_a_creator_is_its_weight() -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", verdict("c1", 0.3))
    weights.apply(b"c2", verdict("c2", 0.8))
    weights.apply(b"c1", verdict("c1", 0.6))  # recovered a little: a later judgment wins
    assert (weights("c1"), weights("c2"), weights("c3")) == (0.6, 0.8, 1.0)
    assert len(weights) == 2


def test_a_tombstone_forgets_the_creator_who_weighs_one_again() -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", verdict("c1", 0.2))
    weights.apply(b"c1", None)
    assert weights("c1") == 1.0 and len(weights) == 0
    weights.apply(b"never-seen", None)  # a tombstone of an unknown creator is harmless
    assert len(weights) == 0


def test_the_key_names_the_creator_not_the_value() -> None:
    weights = CreatorWeights()
    weights.apply("créatrice-7".encode(), verdict("someone-else", 0.4))
    assert weights("créatrice-7") == 0.4 and weights("someone-else") == 1.0


def test_a_record_without_a_key_is_ignored() -> None:
    weights = CreatorWeights()
    weights.apply(None, verdict("c1", 0.2))
    weights.apply(None, None)
    assert len(weights) == 0 and weights("c1") == 1.0


def test_an_integer_weight_is_read_as_a_float() -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", orjson.dumps({"weight": 1}))
    assert weights("c1") == 1.0 and isinstance(weights("c1"), float)


@pytest.mark.parametrize(
    "value",
    [b"not json", b"", b"[0.5]", b'"0.5"', b"0.5", b"{}", b'{"weight": null}', b'{"weight": "heavy"}'],
)
def test_an_unreadable_record_keeps_the_previous_weight_and_is_logged(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", verdict("c1", 0.5))
    with caplog.at_level(logging.WARNING, logger="likeflow.replicas.creator_weights"):
        weights.apply(b"c1", value)
        weights.apply(b"c2", value)
    assert weights("c1") == 0.5, "the replica does not crash nor forget on a bad record"
    assert weights("c2") == 1.0 and len(weights) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring unreadable creator-quality record for c1",
        "ignoring unreadable creator-quality record for c2",
    ]


def test_a_replayed_topic_gives_the_same_weights_as_its_compacted_form() -> None:
    """Compaction keeps each key's last record: reading everything or only those gives one view."""
    log = [
        (b"c1", verdict("c1", 0.2)),
        (b"c2", verdict("c2", 0.5)),
        (b"c1", verdict("c1", 0.9)),
        (b"c3", verdict("c3", 0.4)),
        (b"c3", None),
    ]
    full, compacted = CreatorWeights(), CreatorWeights()
    for key, value in log:
        full.apply(key, value)
    last = {key: value for key, value in log}
    for key, value in last.items():
        compacted.apply(key, value)
    assert {c: full(c) for c in ("c1", "c2", "c3")} == {c: compacted(c) for c in ("c1", "c2", "c3")}
    assert (full("c1"), full("c2"), full("c3"), len(full)) == (0.9, 0.5, 1.0, 2)


@pytest.mark.parametrize("weight", [0, 0.0, -0.0, -0.5, -1, 1.0000001, 2, 1e308, -1e308], ids=repr)
def test_a_weight_outside_zero_one_is_ignored_with_a_warning(
    weight: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A weight multiplies every prompt score of its creator: 0 would hide the creator's
    products, a negative one invert their ranking, one above 1 let them outrank everyone."""
    weights = CreatorWeights()
    weights.apply(b"c1", verdict("c1", 0.5))
    with caplog.at_level(logging.WARNING, logger="likeflow.replicas.creator_weights"):
        weights.apply(b"c1", orjson.dumps({"weight": weight}))
        weights.apply(b"c2", orjson.dumps({"weight": weight}))
    assert weights("c1") == 0.5, "the previous weight stays"
    assert weights("c2") == 1.0 and len(weights) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring creator-quality record for c1: weight {float(weight)!r} is not in (0, 1]",
        f"ignoring creator-quality record for c2: weight {float(weight)!r} is not in (0, 1]",
    ]


@pytest.mark.parametrize(
    "value", [b'{"weight": NaN}', b'{"weight": Infinity}', b'{"weight": 1e999}', b'{"weight": true}',
              b'{"weight": "0.5"}', b'{"weight": [0.5]}'],
)  # fmt: skip
def test_a_weight_that_is_not_a_finite_number_is_unreadable(value: bytes) -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", verdict("c1", 0.5))
    weights.apply(b"c1", value)
    assert weights("c1") == 0.5


@pytest.mark.parametrize("weight", [1e-9, 0.2, 1, 1.0])
def test_a_weight_in_zero_one_is_used(weight: float) -> None:
    weights = CreatorWeights()
    weights.apply(b"c1", orjson.dumps({"weight": weight}))
    assert weights("c1") == float(weight)
