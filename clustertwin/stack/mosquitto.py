"""Eclipse Mosquitto from Debian's packages: the MQTT broker the MQTT connector is tested on."""

from __future__ import annotations

from pathlib import Path

from clustertwin.stack.base import Progress, Service, port_open, require_tool


class Mosquitto(Service):
    name = "mosquitto"
    startup_timeout = 20.0

    def __init__(self, port: int = 1883, root: Path | None = None) -> None:
        super().__init__(port, root)

    def installed(self) -> bool:
        return Path("/usr/sbin/mosquitto").exists()

    def install(self, progress: Progress) -> None:
        require_tool("mosquitto", "mosquitto", progress)

    def command(self) -> list[str]:
        binary = require_tool("mosquitto", "mosquitto", lambda _m: None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "mosquitto.conf"
        # Loopback only: anonymous access is acceptable for a broker no other host can reach.
        config.write_text(
            "# written by `clustertwin stack up`; edits are overwritten\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "max_queued_messages 100000\n"
        )
        return [binary, "-c", str(config)]

    def healthy(self) -> bool:
        return port_open(self.host, self.port)

    def settings(self) -> dict[str, str]:
        return {"CLUSTERTWIN_MQTT_HOST": self.host, "CLUSTERTWIN_MQTT_PORT": str(self.port)}
