"""How an HTTP/JSON gateway is asked for its past: the ``history`` block, ranges, chunks, pages.

A gateway's history endpoint takes a time range in the query (in a format of its own), caps
how much one answer may hold, and pages long answers. Those differences are data, so they
are config; the connector (``connector.py``) does the requests with the live poll's session,
auth and TLS, and maps the items with the live poll's JMESPath.

Counter histories (cumulative totals) become intervals with the SDK's metering rule, in an
in-memory :class:`~connectors.sdk.metering.Metering` of the backfill's own: the live
connector's baselines are never read or moved. The first interval of ``[start, end)`` needs
the last total before ``start``, so the range is read from ``start - lookback_s``, and only
intervals *ending* in ``[start, end)`` are published: backfills of ``[a, b)`` and ``[b, c)``
publish exactly the intervals one of ``[a, c)`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from yarl import URL

from connectors.sdk.base import BadSample, Item, Sample
from connectors.sdk.metering import Interval, Metering, Refusal

RangeFormat = Literal["iso8601", "epoch_s", "epoch_ms"]
FROM, TO = "{from}", "{to}"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HistorySettings(BaseModel):
    """The ``history`` block of an http_poll config: how to ask the gateway for a range."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None, pattern=r"^https?://", description="default: the live url; may hold {from}"
    )
    params: dict[str, str] = Field(
        default_factory=dict, description="query parameters; {from} and {to} become the range"
    )
    range_format: RangeFormat = Field(
        default="iso8601", description="how {from}/{to} are written: iso8601 (UTC), epoch_s/ms"
    )
    max_span_s: float = Field(
        default=86_400, gt=0, le=366 * 86_400, description="longest range one request asks"
    )
    items: str | None = Field(
        default=None, description="JMESPath to the history answer's items; default select.items"
    )
    next: str | None = Field(
        default=None, description="JMESPath to the next page's URL (or cursor); none: one page"
    )
    cursor_param: str | None = Field(
        default=None, description="with it, next gives a cursor sent as this query parameter"
    )
    max_pages: int = Field(default=10_000, ge=1, description="per request range: a loop guard")
    lookback_s: float = Field(
        default=3_600, ge=0, le=86_400, description="counter: read back this far for a baseline"
    )
    retries: int = Field(default=5, ge=0, le=100, description="per request: 5xx, 429, timeouts")
    backoff_s: float = Field(default=1.0, gt=0, le=60, description="first retry's wait")

    @model_validator(mode="after")
    def _range_is_asked(self) -> HistorySettings:
        texts = [self.url or "", *self.params.values()]
        for mark in (FROM, TO):
            if not any(mark in t for t in texts):
                raise ValueError(
                    f"history: {mark} is in neither history.url nor history.params: the "
                    "gateway must be told the range"
                )
        if self.cursor_param is not None and self.next is None:
            raise ValueError("history.cursor_param: needs history.next (where the cursor is)")
        return self


def format_range(ms: int, fmt: RangeFormat, *, end: bool = False) -> str:
    """An epoch-ms bound as the gateway wants it. Whole seconds round outwards (``end``:
    up) so the request covers the range; items outside it are dropped after."""
    if fmt == "epoch_ms":
        return str(ms)
    if fmt == "epoch_s":
        return str(-(-ms // 1000) if end else ms // 1000)
    dt = _EPOCH + timedelta(milliseconds=ms)
    frac = f".{ms % 1000:03d}" if ms % 1000 else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def request_url(base: str, settings: HistorySettings, start: int, end: int) -> URL:
    """The first request of ``[start, end)``: templates filled, query parameters added."""
    lo = format_range(start, settings.range_format)
    hi = format_range(end, settings.range_format, end=True)

    def fill(text: str) -> str:
        return text.replace(FROM, lo).replace(TO, hi)

    url = URL(fill(settings.url or base))
    return (
        url.update_query({k: fill(v) for k, v in settings.params.items()})
        if settings.params
        else url
    )


def next_url(first: URL, current: URL, found: object, settings: HistorySettings) -> URL | None:
    """The next page's request from what ``history.next`` found in an answer (None: last)."""
    if found is None or found == "" or found == [] or isinstance(found, bool):
        return None
    if settings.cursor_param is not None:
        return first.update_query({settings.cursor_param: str(found)})
    if not isinstance(found, str):
        raise ValueError(f"history.next: expected a URL, got {found!r}")
    return current.join(URL(found))  # a relative link is relative to the page it is on


def chunks(start: int, end: int, span_ms: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` in requests of at most ``span_ms``."""
    lo = start
    while lo < end:
        hi = min(end, lo + span_ms)
        yield lo, hi
        lo = hi


@dataclass(frozen=True, slots=True)
class Reading:
    """One item of a history answer, mapped (the counter mode's total before differencing)."""

    meter: str
    ts: int
    value: float
    raw: bytes


def distinct(items: Iterable[Reading | BadSample], lo: int, hi: int) -> list[Reading | BadSample]:
    """The items of ``[lo, hi)`` once each, however often pages and chunks repeat them,
    sorted by time per meter (gateways page in their own order); dead letters once each."""
    readings: dict[tuple[str, int, float], Reading] = {}
    bad: dict[tuple[str, bytes], BadSample] = {}
    for it in items:
        if isinstance(it, BadSample):
            bad.setdefault((it.reason, it.raw), it)
        elif lo <= it.ts < hi:
            readings.setdefault((it.meter, it.ts, it.value), it)
    ordered = sorted(readings.values(), key=lambda r: (r.meter, r.ts, r.value))
    return [*ordered, *bad.values()]


def counter_intervals(
    readings: Iterable[Reading],
    metering: Metering,
    start: int,
    end: int,
    unit: str | None,
) -> list[Item]:
    """Cumulative totals (sorted per meter) through the SDK's metering rule: the intervals
    and refusals that end in ``[start, end)``; earlier ones only set the baseline."""
    out: list[Item] = []
    for r in readings:
        result = metering.counter(r.meter, r.ts, r.value)
        if result is None or not start <= result.ts < end:
            continue
        if isinstance(result, Interval):
            out.append(result.sample(raw=r.raw, unit=unit))
        elif isinstance(result, Refusal):
            out.append(result.bad_sample(r.raw))
    return out


def value_samples(readings: Iterable[Reading], unit: str | None) -> list[Item]:
    """Values as the live poll publishes them: each at its own time."""
    return [Sample(r.meter, r.ts, r.value, unit, raw=r.raw) for r in readings]
