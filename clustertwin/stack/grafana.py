"""Grafana for the local stack, its backend built from the Go module (HTTP API, no frontend).

Grafana's release tags are not valid Go module versions (its go.mod has no /v10 suffix), so
a commit is pinned as a pseudo-version, and ``files/build-grafana.sh`` builds it inside the
downloaded module (wire code generation first, cgo for SQLite). The server starts empty;
``clustertwin dashboards push`` provisions the datasource, dashboards and alert rules through
the API with the service-account token made here on first start.

The admin password and the token are generated on first start and kept in a 0600 file under
the cache: nothing secret is written in code or shipped as a default.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from clustertwin.stack.base import FILES, Progress, Service, StackError, require_tool, run_logged

# github.com/grafana/grafana at 81d85ce8028d (2023-06-09, the 10.0.0 release branch point):
# the newest commit the module proxy serves that is pinned by a public go.mod. Its HTTP API is
# the one grafana-client and grafana-foundation-sdk 10.1 target.
GRAFANA_MODULE_VERSION = "v1.9.2-0.20230609164553-81d85ce8028d"
VERSION_ENV = "CLUSTERTWIN_GRAFANA_MODULE_VERSION"
ADMIN_USER = "clustertwin-admin"
SERVICE_ACCOUNT = "clustertwin"


class Grafana(Service):
    name = "grafana"
    startup_timeout = 120.0  # first start migrates a new SQLite database (~400 migrations)

    def __init__(self, port: int = 3000, root: Path | None = None, version: str | None = None):
        super().__init__(port, root)
        self.version = version or os.environ.get(VERSION_ENV, GRAFANA_MODULE_VERSION)
        self.home = self.cache / f"grafana-{self.version.rsplit('-', 1)[-1]}"
        self.binary = self.home / "bin" / "grafana"
        self.credentials_file = self.run_dir / "credentials.json"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- install -------------------------------------------------------------------------
    def installed(self) -> bool:
        return self.binary.exists() and (self.home / "conf" / "defaults.ini").exists()

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        require_tool("go", "golang-go", progress)
        require_tool("gcc", "gcc", progress)  # cgo: mattn/go-sqlite3
        progress(
            f"building Grafana {self.version} from the Go module proxy "
            "(first time only, about 5-10 minutes on 2 cores)"
        )
        run_logged(
            ["bash", str(FILES / "build-grafana.sh"), self.version, str(self.home)],
            self.cache / "grafana-build" / f"build-{self.version}.log",
            progress,
            f"building Grafana {self.version}",
            heartbeat=60.0,
        )
        if not self.installed():
            raise StackError(f"the Grafana build finished but {self.binary} is missing")

    # -- run -----------------------------------------------------------------------------
    def _credentials(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.credentials_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            creds = {"user": ADMIN_USER, "password": secrets.token_urlsafe(24)}
            self._save_credentials(creds)
            return creds

    def _save_credentials(self, creds: dict[str, str]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(creds, handle)

    def command(self) -> list[str]:
        if not self.installed():
            raise StackError("Grafana is not built; run `clustertwin stack up grafana`")
        for sub in ("data", "logs", "plugins", "provisioning"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        for kind in ("datasources", "dashboards", "alerting", "plugins", "notifiers"):
            (self.run_dir / "provisioning" / kind).mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "grafana.ini"
        config.write_text(self._config())
        return [
            str(self.binary),
            "server",
            f"--homepath={self.home}",
            f"--config={config}",
        ]

    def _config(self) -> str:
        d = self.run_dir
        return f"""; written by `clustertwin stack up`; edits are overwritten
[paths]
data = {d / "data"}
logs = {d / "logs"}
plugins = {d / "plugins"}
provisioning = {d / "provisioning"}

[server]
http_addr = {self.host}
http_port = {self.port}
root_url = {self.base_url}/

[database]
type = sqlite3
path = grafana.db
wal = true

[security]
admin_user = {ADMIN_USER}
disable_gravatar = true

[users]
allow_sign_up = false

[auth.anonymous]
enabled = false

[analytics]
reporting_enabled = false
check_for_updates = false
check_for_plugin_updates = false
feedback_links_enabled = false

[news]
news_feed_enabled = false

[unified_alerting]
enabled = true

[alerting]
enabled = false

[log]
mode = console
level = warn
"""

    def environment(self) -> dict[str, str]:
        # Read by Grafana only when it creates its database: the first start's admin password.
        return {"GF_SECURITY_ADMIN_PASSWORD": self._credentials()["password"]}

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            creds = self._credentials()
            basic = base64.b64encode(f"{creds['user']}:{creds['password']}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def healthy(self) -> bool:
        try:
            request = urllib.request.Request(self.base_url + "/api/health")
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(json.loads(response.read()).get("database") == "ok")
        except (OSError, ValueError):
            return False

    def first_start(self, progress: Progress) -> None:
        """Make the service account and token that `dashboards push` uses; idempotent."""
        creds = self._credentials()
        token = creds.get("token")
        if token:
            status, _ = self._request("GET", "/api/search?limit=1", token=token)
            if status == 200:
                return
        status, body = self._request("GET", f"/api/serviceaccounts/search?query={SERVICE_ACCOUNT}")
        if status == 401:
            raise StackError(
                f"Grafana rejected the admin credentials in {self.credentials_file}; remove "
                f"{self.run_dir} to start Grafana from an empty database"
            )
        if status != 200:
            raise StackError(f"listing Grafana service accounts failed ({status}): {body}")
        matches = [a for a in body.get("serviceAccounts", []) if a.get("name") == SERVICE_ACCOUNT]
        if matches:
            account_id = matches[0]["id"]
        else:
            status, body = self._request(
                "POST", "/api/serviceaccounts", {"name": SERVICE_ACCOUNT, "role": "Admin"}
            )
            if status not in (200, 201):
                raise StackError(f"creating the Grafana service account failed ({status}): {body}")
            account_id = body["id"]
        status, body = self._request(
            "POST",
            f"/api/serviceaccounts/{account_id}/tokens",
            {"name": f"clustertwin-{secrets.token_hex(4)}"},
        )
        if status not in (200, 201):
            raise StackError(f"creating a Grafana service-account token failed ({status}): {body}")
        creds["token"] = body["key"]
        self._save_credentials(creds)
        progress(f"grafana: service account {SERVICE_ACCOUNT!r} and its token ready")

    def settings(self) -> dict[str, str]:
        try:
            creds: dict[str, str] = json.loads(self.credentials_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not creds.get("token"):
            return {}
        return {
            "CLUSTERTWIN_GRAFANA_URL": self.base_url,
            "CLUSTERTWIN_GRAFANA_TOKEN": creds["token"],
        }
