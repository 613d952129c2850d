"""The documented Redis ACL user (docs/security.md) is enough for the worker and the operator commands."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from config import Settings, load_settings
from likeflow.connections import redis_client
from likeflow.metrics import Metrics
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.quality_view import creator_quality
from likeflow.sinks.redis_keys import platform_key, prompts_key
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.topics import LIKES, PROMPT_FEEDBACK, USER_ERASURE, VIDEO_PRODUCTS
from tests.integration.clock import NOW, hours_ago
from tests.integration.harness import (
    Record,
    WorkerProcess,
    free_port,
    produce,
    pseudonymizer_for,
    reachable,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import private_settings
from tests.integration.secure_stack import Certificates, make_certificates

ROOT = Path(__file__).resolve().parents[2]
M = 60_000
T = hours_ago(4)
ADMIN = "acl-admin"


def documented_users() -> list[str]:
    """The `user ...` lines of the ACL example in docs/security.md."""
    text = (ROOT / "docs" / "security.md").read_text()
    users = [line for line in text.splitlines() if line.startswith("user ")]
    assert any(line.startswith("user likeflow on >PASSWORD ") for line in users), users
    return users


def redis_version() -> tuple[int, ...]:
    """The version of the redis-server on the PATH."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)  # noqa: S607
    version = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    assert version is not None, out.stdout
    return int(version.group(1)), int(version.group(2))


class AclRedis:
    """A redis-server on a TLS port with the documented users and an admin, run by its PID."""

    def __init__(self, directory: Path, certs: Certificates) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is missing: apt-get install -y redis-server")
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        self.certs = certs
        users = [line.replace(">PASSWORD", f">{self.password}") for line in documented_users()]
        if redis_version() >= (7, 2):  # docs/security.md: CLIENT SETINFO exists from 7.2 on
            users = [u + " +client|setinfo" if u.startswith("user likeflow ") else u for u in users]
        conf = directory / "redis.conf"
        # In a config file, not on the command line: the passwords must not show in `ps`.
        conf.write_text(
            f"bind 127.0.0.1\nport 0\ntls-port {self.port}\n"
            f"tls-cert-file {certs.cert}\ntls-key-file {certs.key}\ntls-ca-cert-file {certs.ca}\n"
            f'tls-auth-clients no\ndir {directory}\nsave ""\nappendonly no\n'
            f"user {ADMIN} on >{self.admin_password} ~* &* +@all\n" + "\n".join(users) + "\n"
        )
        conf.chmod(0o600)
        self.log_path = directory / "redis.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                ["redis-server", str(conf)],  # noqa: S607
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
                start_new_session=True,
            )
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text(errors='replace')}")
            if reachable("127.0.0.1", self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server not ready:\n{self.log_path.read_text(errors='replace')}")

    def admin(self) -> aioredis.Redis:
        return aioredis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            username=ADMIN,
            password=self.admin_password,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    server = AclRedis(tmp_path, make_certificates(tmp_path / "tls"))
    yield server
    server.stop()


@pytest.fixture
async def acl_settings(
    acl_redis: AclRedis, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    settings = private_settings(base_settings, tmp_path_factory)
    assert settings.redis_prefix.startswith("likeflow"), "the documented key pattern is ~likeflow*"
    settings = load_settings(
        settings.to_env(),
        redis_url=f"rediss://127.0.0.1:{acl_redis.port}/0",
        redis_username="likeflow",
        redis_password=acl_redis.password,
        redis_ssl_cafile=str(acl_redis.certs.ca),
    )
    await ensure_topics(settings)
    yield settings


async def acl_log(admin: aioredis.Redis) -> list[Any]:
    entries: list[Any] = await admin.acl_log()
    return entries


def feedback(event_id: str, creator: str, user: str, ts: int) -> Record:
    body = {"event_id": event_id, "prompt_id": f"pr-{event_id}", "creator_id": creator, "product_id": "acl-p",
            "user_id": user, "kind": "click", "ts": ts}  # fmt: skip
    return creator.encode(), orjson.dumps(body), []


async def test_the_documented_acl_user_runs_the_worker_and_the_operator_commands(
    acl_redis: AclRedis, acl_settings: Settings, tmp_path: Path
) -> None:
    settings = acl_settings
    admin = acl_redis.admin()
    job = redis_client(settings)
    try:
        # The user is confined: another prefix, and commands the job never runs, are refused.
        with pytest.raises(NoPermissionError):
            await job.set("elsewhere", b"1")
        with pytest.raises(NoPermissionError):
            await job.flushall()
        with pytest.raises(NoPermissionError):
            await job.keys("*")
        assert await acl_log(admin), "the refusals above are logged"
        await admin.acl_log_reset()

        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            creator = "acl-c"
            product = {"product_id": "acl-p", "title": "t", "category": "c", "price_cents": 990,
                       "certified": True, "stock": 9}  # fmt: skip
            mapping = {"video_id": "acl-v", "creator_id": creator, "ts": T - M, "products": [product]}
            await produce(settings, settings.topic(VIDEO_PRODUCTS), [(b"acl-v", orjson.dumps(mapping), [])])
            await wait_until(
                lambda: (worker.health() or {})["video_mappings"] >= 1, 30, "the mapping", worker
            )
            users = [f"acl-u{i}" for i in range(3)]
            likes: list[Record] = [
                (
                    u.encode(),
                    orjson.dumps(
                        {"event_id": f"acl-l{i}", "user_id": u, "video_id": "acl-v", "ts": T + 5 * M}
                    ),
                    [],
                )  # fmt: skip
                for i, u in enumerate(users)
            ]
            await produce(settings, settings.topic(LIKES), likes)
            pseudonym = pseudonymizer_for(settings)
            keys = [prompts_key(settings.redis_prefix, pseudonym(u)) for u in users]

            async def served() -> int:
                return int(await admin.exists(*keys))

            await wait_until_async(lambda: served(), 3, 30, "the prompts in Redis")
            # Clicks in the first window, then one 150 min later: the first window closes.
            await produce(
                settings,
                settings.topic(PROMPT_FEEDBACK),
                [feedback("acl-f1", creator, users[0], T + 10 * M),
                 feedback("acl-f2", creator, users[1], T + 150 * M)],
            )  # fmt: skip
            store = RedisQualityStore(job, prefix=settings.redis_prefix, metrics=Metrics())

            async def judged() -> int:
                # Windows written by the counters, the platform document by the judge (scripts).
                doc = await creator_quality(store, creator)
                platform = await store.read(platform_key(settings.redis_prefix))
                return int(doc is not None and bool(doc["windows"]) and platform is not None)

            try:
                await wait_until_async(judged, 1, 60, "the creator's windows and the platform served")
            except TimeoutError as exc:
                keys = sorted(str(k) for k in await admin.keys("*"))
                raise AssertionError(f"{exc}; ACL LOG: {await acl_log(admin)}; keys {keys}") from None
            # Erasure: the erasure script deletes the user's prompts and leaves its marker.
            await produce(
                settings,
                settings.topic(USER_ERASURE),
                [(users[2].encode(), orjson.dumps({"user_id": users[2], "ts": NOW}), [])],
            )
            await wait_until_async(lambda: served(), 2, 30, "the erased user's prompts gone", exact=True)
            assert worker.alive(), worker.tail()
        finally:
            worker.stop()

        for args in (
            ("creator", creator),
            ("rebuild-redis",),
            ("backfill", "--since", str(T), "--until", str(T + 3 * 60 * M), "--from-topic", "creator-events",
             "--swap", "--yes"),
        ):  # fmt: skip
            result = await run_cli(settings, *args)
            assert result.returncode == 0, (args, result.stdout.decode(), result.stderr.decode())
        assert await acl_log(admin) == [], "a command of the job was refused: see docs/security.md"
        assert "NOPERM" not in worker.log_path.read_text(errors="replace")
    finally:
        await job.aclose()
        await admin.aclose()


async def wait_until_async(
    read: Any, target: int, timeout_s: float, what: str, *, exact: bool = False
) -> None:
    """Poll the coroutine function `read` until it returns `target` (or more, unless `exact`)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await read()
        if value == target or (not exact and value > target):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what} (last: {value})")
        await asyncio.sleep(0.3)
