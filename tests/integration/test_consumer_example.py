"""examples/consumer.py against the real stack: prompts read once each, the button, B2B feedback counted."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from config import Settings
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.sinks.redis_keys import prompts_key
from streams.topics import LIKES, ORDER_PROMPTS, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.harness import Consumed, Record, WorkerProcess, produce, read_topic_until, wait_until
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


async def test_the_example_s_booking_and_trial_feedback_counts_in_the_creator_s_figures(
    worker: WorkerProcess, settings: Settings, pseudonym: Pseudonymizer
) -> None:
    """A booking prompt and a trial prompt; the app (the example) reports each taken, the
    booking missed and the trial cancelled, with a click on each: the creator's served figures
    count them as conversions and undoings (docs/quality.md)."""
    run = uuid.uuid4().hex[:6]
    creator, now = f"b2b-c-{run}", int(time.time() * 1000)
    offers = {"booking": 8800, "trial": 990}
    before = worker.metric_sum("likeflow_mapping_updates_total")
    mappings: list[Record] = [
        (
            f"b2b-{offer}-{run}".encode(),
            orjson.dumps(
                {
                    "video_id": f"b2b-{offer}-{run}",
                    "creator_id": creator,
                    "ts": now - 60_000,
                    "products": [
                        {"product_id": f"{offer}-{run}", "title": f"{offer} class", "category": "fitness",
                         "price_cents": price, "certified": True, "stock": 10, "offer": offer},
                    ],
                }
            ),
            [],
        )
        for offer, price in offers.items()
    ]  # fmt: skip
    await produce(settings, settings.topic(VIDEO_PRODUCTS), mappings)
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") >= before + 2, 30, "the mappings", worker
    )
    users = {offer: raw_user(f"b2b-{offer}-{run}") for offer in offers}
    await produce(
        settings,
        settings.topic(LIKES),
        [like(users[offer], now - 2_000, video=f"b2b-{offer}-{run}") for offer in offers],
    )
    mine = {pseudonym(u): offer for offer, u in users.items()}

    def prompts(records: list[Consumed]) -> dict[str, dict[str, Any]]:
        values = (orjson.loads(r.value) for r in records if r.value)
        return {mine[p["user_id"]]: p for p in values if p["user_id"] in mine}

    shown = prompts(
        await read_topic_until(
            settings, settings.topic(ORDER_PROMPTS), lambda rs: len(prompts(rs)) == 2, 30, "both prompts"
        )
    )
    assert {offer: p["offer"] for offer, p in shown.items()} == {"booking": "booking", "trial": "trial"}

    outcomes = {"booking": ["click", "taken", "missed"], "trial": ["click", "taken", "undone"]}
    for offer, steps in outcomes.items():
        for step in steps:
            sent = run_example(
                "feedback",
                "--prompt", orjson.dumps(shown[offer]).decode(),
                "--user-id", users[offer],
                "--outcome", step,
                "--bootstrap", settings.kafka_bootstrap,
                "--topic", settings.topic(PROMPT_FEEDBACK),
            )  # fmt: skip
            assert sent.returncode == 0, sent.stdout + sent.stderr

    def served() -> dict[str, Any] | None:
        url = f"http://{settings.web_host}:{settings.web_port}/creators/{creator}/quality"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
                doc: dict[str, Any] = orjson.loads(resp.read())
                return doc
        except urllib.error.HTTPError:
            return None

    expected = {"likes": 2, "prompts": 2, "clicks": 2, "orders": 0, "bookings": 1, "trials": 1, "returns": 0,
                "cancellations": 1, "no_shows": 1, "complaints": 0, "gmv_cents": 8800}  # fmt: skip
    await wait_until(lambda: (served() or {}).get("totals") == expected, 30, "the feedback counted", worker)
    doc = served()
    assert doc is not None
    # 2 conversions (the booking and the trial) of 2 clicks, both undone (a no-show, a cancellation).
    assert (doc["ctr"], doc["conversion"], doc["return_rate"], doc["complaint_rate"]) == (1.0, 1.0, 1.0, 0.0)
    assert doc["business"]["gmv_yuan"] == 88.0, "the booking's value (the prompt's price); a trial is free"
    for kind in ("booking", "trial", "cancellation", "no_show"):
        assert worker.metric_sum("likeflow_creator_events_total", kind=kind, outcome="counted") >= 1
