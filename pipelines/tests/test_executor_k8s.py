"""The kubernetes executor against the fake API server: create, follow, delete."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from clusters.fakekube import FakeKubeServer
from pipelines.engine.executors import ExecSpec
from pipelines.engine.executors.kubernetes import KubernetesExecutor

NS = "ci"


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as server:
        server.store.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
        )
        yield server


def configuration(
    server: FakeKubeServer, token: str | None = None, url: str = ""
) -> k8s.Configuration:
    kubeconfig = server.kubeconfig(token)
    if url:
        kubeconfig["clusters"][0]["cluster"]["server"] = url
    cfg = k8s.Configuration()
    k8s_config.load_kube_config_from_dict(
        kubeconfig, client_configuration=cfg, persist_config=False
    )
    return cfg


def job_spec(**overrides) -> ExecSpec:
    fields = {
        "job_name": "Unit Tests",
        "script": ("echo hello",),
        "before_script": (),
        "after_script": (),
        "env": {"CI": "true", "API_TOKEN": "s3cr3t", "HOME": "/srv/ws"},
        "workdir": "/nonexistent",
        "timeout": 30,
        "image": "python:3.13",
    }
    fields.update(overrides)
    return ExecSpec(**fields)


def wait_pod(server: FakeKubeServer, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = server.store.list("pods", NS)
        if pods:
            return pods[0]
        time.sleep(0.02)
    raise AssertionError("no pod was created")


def kubelet(server: FakeKubeServer, *, exit_code: int = 0, lines=("line 1",)) -> dict:
    """Play the kubelet: run the pod, write its log, end it with EXIT_CODE."""
    pod = wait_pod(server)
    name = pod["metadata"]["name"]
    server.set_pod_log(NS, name, "")
    server.store.patch_status(
        "pods",
        NS,
        name,
        {
            "phase": "Running",
            "containerStatuses": [
                {"name": "job", "ready": True, "state": {"running": {}}}
            ],
        },
    )
    for line in lines:
        time.sleep(0.1)
        server.append_pod_log(NS, name, line)
    time.sleep(0.2)
    server.store.patch_status(
        "pods",
        NS,
        name,
        {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "job",
                    "ready": False,
                    "state": {"terminated": {"exitCode": exit_code}},
                }
            ],
        },
    )
    return pod


def start(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        box["value"] = target(*args, **kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_a_job_runs_as_a_pod_whose_log_is_streamed_and_which_is_deleted(fake):
    executor = KubernetesExecutor(configuration(fake), NS, poll_interval=0.1)
    assert executor.available() == (True, "")
    chunks: list[bytes] = []
    thread, box = start(kubelet, fake, lines=("hello", "world"))
    result = executor.run(job_spec(), chunks.append, threading.Event())
    thread.join(5)
    pod = box["value"]
    assert result.status == "success" and result.exit_code == 0, result
    text = b"".join(chunks).decode()
    assert "Running in pod slipway-unit-tests-" in text
    assert text.index("hello") < text.index("world")
    # The pod ran the job's image with the script under sh -c, and no secrets in it.
    container = pod["spec"]["containers"][0]
    assert container["image"] == "python:3.13"
    assert container["command"][:2] == ["sh", "-c"]
    assert "echo hello" in container["command"][4]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "s3cr3t" not in str(pod["spec"])
    assert container["envFrom"] == [
        {"secretRef": {"name": pod["metadata"]["name"] + "-env"}}
    ]
    # The env travelled in a Secret owned by the pod, without the worker's HOME.
    secret_posts = [
        r for r in fake.requests if r.method == "POST" and r.path.endswith("/secrets")
    ]
    body = secret_posts[0].json()
    assert body["stringData"]["API_TOKEN"] == "s3cr3t"
    assert "HOME" not in body["stringData"]
    assert body["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    # Followed through the log endpoint, then both deleted.
    logs = [r for r in fake.requests if r.path.endswith("/log")]
    assert logs and logs[0].query.get("follow") == "true"
    assert fake.store.list("pods", NS) == []
    assert fake.store.list("secrets", NS) == []


def test_a_failing_script_reports_the_container_exit_code(fake):
    executor = KubernetesExecutor(configuration(fake), NS, poll_interval=0.1)
    chunks: list[bytes] = []
    thread, _ = start(kubelet, fake, exit_code=3, lines=("boom",))
    result = executor.run(job_spec(), chunks.append, threading.Event())
    thread.join(5)
    assert result.status == "failed" and result.exit_code == 3
    assert b"exit code 3" in b"".join(chunks)
    assert fake.store.list("pods", NS) == []


def test_cancel_deletes_the_pod_within_seconds(fake):
    executor = KubernetesExecutor(configuration(fake), NS, poll_interval=0.1)
    cancel = threading.Event()
    thread, box = start(executor.run, job_spec(), lambda _c: None, cancel)
    pod = wait_pod(fake)
    fake.store.patch_status("pods", NS, pod["metadata"]["name"], {"phase": "Running"})
    fake.set_pod_log(NS, pod["metadata"]["name"], "working\n")
    time.sleep(0.3)
    cancel.set()
    started = time.monotonic()
    thread.join(5)
    assert time.monotonic() - started < 2.5
    assert box["value"].status == "canceled"
    deletes = [r for r in fake.requests if r.method == "DELETE" and "/pods/" in r.path]
    assert deletes and deletes[0].query.get("gracePeriodSeconds") == "0"
    assert fake.store.list("pods", NS) == []


def test_timeout_deletes_the_pod(fake):
    executor = KubernetesExecutor(configuration(fake), NS, poll_interval=0.1)
    started = time.monotonic()
    result = executor.run(job_spec(timeout=1), lambda _c: None, threading.Event())
    assert result.status == "timeout"
    assert time.monotonic() - started < 4
    assert fake.store.list("pods", NS) == []


def test_an_image_that_cannot_be_pulled_is_an_error_not_a_wait(fake):
    executor = KubernetesExecutor(configuration(fake), NS, poll_interval=0.1)

    def refuse() -> None:
        pod = wait_pod(fake)
        fake.store.patch_status(
            "pods",
            NS,
            pod["metadata"]["name"],
            {
                "containerStatuses": [
                    {
                        "name": "job",
                        "image": "nope:1",
                        "state": {
                            "waiting": {
                                "reason": "ErrImagePull",
                                "message": "not found",
                            }
                        },
                    }
                ]
            },
        )

    threading.Thread(target=refuse, daemon=True).start()
    result = executor.run(job_spec(), lambda _c: None, threading.Event())
    assert result.status == "error" and "ErrImagePull" in result.message
    assert fake.store.list("pods", NS) == []


def test_available_says_why_not(fake):
    assert KubernetesExecutor(None, NS).available()[0] is False
    unreachable = configuration(fake, url="http://127.0.0.1:9")
    ok, why = KubernetesExecutor(unreachable, NS, cluster_name="prod").available()
    assert not ok and "cluster prod is unreachable" in why
    denied = configuration(fake, token="wrong")
    ok, why = KubernetesExecutor(denied, NS, cluster_name="prod").available()
    assert not ok and "401" in why


@pytest.mark.django_db
def test_the_registered_factory_uses_the_configured_cluster(fake, monkeypatch):
    import yaml

    from clusters.models import Cluster
    from pipelines import workers
    from pipelines.engine.executors import get_executor

    monkeypatch.delenv("SLIPWAY_K8S_EXECUTOR_CLUSTER", raising=False)
    ok, why = get_executor("kubernetes").available()
    assert not ok and "SLIPWAY_K8S_EXECUTOR_CLUSTER" in why
    monkeypatch.setenv("SLIPWAY_K8S_EXECUTOR_CLUSTER", "ci-cluster")
    assert "does not exist" in get_executor("kubernetes").available()[1]
    Cluster.objects.create(
        name="ci-cluster",
        kubeconfig=yaml.safe_dump(fake.kubeconfig()),
        context="fakekube",
    )
    monkeypatch.setenv("SLIPWAY_K8S_EXECUTOR_NAMESPACE", NS)
    executor = get_executor("kubernetes")
    assert executor.available() == (True, "")
    assert executor.namespace == NS
    assert workers.executor_capabilities()["kubernetes"] == ""
