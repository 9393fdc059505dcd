"""OPC UA: subscribe to nodes of a plant's OPC UA server (asyncua) and map them to meters.

Subscriptions deliver changes with the server's source timestamps. A server restart is
noticed by the connection-lost callback or, for a connection that dies silently, by a probe
of the server state every ``watchdog_s``; the SDK then reconnects with backoff and the
subscription is created again on the new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC
from typing import Any, ClassVar

import orjson
from asyncua import Client, ua
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.opcua.security import (
    POLICIES,
    OpcUaSecurity,
    check_trusted,
    describe_endpoints,
    first_certificate,
    load_credentials,
    pick_endpoint,
)
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
from twin.readings import MeterIndex, now_ms


class NodeMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(description='e.g. "ns=2;s=Kiln.Petcoke.Feed"')
    meter: str
    unit: str | None = Field(default=None, description="default: the meter's")
    scale: float = 1.0


class OpcUaConfig(ConnectorConfig):
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    username: str | None = None
    password_env: str | None = None
    publishing_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    timeout_s: float = Field(default=4.0, gt=0)
    watchdog_s: float = Field(default=2.0, gt=0)
    nodes: list[NodeMap] = Field(min_length=1)
    max_batch: int = Field(default=5000, ge=1)
    security: OpcUaSecurity = Field(
        default_factory=OpcUaSecurity, description="policy, mode, certificates, trusted servers"
    )

    @model_validator(mode="after")
    def _password_with_user(self) -> OpcUaConfig:
        if self.password_env and not self.username:
            raise ValueError("password_env: needs username")
        return self


class _Handler:
    """asyncua calls this from its publish task; it only enqueues."""

    def __init__(self, connector: OpcUaConnector) -> None:
        self.connector = connector

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.connector._on_change(node, val, data)

    def status_change_notification(self, status: Any) -> None:
        self.connector._queue.put_nowait(SourceUnavailable(f"OPC UA subscription status {status}"))


class OpcUaConnector(Connector[OpcUaConfig]):
    """OPC UA node subscriptions mapped to meters; survives server restarts."""

    config_model: ClassVar[type[ConnectorConfig]] = OpcUaConfig

    def __init__(self, config: OpcUaConfig, index: MeterIndex) -> None:
        super().__init__(config, index)
        self._client: Client | None = None
        self._queue: asyncio.Queue[Item | Exception] = asyncio.Queue()
        self._by_node: dict[str, NodeMap] = {}

    @classmethod
    def mapped_meters(cls, config: OpcUaConfig, index: MeterIndex) -> list[MeterMapping]:
        return [MeterMapping(n.meter, n.unit, f"nodes[{i}]") for i, n in enumerate(config.nodes)]

    @classmethod
    def check_config(cls, config: OpcUaConfig, index: MeterIndex) -> list[str]:
        problems = [
            f"nodes[{i}].meter: unknown meter {n.meter!r} in cluster {index.cluster!r}"
            for i, n in enumerate(config.nodes)
            if n.meter not in index
        ]
        for i, n in enumerate(config.nodes):
            try:
                ua.NodeId.from_string(n.node_id)
            except Exception as exc:
                problems.append(f"nodes[{i}].node_id: {exc}")
        return problems

    def _on_change(self, node: Any, val: Any, data: Any) -> None:
        mapping = self._by_node.get(node.nodeid.to_string())
        if mapping is None:
            return
        try:
            self._queue.put_nowait(self._item(mapping, val, data))
        except Exception as exc:  # never lose a notification silently in asyncua's task
            raw = orjson.dumps({"node": mapping.node_id, "value": repr(val)})
            self._queue.put_nowait(
                BadSample(f"OPC UA {mapping.node_id}: {exc!r}", raw, mapping.meter)
            )

    def _item(self, mapping: NodeMap, val: Any, data: Any) -> Item:
        dv = data.monitored_item.Value
        stamp = dv.SourceTimestamp or dv.ServerTimestamp
        if stamp is None:
            ts = now_ms()
        else:
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            ts = int(stamp.timestamp() * 1000)
        status = getattr(dv, "StatusCode", None)
        raw = orjson.dumps(
            {"node": mapping.node_id, "value": repr(val), "ts": ts, "status": str(status)}
        )
        if status is not None and not status.is_good():
            return BadSample(f"OPC UA {mapping.node_id}: status {status}", raw, mapping.meter)
        if isinstance(val, bool) or not isinstance(val, int | float):
            return BadSample(
                f"OPC UA {mapping.node_id}: value {val!r} is not a number", raw, mapping.meter
            )
        return Sample(mapping.meter, ts, float(val) * mapping.scale, mapping.unit, raw=raw)

    async def open(self) -> None:
        cfg = self.config
        self._queue = asyncio.Queue()
        client = Client(cfg.endpoint, timeout=cfg.timeout_s)
        if cfg.username:
            client.set_user(cfg.username)
            if cfg.password_env:
                password = os.environ.get(cfg.password_env)
                if password is None:
                    raise SourceUnavailable(f"password_env: ${cfg.password_env} is not set")
                client.set_password(password)

        async def lost(exc: Exception) -> None:
            self._queue.put_nowait(SourceUnavailable(f"OPC UA connection lost: {exc!r}"))

        client.connection_lost_callback = lost
        try:
            if cfg.security.secure:
                await self._secure(client)
            await client.connect()
        except SourceUnavailable:  # already says why (an untrusted server, no such endpoint)
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        except (OSError, TimeoutError, ua.UaError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            hint = await self._refusal_hint(exc)  # a certificate or security refusal
            error = SourceMisconfigured if hint else SourceUnavailable
            raise error(f"OPC UA server {cfg.endpoint}: {hint or repr(exc)}") from exc
        self._client = client
        try:
            sub = await client.create_subscription(cfg.publishing_interval_ms, _Handler(self))
            nodes = []
            self._by_node = {}
            for n in cfg.nodes:
                node = client.get_node(n.node_id)
                self._by_node[node.nodeid.to_string()] = n
                nodes.append(node)
            await sub.subscribe_data_change(nodes)
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise SourceUnavailable(f"OPC UA subscribe on {cfg.endpoint}: {exc!r}") from exc

    async def _secure(self, client: Client) -> None:
        """Check the server's certificate against the trusted list, then sign/encrypt with it.

        A SecurityConfigError (unreadable file, key not the certificate's) names the field.
        """
        sec = self.config.security
        creds = load_credentials(sec)
        client.application_uri = creds.application_uri
        endpoints = await client.connect_and_get_server_endpoints()
        endpoint = pick_endpoint(endpoints, sec, self.config.endpoint)
        server_der = first_certificate(endpoint.ServerCertificate)
        check_trusted(server_der, sec, self.config.endpoint)
        await client.set_security(
            POLICIES[sec.policy],
            creds.certificate_der,
            creds.key_der,
            server_certificate=server_der,
            mode=sec.message_mode(),
        )

    async def _refusal_hint(self, exc: Exception) -> str:
        """Why a connection was refused, in the terms of the config: our certificate not
        trusted by the server, or an unsecured session the server does not offer."""
        if self.config.security.secure:
            if isinstance(exc, ua.UaStatusCodeError) and "Certificate" in type(exc).__name__:
                return (
                    f"{type(exc).__name__}: the server does not accept our certificate "
                    f"({self.config.security.certificate}); the plant must trust it"
                )
            return ""
        try:
            probe = Client(self.config.endpoint, timeout=self.config.timeout_s)
            endpoints = await probe.connect_and_get_server_endpoints()
        except Exception:
            return ""
        if any(e.SecurityMode == ua.MessageSecurityMode.None_ for e in endpoints):
            return ""
        return (
            f"the server refuses unsecured sessions (security.policy None); it offers "
            f"{describe_endpoints(endpoints)}: set security.policy, mode and certificates"
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 3)

    async def _probe(self) -> None:
        client = self._client
        if client is None:
            raise SourceUnavailable("OPC UA client is closed")
        try:
            await asyncio.wait_for(client.nodes.server_state.read_value(), self.config.timeout_s)
        except Exception as exc:
            raise SourceUnavailable(
                f"OPC UA server {self.config.endpoint} silent: {exc!r}"
            ) from exc

    async def stream(self) -> AsyncIterator[Sequence[Item]]:
        loop = asyncio.get_running_loop()
        next_probe = loop.time() + self.config.watchdog_s
        while True:
            try:
                first = await asyncio.wait_for(
                    self._queue.get(), max(0.0, next_probe - loop.time())
                )
            except TimeoutError:
                await self._probe()
                next_probe = loop.time() + self.config.watchdog_s
                continue
            if isinstance(first, Exception):
                raise first
            batch, error = drain_queue(self._queue, first, self.config.max_batch)
            yield batch
            if error is not None:
                raise error
            if loop.time() >= next_probe:
                await self._probe()
                next_probe = loop.time() + self.config.watchdog_s
