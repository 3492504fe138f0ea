"""Pipeline engine figures: webhook to job start, no-op job overhead, wide runs, idle RSS."""

from __future__ import annotations

import subprocess
import time

import httpx

from .common import (
    Result,
    Results,
    Stack,
    load,
    make_repository,
    median,
    ms,
    percentile,
    wait_for,
    wait_run,
)


def webhook_to_job_start(stack: Stack, results: Results, *, triggers: int) -> None:
    """1. Signed GitHub push over HTTP -> the first job's first command (its own clock).

    The job's first command is ``date +%s.%N`` into a file named after the run; the
    latency is that timestamp minus the time just before the POST was sent. Triggers
    are sequential: each waits until the previous run has finished.
    """
    from pipelines.models import Job, Run
    from pipelines.webhooks.testing import signed_request

    starts = stack.workdir / "starts"
    starts.mkdir(exist_ok=True)
    spec = f"first:\n  script:\n    - date +%s.%N > {starts}/$SLIPWAY_RUN_ID\n"
    repository, sha = make_repository(stack, "hook-latency", spec)
    url = f"{stack.url}/hooks/github/{repository.name}/"
    clone = str(stack.workdir / "git" / repository.name)
    latencies: list[float] = []
    claims: list[float] = []
    queued: list[float] = []
    posts: list[float] = []
    warmup = 5
    deadline = time.monotonic() + 60 + triggers * 10
    with httpx.Client(timeout=10) as client:
        for index in range(warmup + triggers):
            if time.monotonic() > deadline:
                break
            headers, body = signed_request(
                "github",
                repository.webhook_secret,
                after=sha,
                repo_url=clone,
                commits=[sha],
            )
            sent = time.time()
            response = client.post(url, content=body, headers=headers)
            posted = time.time()
            if response.status_code != 201:
                raise RuntimeError(
                    f"webhook answered {response.status_code}: {response.text}"
                )
            run_id = _run_of(response.json())
            marker = starts / str(run_id)
            wait_for(
                lambda m=marker: m.exists() and m.read_text().strip(),
                30,
                0.002,
                f"run {run_id}'s job to start",
            )
            started = float(marker.read_text().strip())
            run = wait_run(run_id, 30)
            if run.status != Run.Status.SUCCESS:
                raise RuntimeError(f"run {run_id} ended {run.status}: {run.error}")
            if index < warmup:
                continue
            latencies.append(started - sent)
            posts.append(posted - sent)
            job = Job.objects.get(run_id=run_id)
            claims.append(job.started_at.timestamp() - sent)
            queued.append(job.queued_at.timestamp() - sent)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    results.add(
        Result(
            "Webhook → first job's process start, p50 / p99",
            "p50 ≤ 50 ms, p99 ≤ 150 ms",
            f"{ms(p50)} / {ms(p99)} (n={len(latencies)})",
            p50 <= 0.050 and p99 <= 0.150,
            detail={
                "n": len(latencies),
                "p50_ms": p50 * 1000,
                "p90_ms": percentile(latencies, 90) * 1000,
                "p99_ms": p99 * 1000,
                "max_ms": max(latencies) * 1000,
                # Where the time goes (medians, from the moment the POST was sent):
                # the webhook's HTTP answer, start_run done (job queued),
                # run_job's claim (Job.started_at), the script's first command.
                "http_response_p50_ms": percentile(posts, 50) * 1000,
                "job_queued_p50_ms": percentile(queued, 50) * 1000,
                "job_claimed_p50_ms": percentile(claims, 50) * 1000,
            },
        )
    )


def _run_of(answer: dict) -> int:
    """Return the run a webhook answer started (bounded wait when it was queued).

    The webhook answers once the delivery is recorded; a worker task creates the run
    from it (pipelines.create_webhook_runs), so the answer names the delivery.
    """
    from pipelines.models import WebhookDelivery

    if answer.get("run"):
        return int(answer["run"])
    delivery = answer["delivery"]
    return wait_for(
        lambda: (
            WebhookDelivery.objects.filter(pk=delivery)
            .values_list("run_id", flat=True)
            .first()
        ),
        30,
        0.002,
        f"delivery {delivery}'s run",
    )


def bash_true_seconds(times: int = 30) -> float:
    """Median wall time of `bash -c true` started from Python."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], check=True)
        samples.append(time.perf_counter() - started)
    return median(samples)


def noop_overhead(stack: Stack, results: Results, *, runs: int) -> None:
    """2. A `true` job: (finished_at - started_at) minus `bash -c true` on its own."""
    from pipelines import services
    from pipelines.models import Job

    repository, _ = make_repository(stack, "noop", 'noop:\n  script: ["true"]\n')
    durations, queue_to_end, run_ends = [], [], []
    for index in range(runs + 3):
        run = services.trigger_run(repository, ref="main")
        run = wait_run(run.pk, 30)
        job = Job.objects.get(run=run)
        if job.status != "success" or index < 3:
            continue
        durations.append((job.finished_at - job.started_at).total_seconds())
        queue_to_end.append((job.finished_at - job.queued_at).total_seconds())
        run_ends.append((run.finished_at - run.created_at).total_seconds())
    bare = bash_true_seconds()
    overhead = median(durations) - bare
    results.add(
        Result(
            "No-op job (`true`) overhead over `bash -c true`, median",
            "≤ 40 ms",
            f"{ms(overhead)} (job {ms(median(durations))} − bash {ms(bare)}; n={len(durations)})",
            overhead <= 0.040,
            detail={
                "job_started_to_finished_p50_ms": median(durations) * 1000,
                "job_started_to_finished_p90_ms": percentile(durations, 90) * 1000,
                "bash_true_ms": bare * 1000,
                "job_queued_to_finished_p50_ms": median(queue_to_end) * 1000,
                "run_created_to_finished_p50_ms": median(run_ends) * 1000,
            },
        )
    )


def wide_run(
    stack: Stack, results: Results, *, jobs: int, target: float | None
) -> None:
    """3. One run of JOBS parallel `true` jobs on the 2 worker slots, end to end."""
    from pipelines import services
    from pipelines.models import Job

    body = "".join(f'j{index:04d}:\n  script: ["true"]\n' for index in range(jobs))
    repository, _ = make_repository(stack, f"wide-{jobs}", body)
    started = time.monotonic()
    run = services.trigger_run(repository, ref="main")
    run = wait_run(run.pk, max(120, jobs * 2))
    wall = time.monotonic() - started
    database = (run.finished_at - run.created_at).total_seconds()
    statuses = set(Job.objects.filter(run=run).values_list("status", flat=True))
    ok = run.status == "success" and statuses == {"success"}
    label = (
        f"Run of {jobs} parallel no-op jobs on 2 workers, created → finished"
        if target
        else f"{jobs} queued no-op jobs on 2 workers (one run), created → finished"
    )
    results.add(
        Result(
            label,
            f"≤ {target:.0f} s" if target else "— (throughput)",
            f"{database:.2f} s ({jobs / database:.0f} jobs/s)",
            (ok and database <= target) if target else (None if ok else False),
            detail={
                "run_seconds": database,
                "wall_seconds": wall,
                "jobs_per_second": jobs / database,
                "status": run.status,
                "job_statuses": sorted(statuses),
            },
        )
    )
    if not ok:
        raise RuntimeError(f"wide run {run.pk} ended {run.status} with {statuses}")


MIB_IN_MB = 1.048576


def idle_memory(stack: Stack, results: Results, *, idle: float = 10) -> None:
    """6. RSS of web + worker (-c 2) + beat + monitor after start-up and IDLE s idle.

    Python processes only (the uvicorn process, the worker's main process and its two
    pool children, beat, the monitor); Redis and PostgreSQL are not counted.
    """
    assert stack.web is not None
    worker = stack._proc("idle-worker", stack.worker_argv("idle-worker", 2))
    beat = (
        next((p for p in stack.procs if p.name == "beat"), None) or stack.start_beat()
    )
    monitor = stack.start_monitor("idle-monitor")
    try:
        worker.wait_log("ready.", 120)
        monitor.wait_log("active", 60)
        time.sleep(idle)
        procs = {
            "web": stack.web,
            "worker (-c 2)": worker,
            "beat": beat,
            "monitor": monitor,
        }
        parts = {name: proc.rss_kib() for name, proc in procs.items()}
        pss = {name: proc.pss_kib() for name, proc in procs.items()}
    finally:
        worker.stop()
        monitor.stop()
        stack.procs = [p for p in stack.procs if p not in (worker, monitor)]
    total = sum(parts.values()) / 1024
    total_pss = sum(pss.values()) / 1024
    breakdown = ", ".join(f"{k} {v / 1024:.0f}" for k, v in parts.items())
    results.add(
        Result(
            "Idle RSS of web + worker + beat + monitor",
            "≤ 350 MB",
            f"{total:.0f} MiB = {total * MIB_IN_MB:.0f} MB RSS ({breakdown} MiB); "
            f"PSS {total_pss:.0f} MiB",
            # The target is in MB (10^6 bytes); the kernel counts KiB.
            total * MIB_IN_MB <= 350,
            detail={
                "rss_mib": {k: v / 1024 for k, v in parts.items()},
                "pss_mib": {k: v / 1024 for k, v in pss.items()},
            },
        )
    )


def run(stack: Stack, results: Results, *, quick: bool) -> None:
    print(f"pipeline (load {load()})", flush=True)
    webhook_to_job_start(stack, results, triggers=30 if quick else 120)
    noop_overhead(stack, results, runs=15 if quick else 50)
    wide_run(stack, results, jobs=100, target=5.0)
    wide_run(stack, results, jobs=200, target=None)
