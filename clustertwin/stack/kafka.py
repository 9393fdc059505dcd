"""Apache Kafka 3.9.1 in KRaft mode (one combined broker + controller), from Maven Central jars.

3.9.1 rather than 4.x: Kafka 4 removed the old protocol versions that faust-streaming 0.15 with
aiokafka 0.14 still speaks. The jars are resolved by Maven from the pom the project ships, so
no tarball from outside the package registries is needed.

Security: by default the listener is PLAINTEXT on loopback (the dev stack). With
``CLUSTERTWIN_KAFKA_SECURITY=scram`` (or ``Kafka(security="scram")``) the client listener is
SASL_PLAINTEXT with SCRAM-SHA-512 only: two SCRAM users, one for the broker's own
inter-broker connections and one for ClusterTwin's clients, are written into the KRaft
metadata when the storage is formatted (``kafka-storage format --add-scram``). Their random
passwords live in a 0600 file under the run directory and reach clients through the stack's
settings file, never through code. The controller listener stays PLAINTEXT on loopback.

With ``CLUSTERTWIN_KAFKA_SECURITY=scram-tls`` the client listener is SASL_SSL (SCRAM over TLS)
and the broker authorizes every request (KRaft's ``StandardAuthorizer``):

* a CA and a broker certificate (SAN 127.0.0.1, localhost) are generated on first start with
  ``pki.LocalTls`` under ``<run>/kafka/tls`` (keys 0600) and handed to Kafka as inline PEM
  (``ssl.keystore.type=PEM``: no keytool, no keystore password);
* the controller listener is SSL with a required client certificate: only the broker itself
  (its certificate, mapped to the broker's user) reaches it, so no anonymous super user;
* one SCRAM user per role of ``clustertwin_base.kafka_acls`` (``clustertwin-connector``,
  ``clustertwin-worker``, ``clustertwin-alerting``) is added at format; the broker's user is
  the only super user; at every ``stack up`` the table's ACLs are applied (missing ones
  created) and the topics the roles use but may not create are made;
* ``stack.env`` carries the worker role (the CLI and the stream worker use it) and
  ``<run>/kafka/roles/<role>.env`` each role's complete client settings: a connector or the
  alerting worker of the local stack is run with its file's variables exported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import subprocess
import uuid
from pathlib import Path
from typing import Any

import clustertwin.stack.kafka_security as kafka_security
from clustertwin.stack.base import (
    FILES,
    Progress,
    Service,
    StackError,
    port_open,
    require_tool,
    run_logged,
)
from clustertwin.stack.pki import LocalTls

KAFKA_VERSION = "3.9.1"
SECURITY_ENV = "CLUSTERTWIN_KAFKA_SECURITY"
SECURITY_MODES = ("none", "scram", "scram-tls")
SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "clustertwin-broker"
CLIENT_USER = "clustertwin"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have been created with wider permissions
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class Kafka(Service):
    name = "kafka"
    startup_timeout = 120.0

    def __init__(
        self,
        port: int = 9092,
        controller_port: int = 9093,
        root: Path | None = None,
        security: str | None = None,
    ):
        super().__init__(port, root)
        self.controller_port = controller_port
        self.home = self.cache / f"kafka-{KAFKA_VERSION}"
        self.libs = self.home / "libs"
        self.security = self._resolve_security(security)
        # Each mode formats its own storage: a plaintext log has no SCRAM users, and a
        # secured one must not be opened without them (nor a TLS one's role users).
        suffix = {"none": "", "scram": "-scram", "scram-tls": "-scram-tls"}[self.security]
        self.data_dir = self.run_dir / f"data{suffix}"

    def _resolve_security(self, explicit: str | None) -> str:
        """Explicit argument, else CLUSTERTWIN_KAFKA_SECURITY, else the mode this run dir last
        started with (so `stack status`/`env`/`down` see a secured broker as secured)."""
        value = explicit or os.environ.get(SECURITY_ENV)
        if not value and self.mode_file.exists():
            value = self.mode_file.read_text().strip()
        value = (value or "none").strip().lower()
        if value in ("", "plaintext", "off"):
            value = "none"
        if value not in SECURITY_MODES:
            raise StackError(
                f"{SECURITY_ENV}={value!r} is not supported; use one of {', '.join(SECURITY_MODES)}"
            )
        return value

    # Derived from run_dir on use: tests (and tools) move a broker's run dir after creation.
    @property
    def mode_file(self) -> Path:
        return self.run_dir / "security"

    @property
    def credentials_file(self) -> Path:
        return self.run_dir / "credentials.json"

    @property
    def tls_dir(self) -> LocalTls:
        return LocalTls(self.run_dir / "tls")

    @property
    def roles_dir(self) -> Path:
        return self.run_dir / "roles"

    @property
    def scram(self) -> bool:
        return self.security in ("scram", "scram-tls")

    @property
    def tls(self) -> bool:
        return self.security == "scram-tls"

    @property
    def listener(self) -> str:
        if self.tls:
            return "SASL_SSL"
        return "SASL_PLAINTEXT" if self.scram else "PLAINTEXT"

    # -- credentials (secured mode) --------------------------------------------------------
    def _load_credentials(self) -> dict[str, str] | None:
        try:
            data: dict[str, str] = json.loads(self.credentials_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def _credentials(self) -> dict[str, str]:
        """The SCRAM users' passwords, generated once per run dir (random, never in code)."""
        creds = self._load_credentials()
        if creds is None:
            if (self.data_dir / "meta.properties").exists():
                raise StackError(
                    f"Kafka storage {self.data_dir} is formatted with SCRAM users but "
                    f"{self.credentials_file} is missing; remove {self.data_dir} to start again"
                )
            creds = {
                "broker_user": BROKER_USER,
                "broker_password": secrets.token_urlsafe(24),
                "user": CLIENT_USER,
                "password": secrets.token_urlsafe(24),
            }
            if self.tls:  # the role users replace the all-powerful client user
                user = kafka_security.ROLE_USERS[kafka_security.DEFAULT_ROLE]
                creds.update(user=user, password=secrets.token_urlsafe(24))
                for role, name in kafka_security.ROLE_USERS.items():
                    creds[f"{role}_user"] = name
                    creds[f"{role}_password"] = (
                        creds["password"]
                        if role == kafka_security.DEFAULT_ROLE
                        else secrets.token_urlsafe(24)
                    )
            _write_private(self.credentials_file, json.dumps(creds))
        return creds

    def client_config(self, admin: bool = False) -> dict[str, Any]:
        """kafka-python settings for the stack's own clients (health check; ``admin``: the
        broker's super user, which applies the ACLs of a TLS stack)."""
        if not self.scram:
            return {"security_protocol": "PLAINTEXT"}
        creds = self._credentials()
        # kafka-python warns of "credentials in the clear" for any SASL without TLS; SCRAM
        # sends only a salted proof, so on the health check's every poll it is only noise.
        logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)
        user = "broker_user" if admin else "user"
        config: dict[str, Any] = {
            "security_protocol": self.listener,
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": creds[user],
            "sasl_plain_password": creds[user.replace("user", "password")],
        }
        if self.tls:
            config.update(ssl_cafile=str(self.tls_dir.ca_file), ssl_check_hostname=True)
        return config

    def installed(self) -> bool:
        return (self.libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()

    def start(self, progress: Progress) -> bool:
        """As for every service, but a broker running in the other security mode is named at
        once (its health check with our mode's client would only time out)."""
        if self.process.running() and self.mode_file.exists():
            running = self.mode_file.read_text().strip()
            if running != self.security:
                raise StackError(
                    f"kafka is running with security {running!r}, not {self.security!r}: "
                    "stop it first (`clustertwin stack down kafka`)"
                )
        return super().start(progress)

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

    def _security_lines(self) -> list[str]:
        if not self.scram:
            return []
        creds = self._credentials()
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{creds["broker_user"]}" password="{creds["broker_password"]}";'
        )
        return [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.{self.listener.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            f"{jaas}",
            *self._tls_lines(),
        ]

    def _tls_lines(self) -> list[str]:
        """TLS on both listeners and the authorizer (scram-tls only)."""
        if not self.tls:
            return []
        tls = self.tls_dir
        tls.ensure(hosts=(self.host, "localhost"), leaves=(("broker", "both"),))
        pem = kafka_security.properties_value
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.certificate.chain={pem(tls.cert('broker').read_text())}",
            f"ssl.keystore.key={pem(tls.key('broker').read_text())}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={pem(tls.ca_file.read_text())}",
            "ssl.endpoint.identification.algorithm=https",
            "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
            # the controller listener takes only the broker's own certificate ...
            "listener.name.controller.ssl.client.auth=required",
            # ... whose subject is the broker's user, the one super user
            f"ssl.principal.mapping.rules=RULE:^CN=clustertwin-local-broker,.*$/{BROKER_USER}/",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{BROKER_USER}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def _write_config(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "server.properties"
        listener = self.listener
        controller = "SSL" if self.tls else "PLAINTEXT"
        listeners = (
            f"{listener}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
        )
        _write_private(
            config,
            "\n".join(
                [
                    "# written by `clustertwin stack up`; edits are overwritten",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
                    f"listeners={listeners}",
                    f"advertised.listeners={listener}://{self.host}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    f"inter.broker.listener.name={listener}",
                    f"listener.security.protocol.map=CONTROLLER:{controller},{listener}:{listener}",
                    *self._security_lines(),
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
            ),
        )
        self.mode_file.write_text(self.security + "\n")
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
        """Format KRaft storage once; the cluster id is random per machine, never shared.

        In secured mode the SCRAM users are added here, into the initial metadata. The
        arguments go through a 0600 Java @argfile so the passwords never appear in the
        process list.
        """
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        args = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)]
        args.append("--ignore-formatted")
        if self.scram:
            creds = self._credentials()
            users = {
                creds["broker_user"]: creds["broker_password"],
                creds["user"]: creds["password"],
            }
            for role in kafka_security.ROLE_USERS if self.tls else ():
                users[creds[f"{role}_user"]] = creds[f"{role}_password"]
            for user, password in users.items():
                args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        argfile = self.run_dir / "format.args"
        _write_private(argfile, "\n".join(f'"{a}"' for a in args) + "\n")
        try:
            result = subprocess.run(
                [
                    java,
                    "-cp",
                    self._classpath(),
                    f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
                    f"@{argfile}",
                ],
                capture_output=True,
                text=True,
            )
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

    def healthy(self) -> bool:
        # the Kafka client only when a health check runs: every CLI command imports the stack
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        if not port_open(self.host, self.port):
            return False  # not listening yet: spare the client's connection-refused noise
        if self.scram and self._load_credentials() is None:
            return False  # a secured broker we hold no password for is not ours to use
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"{self.host}:{self.port}",
                request_timeout_ms=3000,
                client_id="clustertwin-stack-health",
                **self.client_config(),
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

    def settings(self, role: str | None = None) -> dict[str, str]:
        """Client settings; in scram-tls mode those of ``role`` (default: the worker's)."""
        values = {
            "CLUSTERTWIN_KAFKA_BOOTSTRAP": f"{self.host}:{self.port}",
            "CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL": self.listener,
        }
        if self.tls:
            values["CLUSTERTWIN_KAFKA_SSL_CAFILE"] = str(self.tls_dir.ca_file)
        if self.scram:
            creds = self._load_credentials()
            if creds is None:
                return values  # not formatted yet: no password is invented here
            user = f"{role}_user" if self.tls and role else "user"
            values.update(
                {
                    "CLUSTERTWIN_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
                    "CLUSTERTWIN_KAFKA_SASL_USERNAME": creds[user],
                    "CLUSTERTWIN_KAFKA_SASL_PASSWORD": creds[user.replace("user", "password")],
                }
            )
        return values

    def role_file(self, role: str) -> Path:
        return self.roles_dir / f"{role}.env"

    def first_start(self, progress: Progress) -> None:
        """scram-tls: the topics the roles may not create, the ACL table, the role files."""
        if not self.tls:
            return
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(
            bootstrap_servers=f"{self.host}:{self.port}",
            request_timeout_ms=15000,
            client_id="clustertwin-stack-acls",
            **self.client_config(admin=True),
        )
        try:
            existing = set(admin.list_topics())
            wanted = [t for t in kafka_security.topics() if t not in existing]
            if wanted:
                # made meanwhile (a client's auto-create) is what we wanted
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(t, 4, 1) for t in wanted])
                progress(f"kafka: created topics {', '.join(wanted)}")
            created = kafka_security.apply_acls(admin)
            if created:
                progress(f"kafka: applied {created} ACLs of clustertwin_base.kafka_acls")
        finally:
            admin.close()
        for role in kafka_security.ROLE_USERS:
            lines = [f"{k}={v}" for k, v in sorted(self.settings(role).items())]
            _write_private(self.role_file(role), "\n".join(lines) + "\n")
