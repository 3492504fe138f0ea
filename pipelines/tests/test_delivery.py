"""Deploy jobs, rollback, promotion and approvals against the fake API server.

The requests Slipway sends are checked against the recorded kube-apiserver exchanges
in /work/shared/fixtures/kubernetes (17-19: server-side apply create, conflict and
force; 49: a Deployment rollout followed through a watch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.urls import reverse

from clusters.fakekube import FakeKubeServer
from clusters.tests.factories import make_cluster, namespace, node
from core.models import AuditEvent
from pipelines import delivery, services
from pipelines.engine import spec as engine_spec
from pipelines.models import Deployment, Environment, Job, Run
from pipelines.tests.factories import make_job, make_repository, make_run

pytestmark = pytest.mark.django_db

FIXTURES = Path("/work/shared/fixtures/kubernetes")
APPLY = "application/apply-patch+yaml"
OLD = "registry.example.com/shop/web:old"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def deployment_yaml(image: str = OLD, replicas: int = 2, deadline: int = 600) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": deadline,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        }
    )


SERVICE_YAML = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer(bookmark_interval=1.0) as server:
        for name in ("shop", "shop-prod"):
            server.store.create(namespace(name))
        server.store.create(node("n1"))
        yield server


@pytest.fixture
def controllers(fake):
    """Simulated deployment/replicaset controllers, scheduler and kubelet."""
    yield fake.simulate_controllers(True, ready_delay=0.05, bad_image_marker="bad")
    fake.simulate_controllers(False)


@pytest.fixture
def cluster(fake):
    return make_cluster(fake)


@pytest.fixture
def repo():
    return make_repository(name="shop")


@pytest.fixture
def staging(repo, cluster):
    return Environment.objects.create(
        repository=repo, name="staging", cluster=cluster, namespace="shop"
    )


@pytest.fixture
def production(repo, cluster):
    return Environment.objects.create(
        repository=repo,
        name="production",
        cluster=cluster,
        namespace="shop-prod",
        protected=True,
    )


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "deployment.yaml").write_text(deployment_yaml())
    (tmp_path / "k8s" / "service.yaml").write_text(SERVICE_YAML)
    return tmp_path


def deploy_spec(environment: str = "staging", **deploy) -> dict:
    fields = {"manifests": "k8s/", "images": {}, "timeout": 30, "namespace": None}
    fields.update(deploy)
    return {
        "name": f"deploy-{environment}",
        "script": ["true"],
        "environment": {"name": environment, "url": None, "action": "start"},
        "deploy": fields,
    }


def make_deploy_job(repo, environment="staging", *, status="running", **deploy) -> Job:
    run = make_run(repository=repo, status=Run.Status.RUNNING)
    return make_job(
        run=run,
        name=f"deploy-{environment}",
        status=status,
        spec=deploy_spec(environment, **deploy),
    )


def run_deploy(job: Job, workspace: Path) -> tuple[bool, str, list[str]]:
    lines: list[str] = []
    ok, message = delivery.deploy_job(job, workspace, lines.append)
    return ok, message, lines


def applies(fake, resource: str = "deployments") -> list:
    return [
        r for r in fake.requests if r.method == "PATCH" and f"/{resource}/" in r.path
    ]


# ------------------------------------------------------------ server-side apply


def test_a_deploy_job_server_side_applies_like_the_recorded_create(
    fake, controllers, staging, workspace, repo
):
    job = make_deploy_job(
        repo, images={"web": "registry.example.com/shop/web:$SLIPWAY_COMMIT_SHORT_SHA"}
    )
    ok, message, lines = run_deploy(job, workspace)
    assert ok, (message, lines)

    recorded = fixture("17-ssa-apply-create")
    (sent,) = applies(fake)
    assert sent.method == recorded["request"]["method"] == "PATCH"
    assert sent.path == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert (
        sent.headers["content-type"] == recorded["request"]["headers"]["content-type"]
    )
    assert sent.query["fieldManager"] == recorded["request"]["query"]["fieldManager"]
    # Not forced: a conflict must be seen (and logged) before it is overridden.
    assert sent.query.get("force", "false") == "false"
    assert sent.status == recorded["response"]["status"] == 201
    body = yaml.safe_load(sent.text)
    image = f"registry.example.com/shop/web:{job.run.commit_sha[:8]}"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert body["metadata"]["namespace"] == "shop"
    stored = fake.store.get("deployments", "shop", "web")
    assert [m["manager"] for m in stored["metadata"]["managedFields"]][0] == "slipway"
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert [r.path for r in applies(fake, "services")] == [
        "/api/v1/namespaces/shop/services/web"
    ]

    deployment = Deployment.objects.get()
    assert deployment.status == "success" and deployment.kind == "deploy"
    assert deployment.commit_sha == job.run.commit_sha
    assert deployment.images == [image]
    assert image in deployment.manifests
    assert staging.current_deployment() == deployment
    # Progress followed the controllers through the watch, as in fixture 49.
    assert any(line.startswith("Deployment/shop/web: ") for line in lines)
    assert any("replicas updated, ready and available" in line for line in lines)
    assert lines[-1].startswith("rolled out")
    watches = [r for r in fake.requests if r.query.get("watch") == "true"]
    assert watches and watches[0].query["fieldSelector"] == "metadata.name=web"
    assert AuditEvent.objects.filter(action="environment.deploy").exists()


def test_a_conflict_with_another_manager_is_logged_then_forced(
    fake, controllers, staging, workspace, repo, cluster
):
    from clusters import deploy as cluster_deploy

    other = yaml.safe_load(deployment_yaml(replicas=5))
    cluster_deploy.apply_manifests(cluster, "shop", [other], field_manager="other-tool")
    fake.clear_requests()

    ok, message, lines = run_deploy(make_deploy_job(repo), workspace)
    assert ok, message

    first, second = applies(fake)
    recorded_conflict = fixture("18-ssa-apply-conflict-409")["response"]
    recorded_force = fixture("19-ssa-apply-force")
    assert first.status == recorded_conflict["status"] == 409
    assert "force" not in first.query or first.query["force"] == "false"
    assert second.query["force"] == recorded_force["request"]["query"]["force"]
    assert second.query["fieldManager"] == "slipway"
    assert second.status == recorded_force["response"]["status"] == 200
    warning = next(line for line in lines if line.startswith("WARNING"))
    assert ".spec.replicas" in warning and 'conflict with "other-tool"' in warning
    assert fake.store.get("deployments", "shop", "web")["spec"]["replicas"] == 2


# -------------------------------------------------------- failures, clearly said


def test_a_bad_image_fails_with_progress_deadline_exceeded(
    fake, controllers, staging, tmp_path, repo
):
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "d.yaml").write_text(deployment_yaml(deadline=2))
    job = make_deploy_job(repo, images={"web": "registry.example.com/shop/web:bad-1"})
    ok, message, lines = run_deploy(job, tmp_path)
    assert not ok
    assert "timed out progressing" in message, message
    assert message.startswith("deploy to staging failed: Deployment/shop/web")
    deployment = Deployment.objects.get()
    assert deployment.status == "failed" and deployment.message
    assert staging.current_deployment() is None


def test_a_rollout_that_does_not_finish_in_time_fails_with_a_timeout(
    fake, staging, workspace, repo
):
    # No controllers: the Deployment never progresses.
    ok, message, _ = run_deploy(make_deploy_job(repo, timeout=2), workspace)
    assert not ok and "timed out" in message
    assert Deployment.objects.get().status == "failed"


def test_a_missing_environment_or_cluster_fails_the_job_clearly(
    fake, repo, workspace, staging
):
    ok, message, _ = run_deploy(make_deploy_job(repo, "qa"), workspace)
    assert not ok and "environment 'qa' does not exist" in message
    Environment.objects.filter(pk=staging.pk).update(cluster=None)
    ok, message, _ = run_deploy(make_deploy_job(repo), workspace)
    assert not ok and "has no cluster" in message
    assert not Deployment.objects.exists()


def test_manifests_that_cannot_render_fail_the_deployment(
    fake, staging, tmp_path, repo
):
    ok, message, _ = run_deploy(make_deploy_job(repo, manifests="nope/"), tmp_path)
    assert not ok and "cannot render the manifests" in message
    assert Deployment.objects.get().status == "failed"


# ------------------------------------------------------------ rollback, promote


def deploy_image(repo, workspace, tag: str) -> Deployment:
    job = make_deploy_job(repo, images={"web": f"registry.example.com/shop/web:{tag}"})
    ok, message, _ = run_deploy(job, workspace)
    assert ok, message
    return Deployment.objects.filter(job=job).get()


def test_rollback_reapplies_the_previous_manifests(
    fake, controllers, staging, workspace, repo, olivia
):
    v1 = deploy_image(repo, workspace, "v1")
    v2 = deploy_image(repo, workspace, "v2")
    assert delivery.previous_deployment(staging) == v1
    fake.clear_requests()

    rollback = delivery.rollback(staging, user=olivia)
    assert rollback.kind == "rollback" and rollback.status == "running"
    assert rollback.source == v1 and rollback.commit_sha == v1.commit_sha
    delivery.apply_deployment(rollback.pk)

    rollback.refresh_from_db()
    assert rollback.status == "success", rollback.message
    (sent,) = applies(fake)
    assert sent.query["fieldManager"] == "slipway"
    assert sent.headers["content-type"] == APPLY
    image = yaml.safe_load(sent.text)["spec"]["template"]["spec"]["containers"][0]
    assert image["image"] == "registry.example.com/shop/web:v1"
    assert (
        fake.store.get("deployments", "shop", "web")["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == "registry.example.com/shop/web:v1"
    )
    v2.refresh_from_db()
    assert v2.status == "rolled_back"
    assert staging.current_deployment() == rollback
    event = AuditEvent.objects.get(action="environment.rollback")
    assert event.actor == olivia and event.details["to"] == v1.pk


def test_after_a_failed_rollout_the_page_reapplies_the_last_good_version(
    client, fake, controllers, staging, workspace, tmp_path, repo, olivia
):
    v1 = deploy_image(repo, workspace, "v1")
    v2 = deploy_image(repo, workspace, "v2")
    broken = tmp_path / "broken"
    (broken / "k8s").mkdir(parents=True)
    (broken / "k8s" / "d.yaml").write_text(deployment_yaml(deadline=2))
    job = make_deploy_job(repo, images={"web": "registry.example.com/shop/web:bad-3"})
    ok, message, _ = run_deploy(job, broken)
    assert not ok and "timed out progressing" in message
    v3 = Deployment.objects.get(job=job)
    assert v3.status == "failed"

    def running_image() -> str:
        stored = fake.store.get("deployments", "shop", "web")
        return stored["spec"]["template"]["spec"]["containers"][0]["image"]

    # The failed rollout left the cluster on v3's template; v2 is what should run.
    assert running_image() == "registry.example.com/shop/web:bad-3"
    assert staging.current_deployment() == v2
    assert delivery.recovery_target(staging) == v2
    assert delivery.rollback_target(staging) == v2

    client.force_login(olivia)
    page = client.get(staging.get_absolute_url()).content.decode()
    reapply = reverse("environments:rollback", args=["shop", "staging", v2.pk])
    older = reverse("environments:rollback", args=["shop", "staging", v1.pk])
    assert "Last rollout failed" in page and f"Deployment #{v3.pk}" in page
    assert page.count(f'action="{reapply}"') == 2  # The card's button and v2's row.
    assert f"Re-apply {v2.short_sha}" in page
    assert f'action="{older}"' in page  # An older version stays restorable.
    # The failed deployment itself is never offered.
    assert reverse("environments:rollback", args=["shop", "staging", v3.pk]) not in page

    fake.clear_requests()
    response = client.post(reapply)
    assert response.status_code == 302
    rollback = Deployment.objects.get(kind="rollback")
    assert rollback.source == v2 and rollback.status == "running"
    assert rollback.commit_sha == v2.commit_sha and rollback.user == olivia
    # The page refuses a second action while it runs.
    page = client.get(staging.get_absolute_url()).content.decode()
    assert f'action="{reapply}"' not in page
    delivery.apply_deployment(rollback.pk)  # What the queued task runs.

    rollback.refresh_from_db()
    assert rollback.status == "success", rollback.message
    (sent,) = applies(fake)
    assert sent.query["fieldManager"] == "slipway"
    sent_image = yaml.safe_load(sent.text)["spec"]["template"]["spec"]["containers"]
    assert sent_image[0]["image"] == "registry.example.com/shop/web:v2"
    assert running_image() == "registry.example.com/shop/web:v2"
    v2.refresh_from_db()
    assert v2.status == "success"  # Re-applied, not rolled back.
    assert staging.current_deployment() == rollback
    assert delivery.recovery_target(staging) is None
    assert delivery.previous_deployment(staging) == v1
    page = client.get(staging.get_absolute_url()).content.decode()
    assert "Last rollout failed" not in page
    event = AuditEvent.objects.get(action="environment.rollback")
    assert event.actor == olivia and event.details["to"] == v2.pk


def test_a_viewer_sees_the_failed_rollout_but_no_reapply_button(
    client, staging, victor
):
    good = Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("a:1")
    )
    Deployment.objects.create(
        environment=staging,
        status="failed",
        manifests=deployment_yaml("a:2"),
        message="Deployment/shop/web timed out progressing",
    )
    client.force_login(victor)
    page = client.get(staging.get_absolute_url()).content.decode()
    assert "Last rollout failed" in page and "timed out progressing" in page
    assert "needs the operator role" in page
    reapply = reverse("environments:rollback", args=["shop", "staging", good.pk])
    assert reapply not in page and "Re-apply " not in page


def test_rollback_and_promote_need_the_environments_role(
    fake, staging, production, workspace, repo, bob, victor
):
    Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml()
    )
    Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("x:2")
    )
    for user in (bob, victor, None):
        with pytest.raises(delivery.DeployNotAllowed):
            delivery.rollback(staging, user=user)
        with pytest.raises(delivery.DeployNotAllowed):
            delivery.promote(staging, production, user=user)
    assert Deployment.objects.filter(kind__in=["rollback", "promote"]).count() == 0


def test_promote_applies_stagings_version_in_productions_namespace(
    fake, controllers, staging, production, workspace, repo, olivia
):
    v1 = deploy_image(repo, workspace, "v1")
    fake.clear_requests()
    promotion = delivery.promote(staging, production, user=olivia)
    delivery.apply_deployment(promotion.pk)
    promotion.refresh_from_db()
    assert promotion.status == "success", promotion.message
    assert promotion.kind == "promote" and promotion.commit_sha == v1.commit_sha
    assert promotion.environment == production and promotion.source == v1
    paths = sorted(r.path for r in fake.requests if r.method == "PATCH")
    assert paths == [
        "/api/v1/namespaces/shop-prod/services/web",
        "/apis/apps/v1/namespaces/shop-prod/deployments/web",
    ]
    assert production.current_deployment() == promotion
    assert AuditEvent.objects.get(action="environment.promote").actor == olivia


def test_a_second_rollback_waits_for_the_running_one(fake, staging, olivia):
    first = Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("a:1")
    )
    Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("a:2")
    )
    running = delivery.rollback(staging, to=first, user=olivia)
    with pytest.raises(delivery.DeliveryError, match="is running"):
        delivery.rollback(staging, to=first, user=olivia)
    # One whose worker died long ago no longer blocks: it is marked failed.
    Deployment.objects.filter(pk=running.pk).update(
        created_at=running.created_at - timedelta(hours=2)
    )
    assert delivery.rollback(staging, to=first, user=olivia).status == "running"
    running.refresh_from_db()
    assert running.status == "failed" and "worker stopped" in running.message


# --------------------------------------------------------- protected environments


PIPELINE = """
stages: [build, deploy]
build:
  stage: build
  script: [make]
staging:
  stage: deploy
  script: ["true"]
  environment: staging
  deploy: {manifests: k8s/}
production:
  stage: deploy
  script: ["true"]
  environment: {name: production, url: "https://shop.example.com"}
  deploy: {manifests: k8s/}
"""


def create_jobs(repo) -> dict[str, Job]:
    run = make_run(repository=repo, status=Run.Status.CREATED)
    pipeline = engine_spec.parse(PIPELINE, filename=".slipway.yml")
    context = engine_spec.RuleContext(branch="main", tag=None, event="push")
    services._create_jobs(run, pipeline, context)
    return {job.name: job for job in run.jobs.select_related("run")}


def test_a_deploy_job_to_a_protected_environment_waits_for_a_click(
    staging, production, repo
):
    jobs = create_jobs(repo)
    assert jobs["production"].when == "manual"
    assert jobs["staging"].when == "on_success"
    assert jobs["build"].when == "on_success"
    assert delivery.gated_when(repo, jobs["production"].spec, "on_success") == "manual"


def test_a_developer_cannot_approve_a_protected_deploy_but_an_operator_can(
    production, repo, bob, olivia
):
    job = create_jobs(repo)["production"]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.MANUAL)
    job.refresh_from_db()

    with pytest.raises(delivery.DeployNotAllowed):
        services.play_job(job, user=bob)
    job.refresh_from_db()
    assert job.status == "manual" and job.approved_by is None
    assert not AuditEvent.objects.filter(action="environment.approve").exists()

    services.play_job(job, user=olivia)
    job.refresh_from_db()
    assert job.status == "created" and job.approved_by == olivia
    event = AuditEvent.objects.get(action="environment.approve")
    assert event.actor == olivia and event.details["job"] == job.pk
    assert AuditEvent.objects.filter(action="job.play", actor=olivia).exists()


def test_a_group_narrows_who_may_approve(production, repo, olivia, alice):
    from django.contrib.auth.models import Group

    releasers = Group.objects.create(name="releasers")
    Environment.objects.filter(pk=production.pk).update(deploy_group=releasers)
    production.refresh_from_db()
    assert not delivery.may_deploy(olivia, production)
    olivia.groups.add(releasers)
    assert delivery.may_deploy(olivia, production)
    assert delivery.may_deploy(alice, production)  # Admins always may.


def test_play_through_the_page_is_403_for_a_developer(
    client, production, repo, bob, olivia
):
    job = create_jobs(repo)["production"]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.MANUAL)
    url = reverse("pipelines:job-play", args=[job.pk])
    client.force_login(bob)
    assert client.post(url).status_code == 403
    client.force_login(olivia)
    assert client.post(url).status_code == 302
    assert Job.objects.get(pk=job.pk).approved_by == olivia


def test_a_retried_protected_deploy_needs_a_new_approval(production, repo, olivia):
    job = create_jobs(repo)["production"]
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.FAILED, when="on_success", approved_by=olivia
    )
    job.refresh_from_db()
    clone = services.retry_job(job, user=olivia)
    assert clone.when == "manual" and clone.approved_by is None


def test_an_unapproved_job_never_deploys_to_a_protected_environment(
    fake, production, workspace, repo
):
    ok, message, _ = run_deploy(make_deploy_job(repo, "production"), workspace)
    assert not ok and "protected" in message
    assert not fake.requests or not applies(fake)


# --------------------------------------------------------------------- pages


def test_viewers_see_environments_without_buttons_and_cannot_post(
    client, staging, production, victor
):
    a = Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("a:1")
    )
    Deployment.objects.create(
        environment=staging, status="success", manifests=deployment_yaml("a:2")
    )
    client.force_login(victor)
    for url in (
        reverse("environments:list"),
        reverse("environments:repository", args=["shop"]),
        staging.get_absolute_url(),
        reverse("environments:deployment", args=["shop", "staging", a.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"staging" in response.content
    page = client.get(staging.get_absolute_url()).content.decode()
    assert 'data-action="rollback"' not in page and "Promote to" not in page
    rollback = reverse("environments:rollback", args=["shop", "staging", a.pk])
    promote = reverse("environments:promote", args=["shop", "production"])
    assert client.post(rollback).status_code == 403
    assert client.post(promote, {"source": "staging"}).status_code == 403
    assert (
        client.post(reverse("environments:repository", args=["shop"]), {}).status_code
        == 403
    )
    assert Deployment.objects.count() == 2


def test_an_operator_rolls_back_and_promotes_from_the_page(
    client, staging, production, olivia
):
    a = Deployment.objects.create(
        environment=staging,
        status="success",
        manifests=deployment_yaml("a:1"),
        commit_sha="a" * 40,
    )
    Deployment.objects.create(
        environment=staging,
        status="success",
        manifests=deployment_yaml("a:2"),
        commit_sha="b" * 40,
    )
    client.force_login(olivia)
    page = client.get(staging.get_absolute_url()).content.decode()
    assert page.count('data-action="rollback"') == 1 and ">Roll back</button>" in page
    assert "Promote to staging" in page
    response = client.post(
        reverse("environments:rollback", args=["shop", "staging", a.pk])
    )
    assert response.status_code == 302
    rollback = Deployment.objects.get(kind="rollback")
    assert rollback.source == a and rollback.user == olivia
    response = client.post(
        reverse("environments:promote", args=["shop", "production"]),
        {"source": "staging"},
    )
    assert response.status_code == 302
    # Staging's current version is still the newest success (the rollback runs).
    assert Deployment.objects.get(kind="promote").commit_sha == "b" * 40


def test_an_admin_adds_an_environment(client, repo, cluster, alice):
    client.force_login(alice)
    response = client.post(
        reverse("environments:repository", args=["shop"]),
        {
            "name": "staging",
            "cluster": cluster.pk,
            "namespace": "shop",
            "deploy_role": "operator",
            "protected": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    environment = Environment.objects.get()
    assert environment.protected and environment.cluster == cluster
    assert AuditEvent.objects.filter(action="environment.create").exists()
    edit = reverse("environments:edit", args=["shop", "staging"])
    assert client.get(edit).status_code == 200


def test_the_api_refuses_a_developers_approval_with_403(production, repo, bob, olivia):
    from rest_framework.test import APIClient

    job = create_jobs(repo)["production"]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.MANUAL)
    api = APIClient()
    api.force_authenticate(bob)
    assert api.post(f"/api/v1/jobs/{job.pk}/play/").status_code == 403
    api.force_authenticate(olivia)
    assert api.post(f"/api/v1/jobs/{job.pk}/play/").status_code in (200, 202)
    assert Job.objects.get(pk=job.pk).approved_by == olivia
