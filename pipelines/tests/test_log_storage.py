"""JobLogWriter and the stored log: completeness, order, bounded memory, compaction.

Real Redis and a real database (SQLite or PostgreSQL); no worker needed: the writer is
fed in-process exactly as an executor feeds it.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import logs
from pipelines.models import Job, LogChunk

from .factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True)]

CHUNK = 64 * 1024


def _seq(first: int, last: int) -> bytes:
    """Return what `seq FIRST LAST` prints."""
    return "".join(f"{i}\n" for i in range(first, last + 1)).encode()


def _feed_seq(writer: logs.JobLogWriter, count: int, block: int = 100_000) -> None:
    """Feed `seq 1 COUNT` in 64 KiB pieces, generating it a block at a time."""
    for start in range(1, count + 1, block):
        data = _seq(start, min(count, start + block - 1))
        for pos in range(0, len(data), CHUNK):
            writer.feed(data[pos : pos + CHUNK])


def _writer(job: Job, **kwargs: object) -> logs.JobLogWriter:
    return logs.JobLogWriter(
        job,
        secrets=kwargs.get("secrets", ()),  # type: ignore[arg-type]
        max_bytes=64 * 1024 * 1024,
    )


def _stream_numbers(job: Job) -> list[int]:
    """Return the line numbers in the job's Redis stream, entry by entry."""
    client = logs.redis_client()
    try:
        numbers: list[int] = []
        for _id, fields in client.xrange(logs.stream_key(job.pk)):
            payload = json.loads(fields[b"lines"])
            first, last = int(fields[b"first"]), int(fields[b"last"])
            assert [line[0] for line in payload] == list(range(first, last + 1))
            numbers.extend(line[0] for line in payload)
        return numbers
    finally:
        client.close()


def test_a_large_log_is_stored_completely_and_in_order() -> None:
    count = 200_000
    job = make_job(status=Job.Status.RUNNING)
    writer = _writer(job)
    writer.write_line("start")
    _feed_seq(writer, count)
    writer.write_line("end")
    lines, size, truncated = writer.close()
    assert (lines, truncated) == (count + 2, False)
    assert size == len(_seq(1, count)) + sum(
        len(f"\x1b[0;36m[slipway]\x1b[0m {w}\n") for w in ("start", "end")
    )

    # The raw download: every line once, in order.
    raw = "".join(logs.iter_raw(job)).split("\n")
    assert raw[-1] == ""
    assert raw[1:-2] == [str(i) for i in range(1, count + 1)]
    assert raw[0].endswith("start") and raw[-2].endswith("end")

    # The cursor-based reader (what the log consumer and the API use), page by page.
    after, texts = 0, []
    for _ in range(count // 1000):
        page = logs.read_lines(job, after, 4999)
        if not page:
            break
        assert [n for n, _, _ in page] == list(range(after + 1, after + len(page) + 1))
        texts += [text for _, _, text in page]
        after = page[-1][0]
    assert texts[1:-1] == [str(i) for i in range(1, count + 1)]

    # Live readers: the stream holds every line once, in order, in bounded entries.
    assert _stream_numbers(job) == list(range(1, count + 3))

    # Compaction leaves a log written in big chunks as it is, and loses nothing.
    before = LogChunk.objects.filter(job=job).count()
    logs.compact(job.pk)
    assert LogChunk.objects.filter(job=job).count() <= before
    assert "".join(logs.iter_raw(job)).split("\n")[1:-2] == raw[1:-2]


def _peak_while_writing(count: int) -> int:
    job = make_job(status=Job.Status.RUNNING)
    tracemalloc.start()
    try:
        writer = _writer(job)
        _feed_seq(writer, count, block=20_000)
        writer.close()
        logs.compact(job.pk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert LogChunk.objects.filter(job=job).count() > 0
    assert Job.objects.filter(pk=job.pk).exists()
    return peak


def test_writer_memory_stays_bounded_whatever_the_log_size(monkeypatch) -> None:
    """Peak traced memory for 400,000 lines is about that for 50,000 lines.

    The old writer held every unstored line as an object until a timer stored it
    (tens of MiB for a fast job) and compaction loaded the whole log at once.
    """
    # The unstored lines may grow to the pending bound while the database is slow
    # (a loaded machine): a small bound, which both sizes reach, makes the two
    # peaks comparable whatever the timing.
    monkeypatch.setattr(logs, "PENDING_LINES", 5_000)
    monkeypatch.setattr(logs, "PENDING_CHARS", 256 * 1024)
    small = _peak_while_writing(50_000)
    big = _peak_while_writing(400_000)
    mib = 1024 * 1024
    # 400,000 lines are 2.7 MB of output, ~8 MB stored: far more than the margin.
    assert big - small < 4 * mib, (small / mib, big / mib)
    assert big < 12 * mib, big / mib


def test_compaction_merges_small_chunks_and_keeps_every_line() -> None:
    job = make_job(status=Job.Status.RUNNING)
    writer = _writer(job)
    for i in range(1, 301):
        writer.feed(f"slow line {i}\n".encode())
        if i % 3 == 0:
            writer.sink.flush()
            writer.persist()  # As the timer does for a slow job: a row per pause.
    _feed_seq(writer, 30_000)  # Then a burst, stored in big chunks.
    writer.close()
    rows = list(
        LogChunk.objects.filter(job=job)
        .order_by("first_line")
        .values_list("first_line", "last_line")
    )
    assert len(rows) >= 100
    before = "".join(logs.iter_raw(job))
    logs.compact(job.pk)
    after_rows = list(
        LogChunk.objects.filter(job=job)
        .order_by("first_line")
        .values_list("first_line", "last_line")
    )
    assert len(after_rows) < 15
    # Contiguous: every line in exactly one chunk.
    assert after_rows[0][0] == 1
    for (_, last), (first, _) in zip(after_rows, after_rows[1:], strict=False):
        assert first == last + 1
    assert "".join(logs.iter_raw(job)) == before
    logs.compact(job.pk)  # Idempotent.
    assert (
        list(
            LogChunk.objects.filter(job=job)
            .order_by("first_line")
            .values_list("first_line", "last_line")
        )
        == after_rows
    )


def test_lines_reach_the_stream_while_the_job_runs() -> None:
    """A slow job's line is in the Redis stream well before the next one."""
    job = make_job(status=Job.Status.RUNNING)
    writer = _writer(job)
    try:
        writer.feed(b"first\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _stream_numbers(job):
            time.sleep(0.01)
        assert _stream_numbers(job) == [1]
    finally:
        writer.close()


def test_feeding_from_two_threads_stores_every_line_once() -> None:
    job = make_job(status=Job.Status.RUNNING)
    writer = _writer(job)

    def work(prefix: str) -> None:
        for i in range(3000):
            writer.feed(f"{prefix}{i}\n".encode())

    threads = [threading.Thread(target=work, args=(p,)) for p in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    lines, _, _ = writer.close()
    assert lines == 6000
    stored = logs.read_lines(job, 0, 10_000)
    assert [n for n, _, _ in stored] == list(range(1, 6001))
    assert sorted(t for _, _, t in stored) == sorted(
        f"{p}{i}" for p in "ab" for i in range(3000)
    )
    assert _stream_numbers(job) == list(range(1, 6001))


TEXT = st.text(
    alphabet=st.sampled_from(list('ab", \\\r\t\x1b\x00é€\u2028]}[{%d')), max_size=8
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**7),
    st.lists(st.tuples(st.floats(1e9, 2e9), st.lists(TEXT, max_size=5)), max_size=4),
)
def test_bulk_encodings_match_the_per_line_ones(first: int, runs: list) -> None:
    expected = []
    number = first
    for stamp, texts in runs:
        for text in texts:
            expected.append([number, round(stamp, 3), text])
            number += 1
    assert json.loads(logs.encode_payload(first, runs)) == expected
    if expected:
        stored = logs.encode_runs(runs)
        decoded = list(logs.decode_chunk(first, stored))
        assert [(n, t) for n, _, t in decoded] == [(n, t) for n, _, t in expected]
        assert [round(s, 3) for _, s, _ in decoded] == [s for _, s, _ in expected]
        # A reader may start anywhere, also inside a run of elided timestamps.
        for start in range(len(expected)):
            assert (
                logs._decode_slice(first, stored, start, start + 2)
                == (decoded[start : start + 2])
            )
