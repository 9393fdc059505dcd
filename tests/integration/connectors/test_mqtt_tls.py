"""MQTT over TLS with client certificates, against a Mosquitto started by the stack's own code.

The broker is a private one (the stack's ``Mosquitto`` service on free ports under the test's
tmp dir): its TLS listener, ``require_certificate`` and the CA generated on first start are
what ``clustertwin stack up`` runs, without touching the shared stack.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from clustertwin.stack.mosquitto import Mosquitto
from connectors.mqtt import MqttConfig, MqttConnector
from connectors.sdk.base import Sample
from connectors.sdk.conformance import ConformanceKit, free_port
from connectors.sdk.tls import TlsRefused
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms

from .conftest import MINI, PkiFiles
from .test_mqtt import Feeder

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), root=tmp_path, tls_port=free_port())
    broker.start(lambda _m: None)
    try:
        yield broker
    finally:
        broker.stop()


def config(broker: Mosquitto, **tls: object) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "connector": "mqtt",
            "name": "it-mqtt-tls",
            "cluster": str(MINI),
            "host": broker.host,
            "port": broker.tls_port,
            "client_id": "ct-mqtt-tls",
            "clean_session": True,
            "topics": [{"topic": "tls/steelworks/+/energy", "meter": "{2}"}],
            "tls": {k: v if isinstance(v, bool) else str(v) for k, v in tls.items()},
        }
    )


def publish_over_tls(broker: Mosquitto, values: list[float], t0: int) -> None:
    """A site gateway with the stack's client certificate, QoS 1, waiting for each PUBACK."""
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-tls")
    gw.tls_set(
        ca_certs=str(broker.tls.ca_file),
        certfile=str(broker.tls.cert("client")),
        keyfile=str(broker.tls.key("client")),
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    gw.connect(broker.host, broker.tls_port)
    gw.loop_start()
    try:
        for i, v in enumerate(values):
            body = orjson.dumps({"value": v, "ts": t0 + i * 1000})
            gw.publish("tls/steelworks/bf-gas/energy", body, qos=1).wait_for_publish(5)
    finally:
        gw.disconnect()
        gw.loop_stop()


def test_mqtt_over_tls_with_a_client_certificate(
    tls_broker: Mosquitto, mini_index: MeterIndex
) -> None:
    tls = tls_broker.tls
    cfg = config(
        tls_broker, ca_file=tls.ca_file, cert_file=tls.cert("client"), key_file=tls.key("client")
    )
    values = [float(i) * 1.5 for i in range(50)]
    t0 = now_ms() - 60_000

    async def run() -> list[Sample]:
        connector = MqttConnector(cfg, mini_index)
        await connector.open()
        try:
            await asyncio.sleep(0.3)  # subscribed once CONNACK came; let SUBACK land too
            await asyncio.to_thread(publish_over_tls, tls_broker, values, t0)
            got: list[Sample] = []
            stream = connector.stream()
            while len(got) < len(values):
                batch = await asyncio.wait_for(anext(stream), 10)
                got += [s for s in batch if isinstance(s, Sample)]
            return got
        finally:
            await connector.close()

    got = asyncio.run(run())
    assert [(s.meter, s.ts, s.value) for s in got] == [
        ("bf-gas", t0 + i * 1000, v) for i, v in enumerate(values)
    ]


def test_mqtt_tls_meets_the_contract(
    stack: StackHandle, conformance: ConformanceKit, tls_broker: Mosquitto, mini_index: MeterIndex
) -> None:
    """Over TLS with client certificates, end to end into Kafka, through an injected source
    failure: the reconnect handshakes again and the persistent session loses nothing."""
    tls = tls_broker.tls
    cfg = config(
        tls_broker, ca_file=tls.ca_file, cert_file=tls.cert("client"), key_file=tls.key("client")
    )
    cfg = cfg.model_copy(
        update={
            "clean_session": False,
            "topics": [cfg.topics[0].model_copy(update={"topic": "tlsk/steelworks/+/energy"})],
        }
    )
    feeder = Feeder(tls_broker.host, tls_broker.tls_port or 0, "tlsk", n=440, rate=300)
    feeder.client.tls_set(
        ca_certs=str(tls.ca_file), certfile=str(tls.cert("client")), keyfile=str(tls.key("client"))
    )

    async def run():  # type: ignore[no-untyped-def]
        async def start_feeding() -> None:
            await asyncio.sleep(1.0)
            feeder.start()

        asyncio.get_running_loop().create_task(start_feeding())
        return await conformance.check_contract(
            lambda c: MqttConnector(c, mini_index),
            cfg,
            mini_index,
            min_readings=400,
            redelivers=True,
        )

    try:
        report = asyncio.run(run())
    finally:
        feeder.close()
    values = sorted(set(r["value"] for r in report.readings))
    assert len(values) >= 390
    assert values == [1.0 + i for i in range(int(values[-1])) if i != 7]


async def _refusal(cfg: MqttConfig, index: MeterIndex) -> str:
    connector = MqttConnector(cfg, index)
    try:
        with pytest.raises(TlsRefused) as refused:
            await asyncio.wait_for(connector.open(), 15)
        return str(refused.value)
    finally:
        await connector.close()


def test_mqtt_tls_refusals_say_why(
    tls_broker: Mosquitto, mini_index: MeterIndex, pki: PkiFiles
) -> None:
    """Each refusal is a TlsRefused (a misconfiguration, not an outage) naming the cause and
    the setting that decides it."""
    tls = tls_broker.tls
    # no client certificate: the listener requires one
    no_cert = asyncio.run(_refusal(config(tls_broker, ca_file=tls.ca_file), mini_index))
    assert no_cert.startswith("tls: the server requires a client certificate"), no_cert
    assert "tls.cert_file" in no_cert
    # a certificate of another CA: refused by the broker as well
    rogue_cert, rogue_key = pki.client("rogue", ca=pki.other_ca)
    rogue = config(tls_broker, ca_file=tls.ca_file, cert_file=rogue_cert, key_file=rogue_key)
    message = asyncio.run(_refusal(rogue, mini_index))
    assert message.startswith("tls: the server refused our client certificate"), message
    assert str(rogue_cert) in message
    # a CA that did not issue the broker's certificate: we refuse the broker
    untrusted = config(
        tls_broker,
        ca_file=pki.other_ca_file,
        cert_file=tls.cert("client"),
        key_file=tls.key("client"),
    )
    message = asyncio.run(_refusal(untrusted, mini_index))
    assert message.startswith(
        f"tls: the server's certificate is not trusted by tls.ca_file ({pki.other_ca_file})"
    ), message
    assert "certificate verify failed" in message and "MQTT broker" in message


def test_stack_tls_material_is_made_once_and_private(tls_broker: Mosquitto) -> None:
    tls = tls_broker.tls
    before = {p.name: p.read_bytes() for p in tls.directory.iterdir()}
    assert {"ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"} <= set(
        before
    )
    assert all(p.stat().st_mode & 0o077 == 0 for p in tls.directory.glob("*.key"))
    assert tls.ensure() is False  # a second `stack up` keeps the running broker's files
    assert {p.name: p.read_bytes() for p in tls.directory.iterdir()} == before
    settings = tls_broker.settings()
    assert settings["CLUSTERTWIN_MQTT_TLS_PORT"] == str(tls_broker.tls_port)
    assert settings["CLUSTERTWIN_MQTT_TLS_CA_FILE"] == str(tls.ca_file)


def test_hostname_verification_is_on_by_default(tmp_path: Path, mini_index: MeterIndex) -> None:
    broker = Mosquitto(port=free_port(), root=tmp_path, tls_port=free_port())
    # the broker's certificate names another host than the one connected to (127.0.0.1)
    broker.tls.ensure(hosts=("mqtt.plant.example",))
    broker.start(lambda _m: None)
    try:
        tls = broker.tls
        files = {"ca_file": tls.ca_file, "cert_file": tls.cert("client")}
        files["key_file"] = tls.key("client")
        message = asyncio.run(_refusal(config(broker, **files), mini_index))
        assert message.startswith("tls: the server's certificate does not name the host"), message
        assert "tls.verify_hostname" in message and "mismatch" in message

        async def connect_without_hostname_check() -> None:
            connector = MqttConnector(config(broker, **files, verify_hostname=False), mini_index)
            try:
                await asyncio.wait_for(connector.open(), 15)
            finally:
                await connector.close()

        asyncio.run(connect_without_hostname_check())  # same CA, same client cert: accepted
    finally:
        broker.stop()
