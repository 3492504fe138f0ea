"""Continuous delivery: deploy jobs, rollbacks, promotions and approvals.

The verbs here are the only write path for environments' deployments:

* ``deploy_job`` runs on the worker after a deploy job's script succeeded: render the
  manifests from the workspace, server-side apply them to the environment's cluster,
  follow the rollout into the job's log, record a :class:`Deployment`.
* ``rollback`` and ``promote`` record a deployment that re-applies stored manifests
  (the previous good ones, or another environment's current ones) and queue
  ``apply_deployment`` on a worker; the web request never waits for a rollout.
* ``gated_when`` and ``approve`` make a deploy job to a protected environment wait for
  an approval by an allowed user, and check that user when someone presses play.

Server-side apply uses the field manager ``slipway``. Each document is applied first
without ``force``; when another manager owns a field the manifest sets (someone ran
``kubectl scale`` or ``kubectl set image``), the 409 conflict is written to the log
naming the fields and managers, and the document is applied again with
``force=true``. The pipeline is the source of truth for the fields its manifests set
(what Argo CD and Flux do with force-conflicts), so a hand edit never blocks a
deploy, but it is never overwritten silently either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from core import audit, roles
from core.models import AuditEvent

from . import manifests
from .engine import spec as engine_spec
from .models import Deployment, Environment, Job, Repository

logger = logging.getLogger(__name__)

FIELD_MANAGER = "slipway"
Log = Callable[[str], None]


class DeployNotAllowed(PermissionDenied):
    """The user may not deploy to (approve, roll back, promote) this environment."""


class DeliveryError(Exception):
    """A rollback or promotion is not possible in the current state."""


# ----------------------------------------------------------------- who may deploy


def may_deploy(user: Any, environment: Environment) -> bool:
    """Return whether USER may approve, roll back and promote to ENVIRONMENT.

    Roles count on the environment's repository (a global role or a grant on it).
    Its admins always may. Others need the environment's role (operator by default)
    and, when the environment names a group, membership of that group.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    scope = roles.repository(environment.repository_id)
    if roles.has_role(user, roles.ADMIN, scope):
        return True
    if not roles.has_role(user, environment.deploy_role or roles.OPERATOR, scope):
        return False
    if environment.deploy_group_id is not None:
        return user.groups.filter(pk=environment.deploy_group_id).exists()
    return True


def _require(user: Any, environment: Environment) -> None:
    if not may_deploy(user, environment):
        group = (
            f" in group {environment.deploy_group.name}"
            if environment.deploy_group_id
            else ""
        )
        raise DeployNotAllowed(
            f"Deploying to {environment.name} needs the {environment.deploy_role} "
            f"role{group}."
        )


# ---------------------------------------------------------------- protected gates


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def deploy_target(job_spec: Any) -> str | None:
    """Return the environment a job spec (dataclass or stored dict) deploys to."""
    if not _field(job_spec, "deploy"):
        return None
    environment = _field(job_spec, "environment")
    if not environment or _field(environment, "action") == "stop":
        return None
    return _field(environment, "name") or None


def protected_environments(repository: Repository | int) -> set[str]:
    """Return the names of REPOSITORY's protected environments."""
    repository_id = getattr(repository, "pk", repository)
    return set(
        Environment.objects.filter(
            repository_id=repository_id, protected=True
        ).values_list("name", flat=True)
    )


def gated_when(
    repository: Repository | int,
    job_spec: Any,
    when: str,
    protected: set[str] | None = None,
) -> str:
    """Return WHEN, or "manual" for a deploy job to a protected environment.

    Called when a run's jobs (or a new attempt) are created, so the job waits for
    an approval instead of starting; `approve` checks who presses play.
    """
    target = deploy_target(job_spec)
    if target is None or when in ("never", "manual"):
        return when
    if protected is None:
        protected = protected_environments(repository)
    return "manual" if target in protected else when


def job_environment(job: Job) -> Environment | None:
    """Return the environment row a deploy job targets, if it exists."""
    target = deploy_target(job.spec)
    if target is None:
        return None
    return (
        Environment.objects.select_related("cluster", "deploy_group")
        .filter(repository_id=job.run.repository_id, name=target)
        .first()
    )


def approve(job: Job, *, user: Any = None, request: Any = None) -> None:
    """Check and audit USER's approval of JOB when it deploys to a protected env.

    Raise DeployNotAllowed (a 403) when the user may not deploy there. Call it inside
    the transaction that starts the job, so a refused start leaves no audit row.
    """
    environment = job_environment(job)
    if environment is None or not environment.protected:
        return
    _require(user, environment)
    audit.record(
        "environment.approve",
        actor=user,
        target=environment,
        request=request,
        details={"job": job.pk, "run": job.run_id, "job_name": job.name},
    )


# ------------------------------------------------------------------- deploy jobs


def _job_env(job: Job, workspace: Path) -> dict[str, str]:
    from . import services

    return services.job_environment(job, workspace)


def deploy_job(job: Job, workspace: Path, log: Log) -> tuple[bool, str]:
    """Deploy JOB's manifests to its environment; return (ok, reason when not ok)."""
    deploy = job.spec.get("deploy") or {}
    run = job.run
    env = _job_env(job, workspace)
    target = deploy_target(job.spec)
    if target is None:
        return False, "the deploy job names no environment"
    name = engine_spec.expand(target, env)
    environment = (
        Environment.objects.select_related("cluster", "deploy_group")
        .filter(repository_id=run.repository_id, name=name)
        .first()
    )
    if environment is None:
        return False, (
            f"environment {name!r} does not exist for repository "
            f"{run.repository.name}: an admin creates it, with a cluster, on the "
            "repository's Environments page"
        )
    if environment.cluster_id is None:
        return False, f"environment {name!r} has no cluster: an admin must choose one"
    if environment.protected and (
        job.approved_by is None or not may_deploy(job.approved_by, environment)
    ):
        return False, (
            f"environment {name!r} is protected and this job was not approved by an "
            "allowed user"
        )
    images = {
        key: engine_spec.expand(str(value), env)
        for key, value in (deploy.get("images") or {}).items()
    }
    namespace = deploy.get("namespace") or environment.namespace
    user = job.approved_by or run.triggered_by
    deployment = Deployment.objects.create(
        environment=environment,
        kind=Deployment.Kind.DEPLOY,
        run=run,
        job=job,
        commit_sha=run.commit_sha,
        ref=run.ref,
        user=user,
        trigger=_trigger_text(job),
        namespace=namespace,
    )
    lines: list[str] = []

    def progress(text: str) -> None:
        lines.append(text)
        log(text)

    try:
        docs = manifests.load(
            workspace,
            manifests=deploy.get("manifests"),
            kustomize=deploy.get("kustomize"),
            images=images,
        )
    except manifests.ManifestError as exc:
        message = f"cannot render the manifests: {exc}"
        deployment.log = "\n".join(lines)
        deployment.save(update_fields=["log"])
        deployment.finish(Deployment.Status.FAILED, message)
        return False, message
    deployment.manifests = manifests.dump(docs)
    deployment.images = manifests.images_of(docs)
    deployment.save(update_fields=["manifests", "images"])
    source = deploy.get("manifests") or deploy.get("kustomize")
    progress(
        f"deploying {len(docs)} object(s) from {source} to environment {name} "
        f"(cluster {environment.cluster.name}, namespace {namespace})"
    )
    for image in deployment.images:
        progress(f"  image {image}")
    timeout = int(deploy.get("timeout") or engine_spec.DEFAULT_DEPLOY_TIMEOUT)
    ok, message = _roll_out(deployment, docs, timeout, progress)
    deployment.log = "\n".join(lines)
    deployment.save(update_fields=["log"])
    _finish(deployment, ok, message)
    audit.record(
        "environment.deploy",
        actor=job.approved_by,
        target=environment,
        source=AuditEvent.Source.SYSTEM.value,
        details={
            "deployment": deployment.pk,
            "job": job.pk,
            "commit": run.commit_sha,
            "status": deployment.status,
        },
    )
    return ok, "" if ok else f"deploy to {name} failed: {message}"


def _trigger_text(job: Job) -> str:
    run = job.run
    if job.approved_by is not None:
        return f"approved by {job.approved_by.get_username()}"
    if run.triggered_by is not None:
        return f"{run.trigger} by {run.triggered_by.get_username()}"
    if run.commit_author:
        return f"{run.trigger} by {run.commit_author}"
    return run.trigger


def _conflicts(exc: Any) -> str:
    causes = [c for c in exc.causes if c.get("reason") == "FieldManagerConflict"]
    return "; ".join(f"{c.get('field')} ({c.get('message')})" for c in causes)


def _roll_out(
    deployment: Deployment, docs: list[dict[str, Any]], timeout: float, log: Log
) -> tuple[bool, str]:
    """Apply DOCS to the deployment's environment, then wait for the rollout."""
    from clusters import deploy as cluster_deploy
    from clusters import kube

    environment = deployment.environment
    cluster = environment.cluster
    if cluster is None:
        return False, f"environment {environment.name} has no cluster"
    namespace = deployment.namespace or environment.namespace
    try:
        backend = kube.connect(cluster)
    except kube.CredentialsError as exc:
        return False, f"cannot use cluster {cluster.name}'s credentials: {exc}"
    try:
        applied = []
        for doc in docs:
            applied.extend(
                _apply_one(cluster_deploy, kube, backend, cluster, namespace, doc, log)
            )
        result = cluster_deploy.wait_for_rollout(
            cluster, applied, timeout=timeout, progress=log, backend=backend
        )
    except kube.KubeError as exc:
        return False, f"the cluster refused the manifests: {exc}"
    finally:
        backend.close()
    if not result.ok:
        return False, result.reason
    log(f"rolled out: {len(applied)} object(s) applied")
    return True, ""


def _apply_one(
    cluster_deploy: Any,
    kube: Any,
    backend: Any,
    cluster: Any,
    namespace: str,
    doc: dict[str, Any],
    log: Log,
) -> list[Any]:
    meta = doc.get("metadata") or {}
    shown = f"{doc.get('kind')}/{meta.get('name')}"
    try:
        applied = cluster_deploy.apply_manifests(
            cluster, namespace, [doc], field_manager=FIELD_MANAGER, backend=backend
        )
    except kube.KubeError as exc:
        conflicts = _conflicts(exc) if exc.status == 409 else ""
        if not conflicts:
            raise
        log(
            f"WARNING: {shown}: fields changed outside the pipeline will be "
            f"overwritten: {conflicts}"
        )
        applied = cluster_deploy.apply_manifests(
            cluster,
            namespace,
            [doc],
            field_manager=FIELD_MANAGER,
            force=True,
            backend=backend,
        )
    for item in applied:
        log(f"applied {item.key} (generation {item.generation})")
    return list(applied)


def _finish(deployment: Deployment, ok: bool, message: str) -> None:
    status = Deployment.Status.SUCCESS if ok else Deployment.Status.FAILED
    if not deployment.finish(status, message):
        return
    if ok and deployment.kind == Deployment.Kind.ROLLBACK and deployment.source_id:
        # What ran after the restored deployment is now rolled back.
        source = Deployment.objects.get(pk=deployment.source_id)
        Deployment.objects.filter(
            environment_id=deployment.environment_id,
            status=Deployment.Status.SUCCESS,
            created_at__gt=source.created_at,
        ).exclude(pk=deployment.pk).update(status=Deployment.Status.ROLLED_BACK)


# ------------------------------------------------------------ rollback, promote


STALE_MARGIN = 600


def _busy(environment: Environment) -> None:
    """Refuse while a deployment runs; fail one whose worker died long ago."""
    now = timezone.now()
    running = environment.deployments.filter(
        status=Deployment.Status.RUNNING
    ).select_related("job")
    for deployment in running:
        age = (now - deployment.created_at).total_seconds()
        if age > _timeout_of(deployment) + STALE_MARGIN:
            # Its rollout would have timed out long ago: the worker is gone.
            deployment.finish(
                Deployment.Status.FAILED,
                "its worker stopped before the rollout finished",
            )
            continue
        raise DeliveryError(
            f"A deployment to {environment.name} is running; wait for it to finish."
        )


def _timeout_of(deployment: Deployment) -> int:
    spec = deployment.job.spec if deployment.job_id else {}
    deploy = (spec or {}).get("deploy") or {}
    return int(deploy.get("timeout") or engine_spec.DEFAULT_DEPLOY_TIMEOUT)


def previous_deployment(environment: Environment) -> Deployment | None:
    """Return the successful deployment before the current one (the rollback target)."""
    current = environment.current_deployment()
    if current is None:
        return None
    return (
        environment.deployments.filter(
            status=Deployment.Status.SUCCESS, created_at__lt=current.created_at
        )
        .exclude(commit_sha=current.commit_sha, manifests=current.manifests)
        .order_by("-created_at", "-pk")
        .first()
    )


def recovery_target(environment: Environment) -> Deployment | None:
    """Return the current deployment when the newest finished one failed, else None.

    A failed rollout may leave the cluster half-way to the new version: re-applying
    the last good deployment (what should be running) is the one-click recovery.
    """
    newest = (
        environment.deployments.exclude(status=Deployment.Status.RUNNING)
        .order_by("-created_at", "-pk")
        .first()
    )
    if newest is None or newest.status != Deployment.Status.FAILED:
        return None
    current = environment.current_deployment()
    return current if current is not None and current.manifests else None


def rollback_target(environment: Environment) -> Deployment | None:
    """Return what a rollback without a chosen deployment restores.

    After a failed rollout that is the last good deployment (re-applied); otherwise
    the successful deployment before the current one.
    """
    return recovery_target(environment) or previous_deployment(environment)


def rollback(
    environment: Environment,
    *,
    to: Deployment | None = None,
    user: Any = None,
    request: Any = None,
) -> Deployment:
    """Re-apply an earlier successful deployment's manifests.

    The default is `rollback_target`: the last good deployment after a failed
    rollout, else the one before the current. Record it as a new deployment of kind
    rollback and queue it on a worker.
    """
    _require(user, environment)
    target = to or rollback_target(environment)
    if target is None:
        raise DeliveryError(f"{environment.name} has no earlier deployment to restore.")
    if target.environment_id != environment.pk:
        raise DeliveryError("That deployment belongs to another environment.")
    if (
        target.status
        not in (
            Deployment.Status.SUCCESS,
            Deployment.Status.ROLLED_BACK,
        )
        or not target.manifests
    ):
        raise DeliveryError("Only a successful deployment can be restored.")
    with transaction.atomic():
        Environment.objects.select_for_update().filter(pk=environment.pk).first()
        _busy(environment)
        deployment = Deployment.objects.create(
            environment=environment,
            kind=Deployment.Kind.ROLLBACK,
            source=target,
            run=target.run,
            job=target.job,
            commit_sha=target.commit_sha,
            ref=target.ref,
            user=user if getattr(user, "is_authenticated", False) else None,
            trigger=f"rollback by {user.get_username()}" if user else "rollback",
            namespace=target.namespace or environment.namespace,
            manifests=target.manifests,
            images=target.images,
        )
        audit.record(
            "environment.rollback",
            actor=user,
            target=environment,
            request=request,
            details={
                "deployment": deployment.pk,
                "to": target.pk,
                "commit": target.commit_sha,
            },
        )
        _queue(deployment)
    return deployment


def promote(
    source: Environment,
    target: Environment,
    *,
    user: Any = None,
    request: Any = None,
) -> Deployment:
    """Deploy what runs on SOURCE (e.g. staging) to TARGET (e.g. production).

    The current manifests of SOURCE are applied to TARGET's cluster, moved into
    TARGET's namespace; recorded as a deployment of kind promote.
    """
    _require(user, target)
    if source.pk == target.pk:
        raise DeliveryError("Promote from another environment.")
    if source.repository_id != target.repository_id:
        raise DeliveryError("Both environments must belong to the same repository.")
    current = source.current_deployment()
    if current is None or not current.manifests:
        raise DeliveryError(f"{source.name} has no successful deployment to promote.")
    if target.cluster_id is None:
        raise DeliveryError(f"{target.name} has no cluster.")
    docs = manifests.set_namespace(
        manifests.parse(current.manifests),
        target.namespace,
        replace=current.namespace or source.namespace,
    )
    with transaction.atomic():
        Environment.objects.select_for_update().filter(pk=target.pk).first()
        _busy(target)
        deployment = Deployment.objects.create(
            environment=target,
            kind=Deployment.Kind.PROMOTE,
            source=current,
            run=current.run,
            job=current.job,
            commit_sha=current.commit_sha,
            ref=current.ref,
            user=user if getattr(user, "is_authenticated", False) else None,
            trigger=(
                f"promoted from {source.name} by {user.get_username()}"
                if user
                else f"promoted from {source.name}"
            ),
            namespace=target.namespace,
            manifests=manifests.dump(docs),
            images=current.images,
        )
        audit.record(
            "environment.promote",
            actor=user,
            target=target,
            request=request,
            details={
                "deployment": deployment.pk,
                "from": source.name,
                "source_deployment": current.pk,
                "commit": current.commit_sha,
            },
        )
        _queue(deployment)
    return deployment


def _queue(deployment: Deployment) -> None:
    from . import delivery_tasks

    delivery_tasks.apply_deployment.delay_on_commit(deployment.pk)


def apply_deployment(deployment_id: int) -> Deployment:
    """Apply a recorded rollback or promotion and wait for its rollout.

    Idempotent: a deployment that is no longer running is left alone.
    """
    deployment = Deployment.objects.select_related(
        "environment__cluster", "environment__repository", "job", "source__job"
    ).get(pk=deployment_id)
    if deployment.status != Deployment.Status.RUNNING:
        return deployment
    lines: list[str] = []
    docs = manifests.parse(deployment.manifests)
    timeout = _timeout_of(deployment.source) if deployment.source else 600
    lines.append(
        f"{deployment.kind}: re-applying {len(docs)} object(s) of commit "
        f"{deployment.short_sha} to {deployment.environment.name}"
    )
    try:
        ok, message = _roll_out(deployment, docs, timeout, lines.append)
    except Exception as exc:  # A crash must not leave the deployment running.
        logger.exception("deployment %s failed", deployment.pk)
        ok, message = False, f"the deployment could not run: {exc}"
    deployment.log = "\n".join(lines)
    deployment.save(update_fields=["log"])
    _finish(deployment, ok, message)
    return deployment


def fail_stale(deployment: Deployment, reason: str) -> None:
    """Mark a deployment whose worker died as failed."""
    deployment.finish(Deployment.Status.FAILED, reason)


# --------------------------------------------------------------------- reading


def environment_rows(environments: Any) -> list[dict[str, Any]]:
    """Return each environment with its current and last deployment (3 queries)."""
    envs = list(environments.select_related("repository", "cluster"))
    ids = [e.pk for e in envs]
    current: dict[int, Deployment] = {}
    last: dict[int, Deployment] = {}
    for d in (
        Deployment.objects.filter(environment_id__in=ids)
        .select_related("user")
        .order_by("environment_id", "-created_at", "-pk")
        .only(
            "pk",
            "environment_id",
            "kind",
            "status",
            "commit_sha",
            "ref",
            "created_at",
            "finished_at",
            "trigger",
            "user__username",
            "run_id",
        )
    ):
        last.setdefault(d.environment_id, d)
        if d.status == Deployment.Status.SUCCESS:
            current.setdefault(d.environment_id, d)
    return [
        {"environment": e, "current": current.get(e.pk), "last": last.get(e.pk)}
        for e in envs
    ]
