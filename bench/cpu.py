"""CPU time of processes (the worker, a peer, the broker, Redis) sampled from /proc, per like over a window."""

from __future__ import annotations

import bisect
import os
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Clock ticks per second of /proc/<pid>/stat's utime and stime.
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What a recorded stack PID's command line must contain to be the service (scripts/stack.sh
# records them; a PID can be reused, and a reused one is not measured).
STACK_MARKERS = {"broker": ("kafka", "kafka.pid"), "redis": ("redis-server", "redis.pid")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid`, all its threads, since it started, seconds.

    From /proc/<pid>/stat fields 14 (utime) and 15 (stime), in clock ticks (1/CLK_TCK s: 10 ms
    with the usual 100 Hz); children's times (cutime, cstime) are not included.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on: comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stack_pids(stack_dir: Path | None = None) -> dict[str, int]:
    """{"broker": pid, "redis": pid} of the local stack from its PID files (`.stack/*.pid` unless
    `stack_dir`), each only if that process is alive and its command line still names the
    service; only read, never signalled."""
    where = stack_dir or ROOT / ".stack"
    out: dict[str, int] = {}
    for name, (marker, pidfile) in STACK_MARKERS.items():
        try:
            pid = int((where / pidfile).read_text().strip())
            # redis-server rewrites its title (/proc/<pid>/cmdline) to "redis-server HOST:PORT".
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if marker in cmdline:
            out[name] = pid
    return out


class CpuSampler:
    """A thread that samples the CPU seconds of groups of processes (a name: one or more PIDs,
    summed) every `period_s` seconds, stamped with wall time (`time.time()`), so that the CPU
    spent between two moments can be read afterwards, linearly interpolated between the samples
    around each moment.

    A thread, not a task: it keeps sampling while a synchronous consumer (confluent-kafka) holds
    the event loop. Reading a few /proc files 5 times a second costs the sampling process ~0.1 ms
    of CPU a second, inside its own figure when it measures itself.
    """

    def __init__(self, groups: dict[str, list[int]], period_s: float = 0.2) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.period_s = period_s
        self.times: list[float] = []
        self.samples: list[dict[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take a last sample and stop sampling (idempotent)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.sample()

    def sample(self) -> None:
        now, cpu = time.time(), {}
        for pid in {pid for pids in self.groups.values() for pid in pids}:
            try:
                cpu[pid] = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):  # gone: its last sample stands
                cpu[pid] = self.samples[-1].get(pid, 0.0) if self.samples else 0.0
        self.times.append(now)
        self.samples.append(cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def at(self, moment: float) -> dict[str, float]:
        """CPU seconds of each group at wall time `moment`, interpolated between samples."""
        i = min(max(bisect.bisect_left(self.times, moment), 1), len(self.times) - 1)
        t0, t1 = self.times[i - 1], self.times[i]
        w = min(max((moment - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 1.0
        a, b = self.samples[i - 1], self.samples[i]
        return {
            name: sum(a.get(pid, 0.0) + w * (b.get(pid, 0.0) - a.get(pid, 0.0)) for pid in pids)
            for name, pids in self.groups.items()
        }

    def per_like_us(self, start: float, end: float, likes: float) -> dict[str, float]:
        """µs of CPU per like of each group between wall times `start` and `end`, over `likes`."""
        a, b = self.at(start), self.at(end)
        return {name: (b[name] - a[name]) / likes * 1e6 for name in b} if likes > 0 else {}

    def window(self, start: float, end: float, likes: float) -> dict[str, Any]:
        """A throughput window: `likes` handled between wall times `start` and `end`; its rate
        (likes/s) and each group's CPU µs per like in it."""
        seconds = max(end - start, 1e-9)
        return {
            "window_likes": likes,
            "window_s": seconds,
            "rate": likes / seconds,
            "cpu_us_per_like": self.per_like_us(start, end, likes),
        }


# The share of a backlog between which throughput and CPU per like are measured: the start-up
# (group join, first fetches) and the tail (the last batches' outputs) stay out of the window.
WINDOW = (0.05, 0.95)


def mark_time(samples: list[tuple[float, float]], target: float) -> float:
    """Wall time at which a growing count reached `target`, from (wall time, count) samples,
    interpolated linearly between the two samples around it; the last sample's time if never."""
    if samples and samples[0][1] >= target:
        return samples[0][0]
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if c1 >= target:
            return t0 + (t1 - t0) * ((target - c0) / (c1 - c0)) if c1 > c0 and target > c0 else t1
    return samples[-1][0]


def sampler_for(contender: list[int], name: str = "contender") -> CpuSampler:
    """A sampler of the contender's processes (summed, as `name`) and of the local stack's broker
    and Redis ("broker", "redis"; left out when their PID files name no live process)."""
    return CpuSampler({name: contender, **{svc: [pid] for svc, pid in stack_pids().items()}})


def markdown(throughput: dict[str, dict[str, Any]]) -> list[str]:
    """CPU µs per like by contender in its throughput window, with the ratio of the contender's own
    process to raw aiokafka's."""
    rows = {name: r["cpu_us_per_like"] for name, r in throughput.items() if r.get("cpu_us_per_like")}
    if not rows:
        return []
    base = rows.get("raw aiokafka", {}).get("contender")
    lines = [
        "| contender (same 5%..95% window as its likes/s) | own process µs/like | / raw aiokafka | "
        "broker µs/like | Redis µs/like |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, cpu in rows.items():
        ratio = f"{cpu['contender'] / base:.1f}" if base else "n/a"
        lines.append(
            f"| {name} | {cpu.get('contender', 0):.1f} | {ratio} | {cpu.get('broker', float('nan')):.1f} | "
            f"{cpu.get('redis', float('nan')):.1f} |"
        )
    return lines
