"""Turn a job's raw output bytes into masked, numbered, timestamped, batched lines.

Contract: an executor calls `feed()` with every chunk it reads, a timer thread calls
`flush()` periodically, and the owner calls `close()` once at the end. `emit` receives
`LogBatch`es (sequences of `LogLine`) in line-number order; it is called with the sink's
lock held (which is what keeps batches in order across threads), so it must not call
back into the sink.

Speed: a chunk is decoded, masked and split in bulk, lines are numbered by counting,
and a batch holds plain strings grouped by timestamp, so a million-line log costs no
per-line objects beyond its strings. A `LogLine` is built only when someone iterates a
batch; the writer encodes `LogBatch.runs` directly.

Text rules (see docs/pipeline-reference.md, "Job logs"):

* Output is decoded as UTF-8 with replacement characters; a character split across
  chunks is decoded whole.
* `\\n` and `\\r\\n` end a line. A bare `\\r` (progress bars) restarts the line's visible
  content: only the text after the last bare `\\r` is kept. `\\r` right before the
  newline is ignored. Lines carrying GitLab section markers (`section_start:` /
  `section_end:`) are kept whole, because their header follows a `\\r`.
* ANSI colour codes are kept: the log viewer renders them.
* Secret values are replaced by `[MASKED]`, also when split across chunks or when a
  partial line is flushed early. Values shorter than 4 characters are not masked:
  masking "a" or "123" would blank out ordinary output everywhere while protecting
  nothing. A multi-line secret is masked line by line.
* A partial line (no newline yet) is emitted on `flush()` as its own line once the
  output has been quiet for `partial_interval` (0.5 s), so `printf "Continue? "` shows
  up, while a busy reader never splits a line that is still flowing; the rest of that
  line becomes the next line. A trailing fragment that could be the start of a secret
  is held back until the next output decides it.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

__all__ = ["LogBatch", "LogLine", "LogSink", "MASK", "MIN_SECRET_LENGTH", "Run"]

MASK = "[MASKED]"
MIN_SECRET_LENGTH = 4
# A line that never ends (a binary dump, a spinner without \r) is cut into lines of
# this many characters so memory stays bounded.
MAX_PARTIAL_CHARS = 64 * 1024
_SECTION = re.compile(r"section_(?:start|end):")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One output line; `number` counts from the sink's `start_number`."""

    number: int
    timestamp: float
    text: str


# Lines that share one timestamp: (timestamp, texts).
Run = tuple[float, list[str]]


class LogBatch(Sequence[LogLine]):
    """Consecutive lines numbered from `first`, stored as runs of one timestamp each.

    It behaves as a sequence of `LogLine`, built on access; bulk readers use `first`,
    `last` and `runs`, which cost nothing per line.
    """

    __slots__ = ("first", "runs", "_count")

    def __init__(self, first: int, runs: list[Run]) -> None:
        self.first = first
        self.runs = runs
        self._count = sum(len(texts) for _, texts in runs)

    @property
    def last(self) -> int:
        """Return the number of the batch's last line."""
        return self.first + self._count - 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[LogLine]:
        number = self.first
        for stamp, texts in self.runs:
            for text in texts:
                yield LogLine(number, stamp, text)
                number += 1

    @overload
    def __getitem__(self, index: int) -> LogLine: ...

    @overload
    def __getitem__(self, index: slice) -> list[LogLine]: ...

    def __getitem__(self, index: int | slice) -> LogLine | list[LogLine]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("LogBatch index out of range")
        number = self.first
        for stamp, texts in self.runs:
            if index < len(texts):
                return LogLine(number + index, stamp, texts[index])
            index -= len(texts)
            number += len(texts)
        raise IndexError("LogBatch index out of range")  # pragma: no cover

    def texts(self) -> list[str]:
        """Return the lines' texts in order."""
        if len(self.runs) == 1:
            return self.runs[0][1]
        return [text for _, texts in self.runs for text in texts]

    def __repr__(self) -> str:
        return f"LogBatch(first={self.first}, lines={self._count})"


def _visible(line: str) -> str:
    """Return what a terminal would show for `line` (which holds a bare `\\r`)."""
    if _SECTION.search(line):
        return line.rstrip("\r")
    line = line.rstrip("\r")
    cut = line.rfind("\r")
    return line if cut == -1 else line[cut + 1 :]


class _Masker:
    """Replace secret values; find fragments that may start a secret."""

    def __init__(self, secrets: Iterable[str]) -> None:
        parts: set[str] = set()
        for secret in secrets:
            for part in secret.splitlines():
                if len(part) >= MIN_SECRET_LENGTH:
                    parts.add(part)
        ordered = sorted(parts, key=len, reverse=True)
        self.enabled = bool(ordered)
        self.longest = len(ordered[0]) if ordered else 0
        alternation = "|".join(re.escape(p) for p in ordered)
        self.pattern = re.compile(alternation) if ordered else None
        # A lookahead finds every start position, so overlapping secrets are all
        # covered: plain `sub` would mask one and leak the tail of the other.
        self.starts = re.compile(f"(?=({alternation}))") if ordered else None
        self.prefixes = {p[:i] for p in ordered for i in range(1, len(p))}

    def intervals(self, text: str) -> list[tuple[int, int]]:
        """Return the merged spans of every secret occurrence in `text`."""
        assert self.starts is not None
        spans: list[tuple[int, int]] = []
        for match in self.starts.finditer(text):
            start, end = match.start(), match.start() + len(match.group(1))
            if spans and start <= spans[-1][1]:
                if end > spans[-1][1]:
                    spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans

    def mask(self, text: str) -> str:
        """Return `text` with every secret replaced by the mask."""
        if self.pattern is None or self.pattern.search(text) is None:
            return text
        out = []
        pos = 0
        for start, end in self.intervals(text):
            out.append(text[pos:start])
            out.append(MASK)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def safe_prefix_length(self, text: str) -> int:
        """Return how much of `text` can be emitted now without splitting a secret.

        The rest could be the beginning of a secret that the next chunk completes.
        """
        if not self.enabled:
            return len(text)
        cut = len(text)
        for q in range(max(0, len(text) - self.longest + 1), len(text)):
            if text[q:] in self.prefixes:
                cut = q
                break
        # Never cut through a secret that is already complete.
        for start, end in self.intervals(text):
            if start < cut < end:
                cut = start
                break
        return cut


class LogSink:
    """Mask, number, timestamp and batch output; thread-safe."""

    def __init__(
        self,
        emit: Callable[[LogBatch], None],
        *,
        secrets: Iterable[str] = (),
        max_bytes: int = 64 * 1024 * 1024,
        batch_lines: int = 1000,
        batch_interval: float = 0.05,
        partial_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        start_number: int = 1,
    ) -> None:
        self._emit = emit
        self._masker = _Masker(secrets)
        self._max_bytes = max_bytes
        self._batch_lines = max(1, batch_lines)
        self._batch_interval = batch_interval
        # A partial line is emitted on its own only once the output has been quiet
        # this long (a prompt); a reader that is merely late must not split lines.
        self._partial_interval = max(partial_interval, batch_interval)
        self._last_feed = 0.0
        self._clock = clock
        self._start_number = start_number
        self._next = start_number
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._partial_since: float | None = None
        self._continued = False  # Part of the current line was already emitted.
        # Runs waiting for the next batch; a run is (timestamp, texts, offset): its
        # texts before `offset` went out already.
        self._batch: deque[tuple[float, list[str], int]] = deque()
        self._batch_count = 0
        self._batch_since: float | None = None
        self._bytes_seen = 0
        self._truncated = False
        self._closed = False

    # --- public ---------------------------------------------------------------------

    @property
    def lines_written(self) -> int:
        """Return how many lines were numbered so far (pending ones included)."""
        with self._lock:
            return self._next - self._start_number

    @property
    def bytes_seen(self) -> int:
        """Return how many bytes were fed, including those dropped after truncation."""
        with self._lock:
            return self._bytes_seen

    @property
    def truncated(self) -> bool:
        """Return True once output went over `max_bytes`."""
        with self._lock:
            return self._truncated

    def feed(self, chunk: bytes) -> None:
        """Add raw output; emit full batches and batches older than the interval."""
        with self._lock:
            if self._closed:
                raise ValueError("feed() after close()")
            before = self._bytes_seen
            self._bytes_seen += len(chunk)
            if self._truncated:
                return
            now = self._clock()
            self._last_feed = now
            if self._bytes_seen > self._max_bytes:
                self._take(chunk[: max(0, self._max_bytes - before)], now, final=False)
                self._truncate(now)
            else:
                self._take(chunk, now, final=False)
                while len(self._partial) > MAX_PARTIAL_CHARS:
                    if not self._flush_partial(now, limit=MAX_PARTIAL_CHARS):
                        break
            self._emit_ready(now, force=False)

    def flush(self) -> None:
        """Emit the pending batch, and a partial line once the output went quiet."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if (
                self._partial
                and self._partial_since is not None
                and now - self._last_feed >= self._partial_interval
            ):
                self._flush_partial(now)
            self._emit_ready(now, force=True)

    def close(self) -> None:
        """Emit everything, including a final line without a newline; idempotent."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if not self._truncated:
                self._take(b"", now, final=True)
                if self._partial:
                    text = self._masker.mask(_visible(self._partial))
                    if text or not self._continued:
                        self._add([text], now)
                    self._partial = ""
            self._emit_ready(now, force=True)
            self._closed = True

    # --- internals (called with the lock held) --------------------------------------

    def _take(self, chunk: bytes, now: float, *, final: bool) -> None:
        text = self._decoder.decode(chunk, final)
        if not text:
            return
        if self._partial:
            text = self._partial + text
        cut = text.rfind("\n")
        if cut == -1:
            self._partial = self._compact(text)
            if self._partial_since is None:
                self._partial_since = now
            return
        complete = text[:cut]
        self._partial = self._compact(text[cut + 1 :])
        self._partial_since = now if self._partial else None
        if self._masker.enabled:
            complete = self._masker.mask(complete)
        if "\r" in complete:
            complete = complete.replace("\r\n", "\n")
            lines = complete.split("\n")
            if "\r" in complete:
                _fix_returns(complete, lines)
        else:
            lines = complete.split("\n")
        if self._continued:
            self._continued = False
            if lines[0] == "":
                # The line's start went out early; an empty rest is not a new line.
                del lines[0]
        self._add(lines, now)

    def _compact(self, partial: str) -> str:
        """Drop text a bare `\\r` already overwrote, so spinners use no memory."""
        # Trailing \r's may still turn out to be part of the line ending.
        cut = partial.rstrip("\r").rfind("\r")
        if cut == -1 or _SECTION.search(partial, 0, cut):
            return partial
        return partial[cut + 1 :]

    def _flush_partial(self, now: float, limit: int | None = None) -> bool:
        """Emit the partial line (its first `limit` characters); return if any."""
        visible = _visible(self._partial)
        head = visible if limit is None else visible[:limit]
        keep = self._masker.safe_prefix_length(head)
        if keep == 0:
            return False
        self._add([self._masker.mask(head[:keep])], now)
        self._partial = visible[keep:]
        self._partial_since = now if self._partial else None
        self._continued = True
        return True

    def _add(self, texts: list[str], now: float) -> None:
        if not texts:
            return
        self._next += len(texts)
        if not self._batch_count:
            self._batch_since = now
        self._batch.append((now, texts, 0))
        self._batch_count += len(texts)

    def _cut(self, size: int) -> LogBatch:
        """Remove the first `size` pending lines (at most) and return them."""
        first = self._next - self._batch_count
        runs: list[Run] = []
        need = size
        batch = self._batch
        while need and batch:
            stamp, texts, start = batch[0]
            available = len(texts) - start
            if available <= need:
                runs.append((stamp, texts[start:] if start else texts))
                batch.popleft()
                need -= available
            else:
                runs.append((stamp, texts[start : start + need]))
                batch[0] = (stamp, texts, start + need)
                need = 0
        self._batch_count -= size - need
        return LogBatch(first, runs)

    def _truncate(self, now: float) -> None:
        # The cut may fall inside a secret: emit only what is certainly not one.
        if self._partial:
            visible = _visible(self._partial)
            keep = self._masker.safe_prefix_length(visible)
            if keep:
                self._add([self._masker.mask(visible[:keep])], now)
        self._partial = ""
        self._truncated = True
        self._add(
            [
                f"[slipway] log truncated after {self._max_bytes} bytes "
                f"(limit {self._max_bytes}); the job keeps running and its exit "
                "status is unaffected"
            ],
            now,
        )

    def _emit_ready(self, now: float, *, force: bool) -> None:
        size = self._batch_lines
        sent = False
        while self._batch_count >= size:
            self._emit(self._cut(size))
            sent = True
        if self._batch_count and (
            force
            or (
                self._batch_since is not None
                and now - self._batch_since >= self._batch_interval
            )
        ):
            self._emit(self._cut(self._batch_count))
        if not self._batch_count:
            self._batch_since = None
        elif sent:
            self._batch_since = now


def _fix_returns(text: str, lines: list[str]) -> None:
    """Apply `_visible` to the lines of `text` (split into `lines`) holding a `\\r`.

    Only those lines are touched, found with `str.find`, so a chunk with one section
    marker does not cost a Python step for each of its other lines.
    """
    index = 0  # Line number of position `counted` in `text`.
    counted = 0
    pos = text.find("\r")
    while pos != -1:
        index += text.count("\n", counted, pos)
        lines[index] = _visible(lines[index])
        end = text.find("\n", pos)
        if end == -1:
            return
        index += 1
        counted = end + 1
        pos = text.find("\r", counted)
