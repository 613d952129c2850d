"""Private namespaces for integration tests: each worker gets its own topics, group, Redis keys,
port and state directory, so tests never see each other's records; dropped at the session's end."""

from __future__ import annotations

import secrets
import uuid

import pytest

from config import Settings, load_settings
from tests.integration.harness import free_port, prompt_ids_of, pseudonymizer_for

# Every namespace `private_settings` hands out this session, dropped from the stack at its end
# (conftest.py, `pytest_sessionfinish`).
SESSION_NAMESPACES: list[str] = []


def private_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private namespace: topics, consumer group, Redis keys, web port, state directory."""
    ns = f"it-{uuid.uuid4().hex[:8]}"
    SESSION_NAMESPACES.append(ns)
    return load_settings(
        base_settings.to_env(),
        topic_prefix=f"{ns}.",
        app_id=f"likeflow-{ns}",
        redis_prefix=f"likeflow-{ns}",
        web_port=free_port(),
        data_dir=str(tmp_path_factory.mktemp("worker-data")),
        log_level="info",
        # A kill -9 test waits this long for the dead member's partitions.
        session_timeout_s=8.0,
        # A stalled worker exits (code 75) this soon; the harness restarts it like a supervisor.
        # Shorter than production's 300 s, long enough for the 200k-like backlogs of `make chaos`.
        stall_timeout_s=120.0,
        # An input of the creator counters that is caught up and quiet stops holding windows
        # open after this long (production: 60 s); the tests' inputs go quiet at once.
        quality_idle_after_s=3.0,
        # A key of the test's own, so tests can compute the pseudonyms the worker will use.
        user_key=secrets.token_urlsafe(48),
        # The oracle (workload.py) decides from the likes alone: a user's orders (prompt-feedback)
        # reach their state at no fixed point among their likes, so ranking by the consumption
        # level they give is off here (tests/integration/test_profile.py turns it on).
        rank_by_consumption_level=False,
        # The audit log's checkpoint signing key (an Ed25519 seed) of the test's own.
        audit_signing_key=secrets.token_hex(32),
    )


__all__ = ["SESSION_NAMESPACES", "private_settings", "prompt_ids_of", "pseudonymizer_for"]
