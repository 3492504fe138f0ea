"""/metrics: Prometheus text that parses, moves with the database, and needs a token."""

from __future__ import annotations

import builtins
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from core import metrics
from pipelines.models import Job, Repository, Run, Stage, WebhookDelivery

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
        "slipway_jobs_active": "gauge",
        "slipway_queue_depth": "gauge",
        "slipway_redis_up": "gauge",
        "slipway_webhook_deliveries": "counter",
        "slipway_log_lines_ingested": "counter",
        "slipway_cluster_watch_up": "gauge",
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


def test_counters_move_when_a_run_happens(
    client: Client, token: str, repository: Repository
) -> None:
    before = scrape(client)

    run = make_run(repository, 1)
    stage = Stage.objects.create(run=run, name="test", index=0)
    job = Job.objects.create(run=run, stage=stage, name="unit", status="pending")
    WebhookDelivery.objects.create(forge="github", outcome="created", run=run)
    WebhookDelivery.objects.create(forge="github", outcome="rejected")

    during = scrape(client)
    assert value(during, "slipway_runs_created_total") == (
        value(before, "slipway_runs_created_total") + 1
    )
    assert value(during, "slipway_runs", status="created") == (
        value(before, "slipway_runs", status="created") + 1
    )
    assert value(during, "slipway_jobs", status="pending") == 1
    assert value(during, "slipway_jobs_active", queue="default", status="pending") == 1
    assert value(during, "slipway_webhook_deliveries_total", outcome="created") == 1
    assert value(during, "slipway_webhook_deliveries_total", outcome="rejected") == 1
    assert value(during, "slipway_webhook_deliveries_total", outcome="ignored") == 0

    # The job runs and logs; the run finishes after 90 seconds.
    started = timezone.now() - timedelta(seconds=90)
    Job.objects.filter(pk=job.pk).update(status="success", log_lines=1234)
    Run.objects.filter(pk=run.pk).update(
        status="success",
        started_at=started,
        finished_at=started + timedelta(seconds=90),
    )

    after = scrape(client)
    assert value(after, "slipway_runs", status="created") == value(
        before, "slipway_runs", status="created"
    )
    assert value(after, "slipway_runs", status="success") == 1
    assert value(after, "slipway_jobs", status="pending") == 0
    assert value(after, "slipway_jobs", status="success") == 1
    assert value(after, "slipway_log_lines_ingested_total") == 1234
    count = value(after, "slipway_run_duration_seconds_count", status="success")
    assert count == 1
    total = value(after, "slipway_run_duration_seconds_sum", status="success")
    assert total == pytest.approx(90, abs=0.01)
    bucket = "slipway_run_duration_seconds_bucket"
    assert value(after, bucket, status="success", le="60.0") == 0
    assert value(after, bucket, status="success", le="120.0") == 1
    assert value(after, bucket, status="success", le="+Inf") == 1

    # A second, failed run of 5 s lands in its own series; the first is unchanged.
    failed = make_run(repository, 2)
    now = timezone.now()
    Run.objects.filter(pk=failed.pk).update(
        status="failed", started_at=now - timedelta(seconds=5), finished_at=now
    )
    last = scrape(client)
    assert value(last, "slipway_runs_created_total") == (
        value(before, "slipway_runs_created_total") + 2
    )
    assert value(last, bucket, status="failed", le="10.0") == 1
    assert value(last, bucket, status="success", le="+Inf") == 1


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


def test_cluster_watch_up_per_cluster(client: Client, token: str) -> None:
    from clusters.models import Cluster

    up = Cluster(name="prod-eu")
    up.reachable = True
    down = Cluster(name="staging")
    down.reachable = False
    Cluster.objects.bulk_create([up, down])
    samples = scrape(client)
    assert value(samples, "slipway_cluster_watch_up", cluster="prod-eu") == 1
    assert value(samples, "slipway_cluster_watch_up", cluster="staging") == 0
    assert ("slipway_cluster_watch_up", (("cluster", "staging"),)) in samples


def test_registering_does_not_touch_the_database(django_assert_num_queries) -> None:
    from prometheus_client import CollectorRegistry

    with django_assert_num_queries(0):
        registry = CollectorRegistry(auto_describe=True)
        registry.register(metrics.SlipwayCollector())
