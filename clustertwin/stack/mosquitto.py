"""Eclipse Mosquitto from Debian's packages: the MQTT broker the MQTT connector is tested on.

Two listeners on loopback: plain MQTT (``port``) and MQTT over TLS (``tls_port``) that wants
a client certificate (``require_certificate``), as a plant's broker in an IEC 62443 conduit
would. The TLS listener's CA, server and client certificates are generated on first start
under the stack's run directory (``<run>/mosquitto/tls``, keys 0600), never in the repo;
``clustertwin stack env`` shows where they are.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from clustertwin.stack.base import Progress, Service, port_open, require_tool
from clustertwin.stack.pki import LocalTls


class Mosquitto(Service):
    name = "mosquitto"
    startup_timeout = 20.0

    def __init__(
        self, port: int = 1883, root: Path | None = None, tls_port: int | None = None
    ) -> None:
        super().__init__(port, root)
        self.tls_port = tls_port
        self.tls = LocalTls(self.run_dir / "tls")

    def installed(self) -> bool:
        return Path("/usr/sbin/mosquitto").exists()

    def install(self, progress: Progress) -> None:
        require_tool("mosquitto", "mosquitto", progress)

    def _tls_listener(self) -> str:
        if self.tls_port is None:
            return ""
        self.tls.ensure(hosts=(self.host, "localhost"))
        tls = self.tls
        return (
            f"listener {self.tls_port} {self.host}\n"
            f"cafile {tls.ca_file}\n"
            f"certfile {tls.cert('server')}\n"
            f"keyfile {tls.key('server')}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            "tls_version tlsv1.2\n"
        )

    def command(self) -> list[str]:
        binary = require_tool("mosquitto", "mosquitto", lambda _m: None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "mosquitto.conf"
        # Loopback only: anonymous access is acceptable for a broker no other host can reach.
        # Started as root, Mosquitto would drop to the `mosquitto` user, which cannot read the
        # 0600 keys of the TLS listener (nor the private cache): it runs as whoever we are.
        user = pwd.getpwuid(os.geteuid()).pw_name
        config.write_text(
            "# written by `clustertwin stack up`; edits are overwritten\n"
            f"user {user}\n"
            f"listener {self.port} {self.host}\n" + self._tls_listener() + "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "max_queued_messages 100000\n"
        )
        return [binary, "-c", str(config)]

    def healthy(self) -> bool:
        return port_open(self.host, self.port) and self.tls_up() is not False

    def tls_up(self) -> bool | None:
        """Whether the TLS listener answers; None when this broker has none."""
        return None if self.tls_port is None else port_open(self.host, self.tls_port)

    def start(self, progress: Progress) -> bool:
        # A broker started by an older version runs without the TLS listener. It is not
        # restarted behind the user's back (clients are connected to it); they are told.
        if self.process.running() and port_open(self.host, self.port) and not self.tls_up():
            if self.tls_port is not None:
                progress(
                    f"mosquitto runs without its TLS listener on {self.tls_port} (started by "
                    "an older version): `clustertwin stack down mosquitto` then `stack up`"
                )
            return False
        return super().start(progress)

    def settings(self) -> dict[str, str]:
        values = {"CLUSTERTWIN_MQTT_HOST": self.host, "CLUSTERTWIN_MQTT_PORT": str(self.port)}
        if self.tls_port is not None:
            values.update(
                {
                    "CLUSTERTWIN_MQTT_TLS_PORT": str(self.tls_port),
                    "CLUSTERTWIN_MQTT_TLS_CA_FILE": str(self.tls.ca_file),
                    "CLUSTERTWIN_MQTT_TLS_CERT_FILE": str(self.tls.cert("client")),
                    "CLUSTERTWIN_MQTT_TLS_KEY_FILE": str(self.tls.key("client")),
                }
            )
        return values
