"""A real Kafka broker for the tests: :class:`KafkaBroker` runs ``scripts/kafka.sh`` (a
single-node KRaft broker on free 127.0.0.1 ports, a PLAINTEXT listener and a
SASL_PLAINTEXT one with user ``alice``) in a temporary directory, in its own process
group; :func:`module_broker` is the body of a module-scoped fixture. Without the broker's jars
(``scripts/install-kafka.sh`` puts them in ``$STREAMLOG_KAFKA_HOME`` or
~/.cache/streamlog-kafka/3.9.1) or Java the tests are skipped — and fail when CI is set."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI, _free_port
from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kafka.sh"
VERSION = "3.9.1"
USER, PASSWORD = "alice", "alice-secret"


def kafka_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamlog-kafka" / VERSION
    return Path(os.environ.get("STREAMLOG_KAFKA_HOME") or default)


def missing() -> str | None:
    """Why no broker can start here, or None."""
    if shutil.which("java") is None:
        return "java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)"
    if not (kafka_home() / "lib" / ".complete").exists():
        return f"the Kafka jars are not in {kafka_home()}/lib: run scripts/install-kafka.sh"
    return None


def require_kafka() -> None:
    """Skip the test (fail it in CI) when no broker can start."""
    why = missing()
    if why is not None:
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


class KafkaBroker:
    """A broker in ``directory``: :meth:`start` (formats once), :meth:`stop` (SIGTERM, then
    SIGKILL after a grace period), restartable with its data."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = _free_port()
        self.sasl_port = _free_port()

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topics: str, userinfo: str = "", query: str = "") -> str:
        port = self.sasl_port if userinfo else self.port
        return f"kafka://{userinfo}127.0.0.1:{port}/{topics}{'?' + query if query else ''}"

    def _script(self, command: str) -> None:
        env = dict(os.environ, KAFKA_PORT=str(self.port), KAFKA_SASL_PORT=str(self.sasl_port), KAFKA_SASL_USER=USER,
                   KAFKA_SASL_PASSWORD=PASSWORD, STREAMLOG_KAFKA_HOME=str(kafka_home()), KAFKA_GRACE="10")
        proc = subprocess.run(["bash", str(SCRIPT), command, str(self.dir)], env=env, capture_output=True, text=True,
                              timeout=90, check=False)
        assert proc.returncode == 0, f"scripts/kafka.sh {command} failed:\n{proc.stdout}{proc.stderr}"

    def start(self) -> None:
        self._script("start")
        wait_until(self.ready, timeout=30, interval=0.2, message="the Kafka broker to serve metadata")

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            return bool(AdminClient({"bootstrap.servers": self.servers}).list_topics(timeout=2).brokers)
        except Exception:  # not up yet: any client error means "poll again"
            return False

    def stop(self) -> None:
        self._script("stop")

    def create_topic(self, name: str, partitions: int = 1) -> str:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.servers})
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
        wait_until(lambda: len(admin.list_topics(name, timeout=5).topics[name].partitions) == partitions,
                   timeout=10, message=f"topic {name}")
        return name

    def produce(self, topic: str, values, keys=None, partition: int | None = None) -> int:
        """Produce ``values`` (bytes, or anything JSON) and wait until the broker has them."""
        import json

        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.servers, "enable.idempotence": True, "linger.ms": 2})
        failed = []
        for i, value in enumerate(values):
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            extra = {} if partition is None else {"partition": partition}
            producer.produce(topic, raw, None if keys is None else keys[i],
                             on_delivery=lambda err, msg: err and failed.append(err), **extra)
            producer.poll(0)
        assert producer.flush(30) == 0 and not failed, failed
        return len(values)

    def consume_all(self, topic: str, expected: int, timeout: float = 20.0) -> list:
        """``expected`` messages of ``topic`` from the beginning (a fresh group)."""
        import uuid

        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": self.servers, "group.id": f"check-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        got: list = []
        try:
            wait_until(lambda: got.extend(m for m in consumer.consume(1000, 0.2) if not m.error())
                       or len(got) >= expected, timeout=timeout, message=f"{expected} messages on {topic}")
        finally:
            consumer.close()
        return got


def module_broker(tmp_path_factory):
    """The body of a module-scoped fixture: a started broker, stopped after the module."""
    require_kafka()
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
