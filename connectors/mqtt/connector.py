"""MQTT: subscribe to a broker and map topics and payloads to meters.

paho-mqtt runs its network loop in its own thread; messages cross into the event loop through
a queue. The session is persistent (clean_session false, QoS 1, fixed client id), so the
broker keeps what is published while the connector reconnects: at-least-once end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustertwin_base.settings import Settings
from connectors.mqtt.sparkplug import Snapshot, SparkplugConfig, SparkplugMetric, SparkplugSession
from connectors.sdk.base import (
    BadSample,
    Connector,
    ConnectorConfig,
    Item,
    MeterMapping,
    Sample,
    SourceMisconfigured,
    SourceUnavailable,
    drain_queue,
)
from connectors.sdk.metering import CounterSpec, Interval, Metering, Refusal, StateStore
from connectors.sdk.tls import ClientTls, probe_tls, tls_refusal
from twin.readings import MeterIndex

_LEVEL = re.compile(r"\{(\d+)\}")
_TLS_REFUSED_HINT = " - does the broker accept our client certificate (tls.cert_file)?"
#: CONNACK return codes (MQTT 3.1.1, 3.2.2.3) only the config can fix
_CONNACK_CONFIG = {
    2: "the broker rejects our client id (client_id)",
    4: "the broker refused our credentials (username, password_env / password_file)",
    5: "the broker does not authorise us (username, or its ACL)",
}


class TopicMap(BaseModel):
    """One subscription. ``meter`` may use topic levels: ``{2}`` is the third level."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="MQTT topic filter, + and # allowed")
    meter: str = Field(description="meter id, or a template like 'sw-{2}'")
    payload: Literal["number", "json"] = "json"
    value_field: str = "value"
    ts_field: str | None = Field(default="ts", description="None: time of arrival")
    ts_format: Literal["ms", "s", "iso"] = "ms"
    unit_field: str | None = None
    unit: str | None = Field(default=None, description="fixed unit; default: the meter's")
    quality_field: str | None = None

    def meter_for(self, topic: str) -> str:
        levels = topic.split("/")
        return _LEVEL.sub(lambda m: levels[int(m.group(1))], self.meter)


class MqttConfig(ConnectorConfig):
    host: str | None = Field(default=None, description="default: CLUSTERTWIN_MQTT_HOST")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="default: CLUSTERTWIN_MQTT_(TLS_)PORT"
    )
    tls: ClientTls | None = Field(
        default=None, description="MQTT over TLS: CA, client certificate and key, min version"
    )
    client_id: str | None = Field(default=None, description="default: clustertwin-<name>")
    username: str | None = None
    password_env: str | None = Field(default=None, description="env var holding the password")
    password_file: Path | None = None
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = False
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topics: list[TopicMap] = Field(default_factory=list)
    sparkplug: SparkplugConfig | None = Field(default=None, description="Sparkplug B mappings")
    max_batch: int = Field(default=5000, ge=1)

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file: give one, not both")
        if not self.topics and self.sparkplug is None:
            raise ValueError("topics and sparkplug: give at least one")
        return self

    def password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise SourceMisconfigured(f"password_env: ${self.password_env} is not set")
            return value
        if self.password_file:
            return self.password_file.read_text().strip()
        return None


def _matches(pattern: str, topic: str) -> bool:
    return mqtt.topic_matches_sub(pattern, topic)


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc[part]
    return doc


def parse_message(tm: TopicMap, topic: str, payload: bytes, received_ms: int) -> Item:
    """One MQTT message -> a Sample, or a BadSample saying why not."""
    meter = tm.meter_for(topic)
    try:
        if tm.payload == "number":
            return Sample(meter, received_ms, float(payload.decode()), tm.unit, raw=payload)
        doc = orjson.loads(payload)
        value = _get(doc, tm.value_field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{tm.value_field} is {value!r}, not a number")
        if tm.ts_field is None:
            ts = received_ms
        else:
            raw_ts = _get(doc, tm.ts_field)
            if tm.ts_format == "iso":
                ts = int(datetime.fromisoformat(raw_ts).timestamp() * 1000)
            elif tm.ts_format == "s":
                ts = int(float(raw_ts) * 1000)
            else:
                ts = int(raw_ts)
        unit = str(_get(doc, tm.unit_field)) if tm.unit_field else tm.unit
        quality = str(_get(doc, tm.quality_field)) if tm.quality_field else "measured"
        return Sample(meter, ts, float(value), unit, quality=quality, raw=payload)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        return BadSample(f"mqtt {topic}: unreadable payload: {exc!r}", payload, meter)


class MqttConnector(Connector[MqttConfig]):
    """MQTT subscription; topics and JSON/number payloads mapped to meters."""

    config_model: ClassVar[type[ConnectorConfig]] = MqttConfig

    def __init__(self, config: MqttConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._client: mqtt.Client | None = None
        self._queue: asyncio.Queue[Item | Snapshot | Exception] = asyncio.Queue()
        # outlives the MQTT connection: births learnt stay valid across a reconnect (the
        # persistent session fills the gap), never across a restart (it asks for rebirths)
        self._sparkplug = SparkplugSession(config.sparkplug) if config.sparkplug else None
        self._rebirths_asked = False
        # counter and rate metrics: baselines in the state store, so the interval across a
        # restart is counted once; nothing of the Sparkplug session itself is kept
        self._metered: dict[str, SparkplugMetric] = {
            m.meter: m
            for m in (config.sparkplug.metrics if config.sparkplug else [])
            if m.mode != "value"
        }
        self.metering: Metering | None = None
        if self._metered:
            self.metering = Metering(
                StateStore.for_connector(config),
                counters={
                    meter: CounterSpec(m.rollover_at, m.max_increase_per_h)
                    for meter, m in self._metered.items()
                    if m.mode == "counter"
                },
            )

    @classmethod
    def mapped_meters(cls, config: MqttConfig, index: MeterIndex) -> list[MeterMapping]:
        # a templated meter ('sw-{2}') counts once; a unit_field's unit is only known per message
        mapped = [
            MeterMapping(t.meter, t.unit, f"topics[{i}]") for i, t in enumerate(config.topics)
        ]
        if config.sparkplug is not None:
            mapped += [
                MeterMapping(m.meter, m.published_unit(), f"sparkplug.metrics[{i}]")
                for i, m in enumerate(config.sparkplug.metrics)
            ]
        return mapped

    @classmethod
    def check_config(cls, config: MqttConfig, index: MeterIndex) -> list[str]:
        problems = [
            f"topics[{i}].meter: unknown meter {t.meter!r} in cluster {index.cluster!r}"
            for i, t in enumerate(config.topics)
            if not _LEVEL.search(t.meter) and t.meter not in index
        ]
        if config.sparkplug is not None:
            problems += [
                f"sparkplug.metrics[{i}].meter: unknown meter {m.meter!r} in cluster "
                f"{index.cluster!r}"
                for i, m in enumerate(config.sparkplug.metrics)
                if m.meter not in index
            ]
        return problems

    async def open(self) -> None:
        cfg = self.config
        settings = Settings.load()
        host = cfg.host or settings.mqtt_host
        port = cfg.port or (settings.mqtt_tls_port if cfg.tls else settings.mqtt_port)
        loop = asyncio.get_running_loop()
        self._keep_queued_items()
        connected: asyncio.Future[int] = loop.create_future()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"clustertwin-{cfg.name}",
            clean_session=cfg.clean_session,
            protocol=mqtt.MQTTv311,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password())
        context = None
        if cfg.tls is not None:
            # a TlsError (unreadable key, wrong password) names the field; paho takes the
            # context as is, hostname check included
            context = cfg.tls.context()
            client.tls_set_context(context)

        def put(item: Item | Snapshot | Exception) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if not rc.is_failure:
                for topic in self._subscriptions():
                    c.subscribe(topic, qos=cfg.qos)
                if self._sparkplug is not None and not self._rebirths_asked:
                    self._rebirths_asked = True  # once per process: a reconnect keeps births
                    for command_topic, body in self._sparkplug.start_requests():
                        c.publish(command_topic, body, qos=0)

            def settle() -> None:
                if not connected.done():
                    connected.set_result(int(rc.value))

            loop.call_soon_threadsafe(settle)

        tls_log: list[str] = []  # paho only logs why a TLS session ended before CONNACK

        def on_log(_c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
            if level == mqtt.MQTT_LOG_ERR and "SSL" in buf:
                tls_log.append(buf)

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            error = SourceUnavailable(f"MQTT broker {host}:{port} disconnected: {rc}")
            put(error)

            def refused() -> None:  # closed before CONNACK: e.g. TLS 1.3 refusing our cert
                if connected.done():
                    return
                peer = f"MQTT broker {host}:{port}"
                why = tls_refusal(tls_log[-1], peer, cfg.tls) if cfg.tls and tls_log else None
                connected.set_exception(
                    why
                    or SourceUnavailable(
                        f"{peer} closed the connection before CONNACK "
                        f"({rc}){_TLS_REFUSED_HINT if cfg.tls else ''}"
                    )
                )

            loop.call_soon_threadsafe(refused)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            received = time.time_ns() // 1_000_000
            if self._sparkplug is not None and self._sparkplug.owns(msg.topic):
                self._on_sparkplug(_c, msg.topic, bytes(msg.payload), received, put)
                return
            for tm in cfg.topics:
                if _matches(tm.topic, msg.topic):
                    put(parse_message(tm, msg.topic, bytes(msg.payload), received))
                    return

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_log = on_log
        try:
            await asyncio.to_thread(client.connect, host, port, cfg.keepalive_s)
        except OSError as exc:  # a certificate refusal is one too, but not an outage
            refused = tls_refusal(exc, f"MQTT broker {host}:{port}", cfg.tls) if cfg.tls else None
            if refused is not None:
                raise refused from exc
            raise SourceUnavailable(f"MQTT broker {host}:{port}: {exc}") from exc
        client.loop_start()
        self._client = client
        await self._connack(connected, host, port, context)

    async def _connack(
        self, connected: asyncio.Future[int], host: str, port: int, context: Any
    ) -> None:
        """Wait for the broker's CONNACK; say why there is none, in the config's terms."""
        tls = self.config.tls
        try:
            rc = await asyncio.wait_for(connected, 10)
        except TimeoutError as exc:
            raise SourceUnavailable(f"MQTT broker {host}:{port}: no CONNACK") from exc
        except SourceMisconfigured:
            raise
        except SourceUnavailable as exc:
            if tls is None or context is None:
                raise
            # closed after the TLS handshake, before CONNACK: a TLS 1.3 refusal whose
            # alert the reset lost? Ask the broker once more, sending nothing
            peer = f"MQTT broker {host}:{port}"
            refusal = await asyncio.to_thread(probe_tls, host, port, context, peer, tls)
            if refusal is None:
                raise
            raise refusal from exc
        if rc in _CONNACK_CONFIG:
            raise SourceMisconfigured(f"mqtt: {_CONNACK_CONFIG[rc]} [{host}:{port}: rc={rc}]")
        if rc != 0:
            raise SourceUnavailable(f"MQTT broker {host}:{port} refused the connection: rc={rc}")

    def _keep_queued_items(self) -> None:
        """Drop the errors of the last connection (our own disconnect's among them) but not
        the messages that came after the one that ended it: those are acknowledged to the
        broker already, and a Sparkplug death is raised while messages keep coming."""
        old, self._queue = self._queue, asyncio.Queue()
        while not old.empty():
            item = old.get_nowait()
            if not isinstance(item, Exception):
                self._queue.put_nowait(item)

    def _subscriptions(self) -> list[str]:
        sparkplug = self.config.sparkplug.subscriptions() if self.config.sparkplug else []
        return [tm.topic for tm in self.config.topics] + sparkplug

    def _on_sparkplug(
        self,
        client: mqtt.Client,
        topic: str,
        payload: bytes,
        received: int,
        put: Callable[[Item | Snapshot | Exception], None],
    ) -> None:
        """Sparkplug B messages go through the session (paho's thread): its readings and
        reasons to the runner, its rebirth requests to the broker (NCMD is QoS 0 by the
        specification), a death as SourceUnavailable after the readings before it."""
        assert self._sparkplug is not None
        outcome = self._sparkplug.handle(topic, payload, received)
        for command_topic, body in outcome.commands:
            client.publish(command_topic, body, qos=0)
        for item in outcome.items:
            put(item)
        if outcome.unavailable:
            put(SourceUnavailable("; ".join(outcome.unavailable)))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        if self.metering is not None:
            # intervals a previous process saved but could not confirm: the same readings
            # again (the stream counts them once), before anything new
            resent = [self._metered_sample(i) for i in self.metering.restored()]
            if resent:
                self.metering.checkpoint()
                yield resent
        while True:
            first = await self._queue.get()
            if isinstance(first, Exception):
                raise first
            batch, error = drain_queue(self._queue, first, self.config.max_batch)
            yield self._meter(batch)  # checkpointed: no await between it and the hand-on
            if error is not None:
                raise error

    def _meter(self, batch: list[Item | Snapshot]) -> list[Item]:
        """Counter and rate snapshots become intervals (or refusals) through the metering;
        the new baselines are checkpointed with them, right before they are handed on."""
        if self.metering is None:
            return [i for i in batch if not isinstance(i, Snapshot)]
        out: list[Item] = []
        for item in batch:
            if not isinstance(item, Snapshot):
                out.append(item)
                continue
            s, m = item.sample, item.mapping
            if m.mode == "rate":
                assert m.unit is not None  # the config's validator saw to it
                got = self.metering.rate(s.meter, s.ts, s.value, m.unit)
            else:
                got = self.metering.counter(s.meter, s.ts, s.value)
            if isinstance(got, Interval):
                reading = self._metered_sample(got, s.raw)
                reading.quality = s.quality  # an uncertain end makes an estimated interval
                out.append(reading)
            elif isinstance(got, Refusal):
                out.append(got.bad_sample(s.raw))
        self.metering.checkpoint()
        return out

    def _metered_sample(self, interval: Interval, raw: bytes | None = None) -> Sample:
        m = self._metered.get(interval.meter)
        sample = interval.sample(raw=raw, unit=m.published_unit() if m else None)
        if m is not None:
            sample.carrier = m.carrier
        return sample

    def readings_durable(self) -> None:
        if self.metering is not None:
            self.metering.durable()
