"""TLS refusals are a misconfiguration, not an outage: the SDK's one rule, on real servers.

Before the source ever worked in a run, a certificate refusal ends it (``connector run``
exits 2, naming the cause and the ``tls.*`` setting); once it has worked, the refusal is
retried at the longest backoff with the reason logged at every attempt (a rotation may be
under way). Servers: the local stack's Mosquitto TLS listener (127.0.0.1:8883,
``require_certificate``), a private Mosquitto whose certificates are rotated mid-run, and
aiohttp HTTPS gateways for ``http_poll``; every CA but the stack's is made at run time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from clustertwin.stack.mosquitto import Mosquitto
from clustertwin.stack.pki import Authority
from connectors.http_poll import HttpPollConfig, HttpPollConnector
from connectors.mqtt import MqttConfig, MqttConnector
from connectors.sdk.backoff import Backoff
from connectors.sdk.base import Connector
from connectors.sdk.conformance import free_port
from connectors.sdk.metrics import ConnectorMetrics
from connectors.sdk.runner import ConnectorRunner, make_publisher
from connectors.sdk.tls import TlsRefused
from tests.conftest import StackHandle
from twin.readings import MeterIndex

from .conftest import MINI, PkiFiles

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clustertwin")
UNTRUSTED = "tls: the server's certificate is not trusted by tls.ca_file"


def test_connector_run_exits_2_on_an_untrusted_broker(
    stack: StackHandle, pki: PkiFiles, tmp_path: Path, unique_name: str
) -> None:
    """The shared stack's TLS listener, our client certificate, a CA made now that did not
    issue the broker's certificate: the first connection is refused, the run ends, exit 2."""
    s = stack.settings
    assert s.mqtt_tls_cert_file and s.mqtt_tls_key_file, "stack up makes the TLS material"
    cfg = {
        "connector": "mqtt",
        "name": unique_name,
        "cluster": str(MINI),
        "host": s.mqtt_host,
        "port": s.mqtt_tls_port,
        "client_id": unique_name[:60],
        "clean_session": True,
        "topics": [{"topic": f"{unique_name}/+", "meter": "mill-power"}],
        "tls": {
            "ca_file": str(pki.other_ca_file),
            "cert_file": str(s.mqtt_tls_cert_file),
            "key_file": str(s.mqtt_tls_key_file),
        },
        "kafka": {"topic": unique_name, "bootstrap": stack.kafka_bootstrap},
        "buffer": {"dir": str(tmp_path / "buffer")},
    }
    path = tmp_path / "mqtt-untrusted.yaml"
    path.write_text(yaml.safe_dump(cfg))
    started = time.monotonic()
    ran = subprocess.run(
        [CLI, "connector", "run", str(path), "--duration", "60"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    took = time.monotonic() - started
    assert ran.returncode == 2, (ran.returncode, ran.stderr[-2000:])
    assert f"clustertwin connector: {UNTRUSTED} ({pki.other_ca_file})" in ran.stderr
    assert took < 30  # it stopped on the refusal, not at --duration
    metrics = orjson.loads(ran.stdout.strip().splitlines()[-1])
    assert metrics["last_error"].startswith(f"source: {UNTRUSTED}")
    assert metrics["source_reconnects"] == 1  # one attempt: nothing was retried


# -- once connected: a rotation to an untrusted certificate is retried, loudly -----------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), root=tmp_path / "broker", tls_port=free_port())
    broker.start(lambda _m: None)
    try:
        yield broker
    finally:
        broker.stop()


def _runner(
    connector: Connector[Any], stack: StackHandle, maximum: float
) -> tuple[ConnectorRunner, ConnectorMetrics]:
    metrics = ConnectorMetrics()
    publisher = make_publisher(connector.config, metrics, bootstrap=stack.kafka_bootstrap)
    backoff = Backoff(initial=0.05, maximum=maximum)
    return ConnectorRunner(connector, publisher, metrics=metrics, backoff=backoff), metrics


async def _refusals_logged(
    caplog: pytest.LogCaptureFixture, task: asyncio.Task[Any], n: int, timeout: float = 40
) -> list[logging.LogRecord]:
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in caplog.records if "retrying in" in r.getMessage()]
        if len(got) >= n:
            return got
        assert not task.done(), "the run ended on a refusal after it had worked"
        assert time.monotonic() < deadline, f"only {len(got)} refusals logged"
        await asyncio.sleep(0.05)


def test_a_certificate_rotation_after_connecting_is_retried_at_the_longest_backoff(
    stack: StackHandle,
    tls_broker: Mosquitto,
    mini_index: MeterIndex,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unique_name: str,
) -> None:
    tls = tls_broker.tls
    keep = tmp_path / "connector-tls"  # the connector's files, as provisioned before
    keep.mkdir()
    for f in (tls.ca_file, tls.cert("client"), tls.key("client")):
        shutil.copy2(f, keep / f.name)
    cfg = MqttConfig.model_validate(
        {
            "connector": "mqtt",
            "name": unique_name,
            "cluster": str(MINI),
            "host": tls_broker.host,
            "port": tls_broker.tls_port,
            "client_id": unique_name[:60],
            "topics": [{"topic": "rot/+", "meter": "mill-power"}],
            "tls": {
                "ca_file": str(keep / "ca.pem"),
                "cert_file": str(keep / "client.pem"),
                "key_file": str(keep / "client.key"),
            },
            "kafka": {"topic": unique_name},
            "buffer": {"dir": str(tmp_path / "buffer")},
        }
    )
    maximum = 0.5
    runner, metrics = _runner(MqttConnector(cfg, mini_index), stack, maximum)
    caplog.set_level(logging.ERROR, logger="connectors.sdk.runner")

    async def run() -> list[logging.LogRecord]:
        task = asyncio.create_task(runner.run(drain_timeout=10))
        for _ in range(200):  # connected: the source has worked in this run
            if runner.source_worked:
                break
            await asyncio.sleep(0.05)
        assert runner.source_worked and metrics.source_reconnects == 0
        tls_broker.stop()
        tls.ca_file.unlink()  # the site rotates to a new CA; the connector was not told
        tls.ca_key.unlink()
        tls_broker.start(lambda _m: None)
        try:
            return await _refusals_logged(caplog, task, 4)
        finally:
            runner.stop()
            await task  # ends normally: no SourceMisconfigured raised after it had worked

    records = asyncio.run(run())
    for r in records:
        assert UNTRUSTED in r.getMessage() and "certificate rotation" in r.getMessage()
    gaps = [b.created - a.created for a, b in itertools.pairwise(records)]
    assert min(gaps) >= maximum * 0.9, gaps  # the longest backoff, every time
    assert metrics.last_error is not None and metrics.last_error.startswith(f"source: {UNTRUSTED}")


# -- http_poll against HTTPS gateways -------------------------------------------------------


@asynccontextmanager
async def https_gateway(ctx: ssl.SSLContext, port: int | None = None) -> AsyncIterator[str]:
    async def answer(_r: web.Request) -> web.Response:
        return web.json_response([{"id": "m1", "v": 1.5}])

    app = web.Application()
    app.router.add_get("/api", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx, reuse_address=True).start()
    try:
        yield f"https://127.0.0.1:{port}/api"
    finally:
        await runner.cleanup()


def _server_ctx(
    ca: Authority, directory: Path, days: int = 30, client_ca: Path | None = None
) -> ssl.SSLContext:
    cred = ca.issue("gateway", hosts=("127.0.0.1",), usage="server", days=days)
    cert, key = cred.write(directory, f"gw-{id(cred)}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@contextmanager
def blocking_https_gateway(ctx: ssl.SSLContext, tls12: bool = True) -> Iterator[str]:
    """A gateway on blocking sockets (http.server): OpenSSL writes its refusal alert to the
    socket before closing it, as nginx or a gateway's firmware does. asyncio's TLS server
    (aiohttp's) aborts without sending it, and over TLS 1.3 a client learns of the refusal
    only after its side of the handshake is done: this one is held to TLS 1.2, where the
    refusal is part of the handshake and the client can name it (with ``tls12`` false, the
    connector's probe must find it after the reset)."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = orjson.dumps([{"id": "m1", "v": 1.5}])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: Any) -> None:
            pass

    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def _poll_config(url: str, tmp_path: Path, **tls: Path) -> HttpPollConfig:
    return HttpPollConfig.model_validate(
        {
            "connector": "http_poll",
            "name": "it-tls-refusal",
            "cluster": str(MINI),
            "url": url,
            "timeout_s": 3,
            "poll_interval_s": 0.05,
            "select": {"id": "id", "value": "v"},
            "meters": {"m1": "mill-power"},
            "tls": {k: str(v) for k, v in tls.items()},
            "buffer": {"dir": str(tmp_path / f"buffer-{len(list(tmp_path.iterdir()))}")},
        }
    )


async def _first_run(cfg: HttpPollConfig, stack: StackHandle, index: MeterIndex) -> str:
    """Run the connector; it must end by itself with TlsRefused, last_error saying so."""
    runner, metrics = _runner(HttpPollConnector(cfg, index), stack, 0.5)
    with pytest.raises(TlsRefused) as refused:
        await asyncio.wait_for(runner.run(drain_timeout=10), 30)
    assert metrics.last_error == f"source: {refused.value}"
    assert metrics.source_reconnects == 1 and metrics.readings_accepted == 0
    return str(refused.value)


def test_http_poll_first_connection_refusals_end_the_run_naming_the_cause(
    stack: StackHandle, pki: PkiFiles, mini_index: MeterIndex, tmp_path: Path
) -> None:
    good = _server_ctx(pki.ca, pki.directory)
    expired = _server_ctx(pki.ca, pki.directory, days=0)  # not after: the moment of issue
    mutual = _server_ctx(pki.ca, pki.directory, client_ca=pki.ca_file)
    rogue_cert, rogue_key = pki.client("rogue", ca=pki.other_ca)
    time.sleep(1.5)  # certificate times are whole seconds: now past the expired one's end

    async def run() -> dict[str, str]:
        out: dict[str, str] = {}
        async with https_gateway(good) as url:
            cfg = _poll_config(url, tmp_path, ca_file=pki.other_ca_file)
            out["untrusted"] = await _first_run(cfg, stack, mini_index)
        async with https_gateway(expired) as url:
            cfg = _poll_config(url, tmp_path, ca_file=pki.ca_file)
            out["expired"] = await _first_run(cfg, stack, mini_index)
        with blocking_https_gateway(mutual) as url:
            cfg = _poll_config(url, tmp_path, ca_file=pki.ca_file)
            out["no client cert"] = await _first_run(cfg, stack, mini_index)
            cfg = _poll_config(
                url, tmp_path, ca_file=pki.ca_file, cert_file=rogue_cert, key_file=rogue_key
            )
            out["rogue client cert"] = await _first_run(cfg, stack, mini_index)
        mutual13 = _server_ctx(pki.ca, pki.directory, client_ca=pki.ca_file)
        with blocking_https_gateway(mutual13, tls12=False) as url:
            cfg = _poll_config(
                url, tmp_path, ca_file=pki.ca_file, cert_file=rogue_cert, key_file=rogue_key
            )
            out["rogue client cert, TLS 1.3"] = await _first_run(cfg, stack, mini_index)
        return out

    got = asyncio.run(run())
    assert got["untrusted"].startswith(f"{UNTRUSTED} ({pki.other_ca_file})"), got
    assert "/api" in got["untrusted"]
    assert got["expired"].startswith("tls: the server's certificate has expired"), got
    assert got["no client cert"].startswith(
        "tls: the server requires a client certificate and none is configured (tls.cert_file"
    ), got
    for case in ("rogue client cert", "rogue client cert, TLS 1.3"):
        assert got[case].startswith(
            f"tls: the server refused our client certificate (tls.cert_file {rogue_cert}"
        ), got
