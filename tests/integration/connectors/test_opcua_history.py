"""OPC UA HistoryRead for backfills, against real asyncua servers over loopback sockets.

The plant's server historizes its nodes (``historize_node_data_change``); the test writes
the historian's past into its store with explicit source timestamps, shuffled (a historian
gets late and store-and-forward values), with values on and beside the asked bounds and
some of Bad status. What the connector reads must equal the offline list of the server's
values in ``[start, end)``: nothing lost, nothing twice, the bounds exact.

``Historian`` is the store of a server that pages as the standard says (at most
NumValuesPerNode values, then a continuation point) and keeps values in time order however
they arrive; asyncua's own in-memory store, which truncates a full page without a
continuation point, is tested too. Both include the end bound, so the connector's own cut
of ``end`` is what keeps it out.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.history import HistoryStorageInterface

from connectors.opcua import OpcUaConfig, OpcUaConnector
from connectors.opcua.history import HistoryUnavailable, from_ms
from connectors.sdk.base import BadSample, Item, Sample
from connectors.sdk.conformance import consume_all, free_port
from tests.conftest import StackHandle
from twin.readings import MeterIndex, now_ms

from .conftest import MINI
from .test_opcua_security import SECURE_ONLY, SERVER_URI, Pki

pytestmark = pytest.mark.integration
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

HOUR = 3_600_000
CLI = str(Path(sys.executable).parent / "clustertwin")
Reading = tuple[str, int, float]  # (meter, ts, value)


class Historian(HistoryStorageInterface):
    """A historian's store: time order whatever the arrival order, standard paging."""

    def __init__(self) -> None:
        super().__init__(max_history_data_response_size=10_000)
        self.values: dict[ua.NodeId, list[ua.DataValue]] = {}
        self.refuse: set[ua.NodeId] = set()

    async def init(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def new_historized_node(self, node_id: ua.NodeId, period: Any, count: int = 0) -> None:
        self.values.setdefault(node_id, [])

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        bisect.insort(self.values[node_id], datavalue, key=lambda dv: dv.SourceTimestamp)

    async def read_node_history(
        self, node_id: ua.NodeId, start: Any, end: Any, nb_values: int
    ) -> tuple[list[ua.DataValue], Any]:
        if node_id in self.refuse:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadHistoryOperationUnsupported)
        values = self.values.get(node_id, [])
        stamps = [dv.SourceTimestamp for dv in values]
        lo, hi = bisect.bisect_left(stamps, start), bisect.bisect_right(stamps, end)
        limit = min(nb_values or self.max_history_data_response_size, 10_000)
        cont = stamps[lo + limit] if lo + limit < hi else None
        return values[lo : min(hi, lo + limit)], cont


@dataclass
class HistoryPlant:
    """A plant's OPC UA server; ``storage`` None keeps asyncua's own in-memory store."""

    storage: HistoryStorageInterface | None = None
    pki: Pki | None = None  # a server offering only signed and encrypted endpoints
    port: int = field(default_factory=free_port)
    requests: list[tuple[bool, bytes | None]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/historian"

    async def start(self) -> None:
        server = self.server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        if self.pki is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(server, self.pki)
        if self.storage is not None:
            server.iserver.history_manager.set_storage(self.storage)
        ns = self.ns = await server.register_namespace("urn:clustertwin:test-historian")
        obj = await server.nodes.objects.add_object(ua.NodeId("Plant", ns), "Plant")
        self.gas = await obj.add_variable(ua.NodeId("Furnace.Gas_MWh", ns), "Gas", 0.0)
        self.power = await obj.add_variable(ua.NodeId("Mill.Power_kWh", ns), "Power", 0.0)
        self.plain = await obj.add_variable(ua.NodeId("Mill.Plain_kWh", ns), "Plain", 0.0)
        await server.start()
        await server.historize_node_data_change([self.gas, self.power], count=0)
        manager = server.iserver.history_manager
        read = manager.read_history

        async def spy(params: ua.HistoryReadParameters) -> Any:  # what clients asked for
            for rv in params.NodesToRead:
                self.requests.append((params.ReleaseContinuationPoints, rv.ContinuationPoint))
            return await read(params)

        manager.read_history = spy

    @staticmethod
    async def _secure(server: Server, pki: Pki) -> None:
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(SECURE_ONLY)
        await server.load_certificate(str(pki.server_cert), format="pem")
        await server.load_private_key(str(pki.server_key), format="pem")
        store = TrustStore([pki.root / "server-trusts"], [])
        await store.load()
        server.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
        )

    async def write_past(self, node: Any, values: list[tuple[int, float, bool]]) -> None:
        """Into the historian, in the order given: (ts ms, value, good)."""
        storage = self.server.iserver.history_manager.storage
        for ts, value, good in values:
            status = ua.StatusCode(ua.StatusCodes.Good if good else ua.StatusCodes.BadSensorFailure)
            stamp = from_ms(ts)
            dv = ua.DataValue(
                ua.Variant(value, ua.VariantType.Double),
                StatusCode_=status,
                SourceTimestamp=stamp,
                ServerTimestamp=stamp,
            )
            await storage.save_node_value(node.nodeid, dv)

    async def stop(self) -> None:
        await self.server.stop()


@contextlib.asynccontextmanager
async def running(plant: HistoryPlant) -> AsyncIterator[HistoryPlant]:
    await plant.start()
    try:
        yield plant
    finally:
        await plant.stop()


def config(plant: HistoryPlant, chunk: str, max_values: int, **extra: Any) -> OpcUaConfig:
    ns = plant.ns
    return OpcUaConfig.model_validate(
        {
            "connector": "opcua",
            "name": "it-opcua-history",
            "cluster": str(MINI),
            "endpoint": plant.endpoint,
            "timeout_s": 5,
            "nodes": [
                {"node_id": f"ns={ns};s=Furnace.Gas_MWh", "meter": "bf-gas"},
                {
                    "node_id": f"ns={ns};s=Mill.Power_kWh",
                    "meter": "mill-power",
                    "unit": "kWh",
                    "scale": 0.5,
                },
            ],
            "history": {"chunk": chunk, "max_values_per_read": max_values},
            **extra,
        }
    )


@dataclass
class Past:
    """The values the test puts in the historian, and what a backfill of a range must give."""

    start: int
    end: int
    gas: list[tuple[int, float, bool]]
    power: list[tuple[int, float, bool]]

    def expected(self) -> list[Reading]:
        out = [("bf-gas", ts, v) for ts, v, good in self.gas if good]
        out += [("mill-power", ts, v * 0.5) for ts, v, good in self.power if good]
        return sorted(r for r in out if self.start <= r[1] < self.end)

    def bad_in_range(self) -> list[int]:
        return sorted(ts for ts, _, good in self.gas if not good and self.start <= ts < self.end)


def make_past(start: int, end: int, n_gas: int, n_power: int, seed: int = 11) -> Past:
    """Unique millisecond stamps over and around ``[start, end)``, values on its bounds,
    and Bad-status values inside and outside it."""
    rng = random.Random(seed)
    span = (start - 2 * HOUR, end + 2 * HOUR)
    edges = [start - 1, start, start + 1, end - 1, end, end + 1]
    gas_ts = sorted(set(rng.sample(range(*span), n_gas)) | set(edges))
    gas = [(ts, round(rng.uniform(5, 20), 3), True) for ts in gas_ts]
    for k in rng.sample(range(len(gas)), 6):  # Bad values, wherever they fall
        gas[k] = (gas[k][0], gas[k][1], False)
    power_ts = sorted(set(rng.sample(range(*span), n_power)) | {start, end})
    power = [(ts, round(rng.uniform(100, 900), 2), True) for ts in power_ts]
    return Past(start, end, gas, power)


async def collect(connector: OpcUaConnector, start: int, end: int) -> list[list[Item]]:
    return [list(b) async for b in connector.history(start, end)]


def readings(batches: list[list[Item]]) -> list[Reading]:
    return sorted((s.meter, s.ts, s.value) for b in batches for s in b if isinstance(s, Sample))


def test_history_is_the_servers_values_in_the_range_across_chunks_and_pages(
    mini_index: MeterIndex,
) -> None:
    end = now_ms() // HOUR * HOUR - 2 * HOUR
    start = end - 3 * 24 * HOUR
    past = make_past(start, end, 2500, 700)

    async def run() -> tuple[list[list[Item]], HistoryPlant]:
        async with running(HistoryPlant(Historian())) as plant:
            gas, power = list(past.gas), list(past.power)
            random.Random(3).shuffle(gas)  # out of time order, as a historian receives them
            random.Random(4).shuffle(power)
            await plant.write_past(plant.gas, gas)
            await plant.write_past(plant.power, power)
            connector = OpcUaConnector(config(plant, "12h", 97), mini_index)
            return await asyncio.wait_for(collect(connector, start, end), 60), plant

    batches, plant = asyncio.run(run())
    got = readings(batches)
    assert got == past.expected()  # equal lists: none lost, none twice
    assert len(got) == len(set(got)) > 2000
    assert {("bf-gas", start), ("bf-gas", end - 1)} <= {(m, t) for m, t, _ in got}
    assert ("bf-gas", end) not in {(m, t) for m, t, _ in got}  # [start, end)
    bad = [i for b in batches for i in b if isinstance(i, BadSample)]
    assert sorted(orjson.loads(b.raw)["ts"] for b in bad) == past.bad_in_range()
    assert all("BadSensorFailure" in b.reason and "Furnace.Gas_MWh" in b.reason for b in bad)
    assert all(b.meter == "bf-gas" for b in bad)
    assert max(len(b) for b in batches) <= 97
    followed = [cp for release, cp in plant.requests if cp and not release]
    assert len(followed) >= 2000 // 97 - 12  # continuation points followed (12 chunk reads)
    assert not [cp for release, cp in plant.requests if release]  # none left to release


def test_asyncuas_own_store_cuts_full_pages_without_a_continuation_point(
    mini_index: MeterIndex,
) -> None:
    """asyncua's in-memory store (7 days kept) truncates at NumValuesPerNode and says
    nothing more is there; the connector reads on from the last time and loses nothing."""
    end = now_ms() // HOUR * HOUR - HOUR
    start = end - 24 * HOUR
    past = make_past(start, end, 523, 180, seed=5)

    async def run() -> list[list[Item]]:
        async with running(HistoryPlant()) as plant:
            await plant.write_past(plant.gas, past.gas)  # in order: that store keeps order
            await plant.write_past(plant.power, past.power)
            connector = OpcUaConnector(config(plant, "6h", 50), mini_index)
            return await asyncio.wait_for(collect(connector, start, end), 60)

    assert readings(asyncio.run(run())) == past.expected()


def test_a_node_without_history_is_named_and_nothing_hangs(mini_index: MeterIndex) -> None:
    async def run() -> tuple[str, str]:
        async with running(HistoryPlant(Historian())) as plant:
            cfg = config(plant, "1h", 10)
            plain = {"node_id": f"ns={plant.ns};s=Mill.Plain_kWh", "meter": "mill-power"}
            nodes = [*cfg.model_dump()["nodes"], plain]
            cfg = OpcUaConfig.model_validate({**cfg.model_dump(), "nodes": nodes})
            with pytest.raises(HistoryUnavailable) as not_historized:
                await asyncio.wait_for(collect(OpcUaConnector(cfg, mini_index), 0, HOUR), 20)
            storage = plant.server.iserver.history_manager.storage
            assert isinstance(storage, Historian)
            storage.refuse.add(plant.power.nodeid)  # historized, but the server refuses
            with pytest.raises(HistoryUnavailable) as refused:
                cfg2 = config(plant, "1h", 10)
                await asyncio.wait_for(collect(OpcUaConnector(cfg2, mini_index), 0, HOUR), 20)
            return str(not_historized.value), str(refused.value)

    not_historized, refused = asyncio.run(run())
    assert "Mill.Plain_kWh" in not_historized and "nodes[2]" in not_historized
    assert "keeps no history" in not_historized
    assert "Mill.Power_kWh" in refused and "nodes[1]" in refused
    assert "BadHistoryOperationUnsupported" in refused


def test_a_stopped_backfill_releases_its_continuation_point(mini_index: MeterIndex) -> None:
    end = now_ms() // HOUR * HOUR - HOUR
    past = make_past(end - 6 * HOUR, end, 400, 10)

    async def run() -> HistoryPlant:
        async with running(HistoryPlant(Historian())) as plant:
            await plant.write_past(plant.gas, past.gas)
            connector = OpcUaConnector(config(plant, "6h", 40), mini_index)
            history = connector.history(past.start, end)
            first = await anext(history)
            assert len(first) == 40
            await history.aclose()  # the backfill was stopped with a page still to come
            return plant

    plant = asyncio.run(run())
    handed = [cp for release, cp in plant.requests if cp and not release]
    released = [cp for release, cp in plant.requests if release]
    assert len(handed) == 0 and len(released) == 1 and released[0]


def test_history_over_a_signed_and_encrypted_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mini_index: MeterIndex
) -> None:
    monkeypatch.setenv("CT_OPCUA_KEY_PASSWORD", "s3cret-pass")
    pki = Pki(tmp_path)
    end = now_ms() // HOUR * HOUR - HOUR
    past = make_past(end - 12 * HOUR, end, 300, 50, seed=8)

    async def run() -> list[list[Item]]:
        async with running(HistoryPlant(Historian(), pki)) as plant:
            await plant.write_past(plant.gas, past.gas)
            await plant.write_past(plant.power, past.power)
            security = {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": str(pki.client_cert),
                "private_key": str(pki.client_key),
                "private_key_password_env": "CT_OPCUA_KEY_PASSWORD",
                "server_certificates": [str(pki.server_cert)],
            }
            connector = OpcUaConnector(config(plant, "4h", 64, security=security), mini_index)
            await connector.open()  # as the backfill command does: the live session
            try:
                return await asyncio.wait_for(collect(connector, past.start, end), 60)
            finally:
                await connector.close()

    assert readings(asyncio.run(run())) == past.expected()


def test_the_backfill_command_publishes_the_servers_past_and_a_rerun_the_same(
    stack: StackHandle, unique_name: str, tmp_path: Path, mini_index: MeterIndex
) -> None:
    end = now_ms() // HOUR * HOUR - HOUR
    start = end - 36 * HOUR
    past = make_past(start, end, 1500, 400, seed=21)
    topic, dead = f"{unique_name}-readings", f"{unique_name}-dl"
    env = {**os.environ, **stack.local.settings(), "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}

    async def backfill(path: Path) -> None:
        proc = await asyncio.create_subprocess_exec(
            CLI,
            "backfill",
            str(path),
            "--from",
            from_ms(start).isoformat(),
            "--to",
            from_ms(end).isoformat(),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, out.decode()[-2000:] + err.decode()[-3000:]

    async def run() -> tuple[list[Reading], list[Reading]]:
        async with running(HistoryPlant(Historian())) as plant:
            gas, power = list(past.gas), list(past.power)
            random.Random(9).shuffle(gas)
            random.Random(10).shuffle(power)
            await plant.write_past(plant.gas, gas)
            await plant.write_past(plant.power, power)
            kafka = {"topic": topic, "deadletter_topic": dead}
            cfg = config(plant, "8h", 200, kafka=kafka)
            path = tmp_path / "opcua.yaml"
            path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
            await backfill(path)
            first = topic_readings(stack, topic)
            await backfill(path)
            return first, topic_readings(stack, topic)

    first, both = asyncio.run(run())
    expected = past.expected()
    assert sorted(first) == expected
    assert Counter(both) == Counter(expected + expected)  # the rerun sent the same readings
    records = consume_all(stack.kafka_bootstrap, dead, expect=2 * len(past.bad_in_range()))
    reasons = [r.headers["clustertwin-reason"].decode() for r in records]
    assert len(reasons) == 2 * len(past.bad_in_range())
    assert all("BadSensorFailure" in r for r in reasons)


def topic_readings(stack: StackHandle, topic: str) -> list[Reading]:
    out: list[Reading] = []
    for record in consume_all(stack.kafka_bootstrap, topic):
        envelope = orjson.loads(record.value)
        assert envelope["source"] == "opcua/it-opcua-history-backfill"
        out += [(r["meter"], r["ts"], r["value"]) for r in envelope["readings"]]
    return out


def test_a_backfill_from_a_server_that_cannot_be_reached_ends_with_the_reason(
    stack: StackHandle, unique_name: str, tmp_path: Path
) -> None:
    """A live connector retries its source forever; a backfill must end, exit 1, and say why."""
    import socket
    import subprocess
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = {
        "connector": "opcua",
        "name": "it-opcua-down",
        "cluster": str(MINI),
        "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "timeout_s": 2,
        "nodes": [{"node_id": "ns=2;s=Furnace.Gas_MWh", "meter": "bf-gas"}],
        "kafka": {"topic": f"{unique_name}-readings", "deadletter_topic": f"{unique_name}-dl"},
    }
    path = tmp_path / "opcua.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, **stack.local.settings(), "CLUSTERTWIN_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    result = subprocess.run(
        [CLI, "backfill", str(path), "--from", "now-1d"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the source failed" in result.stderr, result.stderr[-2000:]
    assert time.monotonic() - started < 90
