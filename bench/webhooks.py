"""Signed webhook deliveries accepted per second, with duplicates mixed in.

    python -m bench.webhooks                    # 2000 deliveries, SQLite
    python -m bench.webhooks --postgres         # the same on PostgreSQL
    python -m bench.webhooks --quick            # 600 deliveries (python -m bench)

Starts a private Redis (and PostgreSQL with ``--postgres``) on loopback, migrates,
serves ``config.asgi`` with uvicorn (``--web-workers`` processes), creates one
repository, then posts N GitHub push deliveries signed exactly as GitHub signs them
from ``--clients`` threads over keep-alive connections. Half of the deliveries
repeat an earlier delivery id (GitHub's redelivery), so half the answers must be
"duplicate". No Celery worker runs while the deliveries are sent: the web process
only records each delivery and queues its run, as in production where the request
never waits for the pipeline (a worker, usually on another machine, starts the run).

Checks afterwards: the queued ``pipelines.create_webhook_runs`` messages are taken
from the broker and run in this process (``hook_tasks.run_queued``), then, against
the database, exactly one run and one "created" delivery per unique delivery id,
and every answer a 201 or a 200 "duplicate".
Reports deliveries answered per second, p50/p99/max latency, a markdown table row
and a ``BENCH {json}`` line for ``python -m bench``. Every wait is bounded; every
process is stopped (its whole process group) at the end, also on failure; Redis is
flushed before it stops (the queue holds N/2 start_run messages).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from core.testing.servers import (  # noqa: E402
    PostgresServer,
    RedisServer,
    ServerError,
    free_port,
)

TARGET_PER_SECOND = 500.0
GITHUB_TIMEOUT = 10.0
SECRET = "bench-webhook-secret"


@dataclass
class Delivery:
    """One request to send: its delivery id and whether it repeats an earlier one."""

    delivery_id: str
    duplicate: bool
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    delivery_id: str
    status: int
    outcome: str
    seconds: float
    duplicate: bool


def _tree(pid: int) -> list[int]:
    """Return PID and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """Return the user+system CPU seconds used so far by PIDS and their descendants.

    Children that exited are counted through cutime/cstime of their parents.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in pids:
        for pid in _tree(root):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:15])
    return total / ticks


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def environment(workdir: Path, redis: RedisServer, database_url: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "DB_CONN_MAX_AGE": "60",
        "REDIS_URL": redis.url,
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "SLIPWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SLIPWAY_VAR_DIR": str(workdir / "var"),
        "LOG_LEVEL": "WARNING",
        # One client address sends everything: the per-address limit would throttle.
        "SLIPWAY_RATELIMIT_HOOKS": "0",
    }


def build_deliveries(count: int, repo_url: str, sha: str) -> list[Delivery]:
    """Return COUNT signed pushes; every other one repeats an earlier delivery id."""
    from pipelines.webhooks.testing import signed_request

    rng = random.Random(42)
    originals: list[Delivery] = []
    out: list[Delivery] = []
    for index in range(count):
        if index % 2 == 1 and originals:
            # A redelivery of a recent delivery, often still in flight on another
            # client: the race the unique constraint settles.
            earlier = originals[max(0, len(originals) - rng.randint(1, 20))]
            out.append(
                Delivery(earlier.delivery_id, True, earlier.headers, earlier.body)
            )
            continue
        delivery_id = str(uuid.uuid4())
        headers, body = signed_request(
            "github",
            SECRET,
            ref="refs/heads/main",
            before="1" * 40,
            after=sha,
            repo_url=repo_url,
            commits=[{"sha": sha, "message": f"Change {index}", "author": "Bench"}],
            delivery_id=delivery_id,
        )
        delivery = Delivery(delivery_id, False, headers, body)
        originals.append(delivery)
        out.append(delivery)
    return out


def send_all(
    url: str, deliveries: list[Delivery], clients: int, deadline: float
) -> tuple[list[Answer], float]:
    """Post DELIVERIES from CLIENTS threads; return the answers and the wall time."""
    work: queue.Queue[Delivery] = queue.Queue()
    for delivery in deliveries:
        work.put(delivery)
    answers: list[Answer] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        mine: list[Answer] = []
        with httpx.Client(timeout=GITHUB_TIMEOUT) as http:
            start.wait(30)
            while time.monotonic() < deadline:
                try:
                    delivery = work.get_nowait()
                except queue.Empty:
                    break
                began = time.perf_counter()
                try:
                    response = http.post(
                        url, content=delivery.body, headers=delivery.headers
                    )
                    status = response.status_code
                    outcome = response.json().get("status", "") if status < 500 else ""
                except (httpx.HTTPError, ValueError) as exc:
                    status, outcome = 0, type(exc).__name__
                elapsed = time.perf_counter() - began
                mine.append(
                    Answer(
                        delivery.delivery_id,
                        status,
                        outcome,
                        elapsed,
                        delivery.duplicate,
                    )
                )
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait(30)
    began = time.perf_counter()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic() + GITHUB_TIMEOUT))
    return answers, time.perf_counter() - began


def verify(repository_id: int, answers: list[Answer]) -> list[str]:
    """Return the problems found in the database (none: exactly once held)."""
    from django.db.models import Count

    from pipelines.models import Run, WebhookDelivery

    unique = {a.delivery_id for a in answers}
    problems: list[str] = []
    runs = Run.objects.filter(repository_id=repository_id).count()
    if runs != len(unique):
        problems.append(f"{runs} runs for {len(unique)} unique deliveries")
    created = (
        WebhookDelivery.objects.filter(repository_id=repository_id, outcome="created")
        .values("delivery_id")
        .annotate(n=Count("id"))
    )
    per_id = {row["delivery_id"]: row["n"] for row in created}
    twice = [d for d, n in per_id.items() if n != 1]
    missing = unique - set(per_id)
    if twice:
        problems.append(f"{len(twice)} delivery ids created more than once")
    if missing:
        problems.append(f"{len(missing)} delivery ids never created a run")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks", description=__doc__
    )
    parser.add_argument("--requests", type=int, default=2000, help="deliveries to send")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--postgres", action="store_true", help="use PostgreSQL")
    parser.add_argument("--quick", action="store_true", help="600 deliveries")
    parser.add_argument(
        "--max-seconds", type=float, default=120, help="stop sending after this"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    count = 600 if args.quick else max(2, args.requests)

    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-webhooks-"))
    os.chmod(workdir, 0o755)
    redis = RedisServer(workdir / "redis")
    postgres = PostgresServer(workdir / "postgres") if args.postgres else None
    web: subprocess.Popen[bytes] | None = None
    log_path = workdir / "web.log"
    try:
        redis.start()
        if postgres is not None:
            postgres.start()
            database_url = postgres.url
        else:
            database_url = f"sqlite:///{workdir / 'slipway.sqlite3'}"
        env = environment(workdir, redis, database_url)
        (workdir / "var").mkdir()
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if migrate.returncode:
            raise ServerError(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")

        os.environ.update(env)
        os.environ.pop("SLIPWAY_TEST_DB_NAME", None)
        import django

        django.setup()
        from pipelines.models import Repository

        sha = "5" * 40
        repository = Repository.objects.create(
            name="bench-hooks",
            clone_url="https://github.com/slipway-bench/hooks.git",
            forge="github",
            webhook_secret=SECRET,
        )
        deliveries = build_deliveries(count, repository.clone_url, sha)

        port = free_port()
        with log_path.open("wb") as log:
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.web_workers),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                cwd=BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}/hooks/github/{repository.name}/"
        ready_by = time.monotonic() + 60
        while True:
            if web.poll() is not None:
                raise ServerError(f"uvicorn exited:\n{log_path.read_text()[-3000:]}")
            try:
                # A GET answers 405 once Django is loaded in the workers.
                if httpx.get(url, timeout=2).status_code == 405:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > ready_by:
                raise ServerError("uvicorn did not answer within 60 s")
            time.sleep(0.1)
        # Warm every worker process (imports, connections) outside the measurement.
        with httpx.Client(timeout=10) as http:
            for _ in range(20 * args.web_workers):
                http.get(url)

        servers = [web.pid, redis.proc.pid] + (
            [postgres.proc.pid] if postgres is not None and postgres.proc else []
        )
        server_cpu = cpu_seconds(servers)
        client_cpu = time.process_time()
        deadline = time.monotonic() + args.max_seconds
        answers, wall = send_all(url, deliveries, args.clients, deadline)
        server_cpu = cpu_seconds(servers) - server_cpu
        client_cpu = time.process_time() - client_cpu

        # Start the queued runs the way a worker would (outside the measurement).
        from pipelines import hook_tasks

        hook_tasks.run_queued(timeout=600)
        problems = verify(repository.pk, answers)
        expected = [
            (a.status, a.outcome) in ((201, "created"), (200, "duplicate"))
            for a in answers
        ]
        if len(answers) != len(deliveries):
            problems.append(f"only {len(answers)} of {len(deliveries)} sent in time")
        if not all(expected):
            bad: dict[str, int] = {}
            for answer in answers:
                if (answer.status, answer.outcome) not in (
                    (201, "created"),
                    (200, "duplicate"),
                ):
                    key = f"{answer.status} {answer.outcome}"
                    bad[key] = bad.get(key, 0) + 1
            problems.append(f"unexpected answers: {bad}")
        latencies = [a.seconds * 1000 for a in answers]
        per_second = len(answers) / wall if wall else 0.0
        created = sum(1 for a in answers if a.outcome == "created")
        duplicates = sum(1 for a in answers if a.outcome == "duplicate")
        p50, p99, worst = (
            percentile(latencies, 50),
            percentile(latencies, 99),
            max(latencies, default=float("nan")),
        )
        database = "PostgreSQL" if postgres else "SQLite"
        sent = max(1, len(answers))
        server_ms = server_cpu / sent * 1000
        client_ms = client_cpu / sent * 1000
        cores = os.cpu_count() or 1
        # What the server side could answer with every core to itself (the client
        # and other engineers' processes share this machine during the run).
        capacity = cores * 1000 / server_ms if server_ms else float("nan")
        ok = (
            not problems
            and per_second >= TARGET_PER_SECOND
            and worst < GITHUB_TIMEOUT * 1000
        )
        print(
            f"{len(answers)} deliveries ({created} created, {duplicates} duplicate) "
            f"in {wall:.2f} s from {args.clients} clients to {args.web_workers} "
            f"uvicorn workers on {database}; load {os.getloadavg()[0]:.2f}"
        )
        print(
            f"CPU per delivery: server (uvicorn + Redis + database) {server_ms:.2f} ms, "
            f"client {client_ms:.2f} ms; server capacity on {cores} idle cores "
            f"~{capacity:.0f}/s"
        )
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print()
        print(
            "| deliveries | database | accepted/s | p50 ms | p99 ms | max ms "
            "| server CPU ms/delivery | exactly once | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {len(answers)} (50 % duplicates) | {database} | {per_second:.0f} | "
            f"{p50:.1f} | {p99:.1f} | {worst:.1f} | {server_ms:.2f} | "
            f"{'yes' if not problems else 'NO'} | {os.getloadavg()[0]:.2f} |"
        )
        row = {
            "metric": f"Webhook deliveries accepted per second ({database}, "
            "signed GitHub pushes, 50 % duplicates)",
            "target": f"≥ {TARGET_PER_SECOND:.0f}/s, max < {GITHUB_TIMEOUT:.0f} s, "
            "one run per delivery id",
            "measured": f"{per_second:.0f}/s; p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {worst:.0f} ms; server CPU {server_ms:.2f} ms/delivery; "
            f"{created} runs for {created} ids"
            + ("" if not problems else f"; {'; '.join(problems)}"),
            "verdict": "pass" if ok else "fail",
            "detail": {
                "deliveries": len(answers),
                "clients": args.clients,
                "web_workers": args.web_workers,
                "wall_seconds": round(wall, 3),
                "server_cpu_ms_per_delivery": round(server_ms, 3),
                "client_cpu_ms_per_delivery": round(client_ms, 3),
                "server_capacity_per_second": round(capacity),
            },
        }
        print("BENCH " + json.dumps(row, ensure_ascii=False))
        return 0 if ok else 1
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            try:
                web.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
                web.wait(5)
        try:
            from redis import Redis

            Redis.from_url(redis.url, socket_timeout=2).flushall()
        except Exception:  # noqa: BLE001 - best effort; the server stops next.
            pass
        if postgres is not None:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001 - Django may not be set up yet.
                pass
            postgres.stop()
        redis.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")


if __name__ == "__main__":
    raise SystemExit(main())
