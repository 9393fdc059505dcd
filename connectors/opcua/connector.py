"""OPC UA: subscribe to nodes of a plant's OPC UA server (asyncua) and map them to meters.

Subscriptions deliver changes with the server's source timestamps. A server restart is
noticed by the connection-lost callback or, for a connection that dies silently, by a probe
of the server state every ``watchdog_s``; the SDK then reconnects with backoff and the
subscription is created again on the new session. ``open`` only opens the session (with its
security): ``stream`` subscribes, ``history`` reads the server's past (``history.py``) over
the same session, so a backfill never subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import orjson
from asyncua import Client, ua
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.opcua.history import (
    HistoryUnavailable,
    OpcUaHistory,
    check_historized,
    chunks,
    read_raw,
    stamp_ms,
)
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
    history: OpcUaHistory = Field(
        default_factory=OpcUaHistory, description="HistoryRead for backfills: chunk, page size"
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
            dv = data.monitored_item.Value
            ts = stamp_ms(dv)
            self._queue.put_nowait(self._item(mapping, dv, now_ms() if ts is None else ts))
        except Exception as exc:  # never lose a notification silently in asyncua's task
            raw = orjson.dumps({"node": mapping.node_id, "value": repr(val)})
            self._queue.put_nowait(
                BadSample(f"OPC UA {mapping.node_id}: {exc!r}", raw, mapping.meter)
            )

    @staticmethod
    def _item(mapping: NodeMap, dv: ua.DataValue, ts: int) -> Item:
        """One rule for a value, live or from history: Good numbers become samples, the
        rest dead letters that say why."""
        val = dv.Value.Value if dv.Value is not None else None
        status = getattr(dv, "StatusCode", None)
        name = status.name if status is not None else "Good"
        raw = orjson.dumps({"node": mapping.node_id, "value": repr(val), "ts": ts, "status": name})
        if status is not None and not status.is_good():
            return BadSample(f"OPC UA {mapping.node_id}: status {name}", raw, mapping.meter)
        if isinstance(val, bool) or not isinstance(val, int | float):
            return BadSample(
                f"OPC UA {mapping.node_id}: value {val!r} is not a number", raw, mapping.meter
            )
        return Sample(mapping.meter, ts, float(val) * mapping.scale, mapping.unit, raw=raw)

    def _mappings(self) -> dict[str, NodeMap]:
        """Node id (as the server writes it) -> its mapping; a node mapped twice: the last."""
        by_node: dict[str, NodeMap] = {}
        for n in self.config.nodes:
            by_node[ua.NodeId.from_string(n.node_id).to_string()] = n
        return by_node

    async def open(self) -> None:
        self._queue = asyncio.Queue()
        self._client = await self._connect()

    async def _connect(self) -> Client:
        """A session with the config's user and security; SourceUnavailable says why not."""
        cfg = self.config
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
            why = await self._refusal_hint(exc) or repr(exc)
            raise SourceUnavailable(f"OPC UA server {cfg.endpoint}: {why}") from exc
        return client

    async def _subscribe(self) -> None:
        client = self._client
        if client is None:
            raise SourceUnavailable("OPC UA client is closed")
        cfg = self.config
        try:
            sub = await client.create_subscription(cfg.publishing_interval_ms, _Handler(self))
            self._by_node = self._mappings()
            await sub.subscribe_data_change([client.get_node(n) for n in self._by_node])
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
        await self._subscribe()
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

    reads_history: ClassVar[bool] = True

    async def history(self, start_ms: int, end_ms: int) -> AsyncIterator[Sequence[Item]]:
        """Every mapped node's raw history in ``[start_ms, end_ms)``, chunk by chunk (all
        nodes of a chunk before the next, so progress follows time), a server page per
        batch. Uses the session ``open`` made, or its own. A node the server keeps no
        history of ends the backfill with an error naming it, before anything is read."""
        own = self._client is None
        client = await self._connect() if own else self._client
        assert client is not None
        cfg = self.config
        try:
            mappings = list(self._mappings().items())
            where = {n.node_id: f"nodes[{i}], meter {n.meter}" for i, n in enumerate(cfg.nodes)}
            for node_id, m in mappings:
                await check_historized(client, node_id, where[m.node_id])
            for a, b in chunks(start_ms, end_ms, cfg.history.chunk_ms):
                for node_id, m in mappings:
                    pages = read_raw(
                        client,
                        node_id,
                        where[m.node_id],
                        a,
                        b,
                        cfg.history.max_values_per_read,
                        cfg.timeout_s,
                    )
                    async with contextlib.aclosing(pages):
                        async for page in pages:
                            batch = self._history_items(m, page, a, b)
                            if batch:
                                yield batch
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise HistoryUnavailable(f"OPC UA server {cfg.endpoint}: {exc!r}") from exc
        finally:
            if own:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 3)

    def _history_items(self, m: NodeMap, page: list[ua.DataValue], a: int, b: int) -> list[Item]:
        out: list[Item] = []
        for dv in page:
            ts = stamp_ms(dv)
            if ts is None:
                raw = orjson.dumps({"node": m.node_id, "value": repr(dv.Value)})
                out.append(
                    BadSample(f"OPC UA {m.node_id}: history value has no time", raw, m.meter)
                )
            elif a <= ts < b:
                out.append(self._item(m, dv, ts))
        return out
