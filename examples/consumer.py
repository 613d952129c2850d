"""What an app backend writes to use likeflow: read prompts, de-duplicate, serve a user's button.

Standalone on purpose (aiokafka, redis and the standard library; no likeflow import): it uses only
what docs/consumers.md promises. Two parts:

* `follow`: reads `order-prompts` as the backend's own consumer group, skips records of a contract
  version it does not know, de-duplicates by `prompt_id` (a redelivered like re-sends the identical
  prompt), and prints each new prompt.
* `button`: computes a user's pseudonym from the raw user id with the shared key (HMAC-SHA256) and
  reads the user's newest prompt from Redis: what the one-tap button next to the like would show.

    python examples/consumer.py follow --bootstrap 127.0.0.1:9092 --group app-backend --max 10
    python examples/consumer.py button --user-id u42 --key-file .run/secrets/user-key
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

#: The contract versions this program understands (header `likeflow.contract`).
KNOWN_CONTRACTS = {b"1"}
#: How many prompt ids to remember for de-duplication. A redelivery comes within a consumer
#: session or right after a restart of the producer, so a bounded window is enough.
DEDUPE_WINDOW = 100_000


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
    """What the button shows: the offer copy and the price (cents -> yuan)."""
    return f"{prompt['text']}  [{prompt['offer']} ¥{prompt['price_cents'] / 100:.2f}]"


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
    args = parser.parse_args(argv)
    if args.command == "button":
        args.key = Path(args.key_file).read_text().strip().encode()
    return int(asyncio.run(args.run(args)))


if __name__ == "__main__":
    sys.exit(main())
