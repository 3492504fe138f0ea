"""Job logs: a Redis stream per job for live readers, LogChunk rows for storage.

The executor's output goes through one :class:`~pipelines.engine.logsink.LogSink`
(split into lines, masked, timestamped, batched). Every batch is appended to the job's
Redis stream at once, so live readers see it within milliseconds, and buffered into
LogChunk rows written every half second, so the database write rate stays low. The
stored chunks are the truth: they survive a Redis restart, and a reader that finds the
stream empty or trimmed falls back to them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from django.conf import settings
from django.db import transaction
from redis import Redis
from redis.exceptions import RedisError

from .engine.logsink import LogLine, LogSink
from .models import Job, LogChunk

logger = logging.getLogger(__name__)

Line = tuple[int, float, str]

STREAM_MAXLEN = 20_000  # Batches, not lines: a stream holds millions of lines.
STREAM_TTL_AFTER_END = 3600
PERSIST_INTERVAL = 0.5
PERSIST_LINES = 5000
COMPACT_LINES = 20_000


def redis_client() -> Redis:
    """Return a Redis client for the configured REDIS_URL."""
    return Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2
    )


def stream_key(job_id: int) -> str:
    return f"slipway:log:{job_id}"


def encode_chunk(lines: Sequence[LogLine]) -> str:
    """Return the stored form of LINES: one ``"<ts> <text>"`` per line."""
    return "\n".join(f"{line.timestamp:.3f} {line.text}" for line in lines)


def decode_chunk(first_line: int, data: str) -> Iterator[Line]:
    """Yield (number, timestamp, text) for a stored chunk."""
    for offset, raw in enumerate(data.split("\n")):
        stamp, _, text = raw.partition(" ")
        yield first_line + offset, float(stamp), text


class JobLogWriter:
    """Receive a job's masked lines; publish them live and persist them.

    Thread-safe: the executor thread feeds the sink while a timer thread flushes it.
    ``close()`` flushes everything and returns once every line is stored.
    """

    def __init__(self, job: Job, *, secrets: Iterable[str], max_bytes: int) -> None:
        self.job_id = job.pk
        self.key = stream_key(job.pk)
        self._redis: Redis | None = redis_client()
        self._redis_failed_at = 0.0
        self._pending: list[LogLine] = []
        self._pending_lock = threading.Lock()
        self._last_persist = time.monotonic()
        self.sink = LogSink(self._emit, secrets=secrets, max_bytes=max_bytes)
        self._stop = threading.Event()
        self._timer = threading.Thread(
            target=self._tick, name=f"log-{job.pk}", daemon=True
        )
        self._timer.start()

    def feed(self, chunk: bytes) -> None:
        self.sink.feed(chunk)

    def write_line(self, text: str) -> None:
        """Append one line of Slipway's own (not the job's output)."""
        self.sink.feed(f"\x1b[0;36m[slipway]\x1b[0m {text}\n".encode())

    def _emit(self, lines: list[LogLine]) -> None:
        if not lines:
            return
        payload = json.dumps(
            [[line.number, round(line.timestamp, 3), line.text] for line in lines],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self._publish(lines[0].number, lines[-1].number, payload)
        with self._pending_lock:
            self._pending.extend(lines)

    def _publish(self, first: int, last: int, payload: str) -> None:
        if self._redis is None:
            # Redis went away: retry now and then; the database keeps every line anyway.
            if time.monotonic() - self._redis_failed_at < 2:
                return
            self._redis = redis_client()
        try:
            self._redis.xadd(
                self.key,
                {"first": first, "last": last, "lines": payload},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except RedisError as exc:
            logger.warning("log stream of job %s unavailable: %s", self.job_id, exc)
            self._redis = None
            self._redis_failed_at = time.monotonic()

    def _tick(self) -> None:
        while not self._stop.wait(0.025):
            try:
                self.sink.flush()
                if time.monotonic() - self._last_persist >= PERSIST_INTERVAL:
                    self.persist()
            except Exception:  # A timer thread must never die silently mid-job.
                logger.exception("log flush of job %s failed", self.job_id)

    def persist(self) -> None:
        """Write the buffered lines as LogChunk rows."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        self._last_persist = time.monotonic()
        if not pending:
            return
        chunks = [
            LogChunk(
                job_id=self.job_id,
                first_line=batch[0].number,
                last_line=batch[-1].number,
                data=encode_chunk(batch),
            )
            for batch in _batched(pending, PERSIST_LINES)
        ]
        LogChunk.objects.bulk_create(chunks)

    def close(self) -> tuple[int, int, bool]:
        """Flush and store everything; return (lines, bytes seen, truncated)."""
        self._stop.set()
        self._timer.join(5)
        self.sink.close()
        self.persist()
        if self._redis is not None:
            try:
                self._redis.expire(self.key, STREAM_TTL_AFTER_END)
            except RedisError:
                pass
            self._redis.close()
        return self.sink.lines_written, self.sink.bytes_seen, self.sink.truncated


def _batched(items: list[LogLine], size: int) -> Iterator[list[LogLine]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_lines(job: Job | int, after: int = 0, limit: int = 5000) -> list[Line]:
    """Return up to LIMIT stored lines numbered above AFTER, in order."""
    job_id = job if isinstance(job, int) else job.pk
    result: list[Line] = []
    chunks = (
        LogChunk.objects.filter(job_id=job_id, last_line__gt=after)
        .order_by("first_line")
        .values_list("first_line", "data")
    )
    for first_line, data in chunks.iterator(chunk_size=20):
        for line in decode_chunk(first_line, data):
            if line[0] > after:
                result.append(line)
                if len(result) >= limit:
                    return result
    return result


def iter_raw(job: Job | int) -> Iterator[str]:
    """Yield the stored log as text, one line (with newline) at a time."""
    job_id = job if isinstance(job, int) else job.pk
    chunks = LogChunk.objects.filter(job_id=job_id).order_by("first_line")
    for data in chunks.values_list("data", flat=True).iterator(chunk_size=20):
        yield "".join(raw.partition(" ")[2] + "\n" for raw in data.split("\n"))


def compact(job_id: int) -> None:
    """Merge a finished job's small chunks into few large ones."""
    with transaction.atomic():
        chunks = list(
            LogChunk.objects.filter(job_id=job_id)
            .order_by("first_line")
            .values_list("pk", "first_line", "last_line", "data")
        )
        if len(chunks) <= 1:
            return
        merged: list[LogChunk] = []
        group: list[tuple[int, int, int, str]] = []
        for chunk in chunks:
            group.append(chunk)
            if chunk[2] - group[0][1] + 1 >= COMPACT_LINES:
                merged.append(_merge(job_id, group))
                group = []
        if group:
            merged.append(_merge(job_id, group))
        if len(merged) == len(chunks):
            return
        LogChunk.objects.filter(pk__in=[c[0] for c in chunks]).delete()
        LogChunk.objects.bulk_create(merged)


def _merge(job_id: int, group: list[tuple[int, int, int, str]]) -> LogChunk:
    return LogChunk(
        job_id=job_id,
        first_line=group[0][1],
        last_line=group[-1][2],
        data="\n".join(c[3] for c in group),
    )
