"""Smoothing, verdicts and the demotion/recovery state machine."""

from __future__ import annotations

from likeflow.domain.quality.horizon import PlatformHorizon, apply_window, creator_totals
from likeflow.domain.quality.judging import (
    VERDICT_REASONS,
    CreatorStanding,
    JudgePolicy,
    PlatformRates,
    apply_verdict,
    judge_horizon,
    smoothed,
)
from likeflow.domain.quality.windows import Counts
from streams.events import CreatorEventKind

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
    verdict = judge_horizon(0, Counts(prompts=10, clicks=0), PLATFORM, POLICY)
    assert not verdict.judged and not verdict.bad


def test_low_ctr_high_returns_and_complaints_are_bad() -> None:
    assert judge_horizon(0, bad(), PLATFORM, POLICY).reasons == ("low_ctr",)
    returns = Counts(prompts=200, clicks=24, orders=40, returns=10)
    assert judge_horizon(0, returns, PLATFORM, POLICY).reasons == ("high_return_rate",)
    complaints = Counts(prompts=10, clicks=2, orders=40, complaints=5)
    assert judge_horizon(0, complaints, PLATFORM, POLICY).reasons == ("high_complaint_rate",)
    assert not judge_horizon(0, good(), PLATFORM, POLICY).bad
    both = Counts(prompts=200, clicks=4, orders=40, returns=10, complaints=5)
    assert judge_horizon(0, both, PLATFORM, POLICY).reasons == VERDICT_REASONS, "the contract's enum"


def test_a_creator_whose_bookings_are_mostly_no_shows_is_judged_like_a_high_return_one() -> None:
    no_shows = Counts(prompts=200, clicks=24, bookings=40, no_shows=25, cancellations=5)
    returns = Counts(prompts=200, clicks=24, orders=40, returns=30)
    for counts in (no_shows, returns):
        verdict = judge_horizon(0, counts, PLATFORM, POLICY)
        assert verdict.reasons == ("high_return_rate",) and verdict.score < 1
    # The same undoing rate, whatever mix of offers and undoings: the same verdict.
    assert judge_horizon(0, no_shows, PLATFORM, POLICY) == judge_horizon(0, returns, PLATFORM, POLICY)
    honest = Counts(prompts=200, clicks=24, bookings=30, trials=10, cancellations=1)
    assert not judge_horizon(0, honest, PLATFORM, POLICY).bad


def test_the_volume_gate_counts_every_conversion() -> None:
    """min_conversions (LIKEFLOW_DEMOTION_MIN_ORDERS) counts orders, bookings and trials."""
    policy = JudgePolicy(min_prompts=10_000, min_conversions=20)
    mixed = Counts(prompts=200, clicks=24, orders=5, bookings=8, trials=7, complaints=6)
    assert mixed.conversions == 20
    verdict = judge_horizon(0, mixed, PLATFORM, policy)
    assert verdict.judged and verdict.reasons == ("high_complaint_rate",)
    one_short = Counts(prompts=200, clicks=24, orders=5, bookings=8, trials=6, complaints=6)
    assert not judge_horizon(0, one_short, PLATFORM, policy).judged


def test_platform_rates_count_bookings_and_trials_like_orders() -> None:
    rates = PlatformRates.of(Counts(prompts=100, clicks=20, orders=2, bookings=1, trials=1, no_shows=1))
    assert (rates.ctr, rates.conversion, rates.return_rate, rates.complaint_rate) == (0.2, 0.2, 0.25, 0.0)
    only_orders = PlatformRates.of(Counts(prompts=100, clicks=20, orders=4, returns=1, complaints=1))
    assert only_orders == PlatformRates(0.2, 0.2, 0.25, 0.25), "the order rates they always were"


def test_bookings_add_their_value_to_gmv_and_nothing_else_does() -> None:
    c = Counts()
    events: list[tuple[CreatorEventKind, int]] = [("order", 1999), ("booking", 8800), ("trial", 0)]
    events += [("cancellation", 0), ("no_show", 0)]
    for kind, amount in events:
        c.add_event(kind, amount)
    assert (c.orders, c.bookings, c.trials, c.cancellations, c.no_shows) == (1, 1, 1, 1, 1)
    assert (c.gmv_cents, c.conversions, c.undone) == (1999 + 8800, 3, 2)
    assert Counts.from_dict(c.to_dict()) == c
    assert Counts.from_dict({"orders": 2, "returns": 1}) == Counts(orders=2, returns=1), "a row of before"


def test_score_is_in_zero_one() -> None:
    assert judge_horizon(0, good(), PLATFORM, POLICY).score == 1.0
    assert 0 < judge_horizon(0, bad(), PLATFORM, POLICY).score < 1


def test_three_bad_windows_demote_and_three_good_ones_recover() -> None:
    standing = CreatorStanding()
    changes = [apply_verdict(standing, judge_horizon(i, bad(), PLATFORM, POLICY), POLICY) for i in range(3)]
    assert changes == [None, None, "demoted"]
    assert standing.demoted and POLICY.min_weight <= standing.weight < 1.0
    changes = [
        apply_verdict(standing, judge_horizon(10 + i, good(), PLATFORM, POLICY), POLICY) for i in range(3)
    ]
    assert changes == [None, None, "recovered"]
    assert not standing.demoted and standing.weight == 1.0


def test_a_good_window_breaks_a_bad_streak_and_thin_windows_do_not() -> None:
    standing = CreatorStanding()
    for i, counts in enumerate([bad(), bad(), Counts(prompts=5), good(), bad(), bad()]):
        apply_verdict(standing, judge_horizon(i, counts, PLATFORM, POLICY), POLICY)
    assert not standing.demoted and standing.bad_streak == 2
    apply_verdict(standing, judge_horizon(6, Counts(prompts=3), PLATFORM, POLICY), POLICY)
    assert apply_verdict(standing, judge_horizon(7, bad(), PLATFORM, POLICY), POLICY) == "demoted"


def test_a_window_is_judged_once() -> None:
    standing = CreatorStanding()
    apply_verdict(standing, judge_horizon(5, bad(), PLATFORM, POLICY), POLICY)
    assert apply_verdict(standing, judge_horizon(5, bad(), PLATFORM, POLICY), POLICY) is None
    assert standing.bad_streak == 1


def test_standing_round_trips() -> None:
    standing = CreatorStanding()
    apply_verdict(standing, judge_horizon(5, bad(), PLATFORM, POLICY), POLICY)
    assert CreatorStanding.from_dict(standing.to_dict()) == standing


H = 3_600_000
CEILING = 10_000 * H  # the newest event time accepted: beyond every window of these tests


def test_a_revision_replaces_the_window_and_a_copy_changes_nothing() -> None:
    platform = PlatformHorizon(horizon_ms=24 * H)
    mine: dict[str, dict[str, int]] = {}
    assert apply_window(
        mine, platform, start_ms=0, end_ms=H, counts={"prompts": 10, "clicks": 1}, revision=1, ceiling=CEILING
    )
    assert not apply_window(
        mine, platform, start_ms=0, end_ms=H, counts={"prompts": 10, "clicks": 1}, revision=1, ceiling=CEILING
    )
    assert apply_window(
        mine, platform, start_ms=0, end_ms=H, counts={"prompts": 10, "clicks": 3}, revision=2, ceiling=CEILING
    )
    assert not apply_window(
        mine, platform, start_ms=0, end_ms=H, counts={"prompts": 99}, revision=1, ceiling=CEILING
    ), "stale"
    assert creator_totals(mine, platform.clock, platform.horizon_ms).clicks == 3
    assert platform.totals().clicks == 3 and platform.totals().prompts == 10


def test_the_horizon_slides_and_the_platform_is_derived_from_the_creators() -> None:
    platform = PlatformHorizon(horizon_ms=3 * H)
    rows: dict[str, dict[str, dict[str, int]]] = {"a": {}, "b": {}}
    for hour in range(5):
        for creator in rows:
            apply_window(
                rows[creator],
                platform,
                start_ms=hour * H,
                end_ms=(hour + 1) * H,
                counts={"prompts": 1},
                revision=1,
                ceiling=CEILING,
            )
    assert platform.totals().prompts == 6, "three windows of two creators"
    assert sorted(int(s) for s in rows["a"]) == [2 * H, 3 * H, 4 * H]
    rebuilt = PlatformHorizon.rebuild(3 * H, [{"windows": w} for w in rows.values()])
    assert rebuilt.totals() == platform.totals() and rebuilt.clock == platform.clock
    assert not apply_window(
        rows["a"], platform, start_ms=0, end_ms=H, counts={"prompts": 5}, revision=2, ceiling=CEILING
    ), "left the horizon"


def test_one_noisy_hour_in_a_long_good_horizon_is_not_bad() -> None:
    long_good = Counts(prompts=2000, clicks=240, orders=300, returns=10)
    noisy_hour = Counts(prompts=200, clicks=0)
    merged = Counts()
    merged.add(long_good)
    merged.add(noisy_hour)
    assert judge_horizon(0, noisy_hour, PLATFORM, POLICY).bad
    assert not judge_horizon(0, merged, PLATFORM, POLICY).bad


def test_a_creator_whose_partition_lags_is_judged_on_its_own_horizon() -> None:
    """The other partitions have closed later windows (up to two horizons ahead): this creator's
    first windows still count, against the platform of their own horizon."""
    platform = PlatformHorizon(horizon_ms=2 * H)
    ahead: dict[str, dict[str, int]] = {}
    for hour in range(4):
        apply_window(
            ahead,
            platform,
            start_ms=hour * H,
            end_ms=(hour + 1) * H,
            counts={"prompts": 10, "clicks": 5},
            revision=1,
            ceiling=CEILING,
        )
    behind: dict[str, dict[str, int]] = {}
    assert apply_window(
        behind, platform, start_ms=0, end_ms=H, counts={"prompts": 10}, revision=1, ceiling=CEILING
    )
    assert platform.totals(H).prompts == 20, "the platform over the horizon ending with that window"
    assert creator_totals(behind, H, platform.horizon_ms).prompts == 10


def test_a_late_return_weighs_on_the_horizon() -> None:
    """An order on day 0 and its return on day 3 (counted in the window of the return's own ts):
    on a 7-day horizon the return still counts against the creator's return rate."""
    platform = PlatformHorizon(horizon_ms=7 * 24 * H)
    mine: dict[str, dict[str, int]] = {}
    apply_window(mine, platform, start_ms=0, end_ms=H, counts={"orders": 1}, revision=1, ceiling=CEILING)
    apply_window(
        mine, platform, start_ms=72 * H, end_ms=73 * H, counts={"returns": 1}, revision=1, ceiling=CEILING
    )
    horizon = creator_totals(mine, 73 * H, platform.horizon_ms)
    assert (horizon.orders, horizon.returns) == (1, 1)
    one_day = creator_totals(mine, 73 * H, 24 * H)
    assert (one_day.orders, one_day.returns) == (0, 1), "a one-day horizon would have lost the order"


YEAR_9999 = 253_402_297_200_000  # an hour boundary in year 9999


def test_a_window_that_starts_beyond_the_ceiling_is_never_applied() -> None:
    """An earlier version could close a window of a like stamped in year 9999: it would move
    the judge's clock there and take every real window out of the platform's horizon."""
    platform = PlatformHorizon(horizon_ms=24 * H)
    mine: dict[str, dict[str, int]] = {}
    assert apply_window(
        mine, platform, start_ms=0, end_ms=H, counts={"prompts": 10}, revision=1, ceiling=2 * H
    )
    assert not apply_window(
        mine,
        platform,
        start_ms=YEAR_9999,
        end_ms=YEAR_9999 + H,
        counts={"prompts": 5},
        revision=1,
        ceiling=2 * H,
    )
    assert list(mine) == ["0"] and platform.clock == H and platform.totals().prompts == 10
    # A window that ends beyond the ceiling but starts under it counts; the clock stops there.
    assert apply_window(
        mine, platform, start_ms=H, end_ms=2 * H, counts={"prompts": 1}, revision=1, ceiling=H + 5
    )
    assert platform.clock == H + 5


def test_the_rebuilt_platform_leaves_out_windows_beyond_the_ceiling() -> None:
    rows = [
        {"windows": {"0": {"prompts": 3, "end_ms": H, "revision": 1}}},
        {"windows": {str(YEAR_9999): {"prompts": 50, "end_ms": YEAR_9999 + H, "revision": 1}}},
    ]
    rebuilt = PlatformHorizon.rebuild(24 * H, rows, ceiling=2 * H)
    assert rebuilt.clock == H and rebuilt.totals().prompts == 3
    unbounded = PlatformHorizon.rebuild(24 * H, rows)
    assert unbounded.clock == YEAR_9999 + H and unbounded.totals().prompts == 50, "what the bug did"


def test_forgetting_a_creator_leaves_the_sums_a_rebuild_of_the_others_gives() -> None:
    platform = PlatformHorizon(horizon_ms=3 * H)
    rows: dict[str, dict[str, dict[str, int]]] = {"a": {}, "b": {}}
    for hour in range(5):
        for creator, prompts in (("a", 1), ("b", 10)):
            if creator == "b" and hour > 1:
                continue  # b stops appearing after two windows
            apply_window(
                rows[creator],
                platform,
                start_ms=hour * H,
                end_ms=(hour + 1) * H,
                counts={"prompts": prompts},
                revision=1,
                ceiling=CEILING,
            )
    platform.forget(rows.pop("b"))
    rebuilt = PlatformHorizon.rebuild(3 * H, [{"windows": w} for w in rows.values()])
    assert platform.totals() == rebuilt.totals() and platform.totals().prompts == 3
    assert all(c.prompts >= 0 for c in platform.by_start.values()), "nothing pruned is taken out again"
