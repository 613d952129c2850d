"""Creator quality score, ranking weight and the demotion state machine over closed windows.

Rates are smoothed with a Beta prior centred on the platform rate (docs/quality.md): a creator
with few prompts or orders looks like the platform average, so small samples neither demote
nor flap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from likeflow.domain.quality.windows import Counts, ratio, total


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    """Thresholds of the demotion loop."""

    prior_strength: float = 20.0
    margin: float = 0.2
    min_prompts: int = 50
    min_orders: int = 20
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
        """Rates of the platform totals."""
        return cls(
            ratio(c.clicks, c.prompts),
            ratio(c.orders, c.clicks),
            ratio(c.returns, c.orders),
            ratio(c.complaints, c.orders),
        )

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready form."""
        return {
            "ctr": self.ctr,
            "conversion": self.conversion,
            "return_rate": self.return_rate,
            "complaint_rate": self.complaint_rate,
        }


def platform_document(windows: Mapping[str, dict[str, Any]]) -> tuple[dict[str, Any], PlatformRates]:
    """The served platform document (totals and rates) over the judge's retained closed windows.

    `windows` is the platform row's `windows` (window start -> summed counts). The judge writes
    this document to Redis, and `likeflow rebuild-redis` derives it from the same row.
    """
    totals = total(Counts.from_dict(w) for w in windows.values())
    rates = PlatformRates.of(totals)
    return {"totals": totals.to_dict(), "rates": rates.to_dict()}, rates


def smoothed(successes: int, trials: int, prior_rate: float, strength: float) -> float:
    """Posterior mean of a Beta prior with mean `prior_rate` worth `strength` observations."""
    return (successes + strength * prior_rate) / (trials + strength)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One closed window of one creator, judged: smoothed rates and whether it was good or bad."""

    window_start: int
    ctr: float | None
    return_rate: float | None
    complaint_rate: float | None
    judged: bool  # False when the window had too small a sample
    bad: bool
    reasons: tuple[str, ...]
    score: float


def judge_window(start_ms: int, c: Counts, platform: PlatformRates, policy: JudgePolicy) -> Verdict:
    """Judge one creator window against the platform rates.

    Bad when the smoothed CTR is below platform x (1 - margin), or the smoothed return or
    complaint rate is above platform x (1 + margin). CTR is judged from `min_prompts` prompts,
    return and complaint rates from `min_orders` orders; a window with neither is not judged.
    """
    k = policy.prior_strength
    ctr = smoothed(c.clicks, c.prompts, platform.ctr, k) if platform.ctr is not None else None
    ret = smoothed(c.returns, c.orders, platform.return_rate, k) if platform.return_rate is not None else None
    cmp_ = (
        smoothed(c.complaints, c.orders, platform.complaint_rate, k)
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
    if c.orders >= policy.min_orders:
        if ret is not None and platform.return_rate is not None:
            judged = True
            if ret > platform.return_rate * (1 + policy.margin):
                reasons.append("high_return_rate")
        if cmp_ is not None and platform.complaint_rate is not None:
            judged = True
            if cmp_ > platform.complaint_rate * (1 + policy.margin):
                reasons.append("high_complaint_rate")
    score = _score(ctr, ret, cmp_, platform)
    return Verdict(start_ms, ctr, ret, cmp_, judged, bool(reasons), tuple(reasons), score)


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
    """A creator's demotion state, advanced one closed window at a time."""

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

    Windows that were not judged (small samples) neither extend nor break a streak. The weight
    is 1.0 while not demoted and max(min_weight, score) while demoted.
    """
    if verdict.window_start <= standing.last_window:
        return None  # windows are judged once, in order
    standing.last_window = verdict.window_start
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


def window_applies(
    creator_row: Mapping[str, Any] | None, platform_row: Mapping[str, Any] | None, offset: int, start: int
) -> tuple[bool, bool]:
    """Whether a closed window read at `offset` of `creator-windows` still has to be applied:
    (count it into the platform totals, judge it for the creator).

    Two kinds of copies reach the judge: the same record redelivered after the judge crashed
    (same offset: each row remembers the last offset applied to it), and the same window sent
    again at a new offset by a counting agent that crashed after sending it but before its
    partition clock reached the changelog. A creator's windows close oldest first, so a window
    at or before the last one applied to the creator (`last_window`) is such a copy.
    """
    creator = creator_row or {}
    platform = platform_row or {}
    resent = start <= creator.get("last_window", -1)
    to_platform = not resent and offset > platform.get("last_offset", -1)
    to_creator = not resent and offset > creator.get("last_offset", -1)
    return to_platform, to_creator
