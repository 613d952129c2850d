"""What an app backend writes to use likeflow: read prompts, de-duplicate, serve a user's button.

Standalone on purpose (aiokafka, redis and the standard library; no likeflow import): it uses only
what docs/consumers.md promises. Three parts:

* `follow`: reads `order-prompts` as the backend's own consumer group, skips records of a contract
  version it does not know, de-duplicates by `prompt_id` (a redelivered like re-sends the identical
  prompt), and prints each new prompt.
* `button`: computes a user's pseudonym from the raw user id with the shared key (HMAC-SHA256) and
  reads the user's newest prompt from Redis: what the one-tap button next to the like would show.
* `feedback`: reports what became of a prompt on `prompt-feedback`, with the kind its offer calls
  for: an order and its return, a booking or a trial and its cancellation or no-show.

    python examples/consumer.py follow --bootstrap 127.0.0.1:9092 --group app-backend --max 10
    python examples/consumer.py button --user-id u42 --key-file .run/secrets/user-key
    python examples/consumer.py feedback --prompt "$PROMPT_JSON" --user-id u42 --outcome taken
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

#: The contract versions this program understands (header `likeflow.contract`).
KNOWN_CONTRACTS = {b"1"}
#: How many prompt ids to remember for de-duplication. A redelivery comes within a consumer
#: session or right after a restart of the producer, so a bounded window is enough.
DEDUPE_WINDOW = 100_000
#: What the app reports on `prompt-feedback` (docs/events.md) when the user takes a prompt's offer,
#: undoes it, or misses the appointment it booked, by the prompt's `offer`. A click and a
#: complaint are the same for every offer.
FEEDBACK_KINDS = {
    "order": {"taken": "order", "undone": "return"},
    "booking": {"taken": "booking", "undone": "cancellation", "missed": "no_show"},
    "trial": {"taken": "trial", "undone": "cancellation", "missed": "no_show"},
}
#: The kinds that carry `amount_cents`: required for an order, optional for a booking.
PRICED = {"order", "booking"}


def pseudonym(user_id: str, key: bytes, key_version: int = 1) -> str:
    """The user's pseudonym: `v<version>.` + the first 32 hex digits of HMAC-SHA256(key, user_id)."""
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"v{key_version}.{digest[:32]}"


class SeenPrompts:
    """The last `size` prompt ids: a prompt seen again (redelivery) is skipped."""

    def __init__(self, size: int = DEDUPE_WINDOW) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, prompt_id: str) -> bool:
        """True the first time `prompt_id` is offered (and remember it)."""
        if prompt_id in self._ids:
            self._ids.move_to_end(prompt_id)
            return False
        self._ids[prompt_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def button_text(prompt: dict[str, Any]) -> str:
    """What the button shows: the offer copy and the price (cents -> yuan); a product the content
    matcher proposed (`source` "content"; absent in older prompts: the creator's) is marked, as
    an app may label it ("similar item")."""
    similar = "  (similar item)" if prompt.get("source") == "content" else ""
    return f"{prompt['text']}  [{prompt['offer']} ¥{prompt['price_cents'] / 100:.2f}]{similar}"


def feedback_for(
    prompt: dict[str, Any],
    user_id: str,
    outcome: str,
    *,
    ts: int,
    event_id: str,
    amount_cents: int | None = None,
) -> dict[str, Any]:
    """The `prompt-feedback` record of `outcome` (click, taken, undone, missed, complaint) of a
    prompt shown to `user_id` (the raw id, as the app knows it). The prompt's ids are echoed as
    received; an order or booking carries its amount (default: the prompt's price). Raises
    ValueError for an outcome the prompt's offer has not (an order cannot be missed)."""
    kinds = FEEDBACK_KINDS.get(prompt["offer"], {})
    kind = outcome if outcome in ("click", "complaint") else kinds.get(outcome)
    if kind is None:
        raise ValueError(f"a {prompt['offer']!r} prompt has no {outcome!r} feedback")
    record: dict[str, Any] = {
        "event_id": event_id,
        "prompt_id": prompt["prompt_id"],
        "creator_id": prompt["creator_id"],
        "product_id": prompt["product_id"],
        "user_id": user_id,
        "kind": kind,
        "ts": ts,
    }
    if kind in PRICED:
        record["amount_cents"] = prompt["price_cents"] if amount_cents is None else amount_cents
    return record


async def send_feedback(args: argparse.Namespace) -> int:
    """Send one feedback record (key: its creator_id) and print it; exit 2 for an outcome the
    prompt's offer has not."""
    try:
        record = feedback_for(
            json.loads(args.prompt),
            args.user_id,
            args.outcome,
            ts=args.ts or int(time.time() * 1000),
            event_id=args.event_id or uuid.uuid4().hex,
            amount_cents=args.amount_cents,
        )
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            args.topic, json.dumps(record).encode(), key=record["creator_id"].encode()
        )
    finally:
        await producer.stop()
    print(f"feedback {record['kind']} for prompt {record['prompt_id']}: {json.dumps(record)}")
    return 0


async def follow(args: argparse.Namespace) -> int:
    """Print each new prompt until `args.max` are printed (0: forever); returns an exit code."""
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        # A new group starts from the oldest retained prompt; an existing one from its commit.
        auto_offset_reset="earliest",
        # At-least-once: offsets are committed after the prompts are handled (below), so a crash
        # re-reads some prompts, which the prompt_id de-duplication absorbs.
        enable_auto_commit=False,
    )
    seen = SeenPrompts()
    printed = 0
    await consumer.start()
    try:
        while not args.max or printed < args.max:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and args.idle_exit:
                return 0 if printed else 1
            for records in batch.values():
                for record in records:
                    version = dict(record.headers).get("likeflow.contract")
                    if version not in KNOWN_CONTRACTS:
                        # A newer contract may change meaning, not just add fields: stop rather
                        # than show a wrong button (docs/consumers.md, "Versions").
                        print(
                            f"unknown contract version {version!r} at {record.topic}[{record.partition}]"
                            f"@{record.offset}; upgrade this consumer",
                            file=sys.stderr,
                        )
                        return 2
                    prompt = json.loads(record.value)
                    if not seen.first_time(prompt["prompt_id"]):
                        continue
                    printed += 1
                    print(f"prompt {prompt['prompt_id']} for {prompt['user_id']}: {button_text(prompt)}")
            await consumer.commit()
    finally:
        await consumer.stop()
    return 0


async def button(args: argparse.Namespace) -> int:
    """Print the user's newest prompt from Redis; exit 1 when there is none."""
    user = pseudonym(args.user_id, args.key, args.key_version)
    client = aioredis.from_url(args.redis_url)
    try:
        # Key layout v2 (docs/redis.md): the pseudonym in braces is a Redis Cluster hash tag.
        newest = await client.zrevrange(f"{args.redis_prefix}:v2:prompts:{{{user}}}", 0, 0)
    finally:
        await client.aclose()
    if not newest:
        print(f"no prompt for {user}")
        return 1
    prompt = json.loads(newest[0])
    print(f"button for {user}: {button_text(prompt)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("follow", help="read order-prompts, de-duplicated")
    f.add_argument("--bootstrap", default="127.0.0.1:9092")
    f.add_argument("--topic", default="order-prompts", help="with the deployment's topic prefix")
    f.add_argument("--group", default="app-backend", help="the backend's own consumer group")
    f.add_argument("--max", type=int, default=0, help="stop after this many prompts (0: never)")
    f.add_argument("--idle-exit", action="store_true", help="stop when a poll returns nothing")
    f.set_defaults(run=follow)
    b = sub.add_parser("button", help="a user's newest prompt from Redis")
    b.add_argument("--user-id", required=True, help="the raw user id, as the app knows it")
    b.add_argument("--key-file", required=True, help="the pseudonym key shared with likeflow")
    b.add_argument("--key-version", type=int, default=1)
    b.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    b.add_argument("--redis-prefix", default="likeflow")
    b.set_defaults(run=button)
    fb = sub.add_parser("feedback", help="report what became of a prompt on prompt-feedback")
    fb.add_argument("--prompt", required=True, help="the prompt's JSON, as read from order-prompts or Redis")
    fb.add_argument("--user-id", required=True, help="the raw user id the prompt was shown to")
    fb.add_argument("--outcome", required=True, choices=["click", "taken", "undone", "missed", "complaint"])
    fb.add_argument("--amount-cents", type=int, help="an order's or booking's amount (default: its price)")
    fb.add_argument("--event-id", help="unique per feedback (default: a random one)")
    fb.add_argument("--ts", type=int, help="when it happened, epoch ms (default: now)")
    fb.add_argument("--bootstrap", default="127.0.0.1:9092")
    fb.add_argument("--topic", default="prompt-feedback", help="with the deployment's topic prefix")
    fb.set_defaults(run=send_feedback)
    args = parser.parse_args(argv)
    if args.command == "button":
        args.key = Path(args.key_file).read_text().strip().encode()
    return int(asyncio.run(args.run(args)))


if __name__ == "__main__":
    sys.exit(main())
