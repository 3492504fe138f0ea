"""/metrics: Prometheus text that parses, moves with real runs, and needs a token."""

from __future__ import annotations

import builtins
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from core import metrics
from core.testing.processes import BASE_DIR, subprocess_env
from pipelines.models import Job, Repository, Run, Stage
from pipelines.tests.test_webhook_endpoint import SECRET, Origin
from pipelines.webhooks.testing import signed_request

pytestmark = [pytest.mark.urls("core.tests.metrics_urls"), pytest.mark.django_db]

TOKEN = "scrape-token-" + "t" * 20


@pytest.fixture
def token(settings) -> str:
    settings.SLIPWAY = {**settings.SLIPWAY, "METRICS_TOKEN": TOKEN}
    return TOKEN


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return {(sample name, sorted labels): value} from one authorised scrape."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(
    client: Client, check: Callable[[dict], Any], timeout: float, what: str
) -> dict:
    """Scrape until CHECK(samples) holds; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


def make_run(repository: Repository, number: int, **fields) -> Run:
    return Run.objects.create(
        repository=repository, number=number, trigger=Run.Trigger.PUSH, **fields
    )


@pytest.fixture
def repository() -> Repository:
    return Repository.objects.create(name="metrics-repo", clone_url="/tmp/none.git")


def test_disabled_without_token(client: Client, settings) -> None:
    settings.SLIPWAY = {**settings.SLIPWAY, "METRICS_TOKEN": ""}
    assert client.get("/metrics").status_code == 404
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404
    )


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", TOKEN]
)
def test_token_enforced(client: Client, token: str, header: str | None) -> None:
    kwargs = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"slipway_" not in response.content


def test_no_login_needed_and_only_reads(client: Client, token: str) -> None:
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    assert "no-cache" in ok["Cache-Control"] or "max-age=0" in ok["Cache-Control"]
    post = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert post.status_code == 405


def test_parses_and_has_every_family(client: Client, token: str) -> None:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(response.content.decode())
    }
    assert families == {
        "slipway_runs": "gauge",
        "slipway_runs_created": "counter",
        "slipway_run_duration_seconds": "histogram",
        "slipway_jobs": "gauge",
        "slipway_job_duration_seconds": "histogram",
        "slipway_jobs_active": "gauge",
        "slipway_queue_depth": "gauge",
        "slipway_redis_up": "gauge",
        "slipway_webhook_deliveries": "counter",
        "slipway_log_lines_ingested": "counter",
        "slipway_monitor_up": "gauge",
        "slipway_monitor_last_write_age_seconds": "gauge",
        "slipway_cluster_watch_up": "gauge",
        "slipway_cluster_watch_unsynced_kinds": "gauge",
    }


def test_openmetrics_when_asked(client: Client, token: str) -> None:
    response = client.get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


PIPELINE = """
stages: [build, test]
build:
  stage: build
  script:
    - 'for i in $(seq 1 40); do echo "compiling unit $i"; done'
    - sleep 1
check:
  stage: test
  script:
    - echo checking
    - exit 3
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_counters_move_when_a_run_happens(
    client: Client, token: str, workers, tmp_path, settings
) -> None:
    """A signed push reaches real workers; every family moves as the run goes."""
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "0"}
    origin = Origin(tmp_path)
    origin.commit({".slipway.yml": PIPELINE}, "first")
    origin.push("main")
    repository = Repository.objects.create(
        name="metrics-app",
        clone_url=str(origin.bare),
        forge="github",
        webhook_secret=SECRET,
    )
    before = scrape(client)
    assert value(before, "slipway_runs_created_total") == 0
    lines_before = value(before, "slipway_log_lines_ingested_total")

    after_sha = origin.commit({"app.py": "print(1)"}, "change")
    origin.push("main")
    headers, body = signed_request(
        "github",
        SECRET,
        before=origin.sha("main~1"),
        after=after_sha,
        repo_url=repository.clone_url,
        commits=[after_sha],
    )
    url = f"/hooks/github/{repository.name}/"
    extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    accepted = client.post(
        url, data=body, content_type="application/json", headers=extra
    )
    assert accepted.status_code == 201, accepted.content
    forged = {**extra, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    rejected = client.post(
        url, data=body, content_type="application/json", headers=forged
    )
    assert rejected.status_code in (401, 403), rejected.content

    deliveries = scrape(client)
    assert value(deliveries, "slipway_webhook_deliveries_total", outcome="created") == 1
    assert (
        value(deliveries, "slipway_webhook_deliveries_total", outcome="rejected") == 1
    )
    assert value(deliveries, "slipway_webhook_deliveries_total", outcome="ignored") == 0

    # While the run goes: the build job is pending or running on a worker.
    during = scrape_until(
        client,
        lambda s: value(s, "slipway_jobs", status="running") >= 1,
        timeout=120,
        what="a running job",
    )
    assert value(during, "slipway_runs_created_total") == 1
    assert value(during, "slipway_runs", status="running") == 1
    assert value(during, "slipway_jobs_active", queue="default", status="running") == 1

    after = scrape_until(
        client,
        lambda s: value(s, "slipway_runs", status="failed") == 1,
        timeout=180,
        what="the run to fail on its check job",
    )
    run = Run.objects.get()
    assert run.status == "failed" and run.commit_sha == after_sha
    assert value(after, "slipway_runs_created_total") == 1
    assert value(after, "slipway_runs", status="running") == 0
    assert value(after, "slipway_jobs", status="success") == 1
    assert value(after, "slipway_jobs", status="failed") == 1
    assert value(after, "slipway_jobs", status="running") == 0
    assert not [k for k in after if k[0] == "slipway_jobs_active"]
    stored = sum(Job.objects.values_list("log_lines", flat=True))
    assert stored >= 41
    assert value(after, "slipway_log_lines_ingested_total") == lines_before + stored

    # Durations: the run's and each job's, in their final status's series.
    elapsed = (run.finished_at - run.started_at).total_seconds()
    assert value(after, "slipway_run_duration_seconds_count", status="failed") == 1
    assert value(
        after, "slipway_run_duration_seconds_sum", status="failed"
    ) == pytest.approx(elapsed, abs=0.01)
    assert value(after, "slipway_run_duration_seconds_count", status="success") == 0
    build = Job.objects.get(name="build")
    build_seconds = (build.finished_at - build.started_at).total_seconds()
    assert build_seconds >= 1  # it sleeps one second
    job_sum = "slipway_job_duration_seconds_sum"
    assert value(after, job_sum, status="success") == pytest.approx(
        build_seconds, abs=0.01
    )
    bucket = "slipway_job_duration_seconds_bucket"
    assert value(after, bucket, status="success", le="1.0") == 0
    assert value(after, bucket, status="success", le="+Inf") == 1
    assert value(after, bucket, status="failed", le="+Inf") == 1
    assert value(after, "slipway_job_duration_seconds_count", status="failed") == 1


def test_queue_depth_reads_redis(client: Client, token: str, repository) -> None:
    run = make_run(repository, 1)
    stage = Stage.objects.create(run=run, name="build", index=0)
    Job.objects.create(
        run=run, stage=stage, name="gpu", status="pending", queue="metrics-gpu"
    )
    redis = Redis.from_url(django_settings.REDIS_URL)
    try:
        redis.rpush("metrics-gpu", "a", "b", "c")
        redis.rpush("metrics-gpu\x06\x169", "d")
        samples = scrape(client)
    finally:
        redis.delete("metrics-gpu", "metrics-gpu\x06\x169")
        redis.close()
    assert value(samples, "slipway_redis_up") == 1
    assert value(samples, "slipway_queue_depth", queue="metrics-gpu") == 4
    assert ("slipway_queue_depth", (("queue", "default"),)) in samples


def test_unreachable_redis_still_answers(client: Client, token: str, settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    samples = scrape(client)
    assert value(samples, "slipway_redis_up") == 0
    assert value(samples, "slipway_runs_created_total") == 0
    assert not [key for key in samples if key[0] == "slipway_queue_depth"]


def test_cluster_watch_tolerates_missing_model(
    client: Client, token: str, monkeypatch
) -> None:
    real_import = builtins.__import__

    def no_clusters_model(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "clusters.models" and fromlist and "Cluster" in fromlist:
            raise ImportError("cannot import name 'Cluster'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_clusters_model)
    samples = scrape(client)
    assert not [key for key in samples if key[0] == "slipway_cluster_watch_up"]


@pytest.fixture
def clean_monitor_keys() -> Any:
    """No monitor lock or cluster snapshot from another test, before or after."""
    redis = Redis.from_url(django_settings.REDIS_URL)

    def clean() -> None:
        redis.delete(metrics.MONITOR_LOCK)
        for key in redis.scan_iter(match="slipway:cluster:*", count=1000):
            redis.delete(key)

    clean()
    yield redis
    clean()
    redis.close()


def test_monitor_lock_matches_the_monitor() -> None:
    from clusters.monitor import LOCK_NAME, Settings

    assert metrics.MONITOR_LOCK == LOCK_NAME
    assert metrics.MONITOR_LOCK_TTL == Settings().lock_ttl


def test_watch_health_comes_from_the_monitor_state_in_redis(
    client: Client, token: str, clean_monitor_keys: Redis
) -> None:
    from clusters import snapshot
    from clusters.models import Cluster

    redis = clean_monitor_keys
    live, down, listing, missing = (
        Cluster.objects.create(name=name)
        for name in ("prod-eu", "staging", "fresh", "never")
    )
    Cluster.objects.create(name="ignored", monitored=False)
    # The database says reachable for all: the metric must not believe it.
    Cluster.objects.update(reachable=True)
    states = {
        live: {"reachable": "1", "stale": "0", "synced:pods": "1"},
        down: {"reachable": "0", "stale": "1", "synced:pods": "1"},
        listing: {
            "reachable": "1",
            "stale": "1",
            "synced:pods": "0",
            "synced:nodes": "0",
            "synced:secrets": "0",
            "forbidden:secrets": "*",
        },
    }
    for cluster, state in states.items():
        redis.hset(snapshot.state_key(cluster.pk), mapping=state)

    # No monitor holds the lock: nothing is watched, whatever the state says.
    idle = scrape(client)
    assert value(idle, "slipway_monitor_up") == 0
    assert not [k for k in idle if k[0] == "slipway_monitor_last_write_age_seconds"]
    assert value(idle, "slipway_cluster_watch_up", cluster="prod-eu") == 0
    assert ("slipway_cluster_watch_up", (("cluster", "prod-eu"),)) in idle

    # An active monitor renewed its lock 4 s ago.
    redis.set(
        metrics.MONITOR_LOCK, "token", px=int((metrics.MONITOR_LOCK_TTL - 4) * 1000)
    )
    samples = scrape(client)
    assert value(samples, "slipway_monitor_up") == 1
    age = value(samples, "slipway_monitor_last_write_age_seconds")
    assert 4 <= age < 6, age
    assert value(samples, "slipway_cluster_watch_up", cluster="prod-eu") == 1
    assert value(samples, "slipway_cluster_watch_up", cluster="staging") == 0
    assert value(samples, "slipway_cluster_watch_up", cluster="fresh") == 0
    assert value(samples, "slipway_cluster_watch_up", cluster="never") == 0
    assert ("slipway_cluster_watch_up", (("cluster", "ignored"),)) not in samples
    unsynced = "slipway_cluster_watch_unsynced_kinds"
    assert value(samples, unsynced, cluster="prod-eu") == 0
    assert value(samples, unsynced, cluster="fresh") == 2  # secrets are refused
    assert (unsynced, (("cluster", "never"),)) not in samples


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_watch_health_follows_a_real_monitor_and_its_death(
    client: Client, token: str, clean_monitor_keys: Redis, tmp_path
) -> None:
    """manage.py monitor_clusters on a fake API server, then SIGKILL: it goes to 0."""
    from clusters import snapshot
    from clusters.fakekube import FakeKubeServer
    from clusters.tests.factories import make_cluster, namespace, node

    with FakeKubeServer(bookmark_interval=1.0) as fake:
        fake.store.create(namespace("demo"))
        fake.store.create(node("n1"))
        cluster = make_cluster(fake, name="fake-prod")
        log = (tmp_path / "monitor.log").open("wb")
        monitor = subprocess.Popen(
            [sys.executable, "manage.py", "monitor_clusters", "--refresh", "1"],
            cwd=BASE_DIR,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            live = scrape_until(
                client,
                lambda s: (
                    value(s, "slipway_cluster_watch_up", cluster="fake-prod") == 1
                ),
                timeout=90,
                what="the monitor to watch the cluster",
            )
            assert value(live, "slipway_monitor_up") == 1
            age = value(live, "slipway_monitor_last_write_age_seconds")
            assert 0 <= age <= metrics.MONITOR_LOCK_TTL
            assert (
                value(live, "slipway_cluster_watch_unsynced_kinds", cluster="fake-prod")
                == 0
            )

            # Killed: no clean-up runs, the state in Redis still says "live"; only
            # the lapsing lock tells. Bounded by the lock's TTL plus a margin.
            monitor.kill()
            monitor.wait(timeout=30)
            dead = scrape_until(
                client,
                lambda s: value(s, "slipway_monitor_up") == 0,
                timeout=metrics.MONITOR_LOCK_TTL + 20,
                what="the dead monitor's lock to lapse",
            )
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.wait(timeout=30)
            log.close()
    assert value(dead, "slipway_cluster_watch_up", cluster="fake-prod") == 0
    assert not [k for k in dead if k[0] == "slipway_monitor_last_write_age_seconds"]
    # What the old metric read still says "up": the database row and the last state
    # the monitor wrote before it died.
    cluster.refresh_from_db()
    assert cluster.reachable is True
    state = clean_monitor_keys.hgetall(snapshot.state_key(cluster.pk))
    assert (state[b"reachable"], state[b"stale"]) == (b"1", b"0")


def test_registering_does_not_touch_the_database(django_assert_num_queries) -> None:
    from prometheus_client import CollectorRegistry

    with django_assert_num_queries(0):
        registry = CollectorRegistry(auto_describe=True)
        registry.register(metrics.SlipwayCollector())
