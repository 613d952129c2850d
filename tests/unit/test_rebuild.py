"""`likeflow rebuild-redis`'s pure part: table values -> the documents and versions it writes."""

from __future__ import annotations

from typing import Any

import orjson

from likeflow.domain.decide import Emit, GuardPolicy, decide
from likeflow.domain.privacy import apply_erasure
from likeflow.domain.quality.judging import platform_document
from likeflow.domain.quality.windows import Counts
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import UserState
from likeflow.ops.rebuild import Changelog, decode_key, quality_documents, windows_updates
from streams.events import Prompt, UserErasure
from tables.codecs import UserStateCodec
from tests.factories import BASE_TS, PROMPT_IDS, like, mapping, product


def emit(state: UserState, event_id: str, ts: int) -> None:
    mp = mapping("v1", product("p1"), product("p2"), product("p3"))
    decision = decide(
        state,
        like(event_id, ts=ts),
        mp,
        creator_weight=1.0,
        now_ms=ts,
        guards=GuardPolicy(),
        ranking=RankingPolicy(),
        prompt_ids=PROMPT_IDS,
    )
    assert isinstance(decision, Emit)


def test_keys_decode_from_faust_json_and_raw_bytes() -> None:
    assert decode_key(b'"v1.ab"') == "v1.ab"
    assert decode_key(b"w|c1|3600000") == "w|c1|3600000"
    assert decode_key(None) is None


def test_latest_record_per_key_wins_and_a_tombstone_removes() -> None:
    log = Changelog("t")
    log.apply(b'"a"', b'{"n": 1}')
    log.apply(b'"b"', b'{"n": 1}')
    log.apply(b'"a"', b'{"n": 2}')
    log.apply(b'"b"', None)
    assert log.values == {"a": {"n": 2}} and log.records == 4


def test_served_prompts_are_the_sent_ones_and_never_an_erased_past() -> None:
    state = UserState()
    emit(state, "e1", BASE_TS)
    emit(state, "e2", BASE_TS + 1000)

    def served_prompts(stored: UserState) -> list[Prompt]:  # as the rebuild reads the changelog
        return UserState.from_dict(orjson.loads(UserStateCodec().encode(stored))).served_prompts()

    assert [p.to_json() for p in served_prompts(state)] == [s.prompt.to_json() for s in state.sent]

    erased = apply_erasure(state, UserErasure("u1", BASE_TS + 2000))
    assert served_prompts(erased) == []
    emit(erased, "e3", BASE_TS + 3000)  # a like after the erasure is served again
    assert [p.like_ts for p in served_prompts(erased)] == [BASE_TS + 3000]


def row(creator: str, start: int, last_offset: int, prompts: int) -> dict[str, Any]:
    counts = {"prompts": prompts, "clicks": 0, "orders": 0, "returns": 0, "complaints": 0, "gmv_cents": 0}
    return {
        "creator_id": creator,
        "start_ms": start,
        "counts": counts,
        "last_offset": last_offset,
        "partition": 0,
    }


def test_windows_version_is_the_highest_offset_stamped_on_the_creators_rows() -> None:
    table = {
        "w|c1|0": row("c1", 0, 7, 2),
        "w|c1|3600000": row("c1", 3_600_000, 12, 1),
        "w|c2|0": row("c2", 0, 9, 4),
        "s|f1": {"offset": 3, "ts": 5, "partition": 0},
        "p|0": {"offset": 12, "high_ts": 3_600_001, "closed_until": 0},
    }
    updates = windows_updates(table)
    assert sorted(updates) == ["c1", "c2"]
    assert updates["c1"].version == 12 and updates["c2"].version == 9
    assert updates["c1"].written[3_600_000]["prompts"] == 1 and not updates["c1"].deleted


def test_quality_documents_come_from_the_judges_rows_at_its_versions() -> None:
    window = {"prompts": 10, "clicks": 2, "orders": 1, "returns": 0, "complaints": 0, "gmv_cents": 5}
    doc = {"creator_id": "c1", "weight": 1.0}
    standing = {
        "c1": {
            "windows": {"0": {**window, "end_ms": 3_600_000, "revision": 1}},
            "standing": {},
            "last_offset": 40,
            "served": {"version": 38, "doc": doc},
        },
        # Never judged (too few prompts): nothing served, but its window is in the platform's sums.
        "c2": {
            "windows": {"0": {**window, "end_ms": 3_600_000, "revision": 2}},
            "standing": {},
            "last_offset": 41,
        },
    }
    docs, without = quality_documents("pre", standing, 7 * 24 * 3_600_000)
    platform = Counts.from_dict(window)
    platform.add(Counts.from_dict(window))
    assert docs == [
        ("pre:v2:platform", 41, platform_document(platform)[0]),
        ("pre:v2:creator:{c1}:standing", 38, doc),
    ]
    assert without == 1
