"""A private Redis Cluster on loopback: 3 primaries and 3 replicas, own ports and dirs, run by PID."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import reachable

# A primary that stops answering is failed over after this long (ms): short for the tests.
NODE_TIMEOUT_MS = 2000


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below 32768."""
    rng = random.SystemRandom()
    for _ in range(200):
        # Both below the ephemeral range (32768+), where outgoing connections take local ports.
        port = rng.randint(20000, 22700)
        if not reachable("127.0.0.1", port) and not reachable("127.0.0.1", port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class RedisNode:
    directory: Path
    port: int = field(default_factory=cluster_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--appendonly", "no",
                # Replicas sync at once, and may take over however long their link was down.
                "--repl-diskless-sync-delay", "0",
                "--cluster-replica-validity-factor", "0",
                "--save", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not reachable("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis node {self.port} did not start: {self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 by PID."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def cli(self, *args: str) -> str:
        result = subprocess.run(  # noqa: S603
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout


@dataclass
class RedisCluster:
    """Six nodes: `redis-cli --cluster create` makes three primaries, each with one replica."""

    directory: Path
    nodes: list[RedisNode] = field(default_factory=list)

    def start(self) -> None:
        self.nodes = [RedisNode(self.directory / f"node-{i}") for i in range(6)]
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()  # never leave started nodes behind
            raise
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        created = subprocess.run(  # noqa: S603
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        self.wait_ok()
        # Every replica has its copy before the tests write (and kill primaries).
        deadline = time.monotonic() + 60
        while not all(
            "master_link_status:up" in n.cli("info", "replication")
            for n in self.nodes
            if "role:slave" in n.cli("info", "replication")
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("Redis Cluster replicas did not finish their first sync")
            time.sleep(0.2)

    def wait_ok(self, timeout_s: float = 60) -> float:
        """Seconds until every live node reports cluster_state:ok and no live node lists a
        failed primary that still holds slots (after a kill: its replica has taken over)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            dead = {f"127.0.0.1:{n.port}" for n in self.nodes if n not in live}
            if all("cluster_state:ok" in n.cli("cluster", "info") for n in live) and not any(
                _serves_slots(line, dead) for n in live for line in n.cli("cluster", "nodes").splitlines()
            ):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError("the Redis cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        """A live node's URL: the cluster client discovers the others from it."""
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        return f"redis://127.0.0.1:{live.port}/0"

    def primary_for(self, key: str) -> RedisNode:
        """The node that serves `key`'s slot now."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", key).strip())
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            for line in node.cli("cluster", "nodes").splitlines():
                parts = line.split()
                if "myself" in parts[2] and "master" in parts[2]:
                    for ranges in parts[8:]:
                        low, _, high = ranges.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return node
        raise LookupError(f"no live primary serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _serves_slots(nodes_line: str, addresses: set[str]) -> bool:
    """True when a CLUSTER NODES line is a primary at one of `addresses` that holds slots."""
    parts = nodes_line.split()
    return len(parts) > 8 and parts[1].split("@")[0] in addresses and "master" in parts[2]
