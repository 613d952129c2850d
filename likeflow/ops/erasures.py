"""The erasure ledger as the operator tools read it: who was erased, and up to which ts (docs/privacy.md)."""

from __future__ import annotations

from config import Settings
from likeflow.ops.rebuild import changelog_topic, read_changelog
from tables import ERASURE_LEDGER_TABLE


async def read_erasure_ledger(settings: Settings) -> dict[str, int]:
    """User pseudonym -> the ts (epoch ms) of their latest erasure request, from the ledger's
    changelog (compacted and never expired: it outlives the users' state)."""
    ledger = await read_changelog(settings, changelog_topic(settings, ERASURE_LEDGER_TABLE))
    return {user: int(ts) for user, ts in ledger.values.items()}
