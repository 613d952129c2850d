"""Operator commands fail with one line that says what to do, and a documented exit code.

Kafka and Redis are "down" by pointing the commands at a loopback port nobody listens on.
"""

from __future__ import annotations

import gzip
import secrets
from pathlib import Path

import pytest

from config import Settings
from likeflow.errors import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.integration.harness import CliResult, free_port, run_cli

SINCE, UNTIL = "2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00"


@pytest.fixture
def nothing_up() -> Settings:
    """Settings whose Kafka and Redis are a closed loopback port."""
    port = free_port()
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        redis_url=f"redis://127.0.0.1:{port}/0",
        user_key=secrets.token_urlsafe(48),
        web_port=free_port(),
    )


def one_line_error(result: CliResult) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("likeflow: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "service"),
    [
        (("creator", "c1"), "Redis"),
        (("audit", "verify"), "Kafka"),
        (("backfill", "--since", SINCE, "--until", UNTIL, "--from-topic", "creator-events"), "Kafka"),
        (("reset-offsets", "--to-datetime", SINCE, "--dry-run"), "Kafka"),
        (
            ("replay", "topic", "--from", "a", "--to", "likes", "--since", SINCE, "--until", UNTIL, "--yes"),
            "Kafka",
        ),
        (
            (
                "replay",
                "topic",
                "--from",
                "a",
                "--to",
                "likes",
                "--since",
                SINCE,
                "--until",
                UNTIL,
                "--dry-run",
            ),
            "Kafka",
        ),
        (("rebuild-redis",), "Redis"),
        (("topics",), "Kafka"),
    ],
)
async def test_an_unreachable_service_is_one_line_and_exit_3(
    nothing_up: Settings, args: tuple[str, ...], service: str
) -> None:
    result = await run_cli(nothing_up, *args, timeout_s=90)
    line = one_line_error(result)
    assert result.returncode == EXIT_UNAVAILABLE, line
    assert service in line and "make stack-up" in line, line


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--interval", "0"),
        ("status", "--interval", "nan"),
        ("demo", "--rate", "-5"),
        ("demo", "--duration", "-1"),
        ("replay", "file", "x.jsonl", "--topic", "likes", "--rate", "-3"),
        ("replay", "file", "x.jsonl", "--topic", "nope"),
        ("backfill", "--since", SINCE, "--until", UNTIL, "--from-topic", "likes"),
        (
            "replay",
            "topic",
            "--from",
            "likes",
            "--to",
            "audit-log",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--yes",
        ),
        ("reset-offsets", "--to-datetime", "2999-01-01T00:00:00+00:00", "--dry-run"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_runs(
    nothing_up: Settings, args: tuple[str, ...]
) -> None:
    result = await run_cli(nothing_up, *args, timeout_s=30)
    assert result.returncode == EXIT_USAGE
    assert b"Traceback" not in result.stderr
    assert any(why in result.stderr for why in (b"must be", b"invalid choice", b"in the future")), (
        result.stderr
    )


async def test_an_archive_with_no_valid_line_fails_and_lists_each_line_once(
    nothing_up: Settings, tmp_path: Path
) -> None:
    archive = tmp_path / "likes.jsonl.gz"
    with gzip.open(archive, "wb") as out:
        out.write(b"not json\n{}\n[1]\n")
    result = await run_cli(nothing_up, "replay", "file", str(archive), "--topic", "likes", "--dry-run")
    err = result.stderr.decode()
    assert result.returncode == EXIT_FAILED, err
    for number in (1, 2, 3):
        assert err.count(f"{archive}:{number}:") == 1, err
    assert "no valid record" in err
