"""Pipeline pages: access by role, actions through the services, forms, badge, logs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.models import AuditEvent
from pipelines.models import Job, Repository, Run, Schedule, Variable
from pipelines.tests.factories import (
    add_log,
    make_artifact,
    make_delivery,
    make_job,
    make_pipeline,
    make_repository,
    make_run,
    make_schedule,
    make_variable,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    """Trends and the worker list are cached in Redis: start each test without them."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def repo():
    return make_repository(name="web", https_token="tok-123", ssh_private_key="")


@pytest.fixture
def pipeline(repo):
    return make_pipeline(repo, status="failed")


def read_urls(repo, run, job):
    return [
        reverse("pipelines:overview"),
        reverse("pipelines:repository-list"),
        reverse("pipelines:repository-detail", args=[repo.name]),
        reverse("pipelines:repository-branches", args=[repo.name]),
        reverse("pipelines:repository-webhooks", args=[repo.name]),
        reverse("pipelines:repository-deliveries", args=[repo.name]),
        reverse("pipelines:repository-schedules", args=[repo.name]),
        reverse("pipelines:repository-variables", args=[repo.name]),
        reverse("pipelines:run-list"),
        reverse("pipelines:run-detail", args=[run.pk]),
        reverse("pipelines:job-detail", args=[job.pk]),
        reverse("pipelines:job-log-raw", args=[job.pk]),
    ]


# ---------------------------------------------------------------- reading


def test_anonymous_users_are_sent_to_the_login_page(client, pipeline):
    job = pipeline.jobs.first()
    for url in read_urls(pipeline.repository, pipeline, job):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login"))


def test_users_without_a_role_get_the_403_page(client, charlie, pipeline):
    client.force_login(charlie)
    job = pipeline.jobs.first()
    for url in read_urls(pipeline.repository, pipeline, job):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"You do not have access" in response.content


def test_viewers_read_every_page(client, victor, pipeline):
    client.force_login(victor)
    job = pipeline.jobs.first()
    for url in read_urls(pipeline.repository, pipeline, job):
        assert client.get(url).status_code == 200, url


def test_viewers_see_no_action_buttons(client, victor, pipeline):
    client.force_login(victor)
    body = client.get(pipeline.get_absolute_url()).content.decode()
    assert "Cancel run" not in body
    assert "Retry failed jobs" not in body
    assert "Run pipeline" not in client.get("/repos/web/").content.decode()


def test_developers_see_the_buttons_their_role_allows(client, bob, pipeline):
    client.force_login(bob)
    body = client.get(pipeline.get_absolute_url()).content.decode()
    assert "Retry failed jobs" in body
    assert (
        reverse("pipelines:job-play", args=[pipeline.jobs.get(name="deploy-prod").pk])
        in body
    )
    repo_page = client.get("/repos/web/").content.decode()
    assert "Run pipeline" in repo_page
    assert reverse("pipelines:repository-settings", args=["web"]) not in repo_page
    assert client.get("/repos/web/settings/").status_code == 403


def test_unknown_objects_render_the_404_page_inside_the_layout(client, victor):
    client.force_login(victor)
    for url in ("/repos/nope/", "/runs/999999/", "/jobs/999999/", "/nowhere/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"error-page" in response.content
        assert b"sidebar" in response.content


def test_new_install_overview_tells_the_next_step(client, alice, victor):
    client.force_login(alice)
    body = client.get("/").content.decode()
    assert "Welcome to Slipway" in body
    assert reverse("pipelines:repository-create") in body
    client.force_login(victor)
    assert "ask one to add yours" in client.get("/").content.decode()


def test_overview_shows_active_and_recent_runs_and_trends(client, victor, repo):
    active = make_run(repository=repo, status="running", commit_message="Live one")
    for _ in range(3):
        make_run(repository=repo, status="success")
    make_run(repository=repo, status="failed")
    client.force_login(victor)
    response = client.get("/")
    body = response.content.decode()
    assert "Live one" in body
    assert f'data-status-for="run-{active.pk}"' in body
    assert 'id="overview-config"' in body
    overall, trends = response.context["overall"], response.context["trends"]
    assert trends[0].repository == "web"
    assert overall.total == 5
    assert round(overall.success_rate) == 75
    partial = client.get("/?partial=active")
    assert (
        partial.content.decode()
        .lstrip()
        .startswith('<div class="card flush" id="active-runs"')
    )


def test_run_list_filters_and_htmx_partial(client, victor, repo):
    make_run(repository=repo, status="failed", branch="fix/x", commit_message="Broken")
    make_run(repository=repo, status="success", branch="main", commit_message="Fine")
    client.force_login(victor)
    body = client.get("/runs/?status=failed").content.decode()
    assert "Broken" in body and "Fine" not in body
    body = client.get("/repos/web/?branch=main").content.decode()
    assert "Fine" in body and "Broken" not in body
    partial = client.get("/runs/?trigger=push", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="run-table"')
    assert "<html" not in partial
    # Bad filter values are ignored, never a 500.
    assert client.get("/runs/?status=bogus&before=x&after=-1").status_code == 200


def test_run_list_pages_by_keyset(client, victor, repo):
    runs = [make_run(repository=repo, commit_message=f"c{i}") for i in range(55)]
    client.force_login(victor)
    first = client.get("/runs/")
    assert len(first.context["runs"]) == 50
    page = first.context["page"]
    assert page.before == runs[5].pk
    second = client.get(f"/runs/?before={page.before}")
    assert [r.pk for r in second.context["runs"]] == [r.pk for r in reversed(runs[:5])]
    back = client.get(f"/runs/?after={second.context['page'].after}")
    assert [r.pk for r in back.context["runs"]] == [r.pk for r in first.context["runs"]]
    assert back.context["page"].after is None  # The newest page again.


def test_branches_tab_lists_each_branch_with_its_newest_run(client, victor, repo):
    make_run(repository=repo, branch="main", status="failed")
    newest_main = make_run(repository=repo, branch="main", status="success")
    make_run(repository=repo, branch="dev", status="failed")
    client.force_login(victor)
    branches = client.get("/repos/web/branches/").context["branches"]
    assert [(r.branch, r.pk) for r in branches][1] == ("main", newest_main.pk)
    assert {r.branch for r in branches} == {"main", "dev"}


def test_run_page_shows_graph_data_error_and_artifacts(client, victor, pipeline, repo):
    artifact = make_artifact(pipeline.jobs.get(name="compile"), name="dist")
    broken = make_run(
        repository=repo, status="failed", error=".slipway.yml:3:1: bad key 'stagez'"
    )
    client.force_login(victor)
    response = client.get(pipeline.get_absolute_url())
    graph = response.context["graph"]
    assert [s["name"] for s in graph["stages"]] == ["build", "test", "deploy"]
    unit = graph["stages"][1]["jobs"][0]
    assert unit["needs"] == ["compile"]
    manual = graph["stages"][2]["jobs"][1]
    assert manual["status"] == "manual" and "manual" in manual["reason"]
    body = response.content.decode()
    assert 'id="pipeline-data"' in body and 'id="run-config"' in body
    assert reverse("pipelines:artifact-download", args=[artifact.pk]) in body
    assert client.get(f"{pipeline.get_absolute_url()}?format=json").json() == graph
    body = client.get(broken.get_absolute_url()).content.decode()
    assert "The pipeline could not start" in body
    assert ".slipway.yml:3:1: bad key" in body


def test_job_page_explains_why_a_job_waits(client, victor, repo):
    job = make_job(
        run=make_run(repository=repo, status="running"),
        status="pending",
        reason="no worker listens to the tags [gpu]",
        worker="",
        started_at=None,
    )
    client.force_login(victor)
    body = client.get(job.get_absolute_url()).content.decode()
    assert "Why is this job pending?" in body
    assert "no worker listens to the tags [gpu]" in body
    assert f"/ws/jobs/{job.pk}/log/" in body


def test_raw_log_streams_plain_text(client, victor, pipeline):
    job = pipeline.jobs.get(name="integration")
    add_log(job, ["first line", "second \x1b[31mred\x1b[0m line"])
    client.force_login(victor)
    response = client.get(reverse("pipelines:job-log-raw", args=[job.pk]))
    assert response.streaming
    assert response["Content-Type"].startswith("text/plain")
    text = b"".join(response.streaming_content).decode()
    assert text == "first line\nsecond \x1b[31mred\x1b[0m line\n"
    download = client.get(
        reverse("pipelines:job-log-raw", args=[job.pk]) + "?download=1"
    )
    assert download["Content-Disposition"].startswith("attachment;")


def test_artifact_download_streams_the_file(client, victor, pipeline):
    artifact = make_artifact(pipeline.jobs.first(), name="dist", content=b"zipdata")
    client.force_login(victor)
    response = client.get(reverse("pipelines:artifact-download", args=[artifact.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"zipdata"
    assert 'filename="dist.zip"' in response["Content-Disposition"]
    artifact.file.delete(save=False)
    assert (
        client.get(
            reverse("pipelines:artifact-download", args=[artifact.pk])
        ).status_code
        == 404
    )


def test_webhook_page_shows_the_exact_url_and_the_secret_to_admins_only(
    client, alice, victor, repo
):
    client.force_login(alice)
    for forge in ("github", "gitlab", "gitea", "forgejo", "generic"):
        body = client.get(f"/repos/web/webhooks/?forge={forge}").content.decode()
        assert f"http://testserver/hooks/{forge}/web/" in body
        assert repo.webhook_secret in body
    assert "Authorization: Bearer" in body
    client.force_login(victor)
    body = client.get("/repos/web/webhooks/").content.decode()
    assert repo.webhook_secret not in body
    assert "Only admins can see the webhook secret" in body


def test_secrets_and_credentials_are_never_shown_back(client, alice, repo):
    make_variable(repo, name="TOKEN", value="hunter2-secret", is_secret=True)
    make_variable(repo, name="ENV", value="staging")
    client.force_login(alice)
    variables = client.get("/repos/web/variables/").content.decode()
    assert "hunter2-secret" not in variables
    assert "staging" in variables
    settings = client.get("/repos/web/settings/").content.decode()
    assert "tok-123" not in settings
    assert "Leave empty to keep it" in settings


# ---------------------------------------------------------------- role matrix


def mutating_posts(repo, run, job, manual_job, delivery, schedule, variable):
    """(url, data, role needed) for every mutating view."""
    return [
        (
            reverse("pipelines:repository-trigger", args=[repo.name]),
            {"ref": "main"},
            "developer",
        ),
        (reverse("pipelines:run-cancel", args=[run.pk]), {}, "developer"),
        (reverse("pipelines:run-retry", args=[run.pk]), {}, "developer"),
        (reverse("pipelines:job-retry", args=[job.pk]), {}, "developer"),
        (reverse("pipelines:job-play", args=[manual_job.pk]), {}, "developer"),
        (reverse("pipelines:job-cancel", args=[manual_job.pk]), {}, "developer"),
        (
            reverse("pipelines:delivery-redeliver", args=[repo.name, delivery.pk]),
            {},
            "developer",
        ),
        (reverse("pipelines:repository-create"), {"name": "x"}, "admin"),
        (
            reverse("pipelines:repository-settings", args=[repo.name]),
            {"name": "web"},
            "admin",
        ),
        (reverse("pipelines:repository-delete", args=[repo.name]), {}, "admin"),
        (reverse("pipelines:repository-rotate-secret", args=[repo.name]), {}, "admin"),
        (
            reverse("pipelines:repository-schedules", args=[repo.name]),
            {"cron": "x"},
            "admin",
        ),
        (
            reverse("pipelines:schedule-delete", args=[repo.name, schedule.pk]),
            {},
            "admin",
        ),
        (
            reverse("pipelines:schedule-toggle", args=[repo.name, schedule.pk]),
            {},
            "admin",
        ),
        (
            reverse("pipelines:repository-variables", args=[repo.name]),
            {"name": "A"},
            "admin",
        ),
        (
            reverse("pipelines:variable-delete", args=[repo.name, variable.pk]),
            {},
            "admin",
        ),
    ]


@pytest.fixture
def targets(repo, pipeline):
    return {
        "repo": repo,
        "run": pipeline,
        "job": pipeline.jobs.get(name="integration"),
        "manual_job": pipeline.jobs.get(name="deploy-prod"),
        "delivery": make_delivery(repo),
        "schedule": make_schedule(repo),
        "variable": make_variable(repo),
    }


@pytest.mark.parametrize("username", ["charlie", "victor"])
def test_users_below_the_role_get_403_and_nothing_changes(
    client, request, targets, username
):
    user = request.getfixturevalue(username)
    client.force_login(user)
    before = (
        Run.objects.count(),
        Job.objects.count(),
        Schedule.objects.count(),
        Variable.objects.count(),
    )
    for url, data, _role in mutating_posts(**targets):
        assert client.post(url, data).status_code == 403, url
    after = (
        Run.objects.count(),
        Job.objects.count(),
        Schedule.objects.count(),
        Variable.objects.count(),
    )
    assert before == after
    assert Repository.objects.filter(name="web").exists()


def test_developers_may_act_on_runs_but_not_administer(
    client, bob, targets, monkeypatch
):
    from pipelines import services

    monkeypatch.setattr(services, "redeliver", lambda delivery, **kw: None)
    client.force_login(bob)
    for url, data, role in mutating_posts(**targets):
        response = client.post(url, data)
        if role == "developer":
            assert response.status_code == 302, (url, response.status_code)
        else:
            assert response.status_code == 403, url


def test_get_on_a_post_only_action_is_refused(client, bob, targets):
    client.force_login(bob)
    response = client.get(reverse("pipelines:run-cancel", args=[targets["run"].pk]))
    assert response.status_code == 405


# ---------------------------------------------------------------- actions


def test_trigger_starts_a_run_and_records_who(client, bob, repo):
    client.force_login(bob)
    response = client.post(
        "/repos/web/run/",
        {"ref": "release/2.4", "variables": "DEPLOY=1\n# note\nLEVEL=debug"},
    )
    run = Run.objects.get(repository=repo)
    assert (
        response.status_code == 302 and response["Location"] == run.get_absolute_url()
    )
    assert run.branch == "release/2.4" and run.trigger == "manual"
    assert run.variables == {"DEPLOY": "1", "LEVEL": "debug"}
    assert run.triggered_by == bob
    assert AuditEvent.objects.filter(action="run.trigger", actor=bob).exists()


@pytest.mark.parametrize(
    "data, error",
    [
        ({"ref": ""}, "This field is required"),
        ({"ref": "main..evil"}, "Enter a branch name, tag or commit SHA"),
        ({"ref": "--upload-pack=x"}, "Enter a branch name, tag or commit SHA"),
        ({"ref": "main", "variables": "no equals sign"}, "Line 1: expected KEY=value"),
        ({"ref": "main", "variables": "1BAD=x"}, "is not a valid variable name"),
    ],
)
def test_trigger_form_rejects_bad_input_and_starts_nothing(
    client, bob, repo, data, error
):
    client.force_login(bob)
    response = client.post("/repos/web/run/", data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Run.objects.exists()


def test_cancel_of_a_finished_run_shows_the_reason(client, bob, pipeline):
    client.force_login(bob)
    response = client.post(
        reverse("pipelines:run-cancel", args=[pipeline.pk]), follow=True
    )
    assert "has already finished" in response.content.decode()


def test_retry_failed_creates_new_attempts(client, bob, pipeline):
    client.force_login(bob)
    response = client.post(
        reverse("pipelines:run-retry", args=[pipeline.pk]), follow=True
    )
    assert "Retrying 1 job." in response.content.decode()
    assert pipeline.jobs.filter(name="integration").count() == 2


def test_play_starts_a_manual_job(client, bob, pipeline):
    job = pipeline.jobs.get(name="deploy-prod")
    client.force_login(bob)
    client.post(reverse("pipelines:job-play", args=[job.pk]))
    job.refresh_from_db()
    assert job.status != "manual"
    assert job.approved_by == bob


def test_redeliver_calls_the_service(client, bob, repo, monkeypatch):
    from pipelines import services

    delivery = make_delivery(repo)
    run = make_run(repository=repo)
    calls = []
    monkeypatch.setattr(
        services, "redeliver", lambda d, **kw: calls.append((d.pk, kw["user"])) or run
    )
    client.force_login(bob)
    response = client.post(
        reverse("pipelines:delivery-redeliver", args=["web", delivery.pk]), follow=True
    )
    assert calls == [(delivery.pk, bob)]
    assert f"run #{run.number} started" in response.content.decode()


# ---------------------------------------------------------------- admin forms


def test_admin_connects_a_repository(client, alice):
    client.force_login(alice)
    response = client.post(
        "/repos/new/",
        {
            "name": "api",
            "clone_url": "https://github.com/acme/api.git",
            "default_branch": "main",
            "forge": "github",
            "https_token": "ghp_secret",
            "branch_filter": "main ,  release/* ,",
            "concurrency_limit": "2",
            "poll_interval": "0",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/repos/api/webhooks/"
    repository = Repository.objects.get(name="api")
    assert repository.https_token == "ghp_secret"
    assert repository.branch_filter == "main, release/*"
    assert AuditEvent.objects.filter(action="repository.create").exists()


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"name": "bad name!"}, "Use letters, digits"),
        ({"name": "new"}, "is reserved"),
        ({"clone_url": "https://x/a b.git"}, "cannot contain spaces"),
        ({"clone_url": "--upload-pack=evil"}, "cannot start with a dash"),
        ({"ssh_private_key": "not a key"}, "does not look like a private key"),
        ({"concurrency_limit": "-1"}, "greater than or equal to 0"),
        ({"forge_api_url": "not a url"}, "Enter a valid URL"),
        ({"forge": "svn"}, "Select a valid choice"),
    ],
)
def test_repository_form_rejects_bad_input_and_saves_nothing(
    client, alice, changes, error
):
    client.force_login(alice)
    data = {
        "name": "api",
        "clone_url": "https://github.com/acme/api.git",
        "default_branch": "main",
        "forge": "github",
        "concurrency_limit": "0",
        "poll_interval": "0",
        **changes,
    }
    response = client.post("/repos/new/", data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert "nothing was saved" in response.content.decode()
    assert not Repository.objects.exists()


def test_duplicate_repository_name_is_refused(client, alice, repo):
    client.force_login(alice)
    response = client.post(
        "/repos/new/",
        {
            "name": "web",
            "clone_url": "x",
            "default_branch": "main",
            "forge": "generic",
            "concurrency_limit": "0",
            "poll_interval": "0",
        },
    )
    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert Repository.objects.count() == 1


def test_settings_keep_credentials_when_left_empty_and_clear_on_request(
    client, alice, repo
):
    client.force_login(alice)
    data = {
        "name": "web",
        "clone_url": repo.clone_url,
        "default_branch": "main",
        "forge": "github",
        "concurrency_limit": "0",
        "poll_interval": "0",
        "https_token": "",
    }
    assert client.post("/repos/web/settings/", data).status_code == 302
    repo.refresh_from_db()
    assert repo.https_token == "tok-123"
    client.post("/repos/web/settings/", {**data, "clear_https_token": "on"})
    repo.refresh_from_db()
    assert repo.https_token == ""


def test_renaming_a_repository_redirects_to_the_new_name(client, alice, repo):
    client.force_login(alice)
    data = {
        "name": "web2",
        "clone_url": repo.clone_url,
        "default_branch": "main",
        "forge": "github",
        "concurrency_limit": "0",
        "poll_interval": "0",
    }
    response = client.post("/repos/web/settings/", data)
    assert response["Location"] == "/repos/web2/settings/"


def test_delete_needs_the_typed_name(client, alice, repo):
    client.force_login(alice)
    client.post("/repos/web/delete/", {"confirm_name": "wrong"})
    assert Repository.objects.filter(name="web").exists()
    response = client.post("/repos/web/delete/", {"confirm_name": "web"})
    assert response["Location"] == "/repos/"
    assert not Repository.objects.exists()
    assert AuditEvent.objects.filter(action="repository.delete").exists()


def test_rotate_secret_changes_it(client, alice, repo):
    old = repo.webhook_secret
    client.force_login(alice)
    client.post("/repos/web/webhooks/rotate/")
    repo.refresh_from_db()
    assert repo.webhook_secret != old


def test_schedule_with_valid_cron_gets_its_next_run(client, alice, repo):
    client.force_login(alice)
    response = client.post(
        "/repos/web/schedules/",
        {
            "description": "Nightly",
            "cron": "0  3 * * *",
            "branch": "main",
            "enabled": "on",
            "variables_text": "NIGHTLY=1",
        },
    )
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.cron == "0 3 * * *"
    assert schedule.next_run_at is not None and schedule.next_run_at.hour == 3
    assert schedule.variables == {"NIGHTLY": "1"}
    client.post(f"/repos/web/schedules/{schedule.pk}/toggle/")
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None


@pytest.mark.parametrize(
    "cron", ["", "every day", "61 * * * *", "* * * *", "0 3 * * * *"]
)
def test_schedule_with_bad_cron_is_refused(client, alice, repo, cron):
    client.force_login(alice)
    response = client.post(
        "/repos/web/schedules/", {"description": "x", "cron": cron, "branch": "main"}
    )
    assert response.status_code == 400
    assert not Schedule.objects.exists()


def test_variables_are_created_validated_and_deleted(client, alice, repo):
    client.force_login(alice)
    response = client.post(
        "/repos/web/variables/", {"name": "API_TOKEN", "value": "s3", "is_secret": "on"}
    )
    assert response.status_code == 302
    variable = Variable.objects.get()
    assert variable.is_secret and variable.value == "s3"
    bad = client.post("/repos/web/variables/", {"name": "1-bad", "value": "x"})
    assert bad.status_code == 400 and "variable name" in bad.content.decode()
    dup = client.post("/repos/web/variables/", {"name": "API_TOKEN", "value": "y"})
    assert dup.status_code == 400 and "already exists" in dup.content.decode()
    assert Variable.objects.count() == 1
    client.post(f"/repos/web/variables/{variable.pk}/delete/")
    assert not Variable.objects.exists()


def test_objects_of_another_repository_cannot_be_reached(client, alice, repo):
    other = make_repository(name="other")
    variable = make_variable(other)
    schedule = make_schedule(other)
    client.force_login(alice)
    assert client.post(f"/repos/web/variables/{variable.pk}/delete/").status_code == 404
    assert client.post(f"/repos/web/schedules/{schedule.pk}/delete/").status_code == 404


# ---------------------------------------------------------------- badge


def test_badge_is_public_and_shows_the_newest_status(client, repo):
    make_run(repository=repo, status="failed", branch="main")
    make_run(repository=repo, status="success", branch="dev")
    response = client.get("/badge/web.svg")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/svg+xml")
    assert "max-age=0" in response["Cache-Control"]
    assert b"passing" in response.content
    assert b"failed" in client.get("/badge/web.svg?branch=main").content
    assert b"none" in client.get("/badge/web.svg?branch=nope").content
    missing = client.get("/badge/nope.svg")
    assert missing.status_code == 404 and b"none" in missing.content


def test_badge_escapes_its_label(client, repo):
    body = client.get("/badge/web.svg?label=<script>").content
    assert b"<script>" not in body and b"&lt;script&gt;" in body


def test_500_page_renders_without_a_request_or_database():
    from django.template.loader import render_to_string

    html = render_to_string("500.html")
    assert "Something went wrong" in html
    assert 'class="sidebar"' in html
