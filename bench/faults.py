"""Slow fault tests against the full stack (real beat, real reaper, default timings).

Each function states its promise and records a pass/fail row. The quick faults
(Redis restart, duplicate deliveries, log limit) are pytest tests in
pipelines/tests/test_faults.py.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from .common import Result, Results, Stack, git_repo, load, make_repository, wait_for


def monitor_failover(stack: Stack, results: Results) -> None:
    """Promise: with two `manage.py monitor_clusters` running, exactly one holds the
    Redis lock; when it is killed with SIGKILL, the standby takes the lock within the
    lock's TTL (15 s) plus one standby poll (5 s)."""
    first = stack.start_monitor("monitor-a")
    second = stack.start_monitor("monitor-b")
    active_re = re.compile(r"monitor (\S+): active")

    def active() -> list:
        return [m for m in (first, second) if active_re.search(m.log_text())]

    winners = wait_for(active, 60, 0.1, "a monitor to take the lock")
    time.sleep(3)
    both = active()
    victim = winners[0]
    standby = second if victim is first else first
    killed = time.monotonic()
    victim.kill(signal.SIGKILL)
    try:
        wait_for(
            lambda: active_re.search(standby.log_text()),
            60,
            0.1,
            "the standby to take over",
        )
        took = time.monotonic() - killed
        ok = len(both) == 1 and took <= 20
        measured = f"standby active {took:.1f} s after kill -9 of the active one"
        if len(both) != 1:
            measured += f"; {len(both)} monitors were active at once"
    except Exception as exc:  # noqa: BLE001
        ok, took, measured = False, float("nan"), f"no takeover: {exc}"
    finally:
        first.stop()
        second.stop()
    results.add(
        Result(
            "Fault: kill -9 the active cluster monitor (two running)",
            "standby takes the lock ≤ 20 s; never two active",
            measured,
            ok,
            detail={"seconds": took},
        )
    )


def worker_killed(stack: Stack, results: Results) -> None:
    """Promise: a job whose worker is killed with SIGKILL mid-job is failed (or
    retried) by beat's reaper within 60 s with default timings, never left running;
    the script's processes die with the worker."""
    from pipelines import services
    from pipelines.models import Job

    victim = stack._proc("victim", stack.worker_argv("victim", 1, queues="victim"))
    victim.wait_log("ready.", 120)
    repository, _ = make_repository(
        stack, "victim", "long:\n  tags: [victim]\n  script: [sleep 300]\n"
    )
    run = services.trigger_run(repository, ref="main")
    job = wait_for(
        lambda: Job.objects.filter(run=run, status="running").first(),
        60,
        0.05,
        "the job",
    )
    time.sleep(1)
    killed = time.monotonic()
    victim.kill(signal.SIGKILL)
    try:
        job = wait_for(
            lambda: Job.objects.filter(pk=job.pk).exclude(status="running").first(),
            90,
            0.5,
            "the reaper",
        )
        took = time.monotonic() - killed
        ok = took <= 60 and job.status in ("failed", "pending", "created")
        measured = f"{job.status} ({job.failure_reason}) {took:.0f} s after kill -9"
    except Exception as exc:  # noqa: BLE001
        ok, took, measured = False, float("nan"), f"still running: {exc}"
    finally:
        victim.stop()
    results.add(
        Result(
            "Fault: kill -9 a worker mid-job (beat's reaper, default 45 s lapse)",
            "job failed or retried ≤ 60 s",
            measured,
            ok,
            detail={"seconds": took},
        )
    )


def postgres_restart(stack: Stack, results: Results, *, quick: bool) -> None:
    """Promise: stopping PostgreSQL for a few seconds under load and starting it again
    leaves no run stuck: every run either finishes normally or fails with a reason,
    within the reaper's lapse plus a margin after the restart, and new runs after the
    restart succeed. The web answers again once the database is back."""
    from django.db import connection

    from pipelines import services
    from pipelines.models import Job, Run

    spec = "stages: [a, b]\n" + "".join(
        f"a{i}:\n  stage: a\n  script: [sleep 0.3]\nb{i}:\n  stage: b\n  script: [sleep 0.3]\n"
        for i in range(3)
    )
    repository, _ = make_repository(stack, "pg-restart", spec)
    before = [
        services.trigger_run(repository, ref="main").pk
        for _ in range(4 if quick else 8)
    ]
    time.sleep(1.5)  # runs in flight, jobs queued and running
    down = 5.0
    stopped_at = time.monotonic()
    _fast_stop(stack.postgres)
    time.sleep(down)
    stack.postgres.start()
    connection.close()
    back = time.monotonic()
    # The web's first good answer after the restart.
    web_ok = None
    with httpx.Client(timeout=5) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.get(f"{stack.url}/healthz").status_code == 200:
                    web_ok = time.monotonic() - back
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    # A client of the database after its restart: count the errors it sees first
    # (a connection pool without a health check hands out dead connections).
    after, errors = [], []
    for _ in range(30):
        if len(after) == 2:
            break
        try:
            after.append(services.trigger_run(repository, ref="main").pk)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(type(exc).__name__)
            time.sleep(0.2)
    limit = 150  # 45 s heartbeat lapse + 5 s reaper tick + margin

    def settled() -> bool:
        return Run.objects.filter(
            pk__in=before + after, status__in=Run.FINISHED
        ).count() == len(before + after)

    try:
        wait_for(settled, limit, 1, "every run to finish")
    except Exception:  # noqa: BLE001 - reported below
        pass
    took = time.monotonic() - back
    runs = {r.pk: r for r in Run.objects.filter(pk__in=before + after)}
    outcome = Counter(runs[pk].status for pk in before)
    stuck = {
        pk: dict(
            Counter(
                Job.objects.filter(run_id=pk, retried=False).values_list(
                    "status", flat=True
                )
            )
        )
        for pk in before + after
        if runs[pk].status not in Run.FINISHED
    }
    unclear = [
        pk
        for pk in before
        if runs[pk].status == "failed"
        and not runs[pk].error
        and not Job.objects.filter(run_id=pk, status="failed")
        .exclude(failure_reason="")
        .exists()
    ]
    new_ok = all(runs[pk].status == "success" for pk in after)
    ok = not stuck and new_ok and not unclear and web_ok is not None
    measured = (
        f"PostgreSQL down {down:.0f} s; runs in flight: {dict(outcome)}; "
        f"new runs after restart: {'success' if new_ok else [runs[pk].status for pk in after]}; "
        f"web back after {web_ok:.1f} s"
        if web_ok is not None
        else "web not back"
    )
    if stuck:
        measured += (
            f"; STUCK after {took:.0f} s: {len(stuck)} runs {list(stuck.values())[:3]}"
        )
    else:
        measured += f"; all settled {took:.0f} s after the restart"
    results.add(
        Result(
            "Fault: stop PostgreSQL 5 s under load, start it again",
            "no stuck runs; failures say why; new runs succeed",
            measured,
            ok,
            detail={
                "outcome": dict(outcome),
                "stuck": {str(k): v for k, v in stuck.items()},
                "unclear_failures": unclear,
                "down_seconds": down,
                "stopped_at": stopped_at,
                "settle_seconds": took,
                "client_errors_after_restart": errors,
            },
        )
    )


def _fast_stop(server: object) -> None:
    """Stop PostgreSQL like an operator would (pg_ctl stop -m fast): clients are
    disconnected at once instead of the smart shutdown waiting for them."""
    import os
    import subprocess

    from core.testing.servers import _postgres_bin

    argv = [
        _postgres_bin("pg_ctl"),
        "-D",
        str(server.directory / "data"),
        "stop",
        "-m",
        "fast",
        "-w",
        "-t",
        "30",
    ]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    if server.proc is not None:
        server.proc.wait(30)
    server.proc = None


def duplicate_deliveries(stack: Stack, results: Results, *, total: int) -> None:
    """Promise: TOTAL signed webhook deliveries, half of them duplicates sent at the
    same moment as their original (8 concurrent senders), start exactly one run per
    unique delivery id; every duplicate is answered 200 and recorded as such."""
    from pipelines.models import Repository, Run, WebhookDelivery
    from pipelines.webhooks.testing import signed_request

    path = stack.workdir / "git" / "dupes"
    sha = git_repo(path, {"README.md": "no pipeline here: each run ends at once"})
    repository = Repository.objects.create(name="dupes", clone_url=str(path))
    ids = [str(uuid.uuid4()) for _ in range(total // 2)]
    requests = []
    for delivery in ids:
        headers, body = signed_request(
            "github",
            repository.webhook_secret,
            after=sha,
            repo_url=str(path),
            commits=[sha],
            delivery_id=delivery,
        )
        requests += [(headers, body), (headers, body)]
    url = f"{stack.url}/hooks/github/{repository.name}/"
    clients = [httpx.Client(timeout=30) for _ in range(8)]

    def post(item: tuple[int, tuple[dict[str, str], bytes]]) -> int:
        index, (headers, body) = item
        return clients[index % 8].post(url, content=body, headers=headers).status_code

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = Counter(pool.map(post, enumerate(requests)))
    finally:
        for client in clients:
            client.close()
    seconds = time.monotonic() - started
    runs = Run.objects.filter(repository=repository).count()
    created = WebhookDelivery.objects.filter(
        repository=repository, outcome=WebhookDelivery.Outcome.CREATED
    )
    per_id = Counter(created.values_list("delivery_id", flat=True))
    dupes = WebhookDelivery.objects.filter(
        repository=repository, outcome=WebhookDelivery.Outcome.DUPLICATE
    ).count()
    ok = (
        runs == len(ids)
        and sorted(per_id) == sorted(ids)
        and set(per_id.values()) == {1}
        and dupes == len(ids)
        and codes == {201: len(ids), 200: len(ids)}
    )
    results.add(
        Result(
            f"Fault: {total:,} webhook deliveries, half duplicates (8 concurrent senders)",
            "exactly one run per unique delivery",
            f"{runs} runs for {len(ids)} unique ids; {dupes} duplicates recorded; "
            f"HTTP {dict(sorted(codes.items()))}; {total / seconds:.0f} deliveries/s",
            ok,
            detail={"codes": dict(codes), "seconds": seconds},
        )
    )
    # Let the workers finish those runs (each fails at once: no .slipway.yml).
    try:
        wait_for(
            lambda: (
                not Run.objects.filter(repository=repository)
                .exclude(status__in=Run.FINISHED)
                .exists()
            ),
            180,
            1,
            "the delivery runs to end",
        )
    except Exception:  # noqa: BLE001 - not part of this promise
        pass


def run(stack: Stack, results: Results, *, quick: bool) -> None:
    print(f"faults (load {load()})", flush=True)
    monitor_failover(stack, results)
    worker_killed(stack, results)
    postgres_restart(stack, results, quick=quick)
    duplicate_deliveries(stack, results, total=200 if quick else 1000)
