"""OPC UA HistoryRead (raw values) for ``clustertwin backfill``.

A plant's OPC UA server keeps the past of the nodes it historizes; a backfill asks for it
chunk by chunk (``history.chunk``) so one request never asks a historian for months at
once, and page by page (``history.max_values_per_read``), following the server's
continuation points to the end of each chunk. A continuation point holds resources on the
server, so one left behind by an error or a cancelled backfill is released.

Servers differ at the edges, so the reader does not trust them there: the asked range is
cut to ``[start, end)`` on our side (the standard leaves the end bound to the server, and
asyncua's stores include it), and a page that is full but carries no continuation point
(asyncua's in-memory store truncates that way) is followed by a read from its last
timestamp instead of being taken as the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

from asyncua import Client, ua
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.sdk.timespec import parse_duration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
MAX_CHUNK_MS = 31 * 86_400_000


class HistoryUnavailable(RuntimeError):
    """The server will not give a node's history (not historized, refused, unknown node);
    the message names the node and the config item."""


class OpcUaHistory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk: str = Field(
        default="1d", description="time range of one HistoryRead request (90m, 6h, 1d)"
    )
    max_values_per_read: int = Field(
        default=1000, ge=1, le=100_000, description="NumValuesPerNode: values per response"
    )

    @field_validator("chunk")
    @classmethod
    def _chunk_is_a_duration(cls, value: str) -> str:
        ms = parse_duration(value)
        if not 1000 <= ms <= MAX_CHUNK_MS:
            raise ValueError(f"{value!r}: between 1s and 31d")
        return value

    @property
    def chunk_ms(self) -> int:
        return parse_duration(self.chunk)


def chunks(start_ms: int, end_ms: int, chunk_ms: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into consecutive ``[a, b)`` of at most ``chunk_ms``."""
    return [(a, min(a + chunk_ms, end_ms)) for a in range(start_ms, end_ms, chunk_ms)]


def to_ms(stamp: datetime) -> int:
    """Epoch ms of an OPC UA time, exactly (no float rounding at a millisecond edge)."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return EPOCH + ms * _MS


def stamp_ms(dv: ua.DataValue) -> int | None:
    """The value's time: the device's (SourceTimestamp), else the server's."""
    stamp = dv.SourceTimestamp or dv.ServerTimestamp
    return None if stamp is None else to_ms(stamp)


async def check_historized(client: Client, node_id: str, where: str) -> None:
    """Refuse, naming the node, one whose history this session may not read: the standard
    says so with the HistoryRead bit of its UserAccessLevel."""
    try:
        dv = await client.get_node(node_id).read_attribute(ua.AttributeIds.UserAccessLevel)
    except ua.UaStatusCodeError as exc:
        raise HistoryUnavailable(f"OPC UA node {node_id} ({where}): {exc}") from exc
    level = dv.Value.Value if dv.Value is not None else 0
    if not int(level) & int(ua.AccessLevelType.HistoryRead):
        raise HistoryUnavailable(
            f"OPC UA node {node_id} ({where}): the server keeps no history of it "
            "(no HistoryRead in its UserAccessLevel: not historized, or not for this user)"
        )


async def _history_read(
    client: Client,
    node_id: str,
    details: ua.ReadRawModifiedDetails,
    cont: bytes | None,
    release: bool = False,
) -> ua.HistoryReadResult:
    value_id = ua.HistoryReadValueId()
    value_id.NodeId = ua.NodeId.from_string(node_id)
    value_id.IndexRange = ""
    value_id.ContinuationPoint = cont
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = release
    params.NodesToRead.append(value_id)
    results: list[ua.HistoryReadResult] = await client.uaclient.history_read(params)
    return results[0]


async def read_raw(
    client: Client,
    node_id: str,
    where: str,
    start_ms: int,
    end_ms: int,
    max_values: int,
    timeout_s: float,
) -> AsyncGenerator[list[ua.DataValue]]:
    """The raw values the server has for the node from ``start_ms`` to ``end_ms``, a page
    (at most ``max_values``) at a time; bounds as the server has them (cut by the caller).
    Close it (``contextlib.aclosing``) to release a continuation point left open."""
    details = ua.ReadRawModifiedDetails(
        IsReadModified=False,
        StartTime=from_ms(start_ms),
        EndTime=from_ms(end_ms),
        NumValuesPerNode=max_values,
        ReturnBounds=False,
    )
    cont: bytes | None = None
    resume: tuple[datetime, int] | None = None  # (re-read from, values there already had)
    try:
        while True:
            try:
                result = await _history_read(client, node_id, details, cont)
            except ua.UaStatusCodeError as exc:
                cont = None  # the server refused the request: nothing of ours is held
                raise HistoryUnavailable(f"OPC UA node {node_id} ({where}): {exc}") from exc
            cont = result.ContinuationPoint or None
            status = result.StatusCode
            if status is not None and not status.is_good():
                cont = None
                raise HistoryUnavailable(
                    f"OPC UA node {node_id} ({where}): HistoryRead {status.name}"
                    f" ({status.doc or 'refused'})"
                )
            data = result.HistoryData
            page: list[ua.DataValue] = list(getattr(data, "DataValues", None) or [])
            full = len(page) >= max_values
            if resume is not None:
                at, seen = resume
                while seen and page and page[0].SourceTimestamp == at:
                    page.pop(0)
                    seen -= 1
            yield page
            if cont is not None:
                continue
            if not full:
                return
            # a full page and no continuation point: read again from its last time
            last = page[-1].SourceTimestamp if page else None
            if last is None or (resume is not None and last == resume[0]):
                raise HistoryUnavailable(
                    f"OPC UA node {node_id} ({where}): the server returns full pages of "
                    f"{max_values} values without a continuation point and no progress; "
                    "raise history.max_values_per_read"
                )
            there = sum(1 for dv in page if dv.SourceTimestamp == last)
            resume = (last, there)
            details.StartTime = last
    finally:
        if cont is not None:  # an error or a cancel between pages: free it on the server
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    _history_read(client, node_id, details, cont, release=True), timeout_s
                )
