"""Apache Kafka 3.9.1 in KRaft mode (one combined broker + controller), from Maven Central jars.

3.9.1 rather than 4.x: Kafka 4 removed the old protocol versions that faust-streaming 0.15 with
aiokafka 0.14 still speaks. The jars are resolved by Maven from the pom the project ships, so
no tarball from outside the package registries is needed.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from clustertwin.stack.base import (
    FILES,
    Progress,
    Service,
    StackError,
    port_open,
    require_tool,
    run_logged,
)

KAFKA_VERSION = "3.9.1"


class Kafka(Service):
    name = "kafka"
    startup_timeout = 120.0

    def __init__(self, port: int = 9092, controller_port: int = 9093, root: Path | None = None):
        super().__init__(port, root)
        self.controller_port = controller_port
        self.home = self.cache / f"kafka-{KAFKA_VERSION}"
        self.libs = self.home / "libs"
        self.data_dir = self.run_dir / "data"

    def installed(self) -> bool:
        return (self.libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        require_tool("java", "default-jre-headless", progress)
        mvn = require_tool("mvn", "maven", progress)
        progress(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven (first time only)")
        staging = self.home / "libs.partial"
        run_logged(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(FILES / "kafka-pom.xml"),
                f"-Dkafka.version={KAFKA_VERSION}",
                f"-Dmaven.repo.local={self.cache / 'm2'}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            self.home / "maven.log",
            progress,
            "resolving Kafka jars",
        )
        staging.rename(self.libs)

    def _java(self) -> str:
        return require_tool("java", "default-jre-headless", lambda _m: None)

    def _write_config(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "server.properties"
        listeners = (
            f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
        )
        config.write_text(
            "\n".join(
                [
                    "# written by `clustertwin stack up`; edits are overwritten",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
                    f"listeners={listeners}",
                    f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "default.replication.factor=1",
                    "min.insync.replicas=1",
                    # a single-broker dev stack: no point waiting for more members to join
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "delete.topic.enable=true",
                    "log.retention.hours=168",
                    "log.segment.bytes=268435456",
                    "message.max.bytes=8388608",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "",
                ]
            )
        )
        log4j = self.run_dir / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\n"
            "log4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.state.change.logger=WARN\n"
            "log4j.logger.kafka.request.logger=WARN\n"
        )
        return config

    def _classpath(self) -> str:
        return str(self.libs / "*")

    def command(self) -> list[str]:
        if not self.installed():
            raise StackError("Kafka jars are not installed; run `clustertwin stack up kafka`")
        java = self._java()
        config = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, config)
        return [
            java,
            "-Xms512m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(config),
        ]

    def _format(self, java: str, config: Path) -> None:
        """Format KRaft storage once; the cluster id is random per machine, never shared."""
        import subprocess

        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                java,
                "-cp",
                self._classpath(),
                f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

    def healthy(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        if not port_open(self.host, self.port):
            return False  # not listening yet: spare the client's connection-refused noise
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"{self.host}:{self.port}",
                request_timeout_ms=3000,
                client_id="clustertwin-stack-health",
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def settings(self) -> dict[str, str]:
        return {"CLUSTERTWIN_KAFKA_BOOTSTRAP": f"{self.host}:{self.port}"}
