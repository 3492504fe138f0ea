"""First run (manage.py bootstrap): admin, demo repository, its first run; once only."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from redis import Redis

from core.models import AuditEvent
from pipelines.models import Job, Repository, Run

from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_LINE = re.compile(r"^\s*password:\s*(\S.*?)\s*$", re.MULTILINE)


def bootstrap(*args: str) -> str:
    out = io.StringIO()
    call_command("bootstrap", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {
        "users": User.objects.count(),
        "repositories": Repository.objects.count(),
        "runs": Run.objects.count(),
        "jobs": Job.objects.count(),
    }


@pytest.fixture
def var_dir(tmp_path: Path, settings) -> Path:  # type: ignore[no-untyped-def]
    """A fresh SLIPWAY_VAR_DIR: bootstrap makes the demo repository under it."""
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


@pytest.fixture
def no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIPWAY_ADMIN_USER", raising=False)
    monkeypatch.delenv("SLIPWAY_ADMIN_PASSWORD", raising=False)


@pytest.mark.slow
def test_first_run_creates_admin_and_demo_and_its_run_runs_on_workers(
    workers, var_dir: Path, no_admin_env: None
) -> None:
    assert counts() == {"users": 0, "repositories": 0, "runs": 0, "jobs": 0}

    output = bootstrap()

    # The admin: a superuser in the admin group, whose password is the printed one.
    (password,) = PASSWORD_LINE.findall(output)
    admin = User.objects.get()
    assert admin.username == "admin" and admin.is_superuser
    assert list(admin.groups.values_list("name", flat=True)) == ["admin"]
    assert authenticate(username="admin", password=password) == admin
    assert output.count(password) == 1

    # The demo repository: a real git repository with build/test/deploy-like jobs,
    # connected to Slipway.
    demo_path = var_dir / "demo-repo"
    tracked = subprocess.run(
        ["git", "-C", str(demo_path), "ls-files"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ".slipway.yml" in tracked
    pipeline = yaml.safe_load((demo_path / ".slipway.yml").read_text())
    assert pipeline["stages"] == ["build", "test", "deploy"]
    job_stages = {spec["stage"] for spec in pipeline.values() if "script" in spec}
    assert job_stages == {"build", "test", "deploy"}
    repository = Repository.objects.get()
    assert repository.name == "demo" and repository.clone_url == str(demo_path)
    assert f"demo repository at {demo_path}; run #1 queued" in output
    assert (
        AuditEvent.objects.filter(
            action__startswith="bootstrap.", source=AuditEvent.Source.SYSTEM
        ).count()
        == 2
    )

    # Its first run starts and real workers run the jobs of every stage.
    run = Run.objects.get()
    assert run.repository == repository and run.number == 1
    finished = wait_for(
        lambda: Run.objects.filter(pk=run.pk, status__in=Run.FINISHED).first(),
        timeout=240,
        interval=0.2,
        message="the demo run to finish",
    )
    jobs = {job.name: job.status for job in Job.objects.filter(run=run)}
    assert finished.status == Run.Status.SUCCESS, (finished.status_reason, jobs)
    assert finished.commit_sha, "the run resolved main to a commit"
    assert jobs["compile"] == jobs["lint"] == jobs["package"] == "success"
    assert jobs["release"] == "manual"
    shards = [name for name in jobs if name.startswith("unit-tests")]
    assert len(shards) == 2 and {jobs[name] for name in shards} == {"success"}

    # Run again (every start does): nothing new, no second password.
    before = counts()
    again = bootstrap()
    assert again == ""
    assert counts() == before
    assert authenticate(username="admin", password=password) == admin


@pytest.mark.django_db
def test_password_from_the_environment_is_used_and_never_printed(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPWAY_ADMIN_USER", "root")
    monkeypatch.setenv("SLIPWAY_ADMIN_PASSWORD", "a-long-chosen-passphrase")
    output = bootstrap("--no-demo")
    assert PASSWORD_LINE.findall(output) == ["(from SLIPWAY_ADMIN_PASSWORD)"]
    assert "a-long-chosen-passphrase" not in output
    admin = authenticate(username="root", password="a-long-chosen-passphrase")
    assert admin is not None and admin.is_superuser
    # --no-demo (the container's migrate step): no repository, no run.
    assert not Repository.objects.exists() and not Run.objects.exists()
    assert not (var_dir / "demo-repo").exists()
    assert bootstrap("--no-demo") == ""
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_empty_password_variable_still_shows_the_generated_one(
    var_dir: Path, no_admin_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPWAY_ADMIN_PASSWORD", "")
    (password,) = PASSWORD_LINE.findall(bootstrap("--no-demo"))
    assert password != "(from SLIPWAY_ADMIN_PASSWORD)" and len(password) >= 12
    assert authenticate(username="admin", password=password) is not None


@pytest.mark.django_db
def test_a_deleted_demo_repository_is_not_made_again(
    var_dir: Path, no_admin_env: None
) -> None:
    bootstrap()
    Repository.objects.filter(name="demo").delete()
    assert bootstrap() == ""
    assert not Repository.objects.exists()


@pytest.mark.django_db
def test_a_user_with_the_admin_name_but_no_superuser_is_one_clear_error(
    var_dir: Path, no_admin_env: None
) -> None:
    from django.core.management.base import CommandError

    User.objects.create_user("admin", password="x" * 20)
    with pytest.raises(CommandError, match="SLIPWAY_ADMIN_USER: a user 'admin'"):
        bootstrap("--no-demo")
    assert not User.objects.filter(is_superuser=True).exists()


@pytest.mark.slow
def test_first_run_from_the_command_line_on_a_new_database(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What platform/run.sh does: migrate, then bootstrap, on a database just made."""
    database = tmp_path / "fresh.sqlite3"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SLIPWAY_TEST_DB_NAME", "SLIPWAY_ADMIN_USER"}
        and key != "SLIPWAY_ADMIN_PASSWORD"
    }
    # Another Redis database: the session's workers must not take jobs whose ids
    # belong to this other database.
    redis_url = urlsplit(os.environ["REDIS_URL"])._replace(path="/7").geturl()
    Redis.from_url(redis_url).flushdb()
    request.addfinalizer(Redis.from_url(redis_url).flushdb)
    env.update(
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{database}",
        SLIPWAY_VAR_DIR=str(tmp_path / "var"),
    )

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done

    manage("migrate", "--noinput", "-v0")
    first = manage("bootstrap").stdout
    (password,) = PASSWORD_LINE.findall(first)
    assert "run #1 queued" in first
    second = manage("bootstrap").stdout
    assert second == "" and password not in second

    with sqlite3.connect(database) as db:
        users = db.execute("select username, is_superuser from auth_user").fetchall()
        repositories = db.execute("select name, clone_url from pipelines_repository")
        runs = db.execute(
            "select id, number, status, commit_sha from pipelines_run"
        ).fetchall()
        repositories = repositories.fetchall()
        job_rows = db.execute("select name, status from pipelines_job").fetchall()
    assert users == [("admin", 1)]
    assert repositories == [("demo", str(tmp_path / "var" / "demo-repo"))]
    # The run is queued: one start_run message for it waits in this test's own Redis
    # database (no worker listens there), as a worker of the installation would get it.
    ((run_id, number, status, _),) = runs
    assert number == 1 and status == "created" and job_rows == [], runs
    messages = Redis.from_url(redis_url).lrange("default", 0, -1)
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == "pipelines.start_run"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [run_id] and kwargs == {}
