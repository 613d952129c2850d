"""The demo's summary line: what was sent, what came back, and why the other likes got no prompt."""

from __future__ import annotations

from likeflow.ops.demo import LiveView, no_prompt_reasons
from likeflow.ops.status import Samples, parse


def metrics(hourly_cap: int, recent: int, demoted: int, duplicates: int = 0) -> Samples:
    return parse(
        "# TYPE likeflow_likes_skipped_total counter\n"
        f'likeflow_likes_skipped_total{{reason="hourly_cap"}} {hourly_cap}\n'
        f'likeflow_likes_skipped_total{{reason="all_recently_offered"}} {recent}\n'
        f'likeflow_likes_skipped_total{{reason="demoted"}} {demoted}\n'
        'likeflow_likes_skipped_total{reason="erased"} 0\n'
        "# TYPE likeflow_duplicate_likes_total counter\n"
        f"likeflow_duplicate_likes_total {duplicates}\n"
    )


def test_the_reasons_are_what_rose_since_the_baseline_biggest_first() -> None:
    before, after = metrics(100, 5, 0), metrics(2_100, 505, 40, duplicates=3)
    assert no_prompt_reasons(before, after) == {
        "hourly_cap": 2_000,
        "all_recently_offered": 500,
        "demoted": 40,
        "duplicate": 3,
    }
    assert list(no_prompt_reasons(before, after)) == [
        "hourly_cap",
        "all_recently_offered",
        "demoted",
        "duplicate",
    ]
    assert no_prompt_reasons(after, after) == {}


def test_the_summary_line_says_why_likes_got_no_prompt() -> None:
    view = LiveView(show=0)
    view.likes, view.prompts, view.dead_letters = 5156, 1492, 51
    view.on_metrics(metrics(10, 0, 0))  # the baseline, before the first like
    assert "| no prompt 0 |" in view.summary()
    view.on_metrics(metrics(3_010, 600, 64))
    line = view.summary()
    assert line.endswith(
        "likes sent 5156 (+0 bad) | prompts out 1492 (0 from content) | no prompt 3664: hourly_cap 3000, "
        "all_recently_offered 600, demoted 64 | dead letters 51"
    )
    view.on_metrics(None)
    assert "no prompt: ? (worker metrics unreachable)" in view.summary()


def test_a_worker_that_answers_late_gives_the_baseline_then() -> None:
    view = LiveView(show=0)
    view.on_metrics(None)
    view.on_metrics(metrics(7, 0, 0))
    assert "| no prompt 0 |" in view.summary()
