"""Service-level behaviour without workers: claims, reasons, limits, retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import services
from pipelines.models import Job, Repository, Run

from .gitrepo import GitRepo

pytestmark = pytest.mark.django_db(transaction=True)

# The real one, before the autouse fixture below replaces it for every test.
REAL_QUEUE_ADVANCE = services.queue_advance


@pytest.fixture(autouse=True)
def no_queue(monkeypatch) -> None:
    """Queue nothing: these tests drive the services by hand, and real workers of
    other tests may be listening on the same Redis."""
    from pipelines import tasks

    monkeypatch.setattr(services, "_enqueue", lambda job: None)
    monkeypatch.setattr(services, "queue_advance", lambda run_id: None)
    for task in (tasks.start_run, tasks.advance_run, tasks.report_commit_status):
        monkeypatch.setattr(task, "delay_on_commit", lambda *args, **kwargs: None)


TWO_STAGES = """
build:
  stage: build
  script: [make]
test:
  stage: test
  script: [make test]
lint:
  stage: test
  needs: []
  script: [make lint]
gate:
  stage: deploy
  when: manual
  script: [ship]
docs:
  stage: deploy
  rules:
    - if_branch: release/*
  script: [make docs]
"""


@pytest.fixture
def repository(tmp_path) -> Repository:
    git = GitRepo(tmp_path / "svc")
    git.commit({".slipway.yml": TWO_STAGES})
    return Repository.objects.create(name="svc", clone_url=str(git.path))


def started(repository: Repository, **kwargs) -> Run:
    run = services.trigger_run(repository, ref="main", **kwargs)
    services.start_run(run.pk)
    return Run.objects.get(pk=run.pk)


def jobs_of(run: Run) -> dict[str, Job]:
    return {job.name: job for job in Job.objects.filter(run=run, retried=False)}


def complete(job: Job, status: str = "success") -> None:
    assert Job.objects.claim(job.pk, worker="test") is not None
    assert services.finish_job(
        job.pk, status, exit_code=0 if status == "success" else 1
    )


def test_every_waiting_job_says_why(repository) -> None:
    run = started(repository)
    jobs = jobs_of(run)
    assert run.status == "running"
    assert jobs["build"].status == "pending"
    assert jobs["lint"].status == "pending"  # needs: [] starts at once
    assert jobs["test"].status == "created"
    assert jobs["test"].reason == "waiting for stage build: build"
    assert jobs["docs"].status == "skipped"
    assert jobs["docs"].reason.startswith("excluded by rules: no rule matched")


def test_a_redelivered_start_or_claim_does_nothing(repository) -> None:
    run = started(repository)
    services.start_run(run.pk)  # Delivered twice.
    assert Job.objects.filter(run=run).count() == 5
    build = jobs_of(run)["build"]
    assert Job.objects.claim(build.pk, worker="a") is not None
    assert Job.objects.claim(build.pk, worker="b") is None
    assert Job.objects.get(pk=build.pk).worker == "a"


def test_stages_advance_and_manual_jobs_do_not_block_the_run(repository) -> None:
    run = started(repository)
    jobs = jobs_of(run)
    complete(jobs["build"])
    complete(jobs["lint"])
    services.advance_run(run.pk)
    jobs = jobs_of(run)
    assert jobs["test"].status == "pending"
    complete(jobs["test"])
    services.advance_run(run.pk)
    jobs = jobs_of(run)
    assert jobs["gate"].status == "manual"
    assert "manual" in jobs["gate"].reason
    run.refresh_from_db()
    assert run.status == "success"
    services.play_job(jobs["gate"])
    services.advance_run(run.pk)
    assert Job.objects.get(pk=jobs["gate"].pk).status == "pending"
    assert Run.objects.get(pk=run.pk).status == "running"


def test_a_failure_skips_later_stages_and_retry_brings_them_back(repository) -> None:
    run = started(repository)
    jobs = jobs_of(run)
    complete(jobs["build"], "failed")
    complete(jobs["lint"])
    services.advance_run(run.pk)
    jobs = jobs_of(run)
    assert jobs["test"].status == "skipped"
    assert Run.objects.get(pk=run.pk).status == "failed"
    clone = services.retry_job(jobs["build"])
    services.advance_run(run.pk)
    jobs = jobs_of(run)
    assert jobs["build"].pk == clone.pk and jobs["build"].status == "pending"
    assert jobs["test"].status == "created"
    assert jobs["docs"].status == "skipped"  # Rule skips stay skipped.
    assert Run.objects.get(pk=run.pk).status == "running"


def test_concurrency_limit_holds_a_second_run_with_a_reason(repository) -> None:
    repository.concurrency_limit = 1
    repository.save()
    first = started(repository)
    second = started(repository)
    assert first.status == "running"
    assert second.status == "pending"
    assert "concurrency limit" in second.status_reason
    assert all(
        j.status == "created" and "concurrency limit" in j.reason
        for j in jobs_of(second).values()
        if j.status != "skipped"
    )
    services.cancel_run(first)
    services.advance_run(first.pk)
    assert Run.objects.get(pk=first.pk).status == "canceled"
    services.advance_run(second.pk)
    assert Run.objects.get(pk=second.pk).status == "running"


def test_a_new_push_cancels_older_runs_of_the_branch_when_asked(repository) -> None:
    repository.cancel_superseded = True
    repository.save()
    old = started(repository)
    started(repository)
    old.refresh_from_db()
    assert all(j.status in ("canceled", "skipped") for j in jobs_of(old).values()), {
        n: j.status for n, j in jobs_of(old).items()
    }
    assert old.status_reason.startswith("superseded by run #2")


def test_actions_in_the_wrong_state_are_refused(repository) -> None:
    run = started(repository)
    jobs = jobs_of(run)
    with pytest.raises(services.ActionError):
        services.retry_job(jobs["build"])  # Still pending.
    with pytest.raises(services.ActionError):
        services.play_job(jobs["build"])
    with pytest.raises(services.ActionError):
        services.trigger_run(repository, ref="")


def test_job_environment_is_scrubbed_and_predefined(repository, tmp_path) -> None:
    import os

    os.environ["SLIPWAY_TEST_LEAK"] = "leak"
    run = started(repository, variables={"EXTRA": "x-$SLIPWAY_BRANCH"})
    job = Job.objects.select_related("run__repository", "stage").get(
        run=run, name="build"
    )
    env = services.job_environment(job, tmp_path)
    assert env["CI"] == "true"
    assert env["SLIPWAY_BRANCH"] == "main"
    assert env["SLIPWAY_COMMIT_SHA"] == run.commit_sha
    assert env["EXTRA"] == "x-main"
    for leaked in ("SLIPWAY_TEST_LEAK", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        assert leaked not in env


def test_finishing_jobs_queue_one_advance_until_it_begins(
    repository, monkeypatch
) -> None:
    """A stage of many jobs asks for one advance_run at a time (Redis SET NX)."""
    from django.db import transaction

    from pipelines import tasks

    run = started(repository)
    sent: list[tuple[int, ...]] = []
    monkeypatch.setattr(
        tasks.advance_run, "apply_async", lambda args, **kw: sent.append(args)
    )
    services.advance_started(run.pk)  # No key left from an earlier test.
    with transaction.atomic():
        REAL_QUEUE_ADVANCE(run.pk)
        assert sent == []  # Only after commit: the task must see the new rows.
    REAL_QUEUE_ADVANCE(run.pk)
    REAL_QUEUE_ADVANCE(run.pk)
    assert sent == [(run.pk,)]
    # The task has begun (it clears the key before reading): the next finish queues.
    services.advance_started(run.pk)
    REAL_QUEUE_ADVANCE(run.pk)
    assert sent == [(run.pk,), (run.pk,)]
    services.advance_started(run.pk)


def test_stage_status_follows_the_jobs_advance_run_read(repository) -> None:
    run = started(repository)
    stages = {s.name: s for s in run.stages.all()}
    assert stages["build"].status == "running"
    assert stages["test"].status == "running"  # lint (needs: []) is pending.
    jobs = jobs_of(run)
    complete(jobs["build"])
    complete(jobs["lint"])
    services.advance_run(run.pk)
    stages = {s.name: s for s in run.stages.all()}
    assert stages["build"].status == "success"
    assert stages["test"].status == "running"
    complete(jobs_of(run)["test"])
    services.advance_run(run.pk)
    stages = {s.name: s for s in run.stages.all()}
    assert stages["test"].status == "success"
    assert stages["deploy"].status != "created"  # gate became manual, docs skipped.


# --- refs typed by hand: branch, tag or commit -----------------------------------------


@pytest.fixture
def history(tmp_path) -> tuple[GitRepo, str, str]:
    """A repository with two commits on main, a tag v1 and a branch named in hex."""
    git = GitRepo(tmp_path / "refs")
    old = git.commit({".slipway.yml": TWO_STAGES}, "first")
    git.git("tag", "v1", old)
    git.git("branch", "beef", old)
    new = git.commit({"README.md": "two"}, "second")
    return git, old, new


def env_of(run: Run) -> dict[str, str]:
    job = Job.objects.select_related("run__repository", "stage").get(
        run=run, name="build"
    )
    return services.job_environment(job, Path("/w"))


def test_a_full_sha_typed_by_hand_is_a_run_of_that_commit(history) -> None:
    git, old, new = history
    repository = Repository.objects.create(name="refs", clone_url=str(git.path))
    started(repository)  # Fetches the mirror.
    run = services.trigger_run(repository, trigger="api", ref=old)
    # Known to the mirror: a commit from the start, with no branch.
    assert (run.ref, run.branch, run.tag, run.commit_sha) == (old, "", "", old)
    services.start_run(run.pk)
    run = Run.objects.get(pk=run.pk)
    assert (run.branch, run.commit_sha, run.status) == ("", old, "running")
    env = env_of(run)
    assert env["SLIPWAY_BRANCH"] == "" and env["SLIPWAY_TAG"] == ""
    assert env["SLIPWAY_COMMIT_SHA"] == old and env["SLIPWAY_REF"] == old


def test_an_abbreviated_sha_is_told_apart_after_the_fetch(history) -> None:
    git, old, new = history
    repository = Repository.objects.create(name="refs", clone_url=str(git.path))
    run = services.trigger_run(repository, ref=old[:10])  # No mirror yet.
    assert (run.branch, run.commit_sha) == (old[:10], "")
    services.start_run(run.pk)
    run = Run.objects.get(pk=run.pk)
    assert (run.ref, run.branch, run.tag, run.commit_sha) == (old, "", "", old)
    assert env_of(run)["SLIPWAY_BRANCH"] == ""


def test_a_bare_tag_or_hex_named_branch_typed_by_hand_stays_what_it_is(
    history,
) -> None:
    git, old, new = history
    repository = Repository.objects.create(name="refs", clone_url=str(git.path))
    tag = services.trigger_run(repository, ref="v1")
    services.start_run(tag.pk)
    tag = Run.objects.get(pk=tag.pk)
    assert (tag.ref, tag.branch, tag.tag, tag.commit_sha) == (
        "refs/tags/v1",
        "",
        "v1",
        old,
    )
    assert env_of(tag)["SLIPWAY_TAG"] == "v1" and env_of(tag)["SLIPWAY_BRANCH"] == ""
    # "beef" is hex, but a branch: the branch wins, at its tip.
    branch = services.trigger_run(repository, trigger="api", ref="beef")
    services.start_run(branch.pk)
    branch = Run.objects.get(pk=branch.pk)
    assert (branch.branch, branch.tag, branch.commit_sha) == ("beef", "", old)
    assert env_of(branch)["SLIPWAY_BRANCH"] == "beef"
    main = started(repository)
    assert (main.branch, main.commit_sha) == ("main", new)


# --- variables: who wins --------------------------------------------------------------

LAYERED = """
variables:
  TOKEN: from-the-file
  URL: "https://$TOKEN@example.com"
  DEPLOY: "no"
build:
  variables:
    TOKEN: from-the-job
    REGION: from-the-job
    WHERE: "in-$REGION"
    SLIPWAY_BRANCH: hacked
  script: [make]
gated:
  rules:
    - if_variable: DEPLOY == yes
  script: [ship]
"""


def test_stored_variables_and_secrets_win_over_the_files(tmp_path) -> None:
    from pipelines.models import Variable

    git = GitRepo(tmp_path / "layers")
    git.commit({".slipway.yml": LAYERED})
    repository = Repository.objects.create(name="layers", clone_url=str(git.path))
    Variable.objects.create(
        repository=repository, name="TOKEN", value="s3cret", is_secret=True
    )
    Variable.objects.create(repository=repository, name="REGION", value="eu")
    Variable.objects.create(repository=None, name="REGION", value="global")
    Variable.objects.create(repository=None, name="DEPLOY", value="yes")
    run = started(repository, variables={"REGION": "us", "NOTE": "t=$TOKEN"})
    env = env_of(run)
    # Secrets and stored variables beat the file (GitLab: CI/CD settings win over
    # .gitlab-ci.yml), and the file's values expand over them.
    assert env["TOKEN"] == "s3cret"
    assert env["URL"] == "https://s3cret@example.com"
    assert env["WHERE"] == "in-eu"  # The repository's REGION, not the global one.
    # The run's own variables (manual, API, schedule) beat the stored ones.
    assert env["REGION"] == "us" and env["NOTE"] == "t=s3cret"
    # Predefined variables beat everything.
    assert env["SLIPWAY_BRANCH"] == "main"
    # Rules see the same order: the stored DEPLOY=yes beats the file's "no".
    assert jobs_of(run)["gated"].status == "pending"
