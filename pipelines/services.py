"""The verbs that change pipeline state: the only write path for runs and jobs.

Every transition is a conditional UPDATE (``... WHERE status IN (...)``), so a task
delivered twice, or two workers racing, change nothing the second time. Events are
published after commit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from core import audit

from . import artifacts, delivery, events, logs, workers
from .engine import plan, spec
from .engine.executors import ExecSpec, get_executor
from .git import GitError, Mirror, UnknownCommit, credentials_env
from .models import Artifact, Job, Repository, Run, RunCounter, Stage, Variable

logger = logging.getLogger(__name__)

SPEC_FILE = ".slipway.yml"
ACTIVE_RUN = [Run.Status.CREATED, Run.Status.PENDING, Run.Status.RUNNING]
OPEN_JOB = [Job.Status.CREATED, Job.Status.PENDING, Job.Status.MANUAL]


class ActionError(Exception):
    """An action is not allowed in the object's current state."""


# --- repositories -------------------------------------------------------------------


def mirror_for(repository: Repository) -> Mirror:
    """Return the bare mirror of REPOSITORY (credentials passed through the env)."""
    cache_dir = Path(settings.SLIPWAY["MIRROR_DIR"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    if repository.https_token or repository.ssh_private_key:
        cred_dir = cache_dir / f"{repository.mirror_key}.credentials"
        cred_dir.mkdir(mode=0o700, exist_ok=True)
        env = credentials_env(
            repository.https_token or None, repository.ssh_private_key or None, cred_dir
        )
    return Mirror(cache_dir, repository.mirror_key, repository.clone_url, env=env)


# --- triggering ---------------------------------------------------------------------


def _ref_parts(ref: str) -> tuple[str, str, str]:
    """Return (full ref, branch, tag) for a branch name, tag ref or full ref.

    A bare name is taken for a branch; for a name typed by hand, ``_known_ref``
    tells from the mirror whether it is a tag or a commit instead.
    """
    if ref.startswith("refs/heads/"):
        return ref, ref.removeprefix("refs/heads/"), ""
    if ref.startswith("refs/tags/"):
        return ref, "", ref.removeprefix("refs/tags/")
    return ref, ref, ""


# Triggers whose ref a person typed: a branch, a tag or a commit SHA, bare.
BY_HAND = (Run.Trigger.MANUAL, Run.Trigger.API)
_HEX = frozenset("0123456789abcdefABCDEF")


def _looks_like_sha(name: str, *, full: bool = False) -> bool:
    lengths = (40, 64) if full else range(7, 65)
    return len(name) in lengths and not set(name) - _HEX


def _known_ref(mirror: Mirror, name: str) -> tuple[str, str, str, str] | None:
    """Return (full ref, branch, tag, sha) of the bare NAME as MIRROR knows it.

    A branch comes first, then a tag, as git looks them up; a hex NAME that is
    neither but names a commit is that commit, with no branch (SLIPWAY_BRANCH is
    empty, and branch rules do not match it). None when the mirror does not know
    the name, or has not been fetched. Reads the mirror only, never fetches.
    """
    for prefix in ("refs/heads/", "refs/tags/"):
        try:
            sha = mirror.resolve(prefix + name)
        except GitError:
            continue
        if prefix == "refs/heads/":
            return name, name, "", sha
        return prefix + name, "", name, sha
    if _looks_like_sha(name):
        try:
            sha = mirror.resolve(name)
        except GitError:
            return None
        return sha, "", "", sha
    return None


def trigger_run(
    repository: Repository,
    *,
    trigger: str = Run.Trigger.MANUAL,
    ref: str,
    sha: str = "",
    before: str = "",
    variables: Mapping[str, str] | None = None,
    user: Any = None,
    commit_message: str = "",
    commit_author: str = "",
    request: Any = None,
) -> Run:
    """Create a run of REF (a branch, tag, full ref or commit) and queue its start."""
    from . import tasks

    if not ref and not sha:
        raise ActionError("Give a branch, tag or commit to run.")
    full_ref, branch, tag = _ref_parts(ref or sha)
    if not ref:
        full_ref, branch = sha, ""  # A commit: no branch.
    elif not sha and trigger in BY_HAND and _looks_like_sha(ref, full=True):
        # A full SHA typed by hand: when the mirror has the commit already, the run
        # is a run of that commit from the start. (An abbreviated one, or one the
        # mirror lacks, is told apart by start_run after its fetch.)
        try:
            known = _known_ref(mirror_for(repository), ref)
        except (GitError, OSError, ValueError):
            known = None
        if known is not None and not known[1] and not known[2]:
            full_ref, branch, tag, sha = known
    if trigger == Run.Trigger.TAG and not tag:
        tag, branch = branch, ""
    with transaction.atomic():
        run = Run.objects.create(
            repository=repository,
            number=RunCounter.next_number(repository),
            trigger=trigger,
            ref=full_ref,
            branch=branch,
            tag=tag,
            commit_sha=sha,
            before_sha=before,
            commit_message=commit_message,
            commit_author=commit_author,
            triggered_by=user if getattr(user, "is_authenticated", False) else None,
            variables=dict(variables or {}),
        )
        # Every run is audited, whoever started it: a person, the API, a webhook or
        # Slipway itself (schedules, polling).
        audit.record(
            "run.trigger",
            actor=user,
            target=run,
            request=request,
            source=None if request is not None else _audit_source(trigger),
            details={
                "ref": ref,
                "sha": sha,
                "trigger": trigger,
                "variables": sorted(run.variables),
            },
        )
        if repository.cancel_superseded and branch:
            _cancel_superseded(run)
        events.run_changed(run)
        if _starts_inline():
            _start_after_commit(run.pk)
        else:
            tasks.start_run.delay_on_commit(run.pk)
    return run


# Tasks that create runs and then start them in the same worker thread, saving a
# queue hop: a push wants its first job as soon as possible. Schedules and polling
# still queue start_run, so that many runs created at once start on many workers.
INLINE_START_TASKS = frozenset({"pipelines.create_webhook_runs"})


def _starts_inline() -> bool:
    from celery import current_task

    # The proxy is falsy outside a task; the task stack is per thread.
    return bool(current_task) and current_task.name in INLINE_START_TASKS


def _start_after_commit(run_id: int) -> None:
    """After commit, start RUN_ID here; queue start_run if that fails.

    A worker that dies meanwhile leaves the run created without stages, which
    redispatch_stalled re-sends after STALL_SECONDS, like a lost start_run message.
    """
    from . import tasks

    def start() -> None:
        try:
            start_run(run_id)
        except Exception:
            logger.exception("run %s did not start inline; queueing it", run_id)
            tasks.start_run.delay(run_id)

    transaction.on_commit(start)


def _audit_source(trigger: str) -> str:
    if trigger == Run.Trigger.API:
        return audit.AuditEvent.Source.API
    if trigger in (Run.Trigger.SCHEDULE, Run.Trigger.POLL):
        return audit.AuditEvent.Source.SYSTEM
    if trigger == Run.Trigger.MANUAL:
        return audit.AuditEvent.Source.UI
    return audit.AuditEvent.Source.WEBHOOK


def _cancel_superseded(run: Run) -> None:
    older = Run.objects.filter(
        repository_id=run.repository_id,
        branch=run.branch,
        status__in=ACTIVE_RUN,
        pk__lt=run.pk,
    )
    for old in older:
        _cancel(old, reason=f"superseded by run #{run.number}")


# --- starting a run: read and validate the spec, create stages and jobs -------------


def _fail_run(run_id: int, error: str, reason: str) -> None:
    now = timezone.now()
    changed = Run.objects.filter(pk=run_id, status__in=ACTIVE_RUN).update(
        status=Run.Status.FAILED,
        error=error,
        status_reason=reason,
        started_at=now,
        finished_at=now,
    )
    if changed:
        run = Run.objects.select_related("repository").get(pk=run_id)
        events.run_changed(run)
        _after_run_finished(run)


def start_run(run_id: int) -> None:
    """Fetch the commit, validate its pipeline and create the run's stages and jobs."""
    run = Run.objects.select_related("repository").get(pk=run_id)
    if run.status != Run.Status.CREATED or run.stages.exists():
        return  # Started already: a redelivered task does nothing.
    repository = run.repository
    mirror = mirror_for(repository)
    limit = spec.MAX_SPEC_BYTES + 1
    try:
        try:
            # A commit never changes: when the mirror holds it already (a webhook's
            # sha fetched by an earlier run, a retry, a tag on a built commit), the
            # fetch, a network round trip, is skipped.
            sha = _full_sha(run.commit_sha)
            info, text = mirror.read_commit(sha, SPEC_FILE, max_bytes=limit)
        except UnknownCommit:
            mirror.fetch()
            known = _typed_ref(run, mirror)
            sha = known[3] if known else mirror.resolve(run.commit_sha or run.ref)
            info, text = mirror.read_commit(sha, SPEC_FILE, max_bytes=limit)
        changed = None
        if run.before_sha and run.before_sha.strip("0"):
            try:
                changed = tuple(mirror.changed_files(run.before_sha, sha))
            except GitError:
                changed = None  # Unknown base (force push): `changes:` rules match.
    except GitError as exc:
        _fail_run(run_id, str(exc), "could not read the repository")
        return
    Run.objects.filter(pk=run_id).update(
        commit_sha=sha,
        commit_message=run.commit_message or info.message,
        commit_author=run.commit_author or info.author_name,
    )
    run.commit_sha = sha
    if text is None:
        _fail_run(run_id, f"{SPEC_FILE} not found at {sha[:8]}", f"no {SPEC_FILE}")
        return
    try:
        pipeline = spec.parse(text, filename=SPEC_FILE)
    except spec.SpecError as exc:
        _fail_run(run_id, str(exc), f"invalid {SPEC_FILE}")
        return
    context = spec.RuleContext(
        branch=run.branch or None,
        tag=run.tag or None,
        event=_event_name(run.trigger),
        changed_paths=changed,
        # As in the job's environment: stored variables win over the file's, the
        # run's over both.
        variables={
            **pipeline.variables,
            **stored_values(stored_variables(repository)),
            **run.variables,
        },
    )
    workflow = spec.evaluate_workflow(pipeline, context)
    if not workflow.included:
        now = timezone.now()
        Run.objects.filter(pk=run_id, status=Run.Status.CREATED).update(
            status=Run.Status.SKIPPED,
            status_reason=workflow.reason,
            started_at=now,
            finished_at=now,
        )
        events.run_changed(Run.objects.select_related("repository").get(pk=run_id))
        return
    _create_jobs(run, pipeline, context)
    advance_run(run_id)


def _typed_ref(run: Run, mirror: Mirror) -> tuple[str, str, str, str] | None:
    """Tell what the bare name a person typed for RUN is, now that MIRROR is fresh.

    trigger_run took it for a branch; a tag or a commit is stored as such (before
    the rules see the branch), and a branch named like a SHA resolves to its tip.
    """
    if run.trigger not in BY_HAND or run.commit_sha or run.tag:
        return None
    if not run.ref or run.ref != run.branch:
        return None
    known = _known_ref(mirror, run.ref)
    if known is not None and known[:3] != (run.ref, run.branch, run.tag):
        run.ref, run.branch, run.tag = known[:3]
        Run.objects.filter(pk=run.pk).update(
            ref=run.ref, branch=run.branch, tag=run.tag
        )
    return known


def _full_sha(value: str) -> str:
    """Return VALUE if it is a full commit sha; raise UnknownCommit otherwise."""
    sha = value.strip().lower()
    if len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
        raise UnknownCommit(f"not a full commit sha: {value[:80]!r}")
    return sha


def _event_name(trigger: str) -> str:
    return {"poll": "push", "webhook": "api"}.get(trigger, trigger)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def job_queue(tags: tuple[str, ...] | list[str], executor: str) -> str:
    """Return the Celery queue of a job: its tags, plus the executor if not shell."""
    base = "+".join(sorted(tags)) if tags else "default"
    return base if executor == "shell" else f"{base}:{executor}"


def job_executor(job_spec: spec.JobSpec) -> str:
    """Return the executor a job needs: docker for an `image:`, shell otherwise."""
    wanted = job_spec.variables.get("SLIPWAY_EXECUTOR")
    if wanted in ("shell", "docker", "kubernetes"):
        return wanted
    return "docker" if job_spec.image else "shell"


def _create_jobs(run: Run, pipeline: spec.Pipeline, context: spec.RuleContext) -> None:
    with transaction.atomic():
        if Stage.objects.filter(run=run).exists():
            return
        # One INSERT for all stages (PostgreSQL and SQLite return the new ids).
        created = Stage.objects.bulk_create(
            [
                Stage(run=run, name=name, index=index)
                for index, name in enumerate(pipeline.stages)
            ]
        )
        stages = {stage.name: stage for stage in created}
        jobs = []
        protected = delivery.protected_environments(run.repository_id)
        for job_spec in pipeline.jobs:
            decision = spec.evaluate_rules(job_spec, context)
            executor = job_executor(job_spec)
            needs = None if job_spec.needs is None else [n.job for n in job_spec.needs]
            job = Job(
                run=run,
                stage=stages[job_spec.stage],
                name=job_spec.name,
                spec={
                    **_jsonable(job_spec),
                    "pipeline_variables": dict(pipeline.variables),
                },
                needs=needs,
                # A deploy to a protected environment waits for an approval.
                when=delivery.gated_when(
                    run.repository_id, job_spec, decision.when, protected
                ),
                allow_failure=decision.allow_failure,
                executor=executor,
                queue=job_queue(job_spec.tags, executor),
            )
            if not decision.included:
                job.status = Job.Status.SKIPPED
                job.reason = f"excluded by rules: {decision.reason}"
                job.failure_reason = "rules"
            jobs.append(job)
        Job.objects.bulk_create(jobs)
        # Needs that point at jobs a rule excluded are dropped, as GitLab does for
        # optional needs; a required need on an excluded job would block forever.
        excluded = {j.name for j in jobs if j.failure_reason == "rules"}
        for job in jobs:
            if job.needs and excluded.intersection(job.needs):
                Job.objects.filter(run=run, name=job.name).update(
                    needs=[n for n in job.needs if n not in excluded]
                )
        Stage.objects.filter(run=run).exclude(
            pk__in=Job.objects.filter(run=run)
            .exclude(status=Job.Status.SKIPPED)
            .values("stage")
        ).update(status=Run.Status.SKIPPED)


# --- advancing a run ----------------------------------------------------------------


def _nodes(jobs: list[Job]) -> list[plan.Node]:
    return [
        plan.Node(
            name=job.name,
            stage_index=job.stage.index,
            needs=None if job.needs is None else tuple(job.needs),
            when=job.when,
            allow_failure=job.allow_failure,
            stage=job.stage.name,
        )
        for job in jobs
    ]


def _concurrency_blocked(run: Run) -> str:
    limit = run.repository.concurrency_limit
    if not limit or run.status == Run.Status.RUNNING:
        return ""
    running = (
        Run.objects.filter(repository_id=run.repository_id, status=Run.Status.RUNNING)
        .exclude(pk=run.pk)
        .count()
    )
    if running >= limit:
        return f"held by the repository's concurrency limit ({limit} at once)"
    return ""


def advance_run(run_id: int) -> None:
    """Queue every job whose stage or needs are satisfied; finish the run when done."""
    with transaction.atomic():
        run = Run.objects.select_related("repository").get(pk=run_id)
        if run.is_finished:
            return
        jobs = list(run.jobs.filter(retried=False).select_related("stage"))
        if not jobs:
            return
        held = _concurrency_blocked(run)
        if held:
            Run.objects.filter(pk=run.pk, status=Run.Status.CREATED).update(
                status=Run.Status.PENDING, status_reason=held
            )
            run.jobs.filter(status=Job.Status.CREATED).exclude(reason=held).update(
                reason=held
            )
            if run.status == Run.Status.CREATED:
                run.status = Run.Status.PENDING
                events.run_changed(run)
            return
        nodes = _nodes(jobs)
        by_name = {job.name: job for job in jobs}
        now = timezone.now()
        to_queue: list[Job] = []
        # A skip can unblock further skips (a failed build skips test, then deploy):
        # step until nothing changes; each pass settles at least one job.
        for _ in range(len(jobs) + 1):
            step = plan.step(nodes, {job.name: job.status for job in jobs})
            if step.empty:
                break
            to_queue += _apply_step(step, by_name, now)
        for name, reason in step.waiting.items():
            job = by_name[name]
            if job.reason != reason and job.status == Job.Status.CREATED:
                Job.objects.filter(pk=job.pk, status=Job.Status.CREATED).update(
                    reason=reason
                )
        if to_queue and run.status != Run.Status.RUNNING:
            if Run.objects.filter(
                pk=run.pk, status__in=[Run.Status.CREATED, Run.Status.PENDING]
            ).update(
                status=Run.Status.RUNNING,
                started_at=run.started_at or now,
                status_reason="",
            ):
                run.status, run.started_at = Run.Status.RUNNING, run.started_at or now
                events.run_changed(run)
                from . import tasks

                tasks.report_commit_status.delay_on_commit(run.pk)
        _update_stages(jobs)
        final = plan.run_status(nodes, {job.name: job.status for job in jobs})
    if final is not None:
        _finish_run(run, final)


def _apply_step(step: plan.Step, by_name: dict[str, Job], now: Any) -> list[Job]:
    """Apply one planner step with conditional updates; return the queued jobs.

    Queued jobs are moved with one UPDATE per waiting reason (usually one for the
    whole step: a 100-job stage is one statement, not 100), still conditional on
    ``status = created``; only when fewer rows changed than asked (a concurrent
    cancel) does a SELECT find which ones.
    """
    to_queue = []
    starting = [by_name[name] for name in step.start]
    by_reason: dict[str, list[Job]] = {}
    for job in starting:
        reason = workers.waiting_reason(job.queue, job.executor)
        by_reason.setdefault(reason, []).append(job)
    for reason, group in by_reason.items():
        ids = [job.pk for job in group]
        changed = Job.objects.filter(pk__in=ids, status=Job.Status.CREATED).update(
            status=Job.Status.PENDING, queued_at=now, reason=reason
        )
        if changed != len(ids):
            mine = set(
                Job.objects.filter(
                    pk__in=ids, status=Job.Status.PENDING, queued_at=now
                ).values_list("pk", flat=True)
            )
            group = [job for job in group if job.pk in mine]
        for job in group:
            job.status, job.queued_at, job.reason = Job.Status.PENDING, now, reason
            # Queue before publishing: on-commit callbacks run in order, and the
            # job's start matters more than the page's.
            _enqueue(job)
            events.job_changed(job)
            to_queue.append(job)
    for name, reason in step.skip:
        job = by_name[name]
        if Job.objects.transition(
            job.pk, [Job.Status.CREATED], status=Job.Status.SKIPPED, reason=reason
        ):
            job.status, job.reason = Job.Status.SKIPPED, reason
            events.job_changed(job)
    for name in step.manual:
        job = by_name[name]
        target = delivery.deploy_target(job.spec)
        reason = (
            f"waiting for an approval to deploy to {target}"
            if target
            else "waiting for someone to start it (manual job)"
        )
        if Job.objects.transition(
            job.pk, [Job.Status.CREATED], status=Job.Status.MANUAL, reason=reason
        ):
            job.status, job.reason = Job.Status.MANUAL, reason
            events.job_changed(job)
    return to_queue


def _enqueue(job: Job) -> None:
    from . import tasks

    job_id, queue = job.pk, job.queue
    transaction.on_commit(lambda: tasks.run_job.apply_async((job_id,), queue=queue))


def _update_stages(jobs: list[Job]) -> None:
    """Recompute the status of the stages of JOBS (the run's current attempts).

    From the rows advance_run read (stages joined in the same query, so statuses and
    stages are one snapshot) plus its own changes: no query per stage. A stage
    without jobs was marked skipped when the run was created and never changes.
    """
    stages: dict[int, Stage] = {}
    statuses: dict[int, list[str]] = {}
    for job in jobs:
        stages.setdefault(job.stage_id, job.stage)
        statuses.setdefault(job.stage_id, []).append(job.status)
    for stage_id, stage in stages.items():
        new = _stage_status(statuses[stage_id])
        if new != stage.status:
            Stage.objects.filter(pk=stage.pk).update(status=new)
            stage.status = new
            events.stage_changed(stage)


def _stage_status(statuses: list[str]) -> str:
    if not statuses or all(s == Job.Status.SKIPPED for s in statuses):
        return Run.Status.SKIPPED
    if any(s in (Job.Status.RUNNING, Job.Status.PENDING) for s in statuses):
        return Run.Status.RUNNING
    if any(s == Job.Status.CREATED for s in statuses):
        return Run.Status.CREATED
    if any(s == Job.Status.FAILED for s in statuses):
        return Run.Status.FAILED
    if any(s == Job.Status.CANCELED for s in statuses):
        return Run.Status.CANCELED
    return Run.Status.SUCCESS


def _finish_run(run: Run, final: str) -> None:
    now = timezone.now()
    changed = Run.objects.filter(pk=run.pk, status__in=ACTIVE_RUN).update(
        status=final, finished_at=now, started_at=run.started_at or now
    )
    if not changed:
        return
    run.status, run.finished_at, run.started_at = final, now, run.started_at or now
    events.run_changed(run)
    _after_run_finished(run)


def _after_run_finished(run: Run) -> None:
    from . import tasks

    tasks.report_commit_status.delay_on_commit(run.pk)
    if run.repository.concurrency_limit:
        waiting = (
            Run.objects.filter(
                repository_id=run.repository_id, status=Run.Status.PENDING
            )
            .order_by("pk")
            .values_list("pk", flat=True)[: run.repository.concurrency_limit]
        )
        for waiting_id in waiting:
            tasks.advance_run.delay_on_commit(waiting_id)


# --- executing a job ----------------------------------------------------------------


def current_worker() -> str:
    """Return this worker process's name."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stored_variables(repository: Repository) -> list[Variable]:
    """Return REPOSITORY's and the global variables, the repository's first."""
    return list(
        # nulls_last: PostgreSQL sorts NULL first in a descending order, SQLite last.
        Variable.objects.filter(Q(repository=repository) | Q(repository=None)).order_by(
            F("repository_id").desc(nulls_last=True)
        )
    )


def stored_values(variables: list[Variable]) -> dict[str, str]:
    """Return name -> value of VARIABLES (from :func:`stored_variables`).

    A repository's variable wins over a global one of the same name.
    """
    values: dict[str, str] = {}
    for row in variables:
        values.setdefault(row.name, row.value)
    return values


def secrets_for(
    repository: Repository, variables: list[Variable] | None = None
) -> list[str]:
    """Return the secret values that must be masked in this repository's logs."""
    if variables is None:
        variables = stored_variables(repository)
    return [row.value for row in variables if row.is_secret and row.value]


def job_environment(
    job: Job, workspace: Path, variables: list[Variable] | None = None
) -> dict[str, str]:
    """Return the environment of JOB: predefined, stored and spec variables.

    Precedence, lowest first (GitLab's: CI/CD settings win over the file): the
    file's pipeline variables, its job variables (matrix values included), global
    then repository variables and secrets, the run's own variables (a manual run's,
    a schedule's, a trigger's), predefined variables. Every value of the file and of
    the run expands over what is finally in effect below it.

    Never Slipway's own environment: no database URL, keys or Redis URL. Pass
    VARIABLES (from :func:`stored_variables`) when you have them already.
    """
    run = job.run
    repository = run.repository
    if variables is None:
        variables = stored_variables(repository)
    stored = stored_values(variables)
    predefined = {
        "CI": "true",
        "SLIPWAY": "true",
        "SLIPWAY_COMMIT_SHA": run.commit_sha,
        "SLIPWAY_COMMIT_SHORT_SHA": run.commit_sha[:8],
        "SLIPWAY_BRANCH": run.branch,
        "SLIPWAY_TAG": run.tag,
        "SLIPWAY_REF": run.ref,
        "SLIPWAY_RUN_ID": str(run.pk),
        "SLIPWAY_RUN_NUMBER": str(run.number),
        "SLIPWAY_JOB_ID": str(job.pk),
        "SLIPWAY_JOB_NAME": job.name,
        "SLIPWAY_JOB_ATTEMPT": str(job.attempt),
        "SLIPWAY_STAGE": job.stage.name,
        "SLIPWAY_REPOSITORY": repository.name,
        "SLIPWAY_EVENT": _event_name(run.trigger),
        "SLIPWAY_PIPELINE_SOURCE": run.trigger,
        "SLIPWAY_WORKSPACE": str(workspace),
        "SLIPWAY_SERVER_URL": settings.SITE_URL,
    }
    env: dict[str, str] = {}
    for layer in (
        job.spec.get("pipeline_variables", {}),
        job.spec.get("variables", {}),
    ):
        merged = {**env, **stored, **predefined}
        for name, value in layer.items():
            env[name] = spec.expand(str(value), merged)
    # A stored variable or secret is not overridden by the file: a repository's
    # settings are the administrator's, the file anyone's who can push.
    env.update(stored)
    merged = {**env, **predefined}
    for name, value in run.variables.items():
        env[name] = spec.expand(str(value), merged)
    env.update(predefined)
    env.setdefault("HOME", str(workspace))
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    return env


class _JobWatch:
    """Renew the job's heartbeat and notice cancellation while it runs."""

    def __init__(self, job: Job) -> None:
        self.job_id = job.pk
        self.cancel = threading.Event()
        self._stop = threading.Event()
        self._redis = logs.redis_client()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._redis.close()

    def _loop(self) -> None:
        interval = settings.SLIPWAY["HEARTBEAT_SECONDS"]
        next_beat = time.monotonic() + interval
        while not self._stop.wait(0.2):
            try:
                if self._redis.exists(cancel_key(self.job_id)):
                    self.cancel.set()
            except Exception:  # Redis down: the heartbeat below still notices.
                pass
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + interval
                try:
                    alive = Job.objects.filter(
                        pk=self.job_id,
                        status=Job.Status.RUNNING,
                        cancel_requested=False,
                    ).update(heartbeat_at=timezone.now())
                    if not alive:
                        self.cancel.set()
                except Exception:
                    logger.exception("heartbeat of job %s failed", self.job_id)
                finally:
                    from django.db import connection

                    connection.close()


class _Janitor:
    """Remove finished workspaces from one background thread per process."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0

    def remove(self, path: Path) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    threading.Thread(
                        target=self._loop, daemon=True, name="janitor"
                    ).start()
                    self._pid = os.getpid()
        self._queue.put(path)

    def _loop(self) -> None:
        while True:
            shutil.rmtree(self._queue.get(), ignore_errors=True)


_janitor = _Janitor()


def cancel_key(job_id: int) -> str:
    return f"slipway:cancel:{job_id}"


def execute_job(job: Job) -> None:
    """Run a claimed job to its end: workspace, executor, log, artifacts, status."""
    job_spec = job.spec
    run = job.run
    workspace = Path(settings.SLIPWAY["WORKSPACE_DIR"]) / f"job-{job.pk}"
    variables = stored_variables(run.repository)
    writer = logs.JobLogWriter(
        job,
        secrets=secrets_for(run.repository, variables),
        max_bytes=settings.SLIPWAY["LOG_MAX_BYTES"],
    )
    events.job_changed(job)
    status, exit_code, failure, message = Job.Status.FAILED, None, "system_failure", ""
    try:
        writer.write_line(
            f"job {job.name} (attempt {job.attempt}) on {job.worker}, "
            f"commit {run.commit_sha[:8]}"
        )
        executor = get_executor(job.executor)
        available, why = executor.available()
        if not available:
            raise RuntimeError(f"this worker cannot run {job.executor} jobs: {why}")
        shutil.rmtree(workspace, ignore_errors=True)
        workspace.parent.mkdir(parents=True, exist_ok=True)
        mirror = mirror_for(run.repository)
        try:
            # Jobs of one run share a commit: copy a cached checkout of it.
            mirror.workspace(run.commit_sha, workspace, workspace.parent / ".checkouts")
        except GitError:
            # Another machine's worker: its mirror may not have the commit yet.
            mirror.fetch()
            mirror.checkout(run.commit_sha, workspace)
        # Most runs store no artifacts: one indexed EXISTS instead of loading every
        # finished sibling job (a 100-job stage read ~100 rows per job).
        if Artifact.objects.filter(job__run_id=run.pk).exists():
            for line in artifacts.download_for(job, workspace):
                writer.write_line(line)
        exec_spec = ExecSpec(
            job_name=job.name,
            script=tuple(job_spec.get("script", ())),
            before_script=tuple(job_spec.get("before_script", ())),
            after_script=tuple(job_spec.get("after_script", ())),
            env=job_environment(job, workspace, variables),
            workdir=str(workspace),
            timeout=int(job_spec.get("timeout", 3600)),
            image=job_spec.get("image"),
        )
        with _JobWatch(job) as watch:
            result = executor.run(exec_spec, writer.feed, watch.cancel)
        exit_code = result.exit_code
        status, failure, message = _result_status(result)
        if message:
            writer.write_line(message)
        for line in artifacts.collect(
            job, workspace, succeeded=status == Job.Status.SUCCESS
        ):
            writer.write_line(line)
        if status == Job.Status.SUCCESS and job_spec.get("deploy"):
            from . import delivery

            ok, deploy_message = delivery.deploy_job(job, workspace, writer.write_line)
            if not ok:
                status, failure, message = (
                    Job.Status.FAILED,
                    "deploy_failure",
                    deploy_message,
                )
    except Exception as exc:
        logger.exception("job %s failed to run", job.pk)
        writer.write_line(f"\x1b[31mthe job could not run: {exc}\x1b[0m")
        status, failure = Job.Status.FAILED, "system_failure"
    finally:
        lines, size, truncated = writer.close()
    try:
        finish_job(
            job.pk,
            status,
            exit_code=exit_code,
            failure_reason=failure if status != Job.Status.SUCCESS else "",
            log_lines=lines,
            log_bytes=size,
            log_truncated=truncated,
        )
    finally:
        # After the job's end is recorded: removing a checkout takes a syscall per
        # file, and the run's next jobs need not wait for it.
        _janitor.remove(workspace)


def _result_status(result: Any) -> tuple[str, str, str]:
    if result.status == "success":
        return Job.Status.SUCCESS, "", ""
    if result.status == "canceled":
        return Job.Status.CANCELED, "canceled", "job canceled"
    if result.status == "timeout":
        return Job.Status.FAILED, "timeout", result.message or "the job timed out"
    if result.status == "error":
        return Job.Status.FAILED, "system_failure", result.message
    if result.status == "lost":  # The worker shut down and killed the job.
        return Job.Status.FAILED, "worker_lost", result.message
    return (
        Job.Status.FAILED,
        "script_failure",
        (f"the job failed with exit code {result.exit_code}"),
    )


def finish_job(job_id: int, status: str, **fields: Any) -> bool:
    """Record a running job's end, retry it if `retry:` allows, then advance the run."""

    now = timezone.now()
    with transaction.atomic():
        done = Job.objects.transition(
            job_id, [Job.Status.RUNNING], status=status, finished_at=now, **fields
        )
        if not done:
            return False
        job = Job.objects.select_related("run", "stage").get(pk=job_id)
        events.job_changed(job)
        if status == Job.Status.FAILED and _should_retry(job):
            _new_attempt(
                job, reason=f"retried automatically after {job.failure_reason}"
            )
        logs_job_id = job.pk
        transaction.on_commit(lambda: logs.compact(logs_job_id))
        queue_advance(job.run_id)
    return True


ADVANCE_PENDING_SECONDS = 60
_shared_redis: dict[int, Any] = {}


def _redis() -> Any:
    """Return this process's pooled Redis client (a connection per call cost ~1 ms)."""
    client = _shared_redis.get(os.getpid())
    if client is None:
        client = _shared_redis[os.getpid()] = logs.redis_client()
    return client


def advance_key(run_id: int) -> str:
    return f"slipway:advance:{run_id}"


def queue_advance(run_id: int) -> None:
    """After commit, queue advance_run for RUN_ID unless one is queued and not begun.

    Every finishing job asks for an advance; a 100-job stage asked 100 times, each
    reading the whole run. A Redis key (SET NX) marks an advance as queued; the task
    deletes it before it reads anything (:func:`advance_started`), so a job that
    finished after that read queues a fresh one. Nothing is lost: a finish that
    finds the key committed before the queued task began, so that task sees it. The
    key expires, in case its message was lost (the reaper re-advances idle runs).
    """
    from . import tasks

    def send() -> None:
        try:
            first = _redis().set(
                advance_key(run_id), "1", nx=True, ex=ADVANCE_PENDING_SECONDS
            )
        except RedisError:
            first = True  # Cannot coalesce: queue it anyway.
        if first:
            tasks.advance_run.apply_async((run_id,))

    transaction.on_commit(send)


def advance_started(run_id: int) -> None:
    """Let the next finishing job queue an advance (see :func:`queue_advance`)."""
    try:
        _redis().delete(advance_key(run_id))
    except RedisError:
        pass  # The key expires on its own.


def _should_retry(job: Job) -> bool:
    retry = job.spec.get("retry") or {}
    if job.attempt > int(retry.get("max", 0)):
        return False
    when = retry.get("when") or ["always"]
    return "always" in when or job.failure_reason in when


def _new_attempt(job: Job, *, reason: str = "") -> Job:
    Job.objects.filter(pk=job.pk).update(retried=True)
    clone = Job.objects.create(
        run_id=job.run_id,
        stage_id=job.stage_id,
        name=job.name,
        spec=job.spec,
        needs=job.needs,
        when=delivery.gated_when(
            job.run.repository_id,
            job.spec,
            job.when if job.when != "manual" else "on_success",
        ),
        allow_failure=job.allow_failure,
        executor=job.executor,
        queue=job.queue,
        attempt=job.attempt + 1,
        reason=reason,
    )
    events.job_changed(clone)
    return clone


# --- user actions -------------------------------------------------------------------


def _cancel(run: Run, *, reason: str) -> None:
    now = timezone.now()
    for job in run.jobs.filter(retried=False, status__in=OPEN_JOB):
        if Job.objects.transition(
            job.pk, OPEN_JOB, status=Job.Status.CANCELED, finished_at=now, reason=reason
        ):
            job.status = Job.Status.CANCELED
            events.job_changed(job)
    running = list(
        run.jobs.filter(status=Job.Status.RUNNING).values_list("pk", flat=True)
    )
    for job_id in running:
        _request_cancel(job_id)
    Run.objects.filter(pk=run.pk).update(status_reason=reason)
    transaction.on_commit(lambda: advance_run(run.pk))


def _request_cancel(job_id: int) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        cancel_requested=True
    )

    def signal() -> None:
        try:
            client = logs.redis_client()
            client.set(cancel_key(job_id), "1", ex=3600)
            client.close()
        except Exception:  # The heartbeat sees cancel_requested within seconds.
            logger.warning(
                "could not signal the cancel of job %s through Redis", job_id
            )

    transaction.on_commit(signal)


def cancel_run(run: Run, *, user: Any = None, request: Any = None) -> None:
    """Cancel every unfinished job of RUN; running processes die within seconds."""
    if run.is_finished:
        raise ActionError(f"Run #{run.number} has already finished.")
    with transaction.atomic():
        _cancel(
            run, reason=f"canceled by {user.get_username() if user else 'the system'}"
        )
        audit.record("run.cancel", actor=user, target=run, request=request)


def cancel_job(job: Job, *, user: Any = None, request: Any = None) -> None:
    """Cancel one job."""
    if job.is_finished:
        raise ActionError(f"Job {job.name} has already finished.")
    with transaction.atomic():
        if job.status == Job.Status.RUNNING:
            _request_cancel(job.pk)
        elif Job.objects.transition(
            job.pk, OPEN_JOB, status=Job.Status.CANCELED, finished_at=timezone.now()
        ):
            job.status = Job.Status.CANCELED
            events.job_changed(job)
            run_id = job.run_id
            transaction.on_commit(lambda: advance_run(run_id))
        audit.record("job.cancel", actor=user, target=job, request=request)


def _reopen_run(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, finished_at=None, status_reason=""
    )


def _reset_downstream(job: Job) -> None:
    # Jobs skipped because this one failed get another chance; rule skips stay.
    later = Job.objects.filter(
        run_id=job.run_id, retried=False, status=Job.Status.SKIPPED
    ).exclude(failure_reason="rules")
    reset = [
        other.pk
        for other in later.select_related("stage")
        if (other.needs is None and other.stage.index > job.stage.index)
        or (other.needs is not None and job.name in other.needs)
    ]
    Job.objects.filter(pk__in=reset).update(
        status=Job.Status.CREATED, reason="", finished_at=None
    )


def retry_job(job: Job, *, user: Any = None, request: Any = None) -> Job:
    """Start a new attempt of a finished job."""
    from . import tasks

    if not job.is_finished or job.retried:
        raise ActionError(f"Job {job.name} cannot be retried now.")
    with transaction.atomic():
        job = (
            Job.objects.select_related("run", "stage")
            .select_for_update()
            .get(pk=job.pk)
        )
        if job.retried:
            raise ActionError(f"Job {job.name} was retried already.")
        clone = _new_attempt(
            job, reason=f"retried by {user.get_username() if user else 'system'}"
        )
        _reset_downstream(job)
        _reopen_run(job.run)
        audit.record("job.retry", actor=user, target=job, request=request)
        tasks.advance_run.delay_on_commit(job.run_id)
    return clone


def retry_failed_jobs(run: Run, *, user: Any = None, request: Any = None) -> list[Job]:
    """Start a new attempt of every failed or canceled job of RUN."""
    from . import tasks

    failed = list(
        run.jobs.select_related("stage").filter(
            retried=False, status__in=[Job.Status.FAILED, Job.Status.CANCELED]
        )
    )
    if not failed:
        raise ActionError(f"Run #{run.number} has no failed jobs.")
    with transaction.atomic():
        clones = [
            _new_attempt(job, reason="retried with the failed jobs") for job in failed
        ]
        for job in failed:
            _reset_downstream(job)
        _reopen_run(run)
        audit.record("run.retry_failed", actor=user, target=run, request=request)
        tasks.advance_run.delay_on_commit(run.pk)
    return clones


def play_job(job: Job, *, user: Any = None, request: Any = None) -> None:
    """Start a manual job (an approval when it deploys to a protected environment)."""
    from . import tasks

    if job.status != Job.Status.MANUAL:
        raise ActionError(f"Job {job.name} is not waiting for a manual start.")
    with transaction.atomic():
        # 403 unless USER may deploy to the job's protected environment (audited).
        delivery.approve(job, user=user, request=request)
        if not Job.objects.transition(
            job.pk,
            [Job.Status.MANUAL],
            status=Job.Status.CREATED,
            when="on_success",
            reason="",
            approved_by=user if getattr(user, "is_authenticated", False) else None,
        ):
            raise ActionError(f"Job {job.name} was started already.")
        _reopen_run(job.run)
        audit.record("job.play", actor=user, target=job, request=request)
        tasks.advance_run.delay_on_commit(job.run_id)


def reap_lapsed_jobs() -> int:
    """Fail (or retry) running jobs whose worker stopped heartbeating; return how many."""
    lapse = settings.SLIPWAY["HEARTBEAT_LAPSE_SECONDS"]
    reaped = 0
    for job_id in Job.objects.lapsed(lapse).values_list("pk", flat=True):
        canceled = Job.objects.filter(pk=job_id, cancel_requested=True).exists()
        if finish_job(
            job_id,
            Job.Status.CANCELED if canceled else Job.Status.FAILED,
            failure_reason="canceled" if canceled else "worker_lost",
            reason=f"its worker stopped responding for over {lapse} s",
        ):
            reaped += 1
    return reaped


def redeliver(delivery: Any, *, user: Any = None, request: Any = None) -> Run | None:
    """Process a stored webhook delivery again; return the run it started."""
    from . import hooks

    result = hooks.redeliver(delivery, user=user, request=request)
    run_id = result.body.get("run")
    return Run.objects.filter(pk=run_id).first() if run_id else None


STALL_SECONDS = 60
REDISPATCH_LIMIT = 200
# How far back redispatch_stalled looks for webhook deliveries whose run message was
# lost. Older ones (the beat process was down for longer) are left to a person's
# redeliver; the bound keeps the 5-second reaper's scan an index range.
LOST_DELIVERY_WINDOW = timedelta(days=1)


def redispatch_stalled(grace: int = STALL_SECONDS) -> int:
    """Re-send work whose queue message was lost; return how many were re-sent.

    Redis keeps no queue across a restart, and a task that failed on a database
    outage was acknowledged: without this, such jobs would stay pending forever,
    and a webhook delivery answered 201 "run queued" would never get its run.
    Re-sending is safe because every claim and transition is conditional.
    """
    from django.db.models import Exists, OuterRef

    from . import hooks, tasks

    now = timezone.now()
    limit = now - timedelta(seconds=grace)
    sent = 0
    client = logs.redis_client()
    try:
        stale = Job.objects.filter(status=Job.Status.PENDING, queued_at__lt=limit)
        for job_id, queue in stale.values_list("pk", "queue")[:REDISPATCH_LIMIT]:
            if client.llen(queue):
                continue  # Its message may still be waiting behind others.
            if Job.objects.filter(
                pk=job_id, status=Job.Status.PENDING, queued_at__lt=limit
            ).update(queued_at=now):
                tasks.run_job.apply_async((job_id,), queue=queue)
                sent += 1
    except RedisError as exc:
        logger.warning("cannot look at the queues: %s", exc)
        return sent
    finally:
        client.close()
    lost_starts = Run.objects.filter(
        status=Run.Status.CREATED, created_at__lt=limit, stages__isnull=True
    ).values_list("pk", flat=True)[:REDISPATCH_LIMIT]
    for run_id in lost_starts:
        tasks.start_run.delay(run_id)
        sent += 1
    # Past the grace a delivery's create_webhook_runs message is lost, not in
    # flight; should it arrive after all, create_run finds the delivery linked to
    # its run and starts nothing.
    try:
        sent += hooks.create_queued_runs(
            REDISPATCH_LIMIT,
            received_before=limit,
            received_after=now - LOST_DELIVERY_WINDOW,
        )
    except Exception:
        # The reaper goes on with idle runs; the next beat tries the deliveries again.
        logger.exception("could not start the runs of queued webhook deliveries")
    busy = Job.objects.filter(
        run=OuterRef("pk"), status__in=[Job.Status.PENDING, Job.Status.RUNNING]
    )
    idle_runs = (
        Run.objects.filter(status__in=[Run.Status.PENDING, Run.Status.RUNNING])
        .filter(~Exists(busy))
        .exclude(jobs__finished_at__gt=limit)
        .values_list("pk", flat=True)[:REDISPATCH_LIMIT]
    )
    for run_id in idle_runs:
        tasks.advance_run.delay(run_id)
        sent += 1
    return sent
