"""A second, secured Kafka broker and Redis for the transport-security tests, run by PID.

A throw-away CA signs a server certificate for 127.0.0.1 (openssl); the broker (KRaft, the jars
`scripts/stack.sh` fetched) listens only on SASL_SSL with SCRAM-SHA-512 (its controller listener
stays PLAINTEXT on loopback), and redis-server only on a TLS port with the default user off and
one ACL user. Ports, data and passwords are fresh for every run, so this never touches the
plain stack on 9092/6379.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import free_port, reachable

ROOT = Path(__file__).resolve().parents[2]
USER = "likeflow"


class SecureStackUnavailable(RuntimeError):
    """A tool the secured stack needs is missing; the message says how to get it."""


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1]} failed ({result.returncode}):\n{result.stderr[-2000:]}")


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path
    keystore: Path  # PKCS#12 with key and chain, for the broker
    keystore_password: str


def make_certificates(directory: Path) -> Certificates:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost, signed by it."""
    if shutil.which("openssl") is None:
        raise SecureStackUnavailable("openssl is missing: apt-get install -y openssl")
    directory.mkdir(parents=True, exist_ok=True)
    days = "2"
    _run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", days,
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=likeflow test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _run(
        "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", days, "-extfile", "server.ext", "-out", "server.crt",
        cwd=directory,
    )  # fmt: skip
    keystore_password = secrets.token_hex(16)
    _run(
        "openssl", "pkcs12", "-export", "-in", "server.crt", "-inkey", "server.key", "-certfile", "ca.crt",
        "-name", "kafka", "-out", "server.p12", "-passout", f"pass:{keystore_password}",
        cwd=directory,
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.crt",
        cert=directory / "server.crt",
        key=directory / "server.key",
        keystore=directory / "server.p12",
        keystore_password=keystore_password,
    )


@dataclass
class Service:
    """One server process we started; stopped by its PID only."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_ready(service: Service, port: int, ready: str | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.tail()}")
        logged = ready is None or ready in service.log_path.read_text(errors="replace")
        if logged and reachable("127.0.0.1", port):
            return
        time.sleep(0.3)
    service.stop()
    raise TimeoutError(f"{service.name} not ready after {timeout_s} s:\n{service.tail()}")


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form, not starting with "-"
    (kafka-storage would read it as an option: one id in 64 did)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_libs() -> Path:
    pom = (ROOT / "deploy/kafka/pom.xml").read_text()
    match = re.search(r"<kafka.version>(.*)</kafka.version>", pom)
    assert match is not None
    libs = ROOT / ".cache" / f"kafka-{match.group(1)}" / "libs"
    if not (libs / ".complete").exists():
        raise SecureStackUnavailable(f"no Kafka jars in {libs}: run `make stack-up` once (it fetches them)")
    if shutil.which("java") is None:
        raise SecureStackUnavailable("java is missing: apt-get install -y openjdk-17-jre-headless")
    return libs


# The single-node settings every test broker shares (appended to its listener settings).
SINGLE_NODE_PROPERTIES = """\
log.dirs={data}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""

BROKER_PROPERTIES = (
    """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="broker" password="{broker_password}";
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={keystore_password}
ssl.key.password={keystore_password}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2
"""
    + SINGLE_NODE_PROPERTIES
)


@dataclass
class SecureStack:
    certs: Certificates
    kafka_port: int
    redis_port: int
    kafka_password: str
    redis_password: str
    services: list[Service] = field(default_factory=list)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"rediss://127.0.0.1:{self.redis_port}/0"

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def start_kafka(stack: SecureStack, directory: Path, timeout_s: float = 120) -> None:
    libs = _kafka_libs()
    directory.mkdir(parents=True, exist_ok=True)
    controller_port = free_port()
    broker_password = secrets.token_hex(16)
    props = directory / "server.properties"
    props.write_text(
        BROKER_PROPERTIES.format(
            port=stack.kafka_port,
            controller_port=controller_port,
            broker_password=broker_password,
            keystore=stack.certs.keystore,
            keystore_password=stack.certs.keystore_password,
            ca=stack.certs.ca,
            data=directory / "data",
        )
    )
    props.chmod(0o600)
    log4j = f"-Dlog4j.configuration=file:{ROOT / 'deploy/kafka/log4j.properties'}"
    java = ["java", log4j, "-cp", f"{libs}/*"]
    # The SCRAM users live in the cluster metadata from the start: the job's and the broker's own.
    _run(
        *java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
        "--add-scram", f"SCRAM-SHA-512=[name={USER},password={stack.kafka_password}]",
        "--add-scram", f"SCRAM-SHA-512=[name=broker,password={broker_password}]",
        cwd=directory,
    )  # fmt: skip
    log_path = directory / "kafka.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            [*java[:1], "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            start_new_session=True,
        )
    service = Service("secured kafka", proc, log_path)
    stack.services.append(service)
    _wait_ready(service, stack.kafka_port, "Kafka Server started", timeout_s)


def start_redis(stack: SecureStack, directory: Path, timeout_s: float = 30) -> None:
    if shutil.which("redis-server") is None:
        raise SecureStackUnavailable("redis-server is missing: apt-get install -y redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    # In a config file, not on the command line: the password must not show in `ps`.
    conf.write_text(
        f"bind 127.0.0.1\nport 0\ntls-port {stack.redis_port}\n"
        f"tls-cert-file {stack.certs.cert}\ntls-key-file {stack.certs.key}\n"
        f"tls-ca-cert-file {stack.certs.ca}\ntls-auth-clients no\n"
        f'dir {directory}\nsave ""\nappendonly no\n'
        "user default off\n"
        f"user {USER} on >{stack.redis_password} ~likeflow* +@all\n"
    )
    conf.chmod(0o600)
    log_path = directory / "redis.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            ["redis-server", str(conf)],  # noqa: S607
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            start_new_session=True,
        )
    service = Service("secured redis", proc, log_path)
    stack.services.append(service)
    _wait_ready(service, stack.redis_port, None, timeout_s)


def start_secure_stack(directory: Path) -> SecureStack:
    """Certificates, then the secured broker and Redis on fresh loopback ports; the caller stops it."""
    stack = SecureStack(
        certs=make_certificates(directory / "tls"),
        kafka_port=free_port(),
        redis_port=free_port(),
        kafka_password=secrets.token_hex(16),
        redis_password=secrets.token_hex(16),
    )
    try:
        start_redis(stack, directory / "redis")
        start_kafka(stack, directory / "kafka")
    except BaseException:
        stack.stop()
        raise
    return stack
