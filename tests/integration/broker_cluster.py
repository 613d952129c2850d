"""A private 3-node KRaft cluster on loopback (each node broker and controller), run by PID.

Every node has its own ports and data directory and the same cluster id; the quorum (3 voters)
survives one node down, and topics get replication factor 3 with `min.insync.replicas=2`, so
acks=all writes go on while one broker is killed. It never touches the shared stack on 9092.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import free_port
from tests.integration.own_broker import OwnBroker
from tests.integration.secure_stack import _cluster_id, _run

NODE_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


@dataclass
class ClusterNode(OwnBroker):
    """One node of the cluster; `kill()` and `start()` keep its data, as OwnBroker's do."""

    node_id: int = 1
    voters: str = ""
    cluster_id: str = ""

    def format(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        props = self.directory / "server.properties"
        props.write_text(
            NODE_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.voters,
                port=self.port,
                controller_port=self.controller_port,
                data=self.directory / "data",
            )
        )
        _run(*self._java(), "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props),
             cwd=self.directory)  # fmt: skip


@dataclass
class BrokerCluster:
    """Three nodes, formatted together and started together (a quorum needs a majority)."""

    directory: Path
    size: int = 3
    nodes: list[ClusterNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = range(1, self.size + 1)
        controller_ports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in ids)
        cluster_id = _cluster_id()
        self.nodes = [
            ClusterNode(
                self.directory / f"node-{i}",
                controller_port=controller_ports[i],
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
            )
            for i in ids
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    async def start(self) -> float:
        """Format (first time) and start every node at once; returns the slowest start (s)."""
        for node in self.nodes:
            if node.starts == 0 and not (node.directory / "data").exists():
                node.format()
        started = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in self.nodes))
        # Every broker registered with the controller (a node accepts connections a little
        # before the cluster metadata lists it).
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            for _ in range(300):
                if len((await admin.describe_cluster())["brokers"]) == self.size:
                    break
                await asyncio.sleep(0.2)
            else:
                raise TimeoutError(f"only some of the {self.size} brokers registered")
        finally:
            await admin.close()
        return time.monotonic() - started

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
