"""Delivery end to end: a real git repo, real Celery workers, the fake API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clusters.fakekube import FakeKubeServer
from clusters.tests.factories import make_cluster, namespace, node
from pipelines import logs, services
from pipelines import workers as workers_module
from pipelines.engine.executors.docker import DockerExecutor
from pipelines.models import Deployment, Environment, Job, Repository, Run

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PIPELINE = """
stages: [build, deploy]
build:
  stage: build
  script:
    - echo "building $SLIPWAY_COMMIT_SHORT_SHA"
deploy-staging:
  stage: deploy
  script: ["echo deploying"]
  environment: {name: staging, url: "https://staging.shop.example.com"}
  deploy:
    manifests: k8s/
    images: {web: "registry.example.com/shop/web:$SLIPWAY_COMMIT_SHORT_SHA"}
    timeout: 60
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "registry.example.com/shop/web:latest"}]
"""
CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {GREETING: hello}
"""


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer(bookmark_interval=1.0) as server:
        server.store.create(namespace("shop"))
        server.store.create(node("n1"))
        server.simulate_controllers(True, ready_delay=0.05)
        yield server
        server.simulate_controllers(False)


def finished_run(run_id: int, timeout: float = 90) -> Run:
    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=Run.FINISHED).first(),
        timeout=timeout,
        message=f"run {run_id} to finish",
    )


def test_a_pushed_commit_deploys_to_staging_on_real_workers(tmp_path, fake, workers):
    git = GitRepo(tmp_path / "shop")
    sha = git.commit(
        {
            ".slipway.yml": PIPELINE,
            "k8s/deployment.yaml": DEPLOYMENT,
            "k8s/configmap.yml": CONFIGMAP,
        },
        "ship it",
    )
    repository = Repository.objects.create(name="shop", clone_url=str(git.path))
    environment = Environment.objects.create(
        repository=repository,
        name="staging",
        cluster=make_cluster(fake),
        namespace="shop",
    )

    run = finished_run(services.trigger_run(repository, ref="main").pk)
    jobs = {job.name: job for job in run.jobs.all()}
    log = "\n".join(text for _, _, text in logs.read_lines(jobs["deploy-staging"]))
    assert run.status == "success", (run.error, log)

    deployment = Deployment.objects.get(environment=environment)
    assert deployment.status == "success" and deployment.kind == "deploy"
    assert deployment.commit_sha == sha and deployment.job == jobs["deploy-staging"]
    image = f"registry.example.com/shop/web:{sha[:8]}"
    assert deployment.images == [image]
    assert environment.current_deployment() == deployment
    stored = fake.store.get("deployments", "shop", "web")
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert fake.store.get("configmaps", "shop", "web-config")["data"] == {
        "GREETING": "hello"
    }
    # The rollout's progress is in the job's log, after the script's output.
    assert log.index("deploying") < log.index("Deployment/shop/web: ")
    assert "rolled out" in log


# Images a Docker host may hold already; the test never pulls from outside.
LOCAL_IMAGES = ("busybox:latest", "busybox:musl", "alpine:3.20", "alpine:latest")
# A registry on a closed loopback port: a pull fails at once, on any host.
UNPULLABLE = "127.0.0.1:9/slipway/absent:never"


def local_image() -> str | None:
    """Return an image from LOCAL_IMAGES the daemon already has, if any."""
    import docker

    client = docker.from_env(timeout=10)
    try:
        for name in LOCAL_IMAGES:
            try:
                client.images.get(name)
            except docker.errors.ImageNotFound:
                continue
            return name
    finally:
        client.close()
    return None


def job_log(job: Job) -> str:
    return "\n".join(text for _, _, text in logs.read_lines(job))


def test_a_docker_job_runs_in_its_image_or_waits_with_the_reason(tmp_path, workers):
    # The probe the workers ran when they started (worker_ready).
    why = workers_module.executor_capabilities()["docker"]
    daemon = why == ""
    assert daemon == DockerExecutor().available()[0]
    image = local_image() if daemon else None
    git = GitRepo(tmp_path / "app")
    git.commit(
        {
            ".slipway.yml": (
                "lint:\n  script: [echo lint ok]\n"
                f"container:\n  image: '{image or UNPULLABLE}'\n"
                "  script:\n"
                '    - echo "in a container as $(id -u) in $PWD"\n'
                "    - test -f .slipway.yml\n"
            )
        }
    )
    repository = Repository.objects.create(name="app", clone_url=str(git.path))
    run = services.trigger_run(repository, ref="main")
    wait_for(
        lambda: Job.objects.filter(run=run, name="lint", status="success").exists(),
        timeout=60,
        message="the shell job to succeed",
    )
    container = Job.objects.get(run=run, name="container")
    assert container.executor == "docker" and container.queue == "default:docker"
    if daemon:
        # A daemon answers: the job runs through it, in the local image if there is
        # one, else it fails with the daemon's pull error in its log.
        container = wait_for(
            lambda: Job.objects.filter(
                pk=container.pk, status__in=["success", "failed"]
            ).first(),
            timeout=120,
            message="the docker job to finish",
        )
        log = job_log(container)
        if image:
            assert container.status == "success", log
            assert "in a container as" in log and "in /workspace" in log
        else:
            assert container.status == "failed", log
            assert container.failure_reason == "system_failure"
            assert f"Pulling image {UNPULLABLE}" in log
            assert f"could not pull image '{UNPULLABLE}': " in log
        finished_run(run.pk)
        return
    # No daemon (this machine and CI): the reason the worker gave is shown.
    assert "Docker" in why
    assert container.status == Job.Status.PENDING
    assert container.reason.startswith("waiting for a worker that can run docker jobs")
    assert "no Docker daemon reachable" in container.reason
    assert container.started_at is None and not container.worker
    run.refresh_from_db()
    assert run.status == "running"
    services.cancel_run(run)
