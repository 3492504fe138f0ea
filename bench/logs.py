"""Live log figures: line latency to a WebSocket client, a 1,000,000-line job, memory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from typing import Any

import websockets

from .common import (
    Result,
    Results,
    Stack,
    load,
    make_repository,
    median,
    percentile,
    python_tree,
    session_cookie,
    wait_for,
    wait_run,
)

# Prints COUNT lines "TS <unix time> <n>" at RATE lines per second, each stamped just
# before it is written and flushed (the job's own clock, like `date +%s.%N`).
GENERATOR = """\
import sys, time
rate, count = float(sys.argv[1]), int(sys.argv[2])
write, flush, now, sleep = sys.stdout.write, sys.stdout.flush, time.time, time.sleep
start = now()
for i in range(count):
    delay = start + i / rate - now()
    if delay > 0:
        sleep(delay)
    write(f"TS {now():.6f} {i}\\n")
    flush()
"""


def _spec(stack: Stack) -> str:
    gen = stack.workdir / "gen.py"
    gen.write_text(GENERATOR)
    go = stack.workdir / "go"
    go.mkdir(exist_ok=True)
    # Wait (bounded: 30 s) until the bench's WebSocket client is connected, so every
    # line travels the live path.
    return (
        "gen:\n  script:\n"
        f"    - 'for i in $(seq 1 1500); do [ -e {go}/$SLIPWAY_JOB_ID ] && break; sleep 0.02; done'\n"
        f"    - python3 {gen} $RATE $COUNT\n"
    )


async def _watch(
    stack: Stack, job_id: int, cookie: str, timeout: float, on_open: Any = None
) -> dict[str, Any]:
    """Follow a job's log to its end; record each line's arrival time.

    Like the browser's log viewer, reconnect with the cursor (the last line received)
    when the socket closes before `end`; count those disconnects.
    """
    latencies: list[float] = []
    count = 0
    last = 0
    in_order = True
    ended = False
    disconnects = 0
    numeric: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ended and loop.time() < deadline and disconnects <= 100:
        socket = await websockets.connect(
            f"{stack.ws_url}/ws/jobs/{job_id}/log/?cursor={last}",
            additional_headers={"Origin": stack.url, "Cookie": f"sessionid={cookie}"},
            open_timeout=10,
            max_size=None,
            ping_interval=None,
        )
        if on_open is not None:
            on_open()
            on_open = None
        async with socket:
            while loop.time() < deadline:
                try:
                    raw = await asyncio.wait_for(socket.recv(), deadline - loop.time())
                except websockets.ConnectionClosed:
                    disconnects += 1
                    break
                except TimeoutError:
                    break
                arrived = time.time()
                message = json.loads(raw)
                if message["type"] == "end":
                    ended = True
                    break
                if message["type"] != "lines":
                    continue
                for number, _ts, text in message["lines"]:
                    count += 1
                    if number != last + 1:
                        in_order = False
                    last = number
                    if text.startswith("TS "):
                        latencies.append(arrived - float(text.split(" ", 2)[1]))
                    elif text.isdigit():
                        numeric.append(int(text))
    return {
        "latencies": latencies,
        "count": count,
        "last": last,
        "in_order": in_order,
        "ended": ended,
        "numeric": numeric,
        "disconnects": disconnects,
    }


def line_latency(
    stack: Stack, results: Results, cookie: str, *, rate: int, seconds: float
) -> dict[str, Any]:
    """4. Arrival at a real WebSocket client minus the time the job printed the line."""
    from pipelines import services
    from pipelines.models import Job

    repository, _ = make_repository(stack, "log-latency", _spec(stack))
    count = int(rate * seconds)
    run = services.trigger_run(
        repository, ref="main", variables={"RATE": str(rate), "COUNT": str(count)}
    )
    job = wait_for(lambda: Job.objects.filter(run=run).first(), 30, 0.02, "the job")
    go = stack.workdir / "go" / str(job.pk)
    got = asyncio.run(_watch(stack, job.pk, cookie, seconds + 90, go.touch))
    run = wait_run(run.pk, 60)
    lat = got["latencies"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    complete = len(lat) == count and got["in_order"] and got["ended"]
    results.add(
        Result(
            f"Log line latency at {rate:,} lines/s (job prints → WebSocket client), p50 / p99",
            "p50 ≤ 50 ms, p99 ≤ 250 ms",
            f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms ({len(lat):,} lines"
            + ("" if complete else f", INCOMPLETE: expected {count:,}")
            + (
                f", {got['disconnects']} unexpected disconnects"
                if got["disconnects"]
                else ""
            )
            + ")",
            complete and p50 <= 0.050 and p99 <= 0.250,
            detail={
                "rate": rate,
                "lines": len(lat),
                "expected": count,
                "p50_ms": p50 * 1000,
                "p90_ms": percentile(lat, 90) * 1000,
                "p99_ms": p99 * 1000,
                "max_ms": max(lat) * 1000 if lat else None,
                "in_order": got["in_order"],
                "ended": got["ended"],
                "disconnects": got["disconnects"],
                "run_status": run.status,
            },
        )
    )
    return got


class RssSampler:
    """Sample the RSS of process trees every 100 ms in a thread; keep the peaks."""

    def __init__(self, procs: dict[str, Any], interval: float = 0.1) -> None:
        self.procs = procs
        self.interval = interval
        self.peak = {name: 0 for name in procs}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples += 1
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.rss_kib())

    def __enter__(self) -> RssSampler:
        for name, proc in self.procs.items():
            self.peak[name] = proc.rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def cpu_seconds(proc: Any) -> float:
    """Return the CPU time (user + system) used so far by PROC's Python processes.

    Unlike wall time, this hardly depends on what else the shared machine runs.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in python_tree(proc.pid):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _devnull_seconds(lines: int) -> float:
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(["bash", "-c", f"seq 1 {lines} > /dev/null"], check=True)
        samples.append(time.perf_counter() - started)
    return median(samples)


def big_log(stack: Stack, cookie: str, lines: int) -> dict[str, Any]:
    """Run `seq 1 LINES` with a live WebSocket viewer; return timings and peaks."""
    from pipelines import logs, services
    from pipelines.models import Job

    repository, _ = make_repository(
        stack, f"seq-{lines}", f"seq:\n  script:\n    - seq 1 {lines}\n"
    )
    procs = {f"worker {p.name}": p for p in stack.workers}
    assert stack.web is not None
    procs["web"] = stack.web
    before = {name: proc.rss_kib() for name, proc in procs.items()}
    cpu = {name: cpu_seconds(proc) for name, proc in procs.items()}
    with RssSampler(procs) as sampler:
        run = services.trigger_run(repository, ref="main")
        job = wait_for(lambda: Job.objects.filter(run=run).first(), 30, 0.02, "job")
        run = wait_run(run.pk, 300)
        job_cpu = {name: cpu_seconds(proc) - cpu[name] for name, proc in procs.items()}
        cpu = {name: cpu_seconds(proc) for name, proc in procs.items()}
        # Then view it, from storage, over the WebSocket as the log viewer would:
        # no viewer competes with the job for the 2 cores while it is timed.
        got = asyncio.run(_watch(stack, job.pk, cookie, 600))
        view_cpu = {name: cpu_seconds(proc) - cpu[name] for name, proc in procs.items()}
    job = Job.objects.get(pk=job.pk)
    # Read the stored log back, as the raw download does.
    stored = 0
    expected = 1
    in_order = True
    for block in logs.iter_raw(job):  # one stored chunk of lines at a time
        for value in block.split("\n")[:-1]:  # lines may hold a bare \r
            stored += 1
            if value.isdigit():
                in_order &= int(value) == expected
                expected += 1
    return {
        "status": run.status,
        "job_seconds": (job.finished_at - job.started_at).total_seconds(),
        "log_lines": job.log_lines,
        "stored_lines": stored,
        "stored_numbers_ok": in_order and expected - 1 == lines,
        "ws_lines": got["count"],
        "ws_numbers_ok": got["numeric"] == list(range(1, lines + 1)),
        "ws_ended": got["ended"],
        "ws_disconnects": got["disconnects"],
        "before_mib": {k: v / 1024 for k, v in before.items()},
        "peak_mib": {k: v / 1024 for k, v in sampler.peak.items()},
        "samples": sampler.samples,
        # CPU seconds per process while the job ran (the worker's includes the
        # compaction it starts at the end), then while the viewer read the log.
        "job_cpu_s": job_cpu,
        "view_cpu_s": view_cpu,
    }


def million_lines(stack: Stack, results: Results, cookie: str, *, quick: bool) -> None:
    """5. `seq 1 1000000` as a job vs to /dev/null; every line stored; bounded RSS."""
    small_n, big_n = (10_000, 100_000) if quick else (100_000, 1_000_000)
    small = big_log(stack, cookie, small_n)
    big = big_log(stack, cookie, big_n)
    devnull = _devnull_seconds(big_n)
    extra = big["job_seconds"] - devnull
    worker_cpu = max(v for k, v in big["job_cpu_s"].items() if k.startswith("worker"))
    results.add(
        Result(
            f"{big_n:,}-line job (`seq 1 {big_n}`): job time minus the same command to /dev/null",
            "≤ +3 s",
            f"+{extra:.2f} s (job {big['job_seconds']:.2f} s, /dev/null {devnull:.2f} s; "
            f"worker CPU {worker_cpu:.2f} s, web CPU to view it "
            f"{big['view_cpu_s']['web']:.2f} s)",
            extra <= 3 and big["status"] == "success",
            detail=big,
        )
    )
    stored_ok = (
        big["stored_numbers_ok"]
        and big["stored_lines"] == big["log_lines"]
        and big["ws_numbers_ok"]
        and big["ws_lines"] == big["log_lines"]
    )
    results.add(
        Result(
            f"Every line of the {big_n:,}-line log stored and viewable",
            "all lines, in order",
            f"Job.log_lines {big['log_lines']:,}; read back {big['stored_lines']:,}; "
            f"WebSocket viewer got {big['ws_lines']:,}"
            + ("" if stored_ok else " — MISMATCH"),
            stored_ok,
        )
    )
    workers_small = max(
        v for k, v in small["peak_mib"].items() if k.startswith("worker")
    )
    workers_big = max(v for k, v in big["peak_mib"].items() if k.startswith("worker"))
    web_small, web_big = small["peak_mib"]["web"], big["peak_mib"]["web"]
    growth = max(workers_big - workers_small, web_big - web_small)
    results.add(
        Result(
            f"Peak RSS during the log (job, then a WebSocket viewer reading it all): worker / web at {small_n:,} vs {big_n:,} lines",
            "no growth with log size (≤ +25 MiB)",
            f"worker {workers_small:.0f} → {workers_big:.0f} MiB, "
            f"web {web_small:.0f} → {web_big:.0f} MiB",
            growth <= 25,
            detail={"small": small, "big": big},
        )
    )


def run(stack: Stack, results: Results, *, quick: bool) -> None:
    print(f"logs (load {load()})", flush=True)
    cookie = session_cookie()
    got = line_latency(stack, results, cookie, rate=10, seconds=10 if quick else 20)
    seconds = 10 if quick else 20
    results.add(
        Result(
            f"Log WebSocket stays open while a job prints for {seconds} s (10 lines/s)",
            "0 disconnects",
            f"{got['disconnects']} disconnects"
            + (
                " (server closed the socket; see docs: channel layer timeout)"
                if got["disconnects"]
                else ""
            ),
            got["disconnects"] == 0,
        )
    )
    line_latency(stack, results, cookie, rate=10_000, seconds=3 if quick else 5)
    million_lines(stack, results, cookie, quick=quick)
