"""The Redis ACL of docs/security.md names exactly the commands the job's scripts and clients run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Commands the job sends outside its Lua scripts, and where. Kept by hand (a new direct call goes
# here and into the documented ACL); tests/integration/test_redis_acl.py runs the job and the
# operator commands against a Redis with exactly the documented user and finds nothing refused.
DIRECT = {
    "evalsha": "every script call (redis-py Script)",
    "script|load": "redis-py loads a script Redis does not know (NOSCRIPT)",
    "script|exists": "redis-py checks a pipeline's scripts before running it",
    "hget": "RedisQualityStore.read (/creators/{id}/quality, likeflow creator)",
    "hgetall": "RedisQualityStore.read_windows",
    "scan": "RedisQualityStore.creators (backfill)",
    "del": "RedisQualityStore.write_shadow (backfill)",
    "hset": "RedisQualityStore.write_shadow (backfill)",
    "multi": "RedisQualityStore.write_shadow: a transaction on one node",
    "exec": "RedisQualityStore.write_shadow: a transaction on one node",
    "hkeys": "rebuild-redis: a creator's window fields",
    "ping": "rebuild-redis checks Redis first",
}
# redis-py also sends CLIENT SETINFO on connect (Redis 7.2+; the docs add it for those versions).


def documented_acl() -> tuple[set[str], str]:
    """(commands, key pattern) of the `user likeflow` line of docs/security.md."""
    text = (ROOT / "docs" / "security.md").read_text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("user likeflow on ")]
    rules = line.split()
    assert "-@all" in rules, "the example starts from no command at all"
    [keys] = [r for r in rules if r.startswith("~")]
    return {r[1:] for r in rules if r.startswith("+")}, keys


def script_commands() -> set[str]:
    """Every command called with redis.call in the Lua scripts of the Redis sinks."""
    found: set[str] = set()
    for path in sorted((ROOT / "likeflow" / "sinks").glob("redis_*.py")):
        found |= {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", path.read_text())}
    assert found, "no Lua script found: the pattern no longer matches the sinks"
    return found


def test_the_documented_acl_names_exactly_the_commands_the_job_runs() -> None:
    commands, keys = documented_acl()
    expected = script_commands() | set(DIRECT)
    assert commands == expected, (
        f"docs/security.md lists {sorted(commands - expected)} that the job does not run"
        if commands - expected
        else f"docs/security.md misses {sorted(expected - commands)}"
    )
    assert keys == "~likeflow*", "the key pattern is the default LIKEFLOW_REDIS_PREFIX"
