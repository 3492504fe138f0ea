"""Every list and detail page issues a bounded number of SQL queries.

Each page is rendered with 3 and with 30 rows of what it lists; both must stay under
the same bound, and the counts must be equal: no query per row. The workers page
lists heartbeats kept in Redis (one JSON record per worker), the clusters page reads
each cluster's health from Redis too; their SQL must not grow with either.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

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

pytestmark = pytest.mark.django_db

FAKE_WORKER = "queries-test-worker-"


@pytest.fixture(autouse=True)
def _forget_fake_workers():
    """Remove the heartbeats this module publishes (Redis is not rolled back)."""
    yield
    from pipelines import logs, workers

    client = logs.redis_client()
    try:
        for name in client.hkeys(workers.REGISTRY_KEY):
            if name.decode().startswith(FAKE_WORKER):
                client.hdel(workers.REGISTRY_KEY, name)
    finally:
        client.close()


def fill_more(kind: str, n: int, repo) -> str | None:
    """Create N rows for the pages added after the first set; None if not one."""
    from django.contrib.auth.models import User

    from clusters.models import Cluster
    from core import audit, tokens
    from pipelines import workers
    from pipelines.models import Deployment, Environment

    if kind == "workers":
        for i in range(n):
            workers.publish(f"{FAKE_WORKER}{i}", ["default"], {"shell": ""}, 2, 1)
            make_job(status="running", worker=f"{FAKE_WORKER}{i}")
        return "/workers/"
    if kind == "cluster-list":
        for i in range(n):
            Cluster.objects.create(name=f"cluster-{i}", api_server=f"https://k{i}")
        return "/clusters/"
    if kind in ("environment-list", "repository-environments", "environment-detail"):
        cluster = Cluster.objects.create(name="prod", api_server="https://k")
        for i in range(n):
            env = Environment.objects.create(
                repository=repo if i % 2 else make_repository(),
                name=f"env-{i}",
                cluster=cluster,
                namespace=f"ns-{i}",
            )
            Deployment.objects.create(environment=env, status="success")
        env = Environment.objects.create(
            repository=repo, name="staging", cluster=cluster, namespace="shop"
        )
        run = make_run(repository=repo)
        for i in range(n):
            Deployment.objects.create(
                environment=env,
                status="success" if i % 3 else "failed",
                run=run,
                user=User.objects.get(username="alice"),
                commit_sha=f"{i:040x}",
                images=[f"shop:{i}"],
            )
        return {
            "environment-list": "/environments/",
            "repository-environments": "/environments/web/",
            "environment-detail": "/environments/web/staging/",
        }[kind]
    if kind in ("settings", "trigger"):
        for i in range(n):
            make_run(repository=repo, branch=f"branch-{i}")
            make_variable(repo)
        return f"/repos/web/{'settings' if kind == 'settings' else 'run'}/"
    alice = User.objects.get(username="alice")
    if kind == "tokens":
        for i in range(n):
            tokens.create_token(alice, name=f"token-{i}")
        return "/settings/tokens/"
    if kind == "audit":
        for i in range(n):
            audit.record(
                f"repository.update-{i % 4}",
                actor=alice if i % 2 else None,
                target=repo,
                source="api" if i % 3 else "ui",
                details={"i": i},
            )
        return "/audit/"
    return None


def fill(kind: str, n: int) -> str:
    """Create N rows for the page KIND; return its URL."""
    repo = make_repository(name="web")
    more = fill_more(kind, n, repo)
    if more is not None:
        return more
    if kind == "overview":
        for i in range(n):
            make_run(
                repository=repo,
                status="running" if i % 2 else "success",
                branch=f"b{i}",
            )
            make_repository()
        return "/"
    if kind == "repository-list":
        for _ in range(n):
            other = make_repository()
            make_run(repository=other, branch="main")
            make_run(repository=other, branch="dev")
        return "/repos/"
    if kind in ("repository-detail", "run-list", "run-list-filtered"):
        for i in range(n):
            make_run(repository=repo, branch=f"b{i % 5}", triggered_by=None)
        return {
            "repository-detail": "/repos/web/?branch=b1",
            "run-list": "/runs/",
            "run-list-filtered": "/runs/?repository=web&status=success&trigger=push",
        }[kind]
    if kind == "branches":
        for i in range(n):
            make_run(repository=repo, branch=f"branch-{i}")
        return "/repos/web/branches/"
    if kind == "webhooks":
        for _ in range(n):
            make_delivery(repo)
        return "/repos/web/webhooks/"
    if kind == "deliveries":
        run = make_run(repository=repo)
        for i in range(n):
            make_delivery(repo, run=run if i % 2 else None)
        return "/repos/web/deliveries/"
    if kind == "schedules":
        run = make_run(repository=repo)
        for i in range(n):
            make_schedule(repo, last_run=run if i % 2 else None)
        return "/repos/web/schedules/"
    if kind == "variables":
        for i in range(n):
            make_variable(repo, is_secret=bool(i % 2))
            make_variable(None)
        return "/repos/web/variables/"
    run = make_run(repository=repo, status="running")
    stages = [make_stage(run, f"s{i}", i) for i in range(3)]
    jobs = [
        make_job(
            run=run,
            stage=stages[i % 3],
            name=f"job-{i}",
            needs=[f"job-{i - 1}"] if i else None,
        )
        for i in range(n)
    ]
    for job in jobs[: n // 3]:
        make_artifact(job)
    if kind == "run-detail":
        return run.get_absolute_url()
    if kind == "run-jobs-partial":
        return run.get_absolute_url() + "?partial=jobs"
    if kind == "run-graph-json":
        return run.get_absolute_url() + "?format=json"
    for _job in jobs[1:]:
        make_job(run=run, stage=jobs[0].stage, name=jobs[0].name, attempt=2)
    add_log(jobs[0])
    return jobs[0].get_absolute_url()  # job-detail


# Session, user, then the page's own queries; the bounds leave one spare.
PAGES = {
    "overview": 8,
    "repository-list": 6,
    "repository-detail": 6,
    "run-list": 5,
    "run-list-filtered": 5,
    "branches": 7,
    "webhooks": 6,
    "deliveries": 6,
    "schedules": 6,
    "variables": 7,
    "run-detail": 7,
    "run-jobs-partial": 6,
    "run-graph-json": 6,
    "job-detail": 7,
    "workers": 4,
    "cluster-list": 4,
    "environment-list": 5,
    "repository-environments": 8,
    "environment-detail": 7,
    "settings": 5,
    "trigger": 5,
    "tokens": 4,
    "audit": 6,
}


# What the newest row shows on the page, for the pages whose rows the test checks.
SHOWN = {
    "workers": FAKE_WORKER + "{last}",
    "cluster-list": "cluster-{last}",
    "environment-list": "env-{last}",
    "repository-environments": "env-{odd}",
    "environment-detail": "shop:{last}",
    "settings": "web",
    "trigger": "web",
    "tokens": "token-{last}",
    "audit": "repository.update-",
}


def count_queries(client, url: str) -> int:
    client.get(url)  # Warm caches (trends, worker list) like a second visit.
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


@pytest.mark.parametrize("kind", PAGES)
@pytest.mark.parametrize("rows", [3, 30])
def test_page_queries_are_bounded(
    client, alice, django_assert_max_num_queries, kind, rows
):
    # The cache may live in the Redis database that holds the workers' heartbeats:
    # clear it before filling, not after.
    cache.clear()
    url = fill(kind, rows)
    client.force_login(alice)
    with django_assert_max_num_queries(PAGES[kind]):
        response = client.get(url)
    assert response.status_code == 200
    if kind in SHOWN:
        last = rows - 1
        shown = SHOWN[kind].format(last=last, odd=last if last % 2 else last - 1)
        assert shown in response.content.decode(), f"{kind}: {shown} not shown"


@pytest.mark.parametrize("kind", PAGES)
def test_page_queries_do_not_grow_with_rows(client, alice, kind):
    client.force_login(alice)
    counts = []
    for rows in (3, 30):
        with transaction.atomic():
            cache.clear()
            counts.append(count_queries(client, fill(kind, rows)))
            transaction.set_rollback(True)
    assert counts[0] == counts[1], (
        f"{kind}: {counts[0]} queries with 3 rows, {counts[1]} with 30"
    )
