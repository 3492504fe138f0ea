"""Artifacts: what is kept, for how long, and what is refused (traversal, symlinks, size)."""

from __future__ import annotations

import os
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from pipelines import artifacts, logs, services, trigger_tasks
from pipelines.engine import spec
from pipelines.models import Artifact, Job, Repository

from .factories import make_artifact, make_job
from .gitrepo import GitRepo


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    (path / "dist").mkdir(parents=True)
    (path / "dist" / "app.txt").write_text("built\n")
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, holding what must never be collected."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret\n")
    return path


def job_with(artifacts_yaml: str) -> Job:
    """Return a job whose spec is what the engine stores for ARTIFACTS_YAML."""
    pipeline = spec.parse(f"build:\n  script: [make]\n  artifacts: {artifacts_yaml}\n")
    return make_job(spec=services._jsonable(pipeline.jobs[0]), name="build")


def stored_names(artifact: Artifact) -> list[str]:
    with artifact.file.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        return sorted(archive.namelist())


def stored_bytes(artifact: Artifact) -> bytes:
    with artifact.file.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- expiry -------------------------------------------------------------------------


@pytest.mark.django_db
def test_expire_in_never_keeps_the_artifact_for_ever(workspace: Path) -> None:
    assert spec.parse(
        "a:\n  script: [x]\n  artifacts: {paths: [dist/], expire_in: never}\n"
    ).jobs[0].artifacts == spec.Artifacts(("dist/",), 0)
    job = job_with("{paths: [dist/], expire_in: never}")
    lines = artifacts.collect(job, workspace, succeeded=True)
    artifact = Artifact.objects.get(job=job)
    assert artifact.expires_at is None
    assert lines == [
        "artifacts: kept 1 file(s), 6 bytes, as build-artifacts; it never expires"
    ]
    assert trigger_tasks.expire_artifacts() == 0
    assert Artifact.objects.filter(pk=artifact.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expire_in", "seconds"),
    [("2 days", 2 * 86400), (None, artifacts.DEFAULT_EXPIRE_SECONDS)],
)
def test_expire_in_or_the_default_sets_the_expiry(
    workspace: Path, expire_in: str | None, seconds: int
) -> None:
    job = job_with(
        "{paths: [dist/]" + (f", expire_in: {expire_in}" if expire_in else "") + "}"
    )
    before = timezone.now()
    artifacts.collect(job, workspace, succeeded=True)
    expires_at = Artifact.objects.get(job=job).expires_at
    assert expires_at is not None
    assert before + timedelta(seconds=seconds) <= expires_at
    assert expires_at <= timezone.now() + timedelta(seconds=seconds)


@pytest.mark.django_db
def test_beat_expires_artifacts_past_their_time_with_their_files(media: Path) -> None:
    job = make_job()
    now = timezone.now()
    old = make_artifact(job, "old", expires_at=now - timedelta(minutes=1))
    young = make_artifact(job, "young", expires_at=now + timedelta(days=1))
    kept = make_artifact(job, "kept", expires_at=None)
    old_file = Path(old.file.path)
    assert old_file.exists()
    # The task beat runs hourly (config/settings.py's CELERY_BEAT_SCHEDULE).
    entry = django_settings.CELERY_BEAT_SCHEDULE["expire-artifacts"]
    assert entry["task"] == trigger_tasks.expire_artifacts.name
    assert trigger_tasks.expire_artifacts() == 1
    assert not old_file.exists()
    assert set(Artifact.objects.values_list("name", flat=True)) == {"young", "kept"}
    assert Path(young.file.path).exists() and Path(kept.file.path).exists()
    assert trigger_tasks.expire_artifacts() == 0


# --- refusals -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_path_leaving_the_workspace_is_refused_and_nothing_kept(
    workspace: Path, outside: Path, media: Path
) -> None:
    # The parser refuses it with its line; a stored spec is checked again anyway.
    with pytest.raises(spec.SpecError) as caught:
        spec.parse("a:\n  script: [x]\n  artifacts: {paths: [../outside/]}\n")
    assert ".slipway.yml:3:" in str(caught.value)
    job = make_job(spec={"artifacts": {"paths": ["dist/", "../outside/secret.txt"]}})
    lines = artifacts.collect(job, workspace, succeeded=True)
    assert lines == [
        "artifacts: artifact path '../outside/secret.txt' must stay inside the "
        "workspace; none kept"
    ]
    job = make_job(spec={"artifacts": {"paths": [str(outside / "secret.txt")]}})
    assert (
        "must stay inside the workspace"
        in artifacts.collect(job, workspace, succeeded=True)[0]
    )
    assert not Artifact.objects.exists()
    assert files_under(media) == []


@pytest.mark.django_db
def test_symlinks_leading_out_of_the_workspace_are_left_out(
    workspace: Path, outside: Path
) -> None:
    dist = workspace / "dist"
    os.symlink(outside / "secret.txt", dist / "leak.txt")
    os.symlink(outside, dist / "leakdir")
    os.symlink(outside, workspace / "linked")
    # A link that stays inside is fine: its target is stored.
    os.symlink(dist / "app.txt", dist / "alias.txt")
    job = job_with("{paths: [dist/, linked, linked/*]}")
    lines = artifacts.collect(job, workspace, succeeded=True)
    assert lines[0].startswith(
        "artifacts: skipped 4 path(s) whose symlink leads out of the workspace: "
    )
    for name in ("dist/leak.txt", "dist/leakdir", "linked", "linked/secret.txt"):
        assert name in lines[0]
    assert lines[1] == "artifacts: kept 2 file(s), 12 bytes, as build-artifacts"
    artifact = Artifact.objects.get(job=job)
    assert stored_names(artifact) == ["dist/alias.txt", "dist/app.txt"]
    assert b"secret" not in stored_bytes(artifact)


@pytest.mark.django_db
def test_an_archive_over_the_size_limit_is_not_kept(
    workspace: Path, media: Path, settings: Any
) -> None:
    settings.SLIPWAY = {**settings.SLIPWAY, "ARTIFACT_MAX_BYTES": 1024}
    (workspace / "dist" / "big.bin").write_bytes(b"x" * 2000)
    job = job_with("{paths: [dist/]}")
    assert artifacts.collect(job, workspace, succeeded=True) == [
        "artifacts: 2006 bytes exceed the limit of 1024 bytes; none kept"
    ]
    assert not Artifact.objects.exists()
    assert files_under(media) == []


@pytest.mark.django_db
def test_special_files_and_dangling_links_are_skipped(workspace: Path) -> None:
    os.mkfifo(workspace / "dist" / "pipe")  # Reading it would block the worker.
    os.symlink(workspace / "gone", workspace / "dist" / "dangling")
    job = job_with("{paths: [dist/]}")
    lines = artifacts.collect(job, workspace, succeeded=True)
    assert lines == ["artifacts: kept 1 file(s), 6 bytes, as build-artifacts"]
    assert stored_names(Artifact.objects.get(job=job)) == ["dist/app.txt"]


# --- in a real job: the refusals are in its log ---------------------------------------

ESCAPING = """
build:
  script:
    - mkdir -p dist
    - echo built > dist/app.txt
    - ln -s "$OUTSIDE/secret.txt" dist/leak.txt
  artifacts: {paths: [dist/]}
big:
  script:
    - head -c 5000 /dev/zero > blob.bin
  artifacts: {paths: [blob.bin]}
"""


@pytest.mark.django_db(transaction=True)
def test_a_jobs_log_says_what_was_refused(
    tmp_path: Path, outside: Path, settings: Any, monkeypatch: Any
) -> None:
    from pipelines import tasks

    monkeypatch.setattr(services, "_enqueue", lambda job: None)
    monkeypatch.setattr(services, "queue_advance", lambda run_id: None)
    for task in (tasks.start_run, tasks.advance_run, tasks.report_commit_status):
        monkeypatch.setattr(task, "delay_on_commit", lambda *a, **k: None)
    settings.SLIPWAY = {**settings.SLIPWAY, "ARTIFACT_MAX_BYTES": 4096}
    git = GitRepo(tmp_path / "escape")
    git.commit({".slipway.yml": ESCAPING})
    repository = Repository.objects.create(name="escape", clone_url=str(git.path))
    run = services.trigger_run(
        repository, ref="main", variables={"OUTSIDE": str(outside)}
    )
    services.start_run(run.pk)
    for name in ("build", "big"):
        job = Job.objects.claim(Job.objects.get(run=run, name=name).pk, worker="t")
        assert job is not None
        services.execute_job(job)
    jobs = {job.name: job for job in Job.objects.filter(run=run)}
    assert {job.status for job in jobs.values()} == {"success"}
    build_log = "".join(logs.iter_raw(jobs["build"]))
    assert (
        "artifacts: skipped 1 path(s) whose symlink leads out of the workspace: "
        "dist/leak.txt" in build_log
    )
    assert "artifacts: kept 1 file(s), 6 bytes, as build-artifacts" in build_log
    big_log = "".join(logs.iter_raw(jobs["big"]))
    assert "artifacts: 5000 bytes exceed the limit of 4096 bytes; none kept" in big_log
    stored = Artifact.objects.get()
    assert stored.job_id == jobs["build"].pk
    assert b"secret" not in stored_bytes(stored)
