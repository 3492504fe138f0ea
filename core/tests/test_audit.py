"""The audit log: every API write is recorded with its source; admins filter it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from core import audit
from core.models import AuditEvent

from .api_helpers import make_world, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def test_every_api_write_is_audited_as_api(alice: User) -> None:
    world = make_world()
    client = token_client(alice)
    writes = [
        ("post", "/api/v1/runs/", {"repository": world.repository.pk, "ref": "main"}),
        ("post", f"/api/v1/jobs/{world.failed_job.pk}/retry/", None),
        ("post", f"/api/v1/jobs/{world.manual_job.pk}/play/", None),
        ("patch", f"/api/v1/repositories/{world.repository.pk}/", {"description": "x"}),
        ("post", "/api/v1/variables/", {"name": "G", "value": "1"}),
        ("delete", f"/api/v1/schedules/{world.schedule.pk}/", None),
    ]
    for method, url, body in writes:
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code in (200, 201, 204), (url, response.content)
    events = AuditEvent.objects.exclude(action="token.create")
    assert sorted(events.values_list("action", flat=True)) == sorted(
        [
            "run.trigger",
            "job.retry",
            "job.play",
            "repository.update",
            "variable.create",
            "schedule.delete",
        ]
    )
    assert set(events.values_list("source", flat=True)) == {"api"}
    assert set(events.values_list("actor_name", flat=True)) == {"alice"}
    assert all(e.ip_address == "127.0.0.1" for e in events)


def test_refused_api_writes_leave_no_audit_row(victor: User) -> None:
    world = make_world()
    response = token_client(victor).post(
        "/api/v1/runs/", {"repository": world.repository.pk, "ref": "main"}
    )
    assert response.status_code == 403
    assert not AuditEvent.objects.exclude(action="token.create").exists()


def test_source_defaults_to_ui_without_an_api_request(bob: User) -> None:
    event = audit.record("thing.do", actor=bob)
    assert event.source == "ui"


def test_audit_page_is_for_admins_and_filters(alice: User, olivia: User) -> None:
    audit.record("run.cancel", actor=olivia, details={"n": 1})
    audit.record("cluster.scale", actor=olivia, source="api")
    audit.record("run.trigger", actor=alice)
    client = Client()
    client.force_login(olivia)
    assert client.get("/audit/").status_code == 403
    client.force_login(alice)
    page = client.get("/audit/")
    assert page.status_code == 200
    assert [e.action for e in page.context["page"]] == [
        "run.trigger",
        "cluster.scale",
        "run.cancel",
    ]
    filtered = client.get("/audit/", {"actor": "olivia", "action": "run."})
    assert [e.action for e in filtered.context["page"]] == ["run.cancel"]
    by_source = client.get("/audit/", {"source": "api"})
    assert [e.action for e in by_source.context["page"]] == ["cluster.scale"]
    today = AuditEvent.objects.first().created_at.date().isoformat()
    assert len(client.get("/audit/", {"date": today}).context["page"]) == 3
    assert len(client.get("/audit/", {"date": "2001-01-01"}).context["page"]) == 0
    bad = client.get("/audit/", {"date": "not-a-date"})
    assert bad.status_code == 400


def test_audit_page_paginates(alice: User) -> None:
    for n in range(60):
        audit.record(f"thing.{n}", actor=alice)
    client = Client()
    client.force_login(alice)
    first = client.get("/audit/")
    assert len(first.context["page"]) == 50
    assert b'class="pagination"' in first.content
    assert len(client.get("/audit/", {"page": 2}).context["page"]) == 10


# --- the admin ----------------------------------------------------------------------

OUR_APPS = {"core", "pipelines", "clusters", "auth"}


def test_every_model_admin_of_ours_is_audited() -> None:
    from django.contrib import admin

    from core.admin import AuditedAdminMixin

    ours = {
        model._meta.label: model_admin
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in OUR_APPS
    }
    # The walk must see the admins it is about (a broken registry is no pass).
    assert {"pipelines.Variable", "clusters.Cluster", "auth.User"} <= set(ours)
    unaudited = sorted(
        label
        for label, model_admin in ours.items()
        if not isinstance(model_admin, AuditedAdminMixin)
    )
    assert not unaudited, f"Model admins that skip the audit log: {unaudited}"


def _admin(user: User) -> Client:
    client = Client(REMOTE_ADDR="10.9.8.7")
    client.force_login(user)
    return client


def _saved(response: Any) -> None:
    """Assert an admin form was accepted (it redirects; a refusal re-renders)."""
    form = response.context.get("adminform") if response.context else None
    assert response.status_code == 302, form and form.form.errors


def _admin_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(source="admin").order_by("id"))


def test_admin_add_change_delete_of_a_secret_are_audited_without_its_value(
    alice: User,
) -> None:
    from pipelines.models import Variable

    client = _admin(alice)
    add = {"name": "DEPLOY_KEY", "value": "hunter2-secret", "is_secret": "on"}
    _saved(client.post("/admin/pipelines/variable/add/", add))
    variable = Variable.objects.get(name="DEPLOY_KEY")
    url = f"/admin/pipelines/variable/{variable.pk}/change/"
    # Left empty, the value is kept, and is not reported as changed.
    _saved(client.post(url, {"name": "DEPLOY_KEY_2", "value": "", "is_secret": "on"}))
    _saved(client.post(url, {"name": "DEPLOY_KEY_2", "value": "rotated-s3cret"}))
    variable.refresh_from_db()
    assert variable.value == "rotated-s3cret" and not variable.is_secret
    delete = f"/admin/pipelines/variable/{variable.pk}/delete/"
    _saved(client.post(delete, {"post": "yes"}))
    assert not Variable.objects.filter(pk=variable.pk).exists()

    events = _admin_events()
    assert [(e.action, e.details.get("fields")) for e in events] == [
        ("variable.create", ["is_secret", "name", "value"]),
        ("variable.update", ["name"]),
        ("variable.update", ["is_secret", "value"]),
        ("variable.delete", None),
    ]
    for event in events:
        assert event.actor == alice and event.ip_address == "10.9.8.7"
        assert event.target_type == "pipelines.variable"
        assert event.target_id == str(variable.pk)
        text = f"{event.details} {event.target_repr}"
        assert "hunter2" not in text and "s3cret" not in text


def test_cluster_credentials_changed_in_the_admin_are_named_not_recorded(
    alice: User,
) -> None:
    from clusters.models import Cluster

    client = _admin(alice)
    form = {
        "name": "prod-eu",
        "api_server": "https://10.0.0.1:6443",
        "auth_mode": "token",
        "token": "sa-token-very-secret",
        "verify_tls": "on",
    }
    _saved(client.post("/admin/clusters/cluster/add/", form))
    cluster = Cluster.objects.get(name="prod-eu")
    change = f"/admin/clusters/cluster/{cluster.pk}/change/"
    _saved(client.post(change, {**form, "token": "rotated-token-secret"}))
    assert Cluster.objects.get(pk=cluster.pk).token == "rotated-token-secret"
    # "Delete selected" deletes in bulk: each row is still recorded.
    other = Cluster.objects.create(name="scratch", auth_mode="in_cluster")
    response = client.post(
        "/admin/clusters/cluster/",
        {
            "action": "delete_selected",
            "_selected_action": [cluster.pk, other.pk],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Cluster.objects.exists()

    events = _admin_events()
    # Rows are deleted in the admin's order (by name).
    assert [(e.action, e.target_repr) for e in events] == [
        ("cluster.create", "prod-eu"),
        ("cluster.update", "prod-eu"),
        ("cluster.delete", "prod-eu"),
        ("cluster.delete", "scratch"),
    ]
    assert events[1].details == {"fields": ["token"]}
    assert all("secret" not in str(e.details) for e in events)


def test_user_and_group_changes_in_the_admin_are_audited(
    alice: User, charlie: User
) -> None:
    from django.contrib.auth.models import Group

    operators = Group.objects.get_or_create(name="operator")[0]
    client = _admin(alice)
    form = {
        "username": "charlie",
        "email": "charlie@example.com",
        "is_active": "on",
        "groups": [operators.pk],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "10:00:00",
    }
    _saved(client.post(f"/admin/auth/user/{charlie.pk}/change/", form))
    assert list(charlie.groups.all()) == [operators]
    password = f"/admin/auth/user/{charlie.pk}/password/"
    new = "Correct-horse-42-battery"
    _saved(
        client.post(
            password,
            {"password1": new, "password2": new, "set_usable_password": "true"},
        )
    )
    _saved(client.post("/admin/auth/group/add/", {"name": "release-team"}))
    events = _admin_events()
    assert [(e.action, e.target_repr) for e in events] == [
        ("user.update", "charlie"),
        ("user.password_change", "charlie"),
        ("group.create", "release-team"),
    ]
    assert "groups" in events[0].details["fields"]
    assert new not in str([e.details for e in events])


def test_admin_actions_through_the_services_record_the_admin_source(
    alice: User,
) -> None:
    from pipelines.models import Run
    from pipelines.tests.factories import make_run

    run = make_run(status=Run.Status.RUNNING)
    client = _admin(alice)
    response = client.post(
        "/admin/pipelines/run/",
        {"action": "cancel_runs", "_selected_action": [run.pk]},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="run.cancel")
    assert (event.source, event.actor, event.target_id) == ("admin", alice, str(run.pk))
    assert event.ip_address == "10.9.8.7"


def test_cluster_credentials_are_never_shown_back_in_the_admin(alice: User) -> None:
    from clusters.models import Cluster

    cluster = Cluster.objects.create(
        name="prod-us",
        api_server="https://10.0.0.2:6443",
        auth_mode="token",
        token="sa-token-do-not-show",
        kubeconfig="apiVersion: v1\\nkind: Config # kubeconfig-do-not-show",
    )
    client = _admin(alice)
    change = f"/admin/clusters/cluster/{cluster.pk}/change/"
    page = client.get(change).content.decode()
    assert "sa-token-do-not-show" not in page
    assert "kubeconfig-do-not-show" not in page
    assert 'name="token"' in page and 'name="kubeconfig"' in page
    # Saving with the write-only fields left empty keeps what is stored.
    form = {
        "name": "prod-us",
        "api_server": "https://10.0.0.2:6443",
        "auth_mode": "token",
        "token": "",
        "kubeconfig": "",
        "verify_tls": "on",
        "namespaces": "[]",
    }
    _saved(client.post(change, form))
    cluster.refresh_from_db()
    assert cluster.token == "sa-token-do-not-show"
    assert "kubeconfig-do-not-show" in cluster.kubeconfig
