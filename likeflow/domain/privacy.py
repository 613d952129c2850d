"""A user's privacy controls applied to their state: consent, erasure and retention (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from likeflow.domain.user_state import ConsentState, UserState
from streams.events import UserConsent, UserErasure

DAY_MS = 24 * 3_600_000


def apply_consent(state: UserState, consent: UserConsent) -> bool:
    """Record `consent` unless a newer one is held (newest ts wins); True when state changed.

    Refusing personalisation also forgets the interest profile and the consumption level's
    price bands (docs/profile.md): data that may no longer be used is not kept either (minimum
    necessary data).
    """
    if state.consent is not None and state.consent.ts > consent.ts:
        return False
    state.consent = ConsentState(consent.prompts, consent.personalized, consent.ts)
    if not consent.personalized:
        state.affinity = {}
        state.price_bands = {}
    return True


def needs_state(consent: UserConsent) -> bool:
    """Whether `consent` must be kept for a user the job holds nothing about: only a refusal.
    The default (prompts and personalisation on) is what a user without state gets anyway."""
    return not (consent.prompts and consent.personalized)


def apply_erasure(state: UserState, erasure: UserErasure) -> UserState:
    """The state left after erasing the user: only the erasure ts and their consent choice.

    Likes, prompts, dedupe entries and the profile are gone. What remains holds no activity:
    `erased_ts` makes likes from before the request (still in flight on other partitions or
    redelivered) be ignored instead of rebuilding the state, and the consent choice keeps a
    refusal honoured. Retention expires this remainder like any other state.
    """
    return UserState(consent=state.consent, erased_ts=max(state.erased_ts, erasure.ts))


def erased_by(ledger: Mapping[str, int], user: str, ts: int) -> bool:
    """Whether an event of the pseudonymous `user` at `ts` (epoch ms) is covered by an erasure in
    `ledger` (pseudonym -> the ts of their latest erasure): at or before it, as `UserState.erased`."""
    erased_ts = ledger.get(user)
    return erased_ts is not None and ts <= erased_ts


def is_expired(last_active_ts: int, clock_ms: int, retention_ms: int) -> bool:
    """True when the user's last activity is more than `retention_ms` before `clock_ms` (event time)."""
    return last_active_ts < clock_ms - retention_ms
