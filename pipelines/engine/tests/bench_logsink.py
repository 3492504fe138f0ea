"""Benchmark LogSink: `seq 1 1000000` (6.9 MB) fed in 64 KiB chunks.

Not a test. Run: .venv/bin/python pipelines/engine/tests/bench_logsink.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pipelines.engine.logsink import LogLine, LogSink  # noqa: E402

CHUNK = 64 * 1024


def run(data: bytes, secrets: tuple[str, ...]) -> tuple[float, int]:
    """Feed `data` through a sink and return (seconds, lines emitted)."""
    count = 0

    def emit(lines: list[LogLine]) -> None:
        nonlocal count
        count += len(lines)

    sink = LogSink(emit, secrets=secrets)
    began = time.perf_counter()
    for i in range(0, len(data), CHUNK):
        sink.feed(data[i : i + CHUNK])
    sink.close()
    return time.perf_counter() - began, count


def main() -> None:
    """Print the best of three runs without and with secrets."""
    data = "".join(f"{i}\n" for i in range(1, 1_000_001)).encode()
    print(f"input: {len(data) / 1e6:.1f} MB, {len(data) // CHUNK + 1} chunks")
    for label, secrets in (
        ("no secrets", ()),
        ("3 secrets", ("hunter2-secret", "s3cr3t-t0ken-value", "999999x")),
        ("3 secrets, 1 occurring", ("hunter2-secret", "123456", "s3cr3t-t0ken")),
    ):
        best = min(run(data, secrets) for _ in range(3))
        print(f"{label:24} {best[0]:.3f} s  ({best[1]} lines)")


if __name__ == "__main__":
    main()
