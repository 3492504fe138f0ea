"""Shared helpers of the API tests: token clients and a world of objects."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from rest_framework.test import APIClient

from clusters.models import Cluster
from core import tokens
from core.models import ApiToken
from pipelines.models import (
    Artifact,
    Deployment,
    Environment,
    Job,
    Repository,
    Run,
    Schedule,
    Variable,
    WebhookDelivery,
)
from pipelines.tests.factories import (
    add_log,
    make_artifact,
    make_delivery,
    make_job,
    make_repository,
    make_run,
    make_schedule,
    make_stage,
    make_variable,
)

_seq = itertools.count(1)


def token_client(user: User, scope: str = ApiToken.Scope.WRITE) -> APIClient:
    """Return an API client that authenticates as USER with a fresh token."""
    secret = tokens.create_token(user, name="test", scope=scope).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def assert_error(response: Any, status: int, code: str | None = None) -> dict:
    """Assert RESPONSE is the API's error body with STATUS (and CODE)."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@dataclass
class World:
    """One of every object a route can point at."""

    repository: Repository
    run: Run
    job: Job
    manual_job: Job
    failed_job: Job
    artifact: Artifact
    delivery: WebhookDelivery
    schedule: Schedule
    variable: Variable
    secret: Variable
    cluster: Cluster
    environment: Environment
    deployment: Deployment


def make_world() -> World:
    """Create a repository with a failed run, its jobs and the rest."""
    n = next(_seq)
    repository = make_repository(name=f"world-{n}")
    cluster = Cluster.objects.create(
        name=f"world-{n}",
        auth_mode=Cluster.AuthMode.TOKEN,
        api_server="https://127.0.0.1:1",
        token="not-a-real-token",
    )
    environment = Environment.objects.create(
        repository=repository, name="staging", cluster=cluster, namespace="staging"
    )
    run = make_run(repository=repository, status=Run.Status.FAILED)
    stage = make_stage(run, "build", 0, status="failed")
    job = make_job(run=run, stage=stage, name="compile")
    add_log(job, ["one", "two", "three"])
    failed = make_job(run=run, stage=stage, name="unit", status=Job.Status.FAILED)
    manual = make_job(
        run=run, stage=stage, name="deploy", status=Job.Status.MANUAL, when="manual"
    )
    deployment = Deployment.objects.create(
        environment=environment,
        status=Deployment.Status.SUCCESS,
        run=run,
        job=job,
        commit_sha=run.commit_sha,
        namespace="staging",
        manifests="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    )
    return World(
        repository=repository,
        run=run,
        job=job,
        manual_job=manual,
        failed_job=failed,
        artifact=make_artifact(job),
        delivery=make_delivery(repository, outcome=WebhookDelivery.Outcome.REJECTED),
        schedule=make_schedule(repository),
        variable=make_variable(repository, name="PLAIN", value="shown"),
        secret=make_variable(
            repository, name="TOKEN", value="s3cr3t-value", is_secret=True
        ),
        cluster=cluster,
        environment=environment,
        deployment=deployment,
    )
