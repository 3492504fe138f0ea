"""Workers probe their executors again while they run, and follow what they find."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipelines import workers

from .waiting import wait_for

NO_DOCKER = "no Docker daemon reachable at unix:///var/run/docker.sock: refused"


class Probe:
    """A capability probe whose answer the test sets, counting its calls."""

    def __init__(self, **executors: str) -> None:
        self.executors = {"shell": "", **executors}
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        return dict(self.executors)


def test_a_recheck_subscribes_to_an_executor_that_came_up_and_withdraws_a_gone_one():
    probe = Probe(docker=NO_DOCKER, kubernetes="")
    changes: list[tuple[list[str], list[str]]] = []
    announcer = workers.Announcer(
        "w@test",
        ["default", "gpu", "gpu:docker"],
        2,
        probe=probe,
        subscribe=lambda added, removed: changes.append((added, removed)),
        check_seconds=3600,
    )
    assert announcer.queues == ["default", "gpu", "gpu:docker"] + [
        "default:kubernetes",
        "gpu:kubernetes",
    ]
    assert announcer.recheck() is False and changes == []  # Nothing changed.

    probe.executors["docker"] = ""  # The daemon came up.
    assert announcer.recheck() is True
    # gpu:docker was given on the command line: served already, never added twice.
    assert changes == [(["default:docker"], [])]
    assert announcer.executors["docker"] == ""
    assert "default:docker" in announcer.queues

    probe.executors["docker"] = NO_DOCKER  # And went away again.
    probe.executors["kubernetes"] = "cluster ci is unreachable: timed out"
    assert announcer.recheck() is True
    assert changes[-1] == (
        [],
        ["default:docker", "default:kubernetes", "gpu:kubernetes"],
    )
    assert announcer.queues == ["default", "gpu", "gpu:docker"]
    assert announcer.executors["docker"] == NO_DOCKER


def test_a_failed_resubscription_is_tried_again_at_the_next_check():
    probe = Probe(docker=NO_DOCKER)
    attempts: list[list[str]] = []

    def subscribe(added: list[str], removed: list[str]) -> None:
        attempts.append(added)
        if len(attempts) == 1:
            raise ConnectionError("broker away")

    announcer = workers.Announcer(
        "w@test", ["default"], 1, probe=probe, subscribe=subscribe, check_seconds=3600
    )
    probe.executors["docker"] = ""
    assert announcer.recheck() is False
    assert announcer.executors["docker"] == NO_DOCKER  # Not claimed before it worked.
    assert announcer.recheck() is True
    assert attempts == [["default:docker"], ["default:docker"]]
    assert announcer.queues == ["default", "default:docker"]


def test_the_check_interval_is_configurable_with_a_floor(settings, monkeypatch):
    settings.SLIPWAY = {**settings.SLIPWAY}
    settings.SLIPWAY.pop("CAPABILITY_CHECK_SECONDS", None)
    monkeypatch.delenv("SLIPWAY_CAPABILITY_CHECK_SECONDS", raising=False)
    assert workers.capability_check_seconds() == 30
    monkeypatch.setenv("SLIPWAY_CAPABILITY_CHECK_SECONDS", "5")
    assert workers.capability_check_seconds() == 5
    monkeypatch.setenv("SLIPWAY_CAPABILITY_CHECK_SECONDS", "0")
    assert workers.capability_check_seconds() == 1  # Never a busy loop.
    monkeypatch.setenv("SLIPWAY_CAPABILITY_CHECK_SECONDS", "0.01")
    assert workers.capability_check_seconds() == 1
    monkeypatch.setenv("SLIPWAY_CAPABILITY_CHECK_SECONDS", "soon")
    assert workers.capability_check_seconds() == 30


@pytest.fixture
def announcer() -> Iterator[workers.Announcer]:
    probe = Probe(docker=NO_DOCKER)
    changes: list[tuple[list[str], list[str]]] = []
    started = workers.Announcer(
        "caps-thread@test",
        ["default"],
        1,
        probe=probe,
        subscribe=lambda added, removed: changes.append((added, removed)),
        check_seconds=0.2,
        refresh_seconds=0.1,
    )
    started.start()
    yield started
    started.stop()


@pytest.mark.django_db
def test_the_announcer_thread_rechecks_on_its_interval_and_publishes(announcer):
    def entry() -> workers.WorkerInfo | None:
        found = [
            w for w in workers.online_workers(fresh=True) if w.name == announcer.name
        ]
        return found[0] if found else None

    first = wait_for(entry, 10, message="the worker's first entry")
    assert first.executors["docker"] == NO_DOCKER and first.queues == ("default",)
    began = time.monotonic()
    announcer.probe.executors["docker"] = ""  # type: ignore[attr-defined]
    wait_for(
        lambda: (e := entry()) is not None and "default:docker" in e.queues,
        10,
        message="the re-check to publish the docker queue",
    )
    # Within a few check intervals, not a restart or a 30 s wait.
    assert time.monotonic() - began < 5
    assert entry().executors["docker"] == ""  # type: ignore[union-attr]
    assert announcer.probe.calls >= 2  # type: ignore[attr-defined]
    announcer.stop()
    assert entry() is None


@pytest.mark.slow
def test_a_real_worker_serves_the_executor_cluster_once_it_exists_and_stops_after(
    tmp_path_factory, transactional_db
):
    """A real Celery worker follows its kubernetes executor's cluster coming and going.

    The queue change travels as a remote-control broadcast to the worker itself, so
    the broker's own view (active_queues) is checked, not only the registry.
    """
    from clusters.fakekube import FakeKubeServer
    from clusters.tests.factories import make_cluster, namespace
    from config.celery import app
    from core.testing.processes import CeleryWorker

    def consumed(hostname: str) -> set[str]:
        replies = app.control.inspect(destination=[hostname], timeout=2).active_queues()
        return {q["name"] for q in (replies or {}).get(hostname, [])}

    def entry(hostname: str) -> workers.WorkerInfo | None:
        found = [w for w in workers.online_workers(fresh=True) if w.name == hostname]
        return found[0] if found else None

    with FakeKubeServer() as fake:
        fake.store.create(namespace("caps-jobs"))
        worker = CeleryWorker(
            "caps",
            queues=("caps",),
            concurrency=1,
            extra_env={
                "SLIPWAY_K8S_EXECUTOR_CLUSTER": "caps-cluster",
                "SLIPWAY_K8S_EXECUTOR_NAMESPACE": "caps-jobs",
                "SLIPWAY_CAPABILITY_CHECK_SECONDS": "1",
            },
        )
        try:
            worker.start(tmp_path_factory.mktemp("caps-worker"))
            first = wait_for(lambda: entry(worker.hostname), 20, message="the entry")
            assert "does not exist" in first.executors["kubernetes"]
            assert "caps:kubernetes" not in first.queues
            assert "caps:kubernetes" not in consumed(worker.hostname)

            cluster = make_cluster(fake, name="caps-cluster")
            wait_for(
                lambda: "caps:kubernetes" in consumed(worker.hostname),
                30,
                0.5,
                "the worker to consume caps:kubernetes",
            )
            now = entry(worker.hostname)
            assert now is not None and now.executors["kubernetes"] == ""
            assert "caps:kubernetes" in now.queues

            cluster.delete()  # The executor's cluster goes away: withdrawn.
            wait_for(
                lambda: "caps:kubernetes" not in consumed(worker.hostname),
                30,
                0.5,
                "the worker to stop consuming caps:kubernetes",
            )
            gone = entry(worker.hostname)
            assert gone is not None and "does not exist" in gone.executors["kubernetes"]
            assert worker.running, worker.log_text()[-2000:]
        finally:
            worker.stop()
