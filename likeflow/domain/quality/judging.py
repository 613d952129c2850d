"""Creator quality score, ranking weight and the demotion state machine over closed windows.

Rates are smoothed with a Beta prior centred on the platform rate (docs/quality.md): a creator
with few prompts or conversions (orders, bookings, trials) looks like the platform average, so
small samples neither demote nor flap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from likeflow.domain.quality.windows import Counts, business, rates

# What a bad judgment names: the smoothed rate that is worse than the platform's by the margin.
VERDICT_REASONS = ("low_ctr", "high_return_rate", "high_complaint_rate")


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    """Thresholds of the demotion loop."""

    prior_strength: float = 20.0
    # Creators are judged on their closed windows of this trailing span (ms of event time).
    horizon_ms: int = 7 * 24 * 3_600_000
    margin: float = 0.2
    min_prompts: int = 50
    # Conversions (orders + bookings + trials); the setting is LIKEFLOW_DEMOTION_MIN_ORDERS.
    min_conversions: int = 20
    demote_after: int = 3
    recover_after: int = 3
    min_weight: float = 0.2


@dataclass(frozen=True, slots=True)
class PlatformRates:
    """Platform-wide rates over the retained closed windows (None where nothing was seen)."""

    ctr: float | None
    conversion: float | None
    return_rate: float | None
    complaint_rate: float | None

    @classmethod
    def of(cls, c: Counts) -> PlatformRates:
        """Rates of the platform totals (`windows.rates`)."""
        return cls(**rates(c))

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready form."""
        return {
            "ctr": self.ctr,
            "conversion": self.conversion,
            "return_rate": self.return_rate,
            "complaint_rate": self.complaint_rate,
        }


def platform_document(totals: Counts) -> tuple[dict[str, Any], PlatformRates]:
    """The served platform document (totals and rates over the judge's horizon).

    The judge writes it to Redis, and `likeflow rebuild-redis` derives it from the same rows.
    """
    platform = PlatformRates.of(totals)
    return {"totals": totals.to_dict(), "rates": platform.to_dict(), "business": business(totals)}, platform


def smoothed(successes: int, trials: int, prior_rate: float, strength: float) -> float:
    """Posterior mean of a Beta prior with mean `prior_rate` worth `strength` observations."""
    return (successes + strength * prior_rate) / (trials + strength)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A creator judged over the horizon ending at `horizon_end`: smoothed rates, good or bad."""

    horizon_end: int
    ctr: float | None
    return_rate: float | None
    complaint_rate: float | None
    judged: bool  # False when the window had too small a sample
    bad: bool
    reasons: tuple[str, ...]
    score: float


def judge_horizon(horizon_end: int, c: Counts, platform: PlatformRates, policy: JudgePolicy) -> Verdict:
    """Judge a creator's counts over the horizon ending at `horizon_end` (epoch ms) against the
    platform's rates over the same horizon.

    Bad when the smoothed CTR is below platform x (1 - margin), or the smoothed return or
    complaint rate is above platform x (1 + margin). The return rate is every undoing
    (returns, cancellations, no-shows) per conversion (orders, bookings, trials), the complaint
    rate complaints per conversion (`windows.rates`). CTR is judged from `min_prompts` prompts
    in the horizon, return and complaint rates from `min_conversions` conversions; with neither
    the creator is not judged.
    """
    k = policy.prior_strength
    conversions = c.conversions
    ctr = smoothed(c.clicks, c.prompts, platform.ctr, k) if platform.ctr is not None else None
    ret = (
        smoothed(c.undone, conversions, platform.return_rate, k) if platform.return_rate is not None else None
    )
    cmp_ = (
        smoothed(c.complaints, conversions, platform.complaint_rate, k)
        if platform.complaint_rate is not None
        else None
    )
    reasons: list[str] = []
    judged = False
    # A platform CTR of 0 (nothing clicked yet) is no basis to call anyone's CTR low.
    if ctr is not None and platform.ctr and c.prompts >= policy.min_prompts:
        judged = True
        if ctr < platform.ctr * (1 - policy.margin):
            reasons.append("low_ctr")
    if conversions >= policy.min_conversions:
        if ret is not None and platform.return_rate is not None:
            judged = True
            if ret > platform.return_rate * (1 + policy.margin):
                reasons.append("high_return_rate")
        if cmp_ is not None and platform.complaint_rate is not None:
            judged = True
            if cmp_ > platform.complaint_rate * (1 + policy.margin):
                reasons.append("high_complaint_rate")
    score = _score(ctr, ret, cmp_, platform)
    return Verdict(horizon_end, ctr, ret, cmp_, judged, bool(reasons), tuple(reasons), score)


def _score(ctr: float | None, ret: float | None, cmp_: float | None, platform: PlatformRates) -> float:
    """In (0, 1]: 1.0 at or better than the platform on every rate, lower the worse it gets."""
    score = 1.0
    if ctr is not None and platform.ctr:
        score *= min(1.0, ctr / platform.ctr)
    for mine, theirs in ((ret, platform.return_rate), (cmp_, platform.complaint_rate)):
        if mine is not None and theirs is not None and mine > 0:
            score *= min(1.0, theirs / mine) if theirs > 0 else 1.0
    return round(max(score, 1e-6), 6)


@dataclass(slots=True)
class CreatorStanding:
    """A creator's demotion state, advanced one judgment (one horizon end) at a time.

    `last_window` is the end of the last horizon judged (epoch ms).
    """

    demoted: bool = False
    bad_streak: int = 0
    good_streak: int = 0
    score: float = 1.0
    weight: float = 1.0
    last_window: int = -1
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table."""
        return {
            "demoted": self.demoted,
            "bad_streak": self.bad_streak,
            "good_streak": self.good_streak,
            "score": self.score,
            "weight": self.weight,
            "last_window": self.last_window,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CreatorStanding:
        """Rebuild; None gives a fresh, undemoted standing."""
        if not data:
            return cls()
        return cls(**{**data, "reasons": tuple(data.get("reasons", ()))})


def apply_verdict(standing: CreatorStanding, verdict: Verdict, policy: JudgePolicy) -> str | None:
    """Advance the state machine; returns "demoted" or "recovered" when the state flips.

    A streak counts judgments at distinct horizon ends (a creator judged twice at the same end,
    say for a revised window, counts once). Judgments with too small a sample neither extend
    nor break a streak. The weight is 1.0 while not demoted and max(min_weight, score) while
    demoted.
    """
    if verdict.horizon_end <= standing.last_window:
        return None  # this horizon end was judged already
    standing.last_window = verdict.horizon_end
    if not verdict.judged:
        return None
    standing.score = verdict.score
    change: str | None = None
    if verdict.bad:
        standing.bad_streak += 1
        standing.good_streak = 0
        standing.reasons = verdict.reasons
        if not standing.demoted and standing.bad_streak >= policy.demote_after:
            standing.demoted = True
            change = "demoted"
    else:
        standing.good_streak += 1
        standing.bad_streak = 0
        if standing.demoted and standing.good_streak >= policy.recover_after:
            standing.demoted = False
            standing.reasons = ()
            change = "recovered"
    standing.weight = max(policy.min_weight, standing.score) if standing.demoted else 1.0
    return change
