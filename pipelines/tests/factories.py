"""Plain factory functions for pipeline rows: ``make_run(status="failed")``."""

from __future__ import annotations

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
        "commit_sha": f"{next(_seq):040x}"[-40:].replace("0", "a", 6),
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
