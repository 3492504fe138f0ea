"""Job logs: a Redis stream per job for live readers, LogChunk rows for storage.

The executor's output goes through one :class:`~pipelines.engine.logsink.LogSink`
(split into lines, masked, timestamped, batched). Every batch is appended to the job's
Redis stream at once, so live readers see it within milliseconds, and buffered into
LogChunk rows written every half second, so the database write rate stays low. The
stored chunks are the truth: they survive a Redis restart, and a reader that finds the
stream empty or trimmed falls back to them.

Cost and memory: a million-line log must add at most a few seconds to a job and no
memory that grows with its size. So nothing here loops over lines in Python on the
worker: batches are encoded with bulk string operations (`encode_runs`,
`encode_payload`), the buffer of unstored lines is bounded (the producer stores them
itself when it is full, which slows the job's output instead of growing the worker),
and compaction and reading walk the stored chunks a few at a time.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Length
from redis import Redis
from redis.exceptions import RedisError

from .engine.logsink import LogBatch, LogLine, LogSink, Run
from .models import Job, LogChunk

logger = logging.getLogger(__name__)

Line = tuple[int, float, str]

STREAM_MAXLEN = 20_000  # Batches, not lines: a stream holds millions of lines.
STREAM_TTL_AFTER_END = 3600
PERSIST_INTERVAL = 0.5
# A stored chunk holds at most this many lines (or characters).
PERSIST_LINES = 5000
PERSIST_CHARS = 1024 * 1024
# Unstored lines the writer may hold; past this the job's output waits for storage.
PENDING_LINES = 50_000
PENDING_CHARS = 8 * 1024 * 1024
# Batches waiting for the Redis stream; past this the job's output waits for Redis.
OUTBOX_ENTRIES = 64
# After a failed write, the storer retries after this many seconds.
PERSIST_RETRY = 1.0
# Compaction merges runs of small chunks (a slow job writes one every half second)
# into chunks of up to COMPACT_LINES lines / COMPACT_CHARS characters; a chunk this
# big or bigger is left as it is.
COMPACT_LINES = 20_000
COMPACT_CHARS = 4 * 1024 * 1024
COMPACT_SMALL_LINES = PERSIST_LINES // 2
# Chunk rows (id and sizes only) read per query while planning a compaction.
COMPACT_WINDOW = 1000
# The timestamp in front of every stored line ("1764038000.123 ", or " " when it is
# the previous line's).
_STAMP = re.compile(r"^[^ \n]* ", re.MULTILINE)
_STAMPED = re.compile(r"^([^ \n]+) ", re.MULTILINE)


def redis_client() -> Redis:
    """Return a Redis client for the configured REDIS_URL."""
    return Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2
    )


def stream_key(job_id: int) -> str:
    return f"slipway:log:{job_id}"


def encode_chunk(lines: Sequence[LogLine]) -> str:
    """Return the stored form of LINES: one ``"<ts> <text>"`` per line."""
    if isinstance(lines, LogBatch):
        return encode_runs(lines.runs)
    return "\n".join(f"{line.timestamp:.3f} {line.text}" for line in lines)


def encode_runs(runs: Iterable[Run]) -> str:
    """Return the stored form of RUNS, without a per-line Python step.

    A line with the timestamp of the line before it is stored as ``" <text>"`` (an
    empty timestamp): a fast job's lines share a few timestamps, and writing each
    one out would triple what the database stores for a short line. The first line
    of every batch, hence of every chunk, carries its timestamp.
    """
    pieces = []
    for stamp, texts in runs:
        if texts:
            pieces.append(f"{stamp:.3f} " + "\n ".join(texts))
    return "\n".join(pieces)


def encode_payload(first: int, runs: Iterable[Run]) -> str:
    """Return the JSON ``[[number, ts, text], ...]`` of a batch starting at FIRST.

    This is the format the log consumer forwards to browsers unchanged. Built in bulk:
    `json.dumps` escapes all texts at once with a newline between items (a raw
    newline never occurs inside a JSON string, so each one is a separator); the
    separators become ``"],[<number>,<ts>,"`` placeholders and one ``%`` fills in
    the numbers (the texts' own ``%`` are doubled first).
    """
    pieces = []
    number = first
    for stamp, texts in runs:
        if not texts:
            continue
        encoded = json.dumps(texts, ensure_ascii=False, separators=("\n", ":"))
        head = f',{json.dumps(round(stamp, 3))},"'
        template = (
            "%d"
            + head
            + encoded[2:-2].replace("%", "%%").replace('"\n"', '"],[%d' + head)
        )
        pieces.append(template % tuple(range(number, number + len(texts))))
        number += len(texts)
    if not pieces:
        return "[]"
    return "[[" + '"],['.join(pieces) + '"]]'


def decode_chunk(first_line: int, data: str) -> Iterator[Line]:
    """Yield (number, timestamp, text) for a stored chunk."""
    last = 0.0
    for offset, raw in enumerate(data.split("\n")):
        stamp, _, text = raw.partition(" ")
        if stamp:
            last = float(stamp)
        yield first_line + offset, last, text


def _stamps(data: str, count: int) -> list[float]:
    """Return the timestamp of each of the COUNT lines of a stored chunk.

    Only the lines that carry one (the first of each run) cost a Python step; the
    runs between them are filled by list repetition.
    """
    stamps: list[float] = []
    current = 0.0
    line = pos = 0
    for match in _STAMPED.finditer(data):
        line += data.count("\n", pos, match.start())
        pos = match.start()
        stamps += [current] * (line - len(stamps))
        current = float(match.group(1))
    stamps += [current] * (count - len(stamps))
    return stamps


def _decode_slice(first_line: int, data: str, start: int, stop: int) -> list[Line]:
    """Return lines START..STOP-1 (offsets in the chunk), in bulk."""
    parts = data.split("\n")
    texts = list(map(itemgetter(2), map(str.partition, parts[start:stop], repeat(" "))))
    return list(
        zip(
            range(first_line + start, first_line + start + len(texts)),
            _stamps(data, len(parts))[start:stop],
            texts,
            strict=True,
        )
    )


class JobLogWriter:
    """Receive a job's masked lines; publish them live and persist them.

    Thread-safe, with three threads of its own, so that Redis and database round
    trips overlap with reading the job's output instead of pausing it: a flusher
    that empties the sink's batch every 25 ms (live latency), a publisher that
    appends batches to the Redis stream as soon as they are emitted (pipelined when
    several wait), and a storer that writes LogChunk rows whenever PERSIST_LINES
    lines or PERSIST_INTERVAL have passed. Both queues are bounded; when one is full,
    the thread that emits waits (backpressure: the job's output slows, the worker
    does not grow). Stream entries and chunks are written in line order, one write at
    a time, which the log consumer relies on. ``close()`` flushes everything and
    returns once every line is stored.
    """

    def __init__(self, job: Job, *, secrets: Iterable[str], max_bytes: int) -> None:
        self.job_id = job.pk
        self.key = stream_key(job.pk)
        self._redis: Redis | None = redis_client()
        self._redis_failed_at = 0.0
        # Encoded batches not in the stream yet: (first line, last line, JSON).
        self._outbox: deque[tuple[int, int, str]] = deque()
        self._outbox_cond = threading.Condition()
        self._outbox_closed = False
        # Encoded batches not stored yet: (first line, last line, stored form).
        self._pending: list[tuple[int, int, str]] = []
        self._pending_lines = 0
        self._pending_chars = 0
        self._pending_cond = threading.Condition()
        self._persist_lock = threading.Lock()
        self._store_failed = False
        self._last_persist = time.monotonic()
        self.sink = LogSink(self._emit, secrets=secrets, max_bytes=max_bytes)
        self._stop = threading.Event()
        self._closing = False
        self._timer = threading.Thread(
            target=self._tick, name=f"log-{job.pk}", daemon=True
        )
        self._storer = threading.Thread(
            target=self._store_loop, name=f"log-store-{job.pk}", daemon=True
        )
        self._publisher = threading.Thread(
            target=self._publish_loop, name=f"log-publish-{job.pk}", daemon=True
        )
        self._timer.start()
        self._storer.start()
        self._publisher.start()

    def feed(self, chunk: bytes) -> None:
        self.sink.feed(chunk)

    def write_line(self, text: str) -> None:
        """Append one line of Slipway's own (not the job's output)."""
        self.sink.feed(f"\x1b[0;36m[slipway]\x1b[0m {text}\n".encode())

    @property
    def pending_lines(self) -> int:
        """Return how many emitted lines wait to be stored."""
        with self._pending_cond:
            return self._pending_lines

    def _full(self) -> bool:
        return self._pending_lines >= PENDING_LINES or (
            self._pending_chars >= PENDING_CHARS
        )

    def _emit(self, batch: LogBatch) -> None:
        if not len(batch):
            return
        first, last = batch.first, batch.last
        payload = encode_payload(first, batch.runs)
        with self._outbox_cond:
            deadline = time.monotonic() + 60
            while (
                len(self._outbox) >= OUTBOX_ENTRIES
                and self._publisher.is_alive()
                and time.monotonic() < deadline
            ):
                self._outbox_cond.wait(0.5)
            self._outbox.append((first, last, payload))
            self._outbox_cond.notify_all()
        data = encode_runs(batch.runs)
        with self._pending_cond:
            self._pending.append((first, last, data))
            self._pending_lines += last - first + 1
            self._pending_chars += len(data)
            if self._pending_lines >= PERSIST_LINES:
                self._pending_cond.notify_all()
            # Backpressure. While the database fails, lines are kept rather than
            # lost; the wait is bounded so a stuck storer cannot hang the job.
            deadline = time.monotonic() + 60
            while (
                self._full()
                and not self._store_failed
                and self._storer.is_alive()
                and time.monotonic() < deadline
            ):
                self._pending_cond.wait(0.5)

    def _publish_loop(self) -> None:
        while True:
            with self._outbox_cond:
                if not self._outbox and not self._outbox_closed:
                    self._outbox_cond.wait(0.5)
                entries = list(self._outbox)
                self._outbox.clear()
                self._outbox_cond.notify_all()
                done = self._outbox_closed and not entries
            if done:
                return
            if entries:
                self._publish(entries)

    def _publish(self, entries: list[tuple[int, int, str]]) -> None:
        """Append ENTRIES to the stream in one round trip; drop them if Redis is away."""
        if self._redis is None:
            # Redis went away: retry now and then; the database keeps every line anyway.
            if time.monotonic() - self._redis_failed_at < 2:
                return
            self._redis = redis_client()
        try:
            pipe = self._redis.pipeline(transaction=False)
            for first, last, payload in entries:
                pipe.xadd(
                    self.key,
                    {"first": first, "last": last, "lines": payload},
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
            pipe.execute()
        except RedisError as exc:
            logger.warning("log stream of job %s unavailable: %s", self.job_id, exc)
            self._redis = None
            self._redis_failed_at = time.monotonic()

    def _tick(self) -> None:
        while not self._stop.wait(0.025):
            try:
                self.sink.flush()
            except Exception:  # A timer thread must never die silently mid-job.
                logger.exception("log flush of job %s failed", self.job_id)

    def _store_loop(self) -> None:
        try:
            while True:
                with self._pending_cond:
                    if not self._closing and self._pending_lines < PERSIST_LINES:
                        self._pending_cond.wait(
                            max(
                                0.0,
                                self._last_persist
                                + PERSIST_INTERVAL
                                - time.monotonic(),
                            )
                        )
                    if self._closing:
                        return  # close() stores the rest in the caller's thread.
                try:
                    self.persist()
                except Exception:
                    logger.exception("log of job %s could not be stored", self.job_id)
                    self._stop.wait(PERSIST_RETRY)
        finally:
            # This thread's own database connection; nothing else would close it.
            connection.close()

    def persist(self) -> None:
        """Write the buffered lines as LogChunk rows, in order.

        On failure the lines go back to the buffer (the next call retries them) and
        the error is raised.
        """
        with self._persist_lock:
            with self._pending_cond:
                pending, self._pending = self._pending, []
                self._pending_lines = self._pending_chars = 0
            self._last_persist = time.monotonic()
            if not pending:
                return
            try:
                LogChunk.objects.bulk_create(
                    [
                        LogChunk(
                            job_id=self.job_id,
                            first_line=group[0][0],
                            last_line=group[-1][1],
                            data="\n".join(map(itemgetter(2), group)),
                        )
                        for group in _groups(pending, PERSIST_LINES, PERSIST_CHARS)
                    ]
                )
            except Exception:
                with self._pending_cond:
                    self._store_failed = True
                    self._pending[:0] = pending
                    self._pending_lines += pending[-1][1] - pending[0][0] + 1
                    self._pending_chars += sum(len(piece[2]) for piece in pending)
                    self._pending_cond.notify_all()
                raise
            with self._pending_cond:
                self._store_failed = False
                self._pending_cond.notify_all()

    def close(self) -> tuple[int, int, bool]:
        """Flush and store everything; return (lines, bytes seen, truncated).

        Raises if the last lines cannot be stored.
        """
        self._stop.set()
        self._timer.join(5)
        self.sink.close()
        with self._pending_cond:
            self._closing = True
            self._pending_cond.notify_all()
        with self._outbox_cond:
            self._outbox_closed = True
            self._outbox_cond.notify_all()
        self._storer.join(30)
        self._publisher.join(30)
        self.persist()
        if self._redis is not None:
            try:
                self._redis.expire(self.key, STREAM_TTL_AFTER_END)
            except RedisError:
                pass
            self._redis.close()
        return self.sink.lines_written, self.sink.bytes_seen, self.sink.truncated


def _groups(
    pieces: list[tuple[int, int, str]], max_lines: int, max_chars: int
) -> Iterator[list[tuple[int, int, str]]]:
    """Split consecutive encoded batches into groups of at most the given size.

    A single batch larger than the limits forms a group of its own.
    """
    group: list[tuple[int, int, str]] = []
    lines = chars = 0
    for piece in pieces:
        size = piece[1] - piece[0] + 1
        if group and (lines + size > max_lines or chars + len(piece[2]) > max_chars):
            yield group
            group, lines, chars = [], 0, 0
        group.append(piece)
        lines += size
        chars += len(piece[2])
    if group:
        yield group


def read_lines(job: Job | int, after: int = 0, limit: int = 5000) -> list[Line]:
    """Return up to LIMIT stored lines numbered above AFTER, in order.

    Reads only the chunks it needs, two per query (one round trip for a usual
    page), and decodes only the lines it returns: a reader paging through a huge log
    uses little memory and time per call.
    """
    job_id = job if isinstance(job, int) else job.pk
    chunks = (
        LogChunk.objects.filter(job_id=job_id)
        .order_by("first_line")
        .values_list("first_line", "data")
    )
    result: list[Line] = []
    while len(result) < limit:
        rows = list(chunks.filter(last_line__gt=after)[:2])
        for first_line, data in rows:
            start = max(0, after + 1 - first_line)
            result += _decode_slice(
                first_line, data, start, start + limit - len(result)
            )
            after = result[-1][0]
            if len(result) >= limit:
                break
        if len(rows) < 2:
            break
    return result


def iter_raw(job: Job | int) -> Iterator[str]:
    """Yield the stored log as text, one stored chunk of lines at a time.

    Every line ends with a newline; timestamps are removed with one regex pass per
    chunk.
    """
    job_id = job if isinstance(job, int) else job.pk
    chunks = LogChunk.objects.filter(job_id=job_id).order_by("first_line")
    for data in chunks.values_list("data", flat=True).iterator(chunk_size=2):
        yield _STAMP.sub("", data) + "\n"


def compact(job_id: int) -> None:
    """Merge a finished job's small chunks into few large ones.

    Walks the chunk list (ids and sizes only) a window at a time and merges each run
    of small neighbours in its own transaction, so memory stays bounded by one merged
    chunk, a reader always sees either the old chunks or the merged one, and a big
    log written in big chunks is hardly touched.
    """
    rows = (
        LogChunk.objects.filter(job_id=job_id)
        .annotate(size=Length("data"))
        .order_by("first_line")
        .values_list("pk", "first_line", "last_line", "size")
    )
    group: list[tuple[int, int, int, int]] = []
    lines = chars = 0
    after = -1
    while True:
        # A fresh query per window: merged rows sort before `after`, never in it.
        window = list(rows.filter(first_line__gt=after)[:COMPACT_WINDOW])
        for row in window:
            size = row[2] - row[1] + 1
            if size >= COMPACT_SMALL_LINES or row[3] >= COMPACT_CHARS // 4:
                _merge(job_id, group)
                group, lines, chars = [], 0, 0
                continue
            if group and (
                lines + size > COMPACT_LINES or chars + row[3] > COMPACT_CHARS
            ):
                _merge(job_id, group)
                group, lines, chars = [], 0, 0
            group.append(row)
            lines += size
            chars += row[3]
        if len(window) < COMPACT_WINDOW:
            break
        after = window[-1][1]
    _merge(job_id, group)


def _merge(job_id: int, group: list[tuple[int, int, int, int]]) -> None:
    """Replace the chunks of GROUP (consecutive, in order) by one."""
    if len(group) < 2:
        return
    pks = [row[0] for row in group]
    with transaction.atomic():
        data = "\n".join(
            LogChunk.objects.filter(pk__in=pks)
            .order_by("first_line")
            .values_list("data", flat=True)
        )
        deleted, _ = LogChunk.objects.filter(pk__in=pks).delete()
        if deleted != len(pks):
            # Someone else (a second compaction) got there first: keep theirs.
            transaction.set_rollback(True)
            return
        LogChunk.objects.create(
            job_id=job_id,
            first_line=group[0][1],
            last_line=group[-1][2],
            data=data,
        )
