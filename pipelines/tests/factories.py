"""Plain factory functions for pipeline rows: ``make_run(status="failed")``."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta
from typing import Any

from django.utils import timezone

from pipelines.models import (
    Artifact,
    Job,
    Repository,
    Run,
    RunCounter,
    Schedule,
    Stage,
    Variable,
    WebhookDelivery,
)

_seq = itertools.count(1)


def make_repository(**overrides: Any) -> Repository:
    n = next(_seq)
    fields: dict[str, Any] = {
        "name": f"repo-{n}",
        "clone_url": f"https://git.example.com/acme/repo-{n}.git",
        "default_branch": "main",
        "forge": Repository.Forge.GITHUB,
    }
    fields.update(overrides)
    return Repository.objects.create(**fields)


def make_run(**overrides: Any) -> Run:
    repository = overrides.pop("repository", None) or make_repository()
    status = overrides.get("status", Run.Status.SUCCESS)
    now = timezone.now()
    fields: dict[str, Any] = {
        "repository": repository,
        "number": RunCounter.next_number(repository),
        "status": status,
        "trigger": Run.Trigger.PUSH,
        "ref": "refs/heads/main",
        "branch": "main",
        "commit_sha": hashlib.sha1(f"commit-{next(_seq)}".encode()).hexdigest(),
        "commit_message": "Fix the flaky cache test\n\nThe cache key included the PID.",
        "commit_author": "Ada Lovelace",
        "created_at": now - timedelta(minutes=5),
    }
    if status not in (Run.Status.CREATED,):
        fields["started_at"] = now - timedelta(minutes=4)
    if status in Run.FINISHED:
        fields["finished_at"] = now - timedelta(minutes=1, seconds=13)
    fields.update(overrides)
    return Run.objects.create(**fields)


def make_stage(
    run: Run, name: str = "build", index: int | None = None, **overrides: Any
) -> Stage:
    if index is None:
        index = run.stages.count()
    return Stage.objects.create(run=run, name=name, index=index, **overrides)


def make_job(**overrides: Any) -> Job:
    run = overrides.pop("run", None) or make_run()
    stage = overrides.pop("stage", None)
    if stage is None:
        stage = run.stages.order_by("index").first() or make_stage(run)
    status = overrides.get("status", Job.Status.SUCCESS)
    now = timezone.now()
    fields: dict[str, Any] = {
        "run": run,
        "stage": stage,
        "name": f"job-{next(_seq)}",
        "status": status,
        "spec": {"script": ["make test"]},
        "worker": "celery@worker-1",
    }
    if status in (Job.Status.RUNNING, *Job.FINISHED) and status != Job.Status.SKIPPED:
        fields["started_at"] = now - timedelta(minutes=3)
        fields["queued_at"] = now - timedelta(minutes=3, seconds=2)
    if status in Job.FINISHED and status != Job.Status.SKIPPED:
        fields["finished_at"] = now - timedelta(minutes=1, seconds=30)
        fields["exit_code"] = 0 if status == Job.Status.SUCCESS else 1
    fields.update(overrides)
    return Job.objects.create(**fields)


def make_artifact(
    job: Job,
    name: str = "dist",
    content: bytes = b"PK\x05\x06" + b"\0" * 18,
    **overrides: Any,
) -> Artifact:
    from django.core.files.base import ContentFile

    artifact = Artifact(
        job=job, name=name, size=len(content), file_count=1, **overrides
    )
    artifact.file.save(f"{name}.zip", ContentFile(content), save=True)
    return artifact


def make_delivery(repository: Repository, **overrides: Any) -> WebhookDelivery:
    fields: dict[str, Any] = {
        "repository": repository,
        "forge": repository.forge,
        "delivery_id": f"d-{next(_seq)}",
        "event": "push",
        "headers": {"X-GitHub-Event": "push", "Content-Type": "application/json"},
        "body": "{}",
        "outcome": WebhookDelivery.Outcome.IGNORED,
        "reason": "branch feature/x does not match the branch filter",
        "duration_ms": 12.5,
    }
    fields.update(overrides)
    return WebhookDelivery.objects.create(**fields)


def make_schedule(repository: Repository, **overrides: Any) -> Schedule:
    fields: dict[str, Any] = {
        "repository": repository,
        "description": f"Nightly {next(_seq)}",
        "cron": "0 3 * * *",
        "branch": "main",
        "next_run_at": timezone.now() + timedelta(hours=5),
    }
    fields.update(overrides)
    return Schedule.objects.create(**fields)


def make_variable(repository: Repository | None, **overrides: Any) -> Variable:
    fields: dict[str, Any] = {
        "repository": repository,
        "name": f"VAR_{next(_seq)}",
        "value": "value",
        "is_secret": False,
    }
    fields.update(overrides)
    return Variable.objects.create(**fields)


def make_pipeline(repository: Repository | None = None, **run_overrides: Any) -> Run:
    """Make a run with a realistic three-stage pipeline (build, test, deploy)."""
    run = (
        make_run(repository=repository, **run_overrides)
        if repository
        else make_run(**run_overrides)
    )
    build = make_stage(run, "build", 0, status="success")
    test = make_stage(run, "test", 1, status="failed")
    deploy = make_stage(run, "deploy", 2, status="skipped")
    make_job(run=run, stage=build, name="compile")
    make_job(run=run, stage=build, name="lint")
    make_job(run=run, stage=test, name="unit", needs=["compile"])
    make_job(
        run=run,
        stage=test,
        name="integration",
        status="failed",
        needs=["compile"],
        failure_reason="script failure",
    )
    make_job(
        run=run,
        stage=deploy,
        name="deploy-staging",
        status="skipped",
        reason="skipped: an earlier stage failed",
        worker="",
    )
    make_job(
        run=run,
        stage=deploy,
        name="deploy-prod",
        status="manual",
        when="manual",
        reason="manual job: a developer starts it",
        worker="",
    )
    return run


DEMO_LOG = [
    "\x1b[1;36m$ git checkout --force 3f9c2a1\x1b[0m",
    "section_start:1700000000:install[collapsed=false]\x1b[0KInstalling dependencies",
    "Resolving packages from requirements.txt",
    "Collecting django==5.2.8",
    "Collecting celery==5.5.3",
    "Collecting redis==6.4.0",
    "Installing collected packages: django, celery, redis",
    "\x1b[32mSuccessfully installed 42 packages in 6.1s\x1b[0m",
    "section_end:1700000007:install\x1b[0K",
    "section_start:1700000007:test\x1b[0KRunning the test suite",
    "\x1b[1m$ pytest -q --maxfail=1\x1b[0m",
    "........................................................ [ 35%]",
    "........................................................ [ 70%]",
    "..............................................\x1b[31mF\x1b[0m......... [100%]",
    "",
    "=================================== FAILURES ===================================",
    "\x1b[31m__________________________ test_cache_key_is_stable ___________________________\x1b[0m",
    "    def test_cache_key_is_stable():",
    ">       assert cache_key(request) == cache_key(copy(request))",
    "\x1b[31mE       AssertionError: assert 'v1:9f2c:4411' == 'v1:9f2c:4412'\x1b[0m",
    "tests/test_cache.py:41: AssertionError",
    "\x1b[31m1 failed\x1b[0m, \x1b[32m159 passed\x1b[0m in 12.84s",
    "section_end:1700000021:test\x1b[0K",
    "\x1b[31mERROR: Job failed: exit code 1\x1b[0m",
]


def add_log(job: Job, lines: list[str] | None = None) -> None:
    """Store LINES as the job's log (one chunk)."""
    from pipelines.models import LogChunk

    lines = DEMO_LOG if lines is None else lines
    start = 1_700_000_000.0
    data = "\n".join(f"{start + i * 0.35:.3f} {text}" for i, text in enumerate(lines))
    LogChunk.objects.create(job=job, first_line=1, last_line=len(lines), data=data)
    Job.objects.filter(pk=job.pk).update(
        log_lines=len(lines), log_bytes=sum(len(t) + 1 for t in lines)
    )


def seed_demo() -> dict[str, Any]:
    """Fill the database like a busy small team's install; return the showcase rows."""
    import random

    rng = random.Random(7)
    now = timezone.now()
    titles = [
        "Add retry to the payment webhook handler",
        "Bump celery from 5.5.2 to 5.5.3",
        "Fix the flaky cache test",
        "Render the pipeline graph server-side first",
        "Speed up the Docker build with a cache mount",
        "Use keyset pagination for the runs list",
        "Add the staging deploy job",
        "Refactor settings into typed helpers",
        "Document the webhook setup for Forgejo",
        "Drop Python 3.10 support",
    ]
    authors = ["Ada Lovelace", "Grace Hopper", "Linus Torvalds", "Margaret Hamilton"]
    branches = ["main", "main", "main", "feature/graph", "fix/cache-key", "release/2.4"]
    repos = [
        make_repository(
            name="web", description="Customer-facing web app", forge="github"
        ),
        make_repository(name="api", description="Public REST API", forge="gitlab"),
        make_repository(
            name="infra",
            description="Kubernetes manifests and Helm charts",
            forge="gitea",
        ),
        make_repository(
            name="mobile", description="iOS and Android apps", forge="forgejo"
        ),
    ]
    weights = {"web": 30, "api": 22, "infra": 12, "mobile": 8}
    for repo in repos:
        for i in range(weights[repo.name]):
            age = timedelta(
                days=13 - (i * 13 // weights[repo.name]),
                hours=rng.randint(0, 10),
                minutes=rng.randint(0, 59),
            )
            status = rng.choices(
                ["success", "failed", "canceled"], weights=[8, 2, 0.5]
            )[0]
            created = now - age
            length = timedelta(seconds=rng.randint(70, 420))
            make_run(
                repository=repo,
                status=status,
                branch=rng.choice(branches),
                commit_message=rng.choice(titles),
                commit_author=rng.choice(authors),
                created_at=created,
                started_at=created + timedelta(seconds=3),
                finished_at=created + timedelta(seconds=3) + length,
            )
    web = repos[0]
    failed = make_pipeline(
        web,
        status="failed",
        branch="fix/cache-key",
        commit_message="Fix the flaky cache test\n\nThe cache key included the PID.",
        commit_author="Grace Hopper",
        created_at=now - timedelta(minutes=14),
        started_at=now - timedelta(minutes=14),
        finished_at=now - timedelta(minutes=9, seconds=12),
    )
    failing_job = failed.jobs.get(name="integration")
    add_log(failing_job)
    add_log(failed.jobs.get(name="compile"), DEMO_LOG[:9])
    make_artifact(failed.jobs.get(name="compile"), name="dist")
    make_artifact(failed.jobs.get(name="integration"), name="junit-report")

    running = make_run(
        repository=web,
        status="running",
        branch="main",
        commit_message="Render the pipeline graph server-side first",
        commit_author="Ada Lovelace",
        created_at=now - timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        finished_at=None,
    )
    build = make_stage(running, "build", 0, status="success")
    test = make_stage(running, "test", 1, status="running")
    deploy = make_stage(running, "deploy", 2, status="created")
    make_job(run=running, stage=build, name="compile")
    make_job(run=running, stage=build, name="lint")
    unit = make_job(
        run=running,
        stage=test,
        name="unit",
        status="running",
        needs=["compile"],
        finished_at=None,
        exit_code=None,
    )
    add_log(unit, DEMO_LOG[:14])
    pending = make_job(
        run=running,
        stage=test,
        name="e2e",
        status="pending",
        needs=["compile"],
        reason="waiting for a free worker (concurrency limit 2 reached)",
        worker="",
        started_at=None,
    )
    make_job(
        run=running,
        stage=deploy,
        name="deploy-staging",
        status="created",
        needs=["unit", "e2e"],
        reason="waiting for unit, e2e",
        worker="",
        started_at=None,
    )
    make_job(
        run=running,
        stage=deploy,
        name="deploy-prod",
        status="created",
        when="manual",
        needs=["deploy-staging"],
        reason="manual: starts when someone presses Run",
        worker="",
        started_at=None,
    )
    make_run(
        repository=repos[1],
        status="pending",
        branch="feature/graph",
        commit_message="Use keyset pagination for the runs list",
        commit_author="Linus Torvalds",
        created_at=now - timedelta(seconds=40),
        started_at=None,
        finished_at=None,
    )
    broken = make_run(
        repository=repos[2],
        status="failed",
        branch="main",
        commit_message="Add the canary deploy stage",
        commit_author="Margaret Hamilton",
        error=(
            ".slipway.yml:12:5: job 'canary' uses unknown stage 'canary' "
            "(stages: build, test, deploy)\n"
            ".slipway.yml:18:9: 'needs' of job 'smoke' names 'canry', "
            "which does not exist"
        ),
        status_reason="invalid pipeline file",
        created_at=now - timedelta(minutes=31),
        started_at=None,
        finished_at=now - timedelta(minutes=31),
    )
    make_delivery(web, outcome="created", run=failed, reason="push to fix/cache-key")
    make_delivery(web, outcome="ignored")
    make_delivery(
        web,
        outcome="rejected",
        status_code=401,
        reason="signature does not match (X-Hub-Signature-256)",
    )
    make_schedule(web, description="Nightly build", cron="0 3 * * *")
    make_schedule(
        web,
        description="Weekly dependency audit",
        cron="0 6 * * 1",
        branch="main",
        enabled=False,
        next_run_at=None,
    )
    make_variable(web, name="DEPLOY_ENV", value="staging")
    make_variable(web, name="REGISTRY_TOKEN", value="s3cr3t-token", is_secret=True)
    return {
        "repositories": repos,
        "failed_run": failed,
        "failed_job": failing_job,
        "running_run": running,
        "running_job": unit,
        "pending_job": pending,
        "broken_run": broken,
    }
