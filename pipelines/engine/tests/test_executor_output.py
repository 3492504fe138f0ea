"""How executors hand output to the log sink: whole, in order, in big chunks, bounded."""

from __future__ import annotations

import queue
import threading
import time

from pipelines.engine.executors.base import (
    CHUNK_QUEUE_SIZE,
    ExecSpec,
    put_chunk,
    take_chunks,
)
from pipelines.engine.executors.shell import ShellExecutor


def test_queued_chunks_are_joined_into_one_output_call() -> None:
    chunks: queue.Queue[bytes | None] = queue.Queue(CHUNK_QUEUE_SIZE)
    for part in (b"b", b"c", None, b"after the end"):
        chunks.put(part)
    data, ended = take_chunks(chunks, b"a")
    assert (data, ended) == (b"abc", True)
    assert chunks.get_nowait() == b"after the end"  # Nothing past the end is taken.

    chunks.put(b"y")
    assert take_chunks(chunks, b"x") == (b"xy", False)


def test_a_reader_ahead_of_the_sink_waits_then_gives_up_when_told() -> None:
    chunks: queue.Queue[bytes | None] = queue.Queue(2)
    stop = threading.Event()
    assert put_chunk(chunks, b"1", stop) and put_chunk(chunks, b"2", stop)
    results: list[bool] = []
    reader = threading.Thread(
        target=lambda: results.append(put_chunk(chunks, b"3", stop)), daemon=True
    )
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()  # Full: it waits instead of growing the queue.
    assert chunks.get_nowait() == b"1"
    reader.join(5)
    assert results == [True]
    # Full again and the consumer is gone: the reader must not hang.
    stop.set()
    started = time.monotonic()
    assert put_chunk(chunks, b"4", stop) is False
    assert time.monotonic() - started < 1


def test_shell_output_of_a_fast_job_arrives_whole_and_in_order(tmp_path) -> None:
    received: list[bytes] = []
    spec = ExecSpec(
        job_name="seq",
        script=("seq 1 300000",),
        before_script=(),
        after_script=(),
        env={},
        workdir=str(tmp_path),
        timeout=120,
    )
    result = ShellExecutor().run(spec, received.append, threading.Event())
    assert result.status == "success"
    text = b"".join(received).decode()
    numbers = [line for line in text.split("\n") if line.isdigit()]
    assert numbers == [str(i) for i in range(1, 300_001)]
    # Read in big pieces, not a line at a time.
    assert len(received) < 300_000 // 100
