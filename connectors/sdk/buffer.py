"""A bounded on-disk log of Kafka records: the connector's write-ahead buffer.

Every envelope is appended here first and removed only once Kafka has acknowledged it, so a
Kafka outage, a producer restart or a crash of the connector loses nothing; records are
replayed in append order, which keeps a site's readings ordered. Bounded: when full, ``append``
raises ``BufferFull`` and the runner stops reading its source (back-pressure) instead of
dropping data.

Layout: ``seg-<n>.log`` files of framed records and a ``cursor`` file naming the first record
not yet acknowledged. Frame: magic, crc32 and length of the body; body = 4-byte meta length,
meta JSON (topic, key, headers, reading count, newest ts), value bytes.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

_MAGIC = b"CT"
_HEAD = struct.Struct("<2sII")  # magic, crc32(body), len(body)
_META_LEN = struct.Struct("<I")
_SEG = re.compile(r"^seg-(\d{12})\.log$")


class BufferFull(RuntimeError):
    """The on-disk buffer reached its bound; the caller must wait for Kafka to drain it."""


class BufferCorrupt(RuntimeError):
    """A record failed its checksum (torn write after a crash)."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    n_readings: int = 0
    newest_ts: int | None = None


Position = tuple[int, int]  # (segment number, byte offset)


def _encode(rec: Record) -> bytes:
    meta = orjson.dumps(
        {
            "t": rec.topic,
            "k": None if rec.key is None else rec.key.decode("latin-1"),
            "h": [[k, v.decode("latin-1")] for k, v in rec.headers],
            "n": rec.n_readings,
            "ts": rec.newest_ts,
        }
    )
    body = _META_LEN.pack(len(meta)) + meta + rec.value
    return _HEAD.pack(_MAGIC, zlib.crc32(body), len(body)) + body


def _decode(body: bytes) -> Record:
    (mlen,) = _META_LEN.unpack_from(body)
    meta = orjson.loads(body[4 : 4 + mlen])
    return Record(
        topic=meta["t"],
        key=None if meta["k"] is None else meta["k"].encode("latin-1"),
        value=body[4 + mlen :],
        headers=tuple((k, v.encode("latin-1")) for k, v in meta["h"]),
        n_readings=meta["n"],
        newest_ts=meta["ts"],
    )


class DiskBuffer:
    """Append at the tail, read from an independent position, acknowledge to free space.

    Thread-safe: the connector's event loop appends while the sender thread reads and acks.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._cursor_path = self.dir / "cursor"
        segs = self._segments()
        self._acked: Position = self._read_cursor(segs)
        self._tail_seg = segs[-1] if segs else self._acked[0]
        path = self._seg_path(self._tail_seg)
        if path.exists():
            self._truncate_torn_tail(path)
        self._tail = open(path, "ab")  # noqa: SIM115 - kept open for the buffer's life
        self._tail_off = self._tail.tell()
        self._sizes = {n: self._seg_path(n).stat().st_size for n in segs}
        self._sizes.setdefault(self._tail_seg, self._tail_off)
        self._pending_records = self._count_from(self._acked)
        self._read_pos: Position = self._acked

    # -- introspection ----------------------------------------------------------------

    def _seg_path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG.match(p.name)))

    def _read_cursor(self, segs: list[int]) -> Position:
        try:
            seg, off = orjson.loads(self._cursor_path.read_bytes())
            return int(seg), int(off)
        except FileNotFoundError:
            return (segs[0], 0) if segs else (0, 0)

    def _truncate_torn_tail(self, path: Path) -> None:
        """Cut a frame half-written by a crash, so appends continue on a clean boundary."""
        good = 0
        with open(path, "rb") as fh:
            while True:
                head = fh.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    break
                magic, crc, blen = _HEAD.unpack(head)
                body = fh.read(blen)
                if magic != _MAGIC or len(body) < blen or zlib.crc32(body) != crc:
                    break
                good += _HEAD.size + blen
        if good != path.stat().st_size:
            with open(path, "r+b") as fh:
                fh.truncate(good)

    def _count_from(self, pos: Position) -> int:
        count = 0
        for _pos, _rec in self._iter_from(pos, limit=None):
            count += 1
        return count

    @property
    def used_bytes(self) -> int:
        """Bytes on disk not yet freed (whole segments are freed once fully acknowledged)."""
        with self._lock:
            return sum(self._sizes.values())

    @property
    def pending(self) -> int:
        """Records appended and not yet acknowledged."""
        with self._lock:
            return self._pending_records

    # -- writing ----------------------------------------------------------------------

    def append(self, rec: Record, *, force: bool = False) -> None:
        """Write ``rec`` at the tail; ``force`` exceeds the bound (shutdown: never drop)."""
        frame = _encode(rec)
        with self._lock:
            used = sum(self._sizes.values())
            if not force and used + len(frame) > self.max_bytes and self._pending_records:
                raise BufferFull(
                    f"connector buffer {self.dir} holds {self._pending_records} records "
                    f"({used} bytes, bound {self.max_bytes})"
                )
            if self._tail_off and self._tail_off + len(frame) > self.segment_bytes:
                self._tail.close()
                self._tail_seg += 1
                self._tail = open(self._seg_path(self._tail_seg), "ab")  # noqa: SIM115
                self._tail_off = 0
            self._tail.write(frame)
            self._tail.flush()
            if self.fsync:
                os.fsync(self._tail.fileno())
            self._tail_off += len(frame)
            self._sizes[self._tail_seg] = self._tail_off
            self._pending_records += 1

    # -- reading ----------------------------------------------------------------------

    def _iter_from(self, pos: Position, limit: int | None) -> list[tuple[Position, Record]]:
        """Records after ``pos`` with the position just past each; stops at a torn tail."""
        out: list[tuple[Position, Record]] = []
        seg, off = pos
        for n in (n for n in self._segments() if n >= seg):
            at = off if n == seg else 0
            with open(self._seg_path(n), "rb") as fh:
                fh.seek(at)
                while True:
                    head = fh.read(_HEAD.size)
                    if len(head) < _HEAD.size:
                        break  # end of segment, or a frame being written right now
                    magic, crc, blen = _HEAD.unpack(head)
                    if magic != _MAGIC:
                        raise BufferCorrupt(f"bad frame at {self._seg_path(n)}:{at}")
                    body = fh.read(blen)
                    if len(body) < blen:
                        break  # written partially (crash, or being written now)
                    if zlib.crc32(body) != crc:
                        raise BufferCorrupt(f"checksum mismatch at {self._seg_path(n)}:{at}")
                    at += _HEAD.size + blen
                    out.append(((n, at), _decode(body)))
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    def read(self, limit: int = 256) -> list[tuple[Position, Record]]:
        """The next records after the read position; advances it (see ``rewind``)."""
        with self._lock:
            pos = self._read_pos
        batch = self._iter_from(pos, limit)
        if batch:
            with self._lock:
                self._read_pos = batch[-1][0]
        return batch

    def rewind(self) -> None:
        """Forget what was read but not acknowledged: it will be read (and sent) again."""
        with self._lock:
            self._read_pos = self._acked

    def ack(self, pos: Position, n_records: int) -> None:
        """Everything before ``pos`` reached Kafka: persist the cursor and free segments."""
        with self._lock:
            self._acked = pos
            self._pending_records = max(0, self._pending_records - n_records)
            tmp = self._cursor_path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(list(pos)))
            os.replace(tmp, self._cursor_path)
            for n in list(self._sizes):
                if n < pos[0]:
                    self._seg_path(n).unlink(missing_ok=True)
                    del self._sizes[n]
            if pos == (self._tail_seg, self._tail_off) and self._tail_off > self.segment_bytes // 4:
                # Fully drained: start a fresh segment so the old one can be freed at once.
                self._tail.close()
                self._seg_path(self._tail_seg).unlink(missing_ok=True)
                del self._sizes[self._tail_seg]
                self._tail_seg += 1
                self._tail = open(self._seg_path(self._tail_seg), "ab")  # noqa: SIM115
                self._tail_off = 0
                self._sizes[self._tail_seg] = 0
                self._acked = self._read_pos = (self._tail_seg, 0)
                tmp.write_bytes(orjson.dumps(list(self._acked)))
                os.replace(tmp, self._cursor_path)

    def close(self) -> None:
        with self._lock:
            self._tail.close()
