"""The Django admin of the pipeline models: pages render, actions use the services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pipelines.models import Job, Run, Variable
from pipelines.tests.factories import (
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

MODELS = [
    "repository",
    "run",
    "job",
    "logchunk",
    "artifact",
    "variable",
    "webhookdelivery",
    "schedule",
]


@pytest.fixture
def data():
    repo = make_repository(name="web", https_token="tok-xyz")
    run = make_pipeline(repo, status="failed")
    make_artifact(run.jobs.first())
    make_delivery(repo)
    make_schedule(repo)
    make_variable(repo, name="SECRET", value="hunter2", is_secret=True)
    return {"repo": repo, "run": run}


@pytest.mark.parametrize("model", MODELS)
def test_changelists_and_searches_render(admin_client, data, model):
    url = reverse(f"admin:pipelines_{model}_changelist")
    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": "web"}).status_code == 200


def test_change_pages_never_show_credentials_or_secrets(admin_client, data):
    repo = data["repo"]
    body = admin_client.get(
        reverse("admin:pipelines_repository_change", args=[repo.pk])
    ).content.decode()
    assert "tok-xyz" not in body
    assert repo.webhook_secret not in body
    variable = Variable.objects.get(name="SECRET")
    page = admin_client.get(
        reverse("admin:pipelines_variable_change", args=[variable.pk])
    )
    assert "hunter2" not in page.content.decode()
    listing = admin_client.get(reverse("admin:pipelines_variable_changelist"))
    assert "hunter2" not in listing.content.decode()


def test_saving_a_secret_with_an_empty_value_keeps_it(admin_client, data):
    variable = Variable.objects.get(name="SECRET")
    response = admin_client.post(
        reverse("admin:pipelines_variable_change", args=[variable.pk]),
        {
            "repository": data["repo"].pk,
            "name": "SECRET",
            "value": "",
            "is_secret": "on",
        },
    )
    assert response.status_code == 302
    variable.refresh_from_db()
    assert variable.value == "hunter2"


def test_cancel_runs_action_cancels_unfinished_runs_and_reports_finished_ones(
    admin_client, data
):
    running = make_run(repository=data["repo"], status="running")
    make_job(run=running, status="pending", started_at=None, finished_at=None)
    response = admin_client.post(
        reverse("admin:pipelines_run_changelist"),
        {"action": "cancel_runs", "_selected_action": [running.pk, data["run"].pk]},
        follow=True,
    )
    body = response.content.decode()
    assert "Runs canceled: 1." in body
    assert "has already finished" in body
    assert running.jobs.get().status == Job.Status.CANCELED


def test_retry_failed_jobs_action(admin_client, data):
    run = data["run"]
    admin_client.post(
        reverse("admin:pipelines_run_changelist"),
        {"action": "retry_failed_jobs", "_selected_action": [run.pk]},
    )
    assert run.jobs.filter(name="integration").count() == 2
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING


def test_redeliver_action_calls_the_service(admin_client, data, monkeypatch):
    from pipelines import services

    delivery = data["repo"].deliveries.get()
    seen = []
    monkeypatch.setattr(services, "redeliver", lambda d, **kw: seen.append(d.pk))
    admin_client.post(
        reverse("admin:pipelines_webhookdelivery_changelist"),
        {"action": "redeliver", "_selected_action": [delivery.pk]},
    )
    assert seen == [delivery.pk]


def test_schedule_pause_action(admin_client, data):
    schedule = data["repo"].schedules.get()
    admin_client.post(
        reverse("admin:pipelines_schedule_changelist"),
        {"action": "disable", "_selected_action": [schedule.pk]},
    )
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None


def test_every_model_of_slipway_is_in_the_admin():
    from django.apps import apps
    from django.contrib import admin

    ours = [
        model
        for model in apps.get_models()
        if model._meta.app_label in {"pipelines", "clusters", "core"}
    ]
    missing = [m._meta.label for m in ours if not admin.site.is_registered(m)]
    assert len(ours) >= 15 and missing == []


@pytest.mark.parametrize("model", ["stage", "runcounter", "environment", "deployment"])
def test_engine_and_delivery_rows_render_in_the_admin(admin_client, data, model):
    from pipelines.models import Deployment, Environment

    environment = Environment.objects.create(repository=data["repo"], name="staging")
    Deployment.objects.create(environment=environment, commit_sha="abc123")
    url = reverse(f"admin:pipelines_{model}_changelist")
    page = admin_client.get(url, {"q": "web"})
    assert page.status_code == 200
    assert admin_client.get(url).content.count(b'class="action-checkbox"') >= 1


def test_rollback_action_queues_a_rollback_or_says_why_not(admin_client, data):
    from pipelines.models import Deployment, Environment

    environment = Environment.objects.create(repository=data["repo"], name="prod")
    response = admin_client.post(
        reverse("admin:pipelines_environment_changelist"),
        {"action": "roll_back", "_selected_action": [environment.pk]},
        follow=True,
    )
    assert "has no earlier deployment" in response.content.decode()
    assert not Deployment.objects.filter(kind="rollback").exists()
