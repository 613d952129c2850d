"""A private plaintext KRaft broker for broker-fault tests: own ports, own data directory, run by PID.

It is formatted once; every restart reuses the same data directory, as a real broker restart
does (kill -9 leaves an unclean log that the broker recovers on start). It never touches the
shared stack on 9092.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import free_port
from tests.integration.secure_stack import (
    ROOT,
    SINGLE_NODE_PROPERTIES,
    Service,
    _cluster_id,
    _kafka_libs,
    _run,
    _wait_ready,
)

PROPERTIES = (
    """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
"""
    + SINGLE_NODE_PROPERTIES
)


@dataclass
class OwnBroker:
    """One broker process at a time on fixed ports; `kill()` and `start()` keep its data."""

    directory: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    service: Service | None = None
    starts: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def format(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        props = self.directory / "server.properties"
        props.write_text(
            PROPERTIES.format(
                port=self.port, controller_port=self.controller_port, data=self.directory / "data"
            )
        )
        _run(
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(props),
            cwd=self.directory,
        )

    def start(self, timeout_s: float = 120) -> float:
        """Start the broker on its existing data; returns seconds until it accepts connections."""
        started = time.monotonic()
        log_path = self.directory / "kafka.log"
        with log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1} ===\n".encode())
            proc = subprocess.Popen(  # noqa: S603
                [*self._java(heap=True), "kafka.Kafka", str(self.directory / "server.properties")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )
        self.service = Service("own kafka", proc, log_path)
        self.starts += 1
        marker = "Kafka Server started"
        # The log file holds every start: wait for this start's marker (one more than before).
        deadline = time.monotonic() + timeout_s
        while log_path.read_text(errors="replace").count(marker) < self.starts:
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        _wait_ready(self.service, self.port, None, max(1.0, deadline - time.monotonic()))
        return time.monotonic() - started

    def kill(self) -> None:
        """kill -9: no clean shutdown, no flush; the data directory stays."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM, controlled shutdown)."""
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        if self.service is None or self.service.proc.poll() is not None:
            return
        self.service.proc.send_signal(sig)
        try:
            self.service.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.service.proc.kill()
            self.service.proc.wait()

    def _java(self, heap: bool = False) -> list[str]:
        libs = _kafka_libs()
        log4j = f"-Dlog4j.configuration=file:{ROOT / 'deploy/kafka/log4j.properties'}"
        memory = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC"] if heap else []
        return ["java", *memory, log4j, "-cp", f"{libs}/*"]
