"""examples/consumer.py against the real stack: prompts read once each, the button read from Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from config import Settings
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.sinks.redis_keys import prompts_key
from streams.topics import LIKES, ORDER_PROMPTS
from tests.integration.harness import Consumed, WorkerProcess, produce, read_topic_until, wait_until
from tests.integration.test_privacy import like, publish_video, raw_user

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "consumer.py"


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own example, fixed arguments)
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_the_consumer_example_reads_each_prompt_once_and_shows_the_button(
    worker: WorkerProcess,
    settings: Settings,
    pseudonym: Pseudonymizer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    await publish_video(settings, worker)
    user = raw_user(f"example-{uuid.uuid4().hex[:4]}")
    record = like(user, int(time.time() * 1000) - 2_000)
    # The same like twice: the job re-sends the identical prompt, the consumer shows it once.
    await produce(settings, settings.topic(LIKES), [record])
    await wait_until(lambda: worker.metric_sum("likeflow_prompts_emitted_total") > 0, 30, "a prompt", worker)
    await produce(settings, settings.topic(LIKES), [record])

    def copies(records: list[Consumed]) -> list[Consumed]:
        return [r for r in records if r.value and orjson.loads(r.value)["user_id"] == pseudonym(user)]

    sent = copies(
        await read_topic_until(
            settings, settings.topic(ORDER_PROMPTS), lambda rs: len(copies(rs)) >= 2, 30, "the re-sent prompt"
        )
    )
    assert len({r.value for r in sent}) == 1, "a re-sent prompt is byte-identical"
    assert all(dict(r.headers)["likeflow.contract"] == b"1" for r in sent)
    prompt_id = orjson.loads(sent[0].value or b"{}")["prompt_id"]

    followed = run_example(
        "follow",
        "--bootstrap", settings.kafka_bootstrap,
        "--topic", settings.topic(ORDER_PROMPTS),
        "--group", f"example-{uuid.uuid4().hex[:6]}",
        "--idle-exit",
    )  # fmt: skip
    assert followed.returncode == 0, followed.stderr
    mine = [line for line in followed.stdout.splitlines() if prompt_id in line]
    assert len(mine) == 1, followed.stdout[-2000:]
    assert pseudonym(user) in mine[0]

    key_file = tmp_path / "user-key"
    key_file.write_text(settings.user_key + "\n")
    key = prompts_key(settings.redis_prefix, pseudonym(user))
    deadline = time.monotonic() + 30
    while not await redis_client.exists(key):
        assert time.monotonic() < deadline, "the prompt never reached Redis"
        await asyncio.sleep(0.1)
    shown = run_example(
        "button",
        "--user-id", user,
        "--key-file", str(key_file),
        "--redis-url", settings.redis_url,
        "--redis-prefix", settings.redis_prefix,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    prompt = orjson.loads(sent[0].value or b"{}")
    button = f"{prompt['text']}  [{prompt['offer']} ¥{prompt['price_cents'] / 100:.2f}]"
    assert shown.stdout.strip() == f"button for {pseudonym(user)}: {button}"
    nobody = run_example(
        "button", "--user-id", raw_user("never-liked"), "--key-file", str(key_file),
        "--redis-url", settings.redis_url, "--redis-prefix", settings.redis_prefix,
    )  # fmt: skip
    assert nobody.returncode == 1 and "no prompt" in nobody.stdout
