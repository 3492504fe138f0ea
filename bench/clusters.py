"""`python -m bench.clusters [--quick]`: the cluster monitor and pods page on big clusters.

For each size (500 nodes / 10,000 pods / 20 namespaces, then 30,000 pods), on loopback:

- a fake Kubernetes API server (``clusters.fakekube``, TLS) in its own process,
  populated in bulk, with ~50 pod changes per second (``churn``) while measuring;
- a real Redis and PostgreSQL (``bench.common.Stack``), a Cluster row pointing at the
  fake, the real monitor (``manage.py monitor_clusters``) and the real uvicorn;
- initial sync: from the monitor taking the lock to the snapshot saying not stale;
- the monitor's CPU% (of one core) and RSS, sampled from /proc once a second for
  60 s of churn (VmHWM as the peak, including the initial list);
- latency from a pod create on the fake (its wall time in the name and in an
  annotation) to its arrival at a WebSocket client on ``/ws/clusters/<id>/``;
- ``/clusters/<id>/pods/`` logged in: 50 requests (p50/p95), then first contentful
  paint in Chromium.

Every process is stopped at the end (also on failure); every wait is bounded.
Results: ``bench/results-clusters.md`` (and ``BENCH {json}`` lines on stdout, the
format ``python -m bench`` collects from external scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .common import (
    BASE_DIR,
    PYTHON,
    BenchError,
    Proc,
    Result,
    Results,
    Stack,
    load,
    machine,
    median,
    percentile,
    session_cookie,
    wait_for,
)

RESULTS_MD = BASE_DIR / "bench" / "results-clusters.md"
PROBE_NS = "ns-00"
PROBE_ANNOTATION = "bench.slipway.dev/created-at"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MB = 1024 * 1024


# --- the fake cluster, in its own process ---------------------------------------------
#
# ``python -m bench.clusters --serve-fake --pods N ...`` starts a FakeKubeServer,
# populates it, prints one JSON line {"url", "kubeconfig"} and then obeys stdin:
#   churn RATE     start RATE pod changes per second (until stopped)
#   stopchurn      stop them
#   probe          create pod PROBE_NS/probe-<wall time in µs> (annotated likewise)
#   quit           stop the server and exit
# Running it apart keeps its GIL out of the measuring process (and of the monitor).


def serve_fake(args: argparse.Namespace) -> None:
    from clusters.fakekube import FakeKubeServer

    srv = FakeKubeServer(tls=True, bookmark_interval=30.0)
    srv.record_requests = False  # Bounded memory: no per-request log.
    srv.start()
    started = time.monotonic()
    srv.populate(
        nodes=args.nodes,
        pods=args.pods,
        namespaces=args.namespaces,
        deployments=args.deployments,
    )
    print(
        json.dumps(
            {
                "url": srv.url,
                "kubeconfig": srv.kubeconfig(),
                "populate_s": round(time.monotonic() - started, 2),
            }
        ),
        flush=True,
    )
    churn: Any = None
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "churn":
                if churn is None:
                    churn = srv.churn(float(words[1]), duration=3600)
            elif words[0] == "stopchurn":
                if churn is not None:
                    churn.stop()
                    churn.join(5)
                    churn = None
            elif words[0] == "probe":
                now = time.time()
                srv.store.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"probe-{int(now * 1e6)}",
                            "namespace": PROBE_NS,
                            "labels": {"app": "bench-probe"},
                            "annotations": {PROBE_ANNOTATION: f"{now:.6f}"},
                        },
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                    }
                )
            elif words[0] == "quit":
                break
    finally:
        if churn is not None:
            churn.stop()
        srv.stop()


class FakeCluster:
    """The fake API server process (see serve_fake)."""

    def __init__(self, stack: Stack, label: str, pods: int, nodes: int) -> None:
        self.label = label
        argv = [
            PYTHON,
            "-m",
            "bench.clusters",
            "--serve-fake",
            "--pods",
            str(pods),
            "--nodes",
            str(nodes),
            "--namespaces",
            "20",
            "--deployments",
            str(max(1, pods // 50)),
        ]
        self.log_path = stack.logs / f"fake-{label}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env={**stack.env, "LOG_LEVEL": "WARNING"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"fake cluster exited:\n{self.log_path.read_text()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.strip():
                    self.info = json.loads(line)
                    return self.info
        raise BenchError(f"fake cluster not populated within {timeout} s")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except OSError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


# --- /proc sampling ------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """Return utime+stime of PID (all its threads) in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Sample CPU% and RSS of some processes once a second."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {n: [] for n in pids}
        self.loads: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        last = {n: (time.monotonic(), cpu_ticks(p)) for n, p in self.pids.items()}
        while not self.halt.wait(self.interval):
            self.loads.append(os.getloadavg()[0])
            for name, pid in self.pids.items():
                try:
                    now, ticks = time.monotonic(), cpu_ticks(pid)
                    rss = status_kib(pid, "VmRSS") / 1024
                except OSError:
                    continue
                t0, k0 = last[name]
                cpu = (ticks - k0) / CLK_TCK / (now - t0) * 100
                last[name] = (now, ticks)
                self.samples[name].append((cpu, rss))

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


# --- the WebSocket client ------------------------------------------------------------

PROBE_KEY = re.compile(rf"^{PROBE_NS}/probe-(\d+)$")


class WsClient(threading.Thread):
    """Subscribe to a cluster's pods; record when each probe pod first arrives."""

    def __init__(self, url: str, origin: str, cookie: str) -> None:
        super().__init__(daemon=True)
        self.url, self.origin, self.cookie = url, origin, cookie
        self.arrived: dict[str, float] = {}  # key -> latency (s)
        self.messages = 0
        self.changes = 0
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.ws: Any = None

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(
                self.url,
                origin=self.origin,  # type: ignore[arg-type]
                additional_headers={"Cookie": f"sessionid={self.cookie}"},
                max_size=64 * MB,
                open_timeout=10,
            ) as ws:
                self.ws = ws
                self.opened.set()
                while not self.halt.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    received = time.time()
                    message = json.loads(raw)
                    self.messages += 1
                    if message.get("type") != "change":
                        continue
                    for change in message.get("changes") or []:
                        self.changes += 1
                        m = PROBE_KEY.match(change.get("key", ""))
                        if m and change.get("op") == "upsert":
                            key = change["key"]
                            if key not in self.arrived:
                                self.arrived[key] = received - int(m.group(1)) / 1e6
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
            self.opened.set()

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


# --- the benchmark --------------------------------------------------------------------


def emit(results: Results, row: Result) -> None:
    results.add(row)
    print(
        "BENCH "
        + json.dumps(
            {
                "metric": row.metric,
                "target": row.target,
                "measured": row.measured,
                "verdict": {True: "pass", False: "fail", None: "info"}[row.ok],
                "load": row.load,
                "detail": row.detail,
            }
        ),
        flush=True,
    )


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_size(
    stack: Stack,
    results: Results,
    label: str,
    pods: int,
    nodes: int,
    rss_target_mb: int,
    *,
    churn_s: float,
    probes_per_s: float,
    page_requests: int,
    paint_loads: int,
) -> None:
    from clusters import snapshot
    from clusters.models import Cluster

    print(f"\n== {label}: {nodes} nodes, {pods} pods (load {loadavg()})", flush=True)
    fake = FakeCluster(stack, label, pods, nodes)
    monitor: Proc | None = None
    ws: WsClient | None = None
    sampler: Sampler | None = None
    cluster = None
    try:
        info = fake.wait_ready(600)
        print(f"  fake cluster populated in {info['populate_s']} s", flush=True)
        import yaml

        Cluster.objects.all().delete()
        cluster = Cluster.objects.create(
            name=f"bench-{label}",
            auth_mode=Cluster.AuthMode.KUBECONFIG,
            kubeconfig=yaml.safe_dump(info["kubeconfig"]),
            context="fakekube",
            api_server=info["url"],
        )
        cid = cluster.pk

        # Initial sync: the monitor takes the lock, lists every kind (paged).
        started = time.monotonic()
        monitor = stack.start_monitor(f"monitor-{label}")
        monitor.wait_log(": active", 120)
        active = time.monotonic()

        def synced() -> bool:
            if not monitor.alive():
                raise BenchError(f"monitor exited:\n{monitor.log_text()[-3000:]}")
            return snapshot.read_state(cid).get("stale") == "0"

        wait_for(synced, 600, 0.02, f"{label} initial sync")
        done = time.monotonic()
        count = snapshot.client().hlen(snapshot.objects_key(cid, "pods"))
        hwm_sync = status_kib(monitor.pid, "VmHWM") / 1024
        emit(
            results,
            Result(
                f"{label}: monitor initial sync (list of all kinds until not stale)",
                "—",
                f"{done - active:.1f} s ({count} pods in Redis; "
                f"{done - started:.1f} s from process start)",
                None,
                detail={"sync_s": done - active, "from_start_s": done - started},
            ),
        )

        # 60 s of churn: CPU and RSS of the monitor (and uvicorn), and probe latency.
        assert stack.web is not None
        cookie = session_cookie()
        ws = WsClient(
            f"{stack.ws_url}/ws/clusters/{cid}/?kinds=pods&snapshot=0",
            stack.url,
            cookie,
        )
        ws.start()
        ws.opened.wait(15)
        if ws.error is not None:
            raise BenchError(f"WebSocket: {ws.error!r}")
        fake.send("churn 50")
        time.sleep(2)  # Let the churn reach its rate before sampling.
        sampler = Sampler({"monitor": monitor.pid, "web": stack.web.pid})
        sampler.start()
        sent = 0
        end = time.monotonic() + churn_s
        next_probe = time.monotonic()
        while time.monotonic() < end:
            fake.send("probe")
            sent += 1
            next_probe += 1 / probes_per_s
            time.sleep(max(0, next_probe - time.monotonic()))
        sampler.stop()
        settle = time.monotonic() + 10
        while len(ws.arrived) < sent and time.monotonic() < settle:
            time.sleep(0.1)
        churn_load = f"{median(sampler.loads):.2f}"
        mon = sampler.samples["monitor"]
        web = sampler.samples["web"]
        hwm = status_kib(monitor.pid, "VmHWM") / 1024
        cpu = [c for c, _ in mon]
        rss = [r for _, r in mon]
        emit(
            results,
            Result(
                f"{label}: monitor CPU over {churn_s:.0f} s of 50 changes/s",
                "—",
                f"mean {sum(cpu) / len(cpu):.1f}% / p95 {percentile(cpu, 95):.0f}% "
                "of one core",
                None,
                load=churn_load,
                detail={"cpu": cpu},
            ),
        )
        emit(
            results,
            Result(
                f"{label}: monitor RSS (steady under churn; peak incl. initial list)",
                f"≤ {rss_target_mb} MB",
                f"{max(rss):.0f} MB steady max; {hwm:.0f} MB peak "
                f"({hwm_sync:.0f} MB at sync)",
                hwm <= rss_target_mb,
                load=churn_load,
                detail={"rss_mb": rss, "hwm_mb": hwm, "hwm_sync_mb": hwm_sync},
            ),
        )
        web_cpu = [c for c, _ in web]
        emit(
            results,
            Result(
                f"{label}: uvicorn (one subscribed socket) during churn",
                "—",
                f"CPU mean {sum(web_cpu) / max(1, len(web_cpu)):.1f}%, "
                f"RSS {max((r for _, r in web), default=0):.0f} MB; "
                f"{ws.changes} changes in {ws.messages} messages",
                None,
                load=churn_load,
            ),
        )
        lat = list(ws.arrived.values()) or [float("inf")]
        lost = sent - len(ws.arrived)
        p99 = percentile(lat, 99) if not lost else float("inf")
        emit(
            results,
            Result(
                f"{label}: API event → WebSocket client latency ({sent} pod creates "
                "during churn)",
                "p99 ≤ 1 s",
                f"p50 {percentile(lat, 50) * 1000:.0f} ms / p99 "
                f"{percentile(lat, 99) * 1000:.0f} ms / max {max(lat) * 1000:.0f} ms"
                + (f"; {lost} never arrived" if lost else ""),
                p99 <= 1.0,
                load=churn_load,
                detail={"latencies": lat, "lost": lost},
            ),
        )
        ws.stop()
        ws = None

        # The pods page (churn still running).
        page_times(stack, results, label, cid, cookie, page_requests, count)
        first_paint(stack, results, label, cid, cookie, paint_loads)
    finally:
        if ws is not None:
            ws.stop()
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        try:
            fake.send("stopchurn")
        except OSError:
            pass
        if monitor is not None:
            monitor.stop()
            stack.procs.remove(monitor)
        fake.stop()
        if cluster is not None:
            Cluster.objects.filter(pk=cluster.pk).delete()
            snapshot.forget(cluster.pk)


def page_times(
    stack: Stack,
    results: Results,
    label: str,
    cid: int,
    cookie: str,
    n: int,
    pods: int,
) -> None:
    import httpx

    def timed(
        client: httpx.Client, path: str, count: int, headers: dict | None = None
    ) -> list[float]:
        out = []
        for _ in range(count):
            t0 = time.perf_counter()
            r = client.get(path, headers=headers)
            out.append(time.perf_counter() - t0)
            if r.status_code != 200 or "data-live-table" not in r.text:
                raise BenchError(f"GET {path}: {r.status_code}\n{r.text[:500]}")
        return out

    with httpx.Client(
        base_url=stack.url, cookies={"sessionid": cookie}, timeout=30
    ) as client:
        path = f"/clusters/{cid}/pods/"
        timed(client, path, 3)  # Warm up (templates, connections).
        ld = load()
        times = timed(client, path, n)
        p95 = percentile(times, 95)
        emit(
            results,
            Result(
                f"{label}: pods page server time ({n} × GET {path}, 100 rows a page)",
                "p95 ≤ 300 ms",
                f"p50 {median(times) * 1000:.0f} ms / p95 {p95 * 1000:.0f} ms",
                p95 <= 0.3,
                load=ld,
                detail={"times": times},
            ),
        )
        variants = {
            "last page": f"{path}?page={max(1, pods // 100)}",
            "one namespace": f"{path}?namespace=ns-07",
            "search": f"{path}?q=app-042",
            "phase filter": f"{path}?phase=Running",
        }
        parts = []
        for name, vpath in variants.items():
            vt = timed(client, vpath, max(5, n // 5))
            parts.append(f"{name} p50 {median(vt) * 1000:.0f} ms")
        # What the page's Next link fetches: the table only (htmx partial).
        vt = timed(
            client,
            f"{path}?page=2",
            max(5, n // 5),
            {"HX-Request": "true", "HX-Target": "pod-table"},
        )
        parts.append(f"next page (htmx, table only) p50 {median(vt) * 1000:.0f} ms")
        emit(
            results,
            Result(
                f"{label}: pods page, filtered ({max(5, n // 5)} requests each)",
                "—",
                "; ".join(parts),
                None,
            ),
        )


def first_paint(
    stack: Stack, results: Results, label: str, cid: int, cookie: str, n: int
) -> None:
    from playwright.sync_api import sync_playwright

    url = f"{stack.url}/clusters/{cid}/pods/"
    baseline_url = f"{stack.url}/clusters/"  # A small page: what the machine allows.
    fcps: list[float] = []
    baseline: list[float] = []
    ld = load()
    script = (
        "() => new Promise(resolve => { const find = () => {"
        " const e = performance.getEntriesByType('paint')"
        ".find(x => x.name === 'first-contentful-paint');"
        " if (e) resolve(e.startTime); else setTimeout(find, 50); };"
        " find(); })"
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": url}])
            for i in range(2 * (n + 1)):  # The first loads warm the static files.
                target = url if i % 2 == 0 else baseline_url
                page = context.new_page()
                page.goto(target, wait_until="load", timeout=30000)
                if target == url:
                    page.locator("tr[data-key]").first.wait_for(timeout=10000)
                fcp = float(page.evaluate(script)) / 1000
                (fcps if target == url else baseline).append(fcp)
                page.close()
            context.close()
        finally:
            browser.close()
    cold, warm = fcps[0], fcps[1:]
    emit(
        results,
        Result(
            f"{label}: pods page first contentful paint, Chromium ({n} loads)",
            "≤ 1 s",
            f"median {median(warm) * 1000:.0f} ms / max {max(warm) * 1000:.0f} ms "
            f"(cold first load {cold * 1000:.0f} ms; the small cluster list page, "
            f"same browser: median {median(baseline[1:]) * 1000:.0f} ms)",
            max(warm) <= 1.0,
            load=ld,
            detail={"fcp": fcps, "baseline_fcp": baseline},
        ),
    )


def write_markdown(results: Results, info: dict[str, str], argv: list[str]) -> None:
    lines = [
        "# Cluster benchmarks",
        "",
        "Written by `bench/clusters.py`; do not edit by hand. Command:",
        "",
        "```",
        " ".join(["python", "-m", "bench.clusters", *argv]),
        "```",
        "",
        f"Machine: {info['cpu']}, {info['nproc']} cores, {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}, {info['postgres']}, "
        f"Redis {info['redis']}; {info['date']}. Shared with other engineers' test "
        "runs: the load column is the 1-minute load average while measuring (the "
        "median over the churn window for the churn rows).",
        "",
        "Setup: fake API server (`clusters.fakekube`, TLS, its own process) with 500 "
        "nodes, 20 namespaces, one Deployment per 50 pods; the real monitor "
        "(`manage.py monitor_clusters`), Redis, PostgreSQL and uvicorn, all on "
        "127.0.0.1. Churn: ~50 pod writes per second (70% label updates, 15% deletes, "
        "15% creates), plus the latency probes (pod creates stamped with their wall "
        "time). CPU is % of one core.",
        "",
        "Verdicts: RSS on the peak (VmHWM, reached during the initial list); latency "
        "from the fake's store commit to receipt by the WebSocket client (it includes "
        "the monitor's ~300 ms batching), p99 with a never-arrived probe counting as a "
        "miss; page time measured by the client over loopback (p95, churn running); "
        "first paint on the worst of the warm loads.",
        "",
        "| Metric | Target | Measured | Verdict | Load |",
        "|---|---|---|---|---|",
    ]
    for row in results.rows:
        lines.append(
            f"| {row.metric} | {row.target} | {row.measured} | {row.verdict} "
            f"| {row.load} |"
        )
    RESULTS_MD.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS_MD}", flush=True)


def main(argv: list[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench.clusters")
    p.add_argument("--quick", action="store_true", help="20 s of churn, fewer samples")
    p.add_argument(
        "--sizes", default="10000,30000", help="pod counts (default 10000,30000)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pods", type=int, default=10000, help=argparse.SUPPRESS)
    p.add_argument("--nodes", type=int, default=500, help=argparse.SUPPRESS)
    p.add_argument("--namespaces", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--deployments", type=int, default=200, help=argparse.SUPPRESS)
    args = p.parse_args(raw)
    if args.serve_fake:
        serve_fake(args)
        return

    info = machine()
    stack = Stack(keep=args.keep)
    results = Results(stack.workdir / "clusters.jsonl")
    print(f"clusters bench in {stack.workdir} (load {loadavg()})", flush=True)
    failed = False
    try:
        stack.start_servers()
        stack.migrate()
        stack.setup_django()
        stack.start_web()
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            label = f"{size // 1000}k pods"
            try:
                bench_size(
                    stack,
                    results,
                    label,
                    size,
                    500,
                    300 if size <= 10000 else 600,
                    churn_s=20 if args.quick else 60,
                    probes_per_s=2 if args.quick else 4,
                    page_requests=20 if args.quick else 50,
                    paint_loads=3 if args.quick else 5,
                )
            except Exception as exc:  # noqa: BLE001 - record it, go on
                failed = True
                traceback.print_exc()
                emit(
                    results,
                    Result(f"{label}: benchmark", "runs", f"error: {exc}"[:300], False),
                )
    finally:
        stack.stop()
    write_markdown(results, info, raw)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
