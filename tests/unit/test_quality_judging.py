"""Smoothing, verdicts and the demotion/recovery state machine."""

from __future__ import annotations

from likeflow.domain.quality.judging import (
    CreatorStanding,
    JudgePolicy,
    PlatformRates,
    apply_verdict,
    judge_window,
    smoothed,
    window_applies,
)
from likeflow.domain.quality.windows import Counts

POLICY = JudgePolicy()
PLATFORM = PlatformRates(ctr=0.10, conversion=0.2, return_rate=0.05, complaint_rate=0.01)


def good() -> Counts:
    return Counts(prompts=200, clicks=24, orders=30, returns=1, complaints=0)


def bad() -> Counts:
    return Counts(prompts=200, clicks=4, orders=30, returns=1, complaints=0)


def test_smoothing_pulls_small_samples_to_the_prior() -> None:
    assert smoothed(0, 0, 0.1, 20) == 0.1
    assert smoothed(0, 2, 0.1, 20) > 0.09
    assert smoothed(0, 2000, 0.1, 20) < 0.001


def test_small_windows_are_not_judged() -> None:
    verdict = judge_window(0, Counts(prompts=10, clicks=0), PLATFORM, POLICY)
    assert not verdict.judged and not verdict.bad


def test_low_ctr_high_returns_and_complaints_are_bad() -> None:
    assert judge_window(0, bad(), PLATFORM, POLICY).reasons == ("low_ctr",)
    returns = Counts(prompts=200, clicks=24, orders=40, returns=10)
    assert judge_window(0, returns, PLATFORM, POLICY).reasons == ("high_return_rate",)
    complaints = Counts(prompts=10, clicks=2, orders=40, complaints=5)
    assert judge_window(0, complaints, PLATFORM, POLICY).reasons == ("high_complaint_rate",)
    assert not judge_window(0, good(), PLATFORM, POLICY).bad


def test_score_is_in_zero_one() -> None:
    assert judge_window(0, good(), PLATFORM, POLICY).score == 1.0
    assert 0 < judge_window(0, bad(), PLATFORM, POLICY).score < 1


def test_three_bad_windows_demote_and_three_good_ones_recover() -> None:
    standing = CreatorStanding()
    changes = [apply_verdict(standing, judge_window(i, bad(), PLATFORM, POLICY), POLICY) for i in range(3)]
    assert changes == [None, None, "demoted"]
    assert standing.demoted and POLICY.min_weight <= standing.weight < 1.0
    changes = [
        apply_verdict(standing, judge_window(10 + i, good(), PLATFORM, POLICY), POLICY) for i in range(3)
    ]
    assert changes == [None, None, "recovered"]
    assert not standing.demoted and standing.weight == 1.0


def test_a_good_window_breaks_a_bad_streak_and_thin_windows_do_not() -> None:
    standing = CreatorStanding()
    for i, counts in enumerate([bad(), bad(), Counts(prompts=5), good(), bad(), bad()]):
        apply_verdict(standing, judge_window(i, counts, PLATFORM, POLICY), POLICY)
    assert not standing.demoted and standing.bad_streak == 2
    apply_verdict(standing, judge_window(6, Counts(prompts=3), PLATFORM, POLICY), POLICY)
    assert apply_verdict(standing, judge_window(7, bad(), PLATFORM, POLICY), POLICY) == "demoted"


def test_a_window_is_judged_once() -> None:
    standing = CreatorStanding()
    apply_verdict(standing, judge_window(5, bad(), PLATFORM, POLICY), POLICY)
    assert apply_verdict(standing, judge_window(5, bad(), PLATFORM, POLICY), POLICY) is None
    assert standing.bad_streak == 1


def test_standing_round_trips() -> None:
    standing = CreatorStanding()
    apply_verdict(standing, judge_window(5, bad(), PLATFORM, POLICY), POLICY)
    assert CreatorStanding.from_dict(standing.to_dict()) == standing


def test_a_window_is_applied_once_whether_redelivered_or_sent_again() -> None:
    hour = 3_600_000
    assert window_applies(None, None, 0, 0) == (True, True), "the first window of a new creator"
    creator = {"last_offset": 7, "last_window": 5 * hour}
    platform = {"last_offset": 7}
    assert window_applies(creator, platform, 7, 5 * hour) == (False, False), "redelivered"
    assert window_applies(creator, platform, 9, 5 * hour) == (False, False), "re-sent at a new offset"
    assert window_applies(creator, platform, 9, 4 * hour) == (False, False), "an older window"
    assert window_applies(creator, platform, 9, 6 * hour) == (True, True)
    # Crash between the platform write and the creator write: replaying the offset finishes it.
    assert window_applies(creator, {"last_offset": 9}, 9, 6 * hour) == (False, True)
