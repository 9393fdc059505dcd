"""InfluxDB for the local stack, built from source through the Go module proxy.

Two builds, one client API. Production runs 2.7, so 2.7.12 is the default (a first build
compiles its Rust libflux: about 13 CPU-minutes, 3 GB of caches). 1.8.10
(``CLUSTERTWIN_INFLUXDB_VERSION=1.8.10``) builds in under 3 minutes with plain Go (its Flux
predates libflux) and serves the same ``/api/v2`` write and Flux query endpoints that
``influxdb-client`` uses (token ``user:password``, bucket ``database/rp``). Project code must
work against both, so the tests can run on either.

The admin credentials are generated on first start and kept in a 0600 file under the cache:
nothing secret is written in code or shipped as a default.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from clustertwin.stack.base import FILES, Progress, Service, StackError, require_tool, run_logged
from clustertwin.stack.process import ManagedProcess
from clustertwin_base.settings import stack_run_root

INFLUXDB_1 = "1.8.10"
INFLUXDB_2 = "2.7.12"
DEFAULT_VERSION_ENV = "CLUSTERTWIN_INFLUXDB_VERSION"
ORG = "clustertwin"
DATABASE = "clustertwin"


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _stop_signal(major: int) -> int:
    """influxd 2.x flushes and closes on SIGINT but dies at once on SIGTERM; 1.x takes SIGTERM.

    A SIGTERM-killed 2.x replays its WAL on the next start, which makes restarts slow and is
    not the shutdown it gets in production.
    """
    return signal.SIGINT if major == 2 else signal.SIGTERM


class InfluxDB(Service):
    name = "influxdb"

    def __init__(self, version: str | None = None, port: int = 8086, root: Path | None = None):
        self.version = version or os.environ.get(DEFAULT_VERSION_ENV, INFLUXDB_2)
        if not (self.version.startswith("1.") or self.version.startswith("2.")):
            raise StackError(f"unsupported InfluxDB version {self.version!r} (1.8.x or 2.7.x)")
        super().__init__(port, root)
        # Each major keeps its own data and credentials: their storage formats differ.
        self.run_dir = stack_run_root(self.cache) / f"influxdb-{self.major}"
        self.process.run_dir = self.run_dir
        self.process.pid_file = self.run_dir / "influxdb.pid"
        self.process.log_file = self.run_dir / "influxdb.log"
        self.home = self.cache / f"influxdb-{self.version}"
        self.binary = self.home / "bin" / "influxd"
        self.credentials_file = self.run_dir / "credentials.json"
        # The other major's server of this same stack (same port), e.g. left by the old default.
        self.other_major = 1 if self.major == 2 else 2
        self.other_process = ManagedProcess(
            self.name, stack_run_root(self.cache) / f"influxdb-{self.other_major}"
        )

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- install -------------------------------------------------------------------------
    def installed(self) -> bool:
        return self.binary.exists()

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        if self.major == 1:
            go = require_tool("go", "golang-go", progress)
            go_env = {
                "GOMODCACHE": str(self.cache / "go" / "mod"),
                "GOCACHE": str(self.cache / "go" / "build"),
                "GOFLAGS": "-mod=mod",
                "GOTOOLCHAIN": "local",
            }
            progress(
                f"building influxd {self.version} from the Go module proxy "
                "(first time only, about 1-3 minutes)"
            )
            staging = self.home / "bin.partial"
            run_logged(
                [go, "install", f"github.com/influxdata/influxdb/cmd/influxd@v{self.version}"],
                self.home / "build.log",
                progress,
                f"building influxd {self.version}",
                env={**go_env, "GOBIN": str(staging), "CGO_ENABLED": "0"},
            )
            if (self.home / "bin").exists():
                shutil.rmtree(self.home / "bin")
            staging.rename(self.home / "bin")
        else:
            # No require_tool("go") here: Debian's golang-go is too old for 2.x, and the script
            # finds the toolchains where they are usually installed (/usr/local/go, ~/.cargo).
            script = FILES / "build-influxdb2.sh"
            if not script.exists():
                raise StackError(f"no build script for InfluxDB {self.version} ({script})")
            progress(
                f"building influxd {self.version} with its Rust libflux "
                "(first time only, many minutes on 2 cores)"
            )
            run_logged(
                ["bash", str(script), self.version, str(self.home)],
                self.home.parent / f"influxdb-{self.version}-build.log",
                progress,
                f"building influxd {self.version}",
                heartbeat=60.0,
            )
        if not self.installed():
            raise StackError(f"the build finished but {self.binary} is missing")

    # -- run -----------------------------------------------------------------------------
    def command(self) -> list[str]:
        if not self.installed():
            raise StackError(f"influxd {self.version} is not built; run `clustertwin stack up`")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.major == 1:
            config = self.run_dir / "influxdb.conf"
            config.write_text(self._config_v1())
            return [str(self.binary), "-config", str(config)]
        return [
            str(self.binary),
            f"--bolt-path={self.run_dir / 'influxd.bolt'}",
            f"--engine-path={self.run_dir / 'engine'}",
            f"--sqlite-path={self.run_dir / 'influxd.sqlite'}",
            f"--http-bind-address={self.host}:{self.port}",
            "--reporting-disabled",
            "--log-level=warn",
        ]

    def _config_v1(self) -> str:
        d = self.run_dir
        return f"""# written by `clustertwin stack up`; edits are overwritten
reporting-disabled = true
bind-address = "{self.host}:{self.port + 2}"
[meta]
  dir = "{d / "meta"}"
[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false
  index-version = "tsi1"
  max-values-per-tag = 0
  max-series-per-database = 0
[coordinator]
  query-timeout = "60s"
[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = true
  flux-enabled = true
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""

    def start(self, progress: Progress) -> bool:
        """Start this version, first stopping the other major if this stack still runs it.

        Both majors listen on the stack's one InfluxDB port, so switching versions (or the
        default changing under a running stack) would otherwise fail on a taken port.
        """
        if self.other_process.running():
            progress(
                f"stopping this stack's InfluxDB {self.other_major}.x: {self.version} replaces "
                f"it on port {self.port} (its data stays in {self.other_process.run_dir})"
            )
            self.other_process.stop(sig=_stop_signal(self.other_major))
        return super().start(progress)

    def stop(self) -> bool:
        """Stop cleanly (see :func:`_stop_signal`), the other major's server too if it runs."""
        stopped = self.process.stop(sig=_stop_signal(self.major))
        if self.other_process.running():
            stopped = self.other_process.stop(sig=_stop_signal(self.other_major)) or stopped
        return stopped

    def healthy(self) -> bool:
        try:
            status, body = _http("GET", f"{self.base_url}/health")
        except OSError:
            return False
        if status != 200:
            return False
        try:
            return bool(json.loads(body).get("status") == "pass")
        except ValueError:
            return False

    # -- credentials ---------------------------------------------------------------------
    def _load_credentials(self) -> dict[str, str] | None:
        try:
            data: dict[str, str] = json.loads(self.credentials_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def _save_credentials(self, creds: dict[str, str]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(creds, handle)

    def first_start(self, progress: Progress) -> None:
        if self.major == 1:
            self._setup_v1(progress)
        else:
            self._setup_v2(progress)

    def _setup_v1(self, progress: Progress) -> None:
        creds = self._load_credentials()
        if creds is None:
            creds = {"user": "clustertwin-admin", "password": secrets.token_urlsafe(24)}
            # Saved before use: if creating the user succeeds but we die, we still know it.
            self._save_credentials(creds)
        query = self._v1_query
        status, body = query(
            f"CREATE USER \"{creds['user']}\" WITH PASSWORD '{creds['password']}' "
            "WITH ALL PRIVILEGES",
            auth=False,
        )
        if status not in (200, 401, 403):
            raise StackError(f"creating the InfluxDB admin user failed ({status}): {body!r}")
        status, body = query(f'CREATE DATABASE "{DATABASE}"', auth=True, creds=creds)
        if status != 200 or b'"error"' in body:
            raise StackError(
                f"InfluxDB rejected our stored credentials ({status}: {body!r}); "
                f"remove {self.run_dir} to start from an empty database"
            )
        progress(f"influxdb {self.version}: database {DATABASE!r} ready")

    def _v1_query(
        self, q: str, auth: bool, creds: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth and creds:
            basic = base64.b64encode(f"{creds['user']}:{creds['password']}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        body = urllib.parse.urlencode({"q": q}).encode()
        return _http("POST", f"{self.base_url}/query", body, headers)

    def _setup_v2(self, progress: Progress) -> None:
        status, body = _http("GET", f"{self.base_url}/api/v2/setup")
        allowed = status == 200 and json.loads(body).get("allowed", False)
        creds = self._load_credentials()
        if not allowed:
            if creds is None:
                raise StackError(
                    f"InfluxDB at {self.base_url} is already set up but {self.credentials_file} "
                    f"is missing; remove {self.run_dir} to start from an empty database"
                )
            return
        creds = {
            "user": "clustertwin-admin",
            "password": secrets.token_urlsafe(24),
            "token": secrets.token_urlsafe(48),
        }
        self._save_credentials(creds)
        payload = {
            "username": creds["user"],
            "password": creds["password"],
            "token": creds["token"],
            "org": ORG,
            "bucket": DATABASE,
            "retentionPeriodSeconds": 0,
        }
        status, body = _http(
            "POST",
            f"{self.base_url}/api/v2/setup",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )
        if status != 201:
            raise StackError(f"InfluxDB set-up failed ({status}): {body!r}")
        progress(f"influxdb {self.version}: org {ORG!r}, bucket {DATABASE!r} ready")

    def settings(self) -> dict[str, str]:
        creds = self._load_credentials()
        if creds is None:
            return {}
        if self.major == 1:
            token = f"{creds['user']}:{creds['password']}"
            bucket = f"{DATABASE}/autogen"
        else:
            token = creds["token"]
            bucket = DATABASE
        return {
            "CLUSTERTWIN_INFLUX_URL": self.base_url,
            "CLUSTERTWIN_INFLUX_TOKEN": token,
            "CLUSTERTWIN_INFLUX_ORG": ORG,
            "CLUSTERTWIN_INFLUX_BUCKET": bucket,
            "CLUSTERTWIN_INFLUX_VERSION": self.version,
        }
