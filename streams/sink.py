"""The InfluxDB side: line protocol for twin points, and a writer that never gives up.

Points have deterministic tags and timestamps (a window's start, a reading's own time), so
writing the same figures again overwrites the same point: a replay after a crash is harmless.
That is what allows the worker to commit Kafka offsets only after a write succeeded and to
simply retry (with backoff) while InfluxDB is down: the unacknowledged readings wait in Kafka,
and the worker keeps at most one batch of lines in memory (the bounded buffer).

The HTTP ``/api/v2/write`` endpoint with a token is what both InfluxDB 1.8 (token
``user:password``, bucket ``db/rp``) and 2.x serve, so the same writer works on both.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import gzip
import io
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from streams import influx_schema as schema
from streams.meter_vectors import GASES, NANO, SCOPES
from streams.transfers import site_views
from streams.windows import NFIG, WindowUpdate, tco2e_shares

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=65536)
def _esc(value: str) -> str:
    """Escape a tag value for line protocol (commas, spaces, equals signs, backslashes)."""
    if not value:
        return "none"
    if any(c in value for c in ",= \\\n"):
        value = (
            value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
        ).replace("\n", "\\n")
    return value


def _str_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nano(value: int) -> str:
    """A nano-unit integer as a line-protocol float: ``<int>e-9``.

    InfluxDB parses the decimal to the nearest double, which for |value| < 2**53 is exactly
    ``value / 1e9`` in Python: the same stored figure as ``repr(value / NANO)`` at a third of
    the formatting cost (int formatting instead of shortest float repr, ~60 lines per
    thousand readings). Beyond 2**53 the division rounds twice, so the repr is kept there.
    """
    if -_EXACT < value < _EXACT:
        return f"{value}e-9"
    return repr(value / NANO)


_EXACT = 2**53
if (
    len(SCOPES) != 4
    or len(schema.SCOPE_FIELDS) != 4
    or len(schema.GAS_FIELDS) != len(GASES)
    or len(schema.READING_FIGURES) != NFIG
    or schema.READING_PACKED_LAYOUT[: NFIG - 1] != schema.READING_FIGURES[1:]
):
    # the fast path of _figure_fields writes the four scopes out, then the gases
    raise ImportError("streams.sink: _figure_fields must follow meter_vectors.SCOPES, GASES")

# Line-protocol pieces, built once from the schema's names. The line functions run once per
# reading and window: a piece that already holds its separators and name costs them next to
# nothing, where spelling each name in as a separate value cost a third more per line.
_TWIN = f",{schema.TWIN}="
_CLUSTER = f",{schema.CLUSTER}="
_SITE = f",{schema.SITE}="
_METER = f",{schema.METER}="
_CARRIER = f",{schema.CARRIER}="
_TRANSFER = f",{schema.TRANSFER}="
_YEAR = f",{schema.YEAR}="
_SITE_OPEN = frozenset(schema.SITE_OPEN_RESOLUTIONS)
_VALUE = f" {schema.VALUE}="  # the first field: after the space that ends the tags
_QUALITY = f",{schema.QUALITY}="
_F_ENERGY = f"{schema.ENERGY_MWH}="
_F_S1, _F_S2L, _F_S2M, _F_S3 = (f",{name}=" for name in schema.SCOPE_FIELDS)
_F_TCO2E = f",{schema.TCO2E}="
_F_GASES = tuple(f",{name}=" for name in schema.GAS_FIELDS)
_F_GROSS = f",{schema.TCO2E_S1_GROSS}="
_NSCOPE1 = 1 + len(SCOPES)  # where the gases start in a figure vector
_CAPTURED = _NSCOPE1 + GASES.index("co2_captured")
_F_READINGS = f",{schema.READINGS}="
_COMPLETE = f",{schema.COMPLETE}=true"
_INCOMPLETE = f",{schema.COMPLETE}=false"
_R_ENERGY = f",{schema.READING_ENERGY}="
_R_PACKED = f",{schema.READING_PACKED}="


def _figure_fields(vec: Sequence[int]) -> str:
    """Every figure of a window or year to date: energy, tCO2e per scope, the headline
    tCO2e, scope 1 by gas, gross scope 1, the reading count. All are written every time
    (a window's point is overwritten as it grows, so a figure back at 0 must say so)."""
    t = vec[1] + vec[2]
    gross = vec[1] + vec[_CAPTURED]
    head = vec[:_NSCOPE1]
    if (
        min(*head, *vec[_NSCOPE1:NFIG], t, gross) > -_EXACT
        and max(*head, *vec[_NSCOPE1:NFIG], t, gross) < _EXACT
    ):
        return (
            f"{_F_ENERGY}{vec[0]}e-9{_F_S1}{vec[1]}e-9{_F_S2L}{vec[2]}e-9"
            f"{_F_S2M}{vec[3]}e-9{_F_S3}{vec[4]}e-9{_F_TCO2E}{t}e-9"
            + "".join(f"{n}{v}e-9" for n, v in zip(_F_GASES, vec[_NSCOPE1:NFIG], strict=True))
            + f"{_F_GROSS}{gross}e-9{_F_READINGS}{vec[NFIG]}i"
        )
    parts = [f"{schema.ENERGY_MWH}={_nano(vec[0])}"]
    for k, name in enumerate(schema.SCOPE_FIELDS):
        parts.append(f"{name}={_nano(vec[1 + k])}")
    parts.append(f"{schema.TCO2E}={_nano(t)}")
    for k, name in enumerate(schema.GAS_FIELDS):
        parts.append(f"{name}={_nano(vec[_NSCOPE1 + k])}")
    parts.append(f"{schema.TCO2E_S1_GROSS}={_nano(gross)}")
    parts.append(f"{schema.READINGS}={vec[NFIG]}i")
    return ",".join(parts)


@functools.lru_cache(maxsize=65536)
def _window_tags(
    twin: str, level: str, cluster: str, site: str, meter: str, carrier: str, res: str
) -> str:
    tags = f"{schema.WINDOW_MEASUREMENTS[level]}{_TWIN}{_esc(twin)}{_CLUSTER}{_esc(cluster)}"
    if level != "cluster":
        tags += f"{_SITE}{_esc(site)}"
    if level == "meter":
        tags += f"{_METER}{_esc(meter)}"
    return tags + f"{_CARRIER}{_esc(carrier)},{schema.RES}={res}"


@functools.lru_cache(maxsize=262144)
def _meter_tags(
    measurement: str, twin: str, cluster: str, site: str, meter: str, carrier: str
) -> str:
    """The tags of a meter's point: the same meters come back every batch."""
    return (
        f"{measurement}{_TWIN}{_esc(twin)}{_CLUSTER}{_esc(cluster)}{_SITE}{_esc(site)}"
        f"{_METER}{_esc(meter)}{_CARRIER}{_esc(carrier)}"
    )


def window_line(twin: str, u: WindowUpdate) -> str:
    tags = _window_tags(twin, u.level, u.cluster, u.site, u.meter, u.carrier, u.res)
    complete = _COMPLETE if u.complete else _INCOMPLETE
    return f"{tags} {_figure_fields(u.vec)}{complete} {u.start}"


def window_lines(twin: str, updates: Iterable[WindowUpdate]) -> Iterator[str]:
    """The points of window updates: a transfer's site window is two, the sender's and the
    receiver's view (``streams.transfers.site_views``), each tagged with the transfer.

    An open site window (of a resolution not in ``SITE_OPEN_RESOLUTIONS``) is not written:
    the state holds it, and it is written once closed (``influx_schema.SITE_WINDOW``)."""
    for u in updates:
        if u.level == "site" and not u.complete and u.res not in _SITE_OPEN:
            continue
        if u.level != "site" or ">" not in u.carrier:
            yield window_line(twin, u)
            continue
        complete = _COMPLETE if u.complete else _INCOMPLETE
        for site, carrier, tag, vec in site_views(u.site, u.carrier, u.vec):
            tags = _window_tags(twin, "site", u.cluster, site, "", carrier, u.res)
            yield f"{tags}{_TRANSFER}{_esc(tag)} {_figure_fields(vec)}{complete} {u.start}"


def ytd_lines(
    twin: str,
    cluster: str,
    site: str,
    key: str,
    year: int,
    vec: Sequence[int],
    ts: int,
    extra: str = "",
) -> list[str]:
    """A site's year-to-date point(s) of one window key (two for a transfer, as windows);
    ``extra`` (the completeness fields) goes on a non-transfer point."""
    if ">" not in key:
        return [ytd_line(twin, cluster, site, key, year, vec, ts, extra=extra)]
    return [
        ytd_line(twin, cluster, s, carrier, year, v, ts, tag)
        for s, carrier, tag, v in site_views(site, key, vec)
    ]


def ytd_line(
    twin: str,
    cluster: str,
    site: str,
    carrier: str,
    year: int,
    vec: Sequence[int],
    ts: int,
    transfer: str = "",
    extra: str = "",
) -> str:
    """``extra``: more fields of the same point (``quality_fields``), comma first."""
    scope = f"{_SITE}{_esc(site)}" if site else ""
    tag = f"{_TRANSFER}{_esc(transfer)}" if transfer else ""
    return (
        f"{schema.TWIN_YTD}{_TWIN}{_esc(twin)}{_CLUSTER}{_esc(cluster)}{scope}"
        f"{_CARRIER}{_esc(carrier)}{_YEAR}{year}{tag} {_figure_fields(vec)}{extra} {ts}"
    )


def quality_fields(by_quality: Mapping[str, Sequence[int]]) -> str:
    """The completeness fields of a twin_ytd point (``schema.quality_field``), comma first,
    from figure vectors per quality name (nano-units, the count last)."""
    shares = tco2e_shares(by_quality)
    out = []
    for q, v in by_quality.items():
        out.append(f",{schema.quality_field(q, schema.TCO2E)}={int(v[1]) + int(v[2])}e-9")
        out.append(f",{schema.quality_field(q, schema.ENERGY_MWH)}={int(v[0])}e-9")
        out.append(f",{schema.quality_field(q, schema.READINGS)}={int(v[-1])}i")
        share = shares[q]
        if share is not None:
            out.append(f",{schema.quality_field(q, schema.QUALITY_SHARE)}={share!r}")
    return "".join(out)


def reading_line(
    twin: str,
    cluster: str,
    site: str,
    meter: str,
    carrier: str,
    ts: int,
    value: float,
    quality: str,
    vec: Sequence[int],
    partition: int,
    offset: int,
    start: int = -1,
) -> str:
    """One accepted reading as stored: its value and quality, its energy, and packed in one
    string (``schema.READING_PACKED_LAYOUT``) its other priced figures in nano-units (what
    it added to its windows, so a restatement can recompute them exactly), the record that
    brought it (so a replay after a crash can tell its own unstored effect from a
    duplicate) and its interval start (-1: an instant).

    Every field is written every time, so a real reading that overwrites a stored gap fill
    (the same series and time; ``streams.windows.replaces_fill``) leaves none of the fill's
    figures behind."""
    tags = _meter_tags(schema.METER_READING, twin, cluster, site, meter, carrier)
    rest = " ".join(map(str, vec[1:NFIG]))
    return (
        f"{tags}{_VALUE}{float(value)!r}{_QUALITY}{_str_field(quality)}"
        f'{_R_ENERGY}{vec[0]}i{_R_PACKED}"{rest} {partition} {offset} {start}" {ts}'
    )


def restatement_line(
    twin: str,
    cluster: str,
    site: str,
    carrier: str,
    start: int,
    old: Sequence[int],
    new: Sequence[int],
    added: int,
    reason: str,
    at: int,
) -> str:
    """A restated hour: old and new figures, how many readings came late, why. Stamped with
    the time of the record that restated it (``at``: when it changed, so a board's range shows
    the restatements made in it), the hour in the tag ``hour`` (epoch ms). A transfer's
    hour is recorded in the sender's view, with its transfer tag."""
    tag = ""
    if ">" in carrier:
        (_, base, transfer, old), (_, _, _, new) = (
            site_views(site, carrier, old)[0],
            site_views(site, carrier, new)[0],
        )
        carrier, tag = base, f"{_TRANSFER}{_esc(transfer)}"
    return (
        f"{schema.RESTATEMENT}{_TWIN}{_esc(twin)}{_CLUSTER}{_esc(cluster)}{_SITE}{_esc(site)}"
        f"{_CARRIER}{_esc(carrier)},{schema.RES}=1h,{schema.HOUR}={start}{tag} "
        f"{schema.OLD_TCO2E}={_nano(old[1] + old[2])},{schema.NEW_TCO2E}={_nano(new[1] + new[2])},"
        f"{schema.OLD_ENERGY_MWH}={_nano(old[0])},{schema.NEW_ENERGY_MWH}={_nano(new[0])},"
        f"{schema.READINGS_ADDED}={added}i,{schema.REASON}={_str_field(reason)} {at}"
    )


def fields_line(measurement: str, tags: dict[str, str], fields: dict[str, object], ts: int) -> str:
    """A generic point (progress, pipeline statistics). Integers are written as integers."""
    tag_s = ",".join(f"{k}={_esc(v)}" for k, v in sorted(tags.items()))
    parts = []
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int):
            parts.append(f"{k}={v}i")
        elif isinstance(v, float):
            parts.append(f"{k}={v!r}")
        else:
            parts.append(f"{k}={_str_field(str(v))}")
    return f"{measurement},{tag_s} {','.join(parts)} {ts}"


class InfluxAuthError(RuntimeError):
    """InfluxDB answered and refused the token, or the org/bucket does not exist."""


class InfluxUnreachable(RuntimeError):
    """InfluxDB did not answer: the token could not be checked."""


def check_write_access(url: str, token: str, org: str, bucket: str, timeout: float = 10.0) -> None:
    """Ask InfluxDB once whether ``token`` may write to ``bucket``, by an empty write.

    The sink retries 401s forever (a token can be fixed while the worker waits), which at
    start-up only hides a typo: the worker calls this first and refuses to start instead.
    An empty body writes nothing on 1.8 and 2.x; authentication is checked before it is.
    """
    query = urllib.parse.urlencode({"org": org, "bucket": bucket, "precision": "ms"})
    target = url.rstrip("/") + "/api/v2/write?" + query
    request = urllib.request.Request(
        target, data=b"", method="POST", headers={"Authorization": f"Token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return  # 204: the token may write here
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()[:300].decode(errors="replace").strip()
    except (OSError, TimeoutError) as exc:
        raise InfluxUnreachable(f"could not check the InfluxDB token at {url}: {exc}") from exc
    if status in (401, 403):
        raise InfluxAuthError(
            f"InfluxDB at {url} rejected the token (HTTP {status}{': ' + text if text else ''}): "
            "check CLUSTERTWIN_INFLUX_TOKEN (`clustertwin stack env --show-secrets` prints the "
            "local stack's)."
        )
    if status == 404:
        raise InfluxAuthError(
            f"InfluxDB at {url}: {text or 'not found'}; check CLUSTERTWIN_INFLUX_ORG={org!r} and "
            f"CLUSTERTWIN_INFLUX_BUCKET={bucket!r}."
        )
    if status == 400:
        return  # authenticated; only the (empty) body was judged
    raise InfluxUnreachable(f"could not check the InfluxDB token at {url}: HTTP {status} {text}")


@dataclass
class SinkStats:
    lines: int = 0
    # lines stored per measurement: where the write load goes (``bench/bench_scale.py``)
    by_measurement: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    rejected_requests: int = 0
    outage_started: float | None = None
    last_error: str = ""


class InfluxSink:
    """Batched, gzip-compressed writes with retry and exponential backoff.

    ``write`` returns only once every line is stored (or InfluxDB refused it as malformed,
    which retrying cannot fix and is logged): the caller acknowledges Kafka records after it.
    """

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        batch_lines: int = 5000,
        timeout_s: float = 30.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/") + "/api/v2/write"
        self.query_url = url.rstrip("/") + "/api/v2/query"
        self.org = org
        self.bucket = bucket
        self.params = {"org": org, "bucket": bucket, "precision": "ms"}
        self.headers = {
            "Authorization": f"Token {token}",
            "Content-Encoding": "gzip",
            "Content-Type": "text/plain; charset=utf-8",
        }
        self.batch_lines = batch_lines
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_backoff_s = max_backoff_s
        self.stats = SinkStats()
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, lines: Iterable[str]) -> None:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= self.batch_lines:
                await self._post(chunk)
                chunk = []
        if chunk:
            await self._post(chunk)

    async def _post(self, chunk: list[str]) -> None:
        body = gzip.compress("\n".join(chunk).encode(), compresslevel=1)
        delay = 0.1
        while True:
            try:
                session = await self._client()
                async with session.post(
                    self.url, params=self.params, data=body, headers=self.headers
                ) as resp:
                    if resp.status in (200, 204):
                        self.stats.lines += len(chunk)
                        self.stats.by_measurement.update(line[: line.find(",")] for line in chunk)
                        self.stats.requests += 1
                        if self.stats.outage_started is not None:
                            log.warning(
                                "InfluxDB writes resumed after %.1f s",
                                time.monotonic() - self.stats.outage_started,
                            )
                            self.stats.outage_started = None
                        return
                    text = (await resp.text())[:500]
                    if resp.status in (400, 413, 422):
                        # Malformed or conflicting points: retrying cannot help, and blocking
                        # the stream on them would stop the whole twin.
                        self.stats.rejected_requests += 1
                        self.stats.last_error = f"{resp.status}: {text}"
                        log.error("InfluxDB rejected %d lines (%s)", len(chunk), text)
                        return
                    if resp.status in (401, 403):
                        self.stats.last_error = f"{resp.status}: {text}"
                        log.error(
                            "InfluxDB refused the credentials (%d): check "
                            "CLUSTERTWIN_INFLUX_TOKEN; retrying",
                            resp.status,
                        )
                    error = f"HTTP {resp.status}: {text}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.stats.retries += 1
            self.stats.last_error = error
            if self.stats.outage_started is None:
                self.stats.outage_started = time.monotonic()
                log.warning("InfluxDB write failed (%s); retrying with backoff", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)

    async def query(self, flux: str) -> list[dict[str, str]]:
        """Run a Flux query; its rows as dicts of strings (every table's rows in one list).

        Retried with backoff like a write: a restatement cannot go on without the stored
        readings, and its records stay unacknowledged meanwhile.
        """
        body = {
            "query": flux,
            "type": "flux",
            "dialect": {"header": True, "annotations": [], "delimiter": ","},
        }
        headers = {
            "Authorization": self.headers["Authorization"],
            "Accept": "application/csv",
            "Content-Type": "application/json",
        }
        delay = 0.1
        while True:
            try:
                session = await self._client()
                async with session.post(
                    self.query_url, params={"org": self.org}, json=body, headers=headers
                ) as resp:
                    text = await resp.text()
                    if resp.status == 200:
                        return parse_csv_tables(text)
                    if resp.status in (400, 422):
                        raise ValueError(f"InfluxDB refused a query ({resp.status}): {text[:500]}")
                    error = f"HTTP {resp.status}: {text[:500]}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.stats.retries += 1
            self.stats.last_error = error
            log.warning("InfluxDB query failed (%s); retrying with backoff", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)


def parse_csv_tables(text: str) -> list[dict[str, str]]:
    """Flux's annotated-less CSV: tables one after another, each with its header row."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in csv.reader(io.StringIO(text)):
        if not line or all(not c for c in line):
            header = None
            continue
        if header is None:
            header = line
            continue
        rows.append(dict(zip(header, line, strict=False)))
    return rows
