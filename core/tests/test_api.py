"""The REST API: reads, writes through the services, errors, audit, pagination."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from core.models import ApiToken, AuditEvent
from pipelines.models import (
    Deployment,
    Environment,
    Job,
    Repository,
    Run,
    Schedule,
    Variable,
)
from pipelines.tests.factories import make_run

from .api_helpers import assert_error, make_world, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def test_anonymous_gets_401_with_the_error_body() -> None:
    response = APIClient().get("/api/v1/runs/")
    err = assert_error(response, 401, "not_authenticated")
    assert err["details"] == {}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_api_url_is_a_json_404(alice: User) -> None:
    assert_error(token_client(alice).get("/api/v1/nothing-here/"), 404, "not_found")
    assert_error(APIClient().get("/api/v2/"), 404, "not_found")


def test_session_login_works_for_the_api(victor: User) -> None:
    client = APIClient()
    client.force_login(victor)
    assert client.get("/api/v1/runs/").status_code == 200


def test_run_list_filters_and_paginates(victor: User) -> None:
    world = make_world()
    for _ in range(3):
        make_run(repository=world.repository, branch="feature/x")
    client = token_client(victor, ApiToken.Scope.READ)
    body = client.get("/api/v1/runs/", {"branch": "feature/x", "page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    assert {r["branch"] for r in body["results"]} == {"feature/x"}
    failed = client.get("/api/v1/runs/", {"status": "failed"}).json()
    assert [r["id"] for r in failed["results"]] == [world.run.pk]
    by_repo = client.get("/api/v1/runs/", {"repository": world.repository.pk}).json()
    assert by_repo["count"] == 4
    err = assert_error(client.get("/api/v1/runs/", {"status": "bogus"}), 400)
    assert "status" in err["details"]
    assert_error(client.get("/api/v1/runs/", {"page": 99}), 404, "not_found")


def test_run_detail_has_stages_and_jobs(victor: User) -> None:
    world = make_world()
    body = token_client(victor).get(f"/api/v1/runs/{world.run.pk}/").json()
    assert body["repository_name"] == world.repository.name
    [stage] = body["stages"]
    assert stage["name"] == "build"
    assert {j["name"] for j in stage["jobs"]} == {"compile", "unit", "deploy"}


def test_start_a_run_through_the_service(bob: User) -> None:
    world = make_world()
    response = token_client(bob).post(
        "/api/v1/runs/",
        {"repository": world.repository.pk, "ref": "main", "variables": {"X": "1"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.trigger == Run.Trigger.API and run.triggered_by == bob
    assert run.variables == {"X": "1"}
    event = AuditEvent.objects.get(action="run.trigger")
    assert event.source == "api" and event.actor == bob


def test_start_a_run_rejects_bad_input(bob: User) -> None:
    world = make_world()
    client = token_client(bob)
    for body in (
        {"repository": world.repository.pk, "ref": "--upload-pack=x"},
        {"repository": 999999, "ref": "main"},
        {"repository": world.repository.pk, "ref": "main", "variables": {"1X": "a"}},
        {"repository": world.repository.pk, "ref": "main", "variables": []},
        [],
    ):
        assert_error(client.post("/api/v1/runs/", body, format="json"), 400)
    response = client.post(
        "/api/v1/runs/", "{not json", content_type="application/json"
    )
    assert_error(response, 400, "parse_error")
    assert Run.objects.filter(trigger=Run.Trigger.API).count() == 0


def test_viewer_cannot_start_a_run(victor: User) -> None:
    world = make_world()
    response = token_client(victor).post(
        "/api/v1/runs/", {"repository": world.repository.pk, "ref": "main"}
    )
    assert_error(response, 403, "permission_denied")


def test_action_error_is_409(bob: User) -> None:
    world = make_world()
    client = token_client(bob)
    err = assert_error(
        client.post(f"/api/v1/runs/{world.run.pk}/cancel/"), 409, "conflict"
    )
    assert "finished" in err["message"]
    assert_error(client.post(f"/api/v1/jobs/{world.job.pk}/play/"), 409, "conflict")


def test_job_actions_go_through_the_services(bob: User) -> None:
    world = make_world()
    client = token_client(bob)
    response = client.post(f"/api/v1/jobs/{world.failed_job.pk}/retry/")
    assert response.status_code == 201, response.content
    assert response.json()["attempt"] == 2
    response = client.post(f"/api/v1/jobs/{world.manual_job.pk}/play/")
    assert response.status_code == 200 and response.json()["status"] == "created"
    assert_error(client.post(f"/api/v1/jobs/{world.failed_job.pk}/retry/"), 409)
    actions = set(
        AuditEvent.objects.filter(source="api").values_list("action", flat=True)
    )
    assert {"job.retry", "job.play"} <= actions


def test_retry_failed_jobs_of_a_run(bob: User) -> None:
    world = make_world()
    response = token_client(bob).post(f"/api/v1/runs/{world.run.pk}/retry-failed/")
    assert response.status_code == 200, response.content
    assert Job.objects.filter(run=world.run, attempt=2).count() == 1


def test_job_log_with_a_cursor(victor: User) -> None:
    world = make_world()
    client = token_client(victor)
    url = f"/api/v1/jobs/{world.job.pk}/log/"
    first = client.get(url, {"limit": 2}).json()
    assert [line[0] for line in first["lines"]] == [1, 2]
    assert first["lines"][0][2] == "one" and isinstance(first["lines"][0][1], float)
    assert first["next_cursor"] == 2 and first["finished"] is False
    rest = client.get(url, {"after": first["next_cursor"], "limit": 2}).json()
    assert rest["lines"] == [[3, rest["lines"][0][1], "three"]]
    assert rest["next_cursor"] == 3 and rest["finished"] is True
    empty = client.get(url, {"after": 3}).json()
    assert empty == {"lines": [], "next_cursor": 3, "finished": True}
    assert_error(client.get(url, {"limit": 0}), 400)
    assert_error(client.get(url, {"after": "x"}), 400)


def test_artifacts_list_and_download(victor: User) -> None:
    world = make_world()
    client = token_client(victor)
    [listed] = client.get(f"/api/v1/jobs/{world.job.pk}/artifacts/").json()
    assert listed["name"] == "dist"
    response = client.get(listed["download_url"])
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"PK")
    assert "attachment" in response["Content-Disposition"]


def test_secret_values_are_write_only(alice: User) -> None:
    world = make_world()
    client = token_client(alice)
    listed = client.get(
        "/api/v1/variables/", {"repository": world.repository.pk}
    ).json()["results"]
    by_name = {v["name"]: v for v in listed}
    assert by_name["PLAIN"]["value"] == "shown"
    assert by_name["TOKEN"]["value"] is None and by_name["TOKEN"]["is_secret"]
    created = client.post(
        "/api/v1/variables/",
        {
            "repository": world.repository.pk,
            "name": "NEW_SECRET",
            "value": "hunter2",
            "is_secret": True,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["value"] is None
    assert b"hunter2" not in created.content
    assert Variable.objects.get(name="NEW_SECRET").value == "hunter2"
    turned = client.patch(
        f"/api/v1/variables/{world.secret.pk}/", {"is_secret": False}, format="json"
    )
    assert_error(turned, 400)
    clash = client.post(
        "/api/v1/variables/",
        {"repository": world.repository.pk, "name": "PLAIN", "value": "x"},
        format="json",
    )
    assert_error(clash, 400)
    event = AuditEvent.objects.get(action="variable.create")
    assert "hunter2" not in str(event.details)


def test_repository_credentials_are_write_only(alice: User) -> None:
    client = token_client(alice)
    response = client.post(
        "/api/v1/repositories/",
        {
            "name": "new-repo",
            "clone_url": "https://git.example.com/new.git",
            "https_token": "tok-123",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert "https_token" not in body and body["has_https_token"] is True
    assert b"tok-123" not in response.content
    assert Repository.objects.get(name="new-repo").https_token == "tok-123"
    detail = client.get(f"/api/v1/repositories/{body['id']}/").json()
    assert "webhook_secret" not in detail and "https_token" not in detail
    assert AuditEvent.objects.filter(action="repository.create", source="api").exists()
    dup = client.post(
        "/api/v1/repositories/",
        {"name": "new-repo", "clone_url": "https://x/y.git"},
        format="json",
    )
    assert_error(dup, 400)


def test_developer_cannot_manage_repositories(bob: User) -> None:
    world = make_world()
    response = token_client(bob).delete(f"/api/v1/repositories/{world.repository.pk}/")
    assert_error(response, 403)
    assert Repository.objects.filter(pk=world.repository.pk).exists()


def test_schedule_cron_is_validated_and_next_run_computed(alice: User) -> None:
    world = make_world()
    client = token_client(alice)
    bad = client.post(
        "/api/v1/schedules/",
        {
            "repository": world.repository.pk,
            "description": "x",
            "cron": "61 * * * *",
            "branch": "main",
        },
        format="json",
    )
    assert "cron" in assert_error(bad, 400)["details"]
    good = client.post(
        "/api/v1/schedules/",
        {
            "repository": world.repository.pk,
            "description": "nightly",
            "cron": "0  3 * * *",
            "branch": "main",
        },
        format="json",
    )
    assert good.status_code == 201, good.content
    body = good.json()
    assert body["cron"] == "0 3 * * *" and body["next_run_at"]
    paused = client.patch(
        f"/api/v1/schedules/{body['id']}/", {"enabled": False}, format="json"
    )
    assert paused.json()["next_run_at"] is None
    assert Schedule.objects.get(pk=body["id"]).next_run_at is None


def test_deliveries_per_repository_and_redeliver(bob: User) -> None:
    world = make_world()
    client = token_client(bob)
    listed = client.get(
        "/api/v1/deliveries/", {"repository": world.repository.pk}
    ).json()
    assert [d["id"] for d in listed["results"]] == [world.delivery.pk]
    # A rejected delivery cannot be redelivered: the service says so, 409.
    assert_error(client.post(f"/api/v1/deliveries/{world.delivery.pk}/redeliver/"), 409)


def test_clusters_read_without_credentials(victor: User) -> None:
    world = make_world()
    client = token_client(victor)
    body = client.get(f"/api/v1/clusters/{world.cluster.pk}/").json()
    assert body["name"] == world.cluster.name
    assert "token" not in body and "kubeconfig" not in body
    assert client.get(f"/api/v1/clusters/{world.cluster.pk}/objects/pods/").json() == []
    assert_error(client.get(f"/api/v1/clusters/{world.cluster.pk}/objects/bogus/"), 404)


def test_cluster_actions_need_an_operator_and_are_audited(
    bob: User, olivia: User
) -> None:
    world = make_world()
    url = f"/api/v1/clusters/{world.cluster.pk}/scale/"
    body = {"kind": "deployments", "namespace": "default", "name": "web", "replicas": 2}
    assert_error(token_client(bob).post(url, body, format="json"), 403)
    client = token_client(olivia)
    assert_error(client.post(url, {**body, "replicas": -1}, format="json"), 400)
    assert_error(client.post(url, {**body, "kind": "pods"}, format="json"), 400)
    # The cluster is unreachable: the action fails, 409, and is audited anyway.
    err = assert_error(client.post(url, body, format="json"), 409, "action_failed")
    assert err["message"]
    event = AuditEvent.objects.get(action="cluster.scale")
    assert event.source == "api" and event.actor == olivia
    assert event.details["ok"] is False


def test_audit_api_is_for_admins(alice: User, olivia: User) -> None:
    make_world()
    token_client(alice).post(
        "/api/v1/repositories/",
        {"name": "audited", "clone_url": "https://x/y.git"},
        format="json",
    )
    assert_error(token_client(olivia).get("/api/v1/audit/"), 403)
    body = (
        token_client(alice)
        .get("/api/v1/audit/", {"action": "repository.", "actor": "alice"})
        .json()
    )
    assert [e["action"] for e in body["results"]] == ["repository.create"]
    assert body["results"][0]["source"] == "api"
    assert_error(token_client(alice).get("/api/v1/audit/", {"since": "yesterday"}), 400)


def test_audit_api_takes_any_offset_python_takes(alice: User) -> None:
    make_world()
    token_client(alice).post(
        "/api/v1/repositories/",
        {"name": "audited", "clone_url": "https://x/y.git"},
        format="json",
    )
    client = token_client(alice)
    # PostgreSQL refuses offsets beyond ±15:59; the filter compares in UTC instead.
    wide = client.get("/api/v1/audit/", {"since": "2000-01-01T00:00:00-20:40"})
    assert wide.status_code == 200
    assert "repository.create" in [e["action"] for e in wide.json()["results"]]
    future = client.get("/api/v1/audit/", {"since": "2999-01-01T00:00:00+23:00"})
    assert future.status_code == 200 and future.json()["results"] == []
    # The database still answers afterwards (a refused query would have spoiled it).
    assert client.get("/api/v1/audit/").status_code == 200


# --- environments: rollback and promote (rows only: the rollout is queued) ----------


def _earlier_deployment(world: Any) -> Deployment:
    """Give WORLD's environment a successful deployment before its current one."""
    return Deployment.objects.create(
        environment=world.environment,
        status=Deployment.Status.SUCCESS,
        run=world.run,
        commit_sha="a" * 40,
        namespace="staging",
        manifests="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old\n",
        created_at=world.deployment.created_at - timedelta(hours=1),
    )


def test_operator_rolls_back_through_the_api_and_it_is_audited(olivia: User) -> None:
    world = make_world()
    earlier = _earlier_deployment(world)
    url = f"/api/v1/environments/{world.environment.pk}/rollback/"
    response = token_client(olivia).post(url, {}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["status"], body["source"]) == (
        "rollback",
        "running",
        earlier.pk,
    )
    assert body["commit_sha"] == earlier.commit_sha and body["user"] == "olivia"
    rollback = Deployment.objects.get(pk=body["id"])
    assert rollback.environment == world.environment
    assert rollback.manifests == earlier.manifests
    event = AuditEvent.objects.get(action="environment.rollback")
    assert (event.source, event.actor, event.target_id) == (
        "api",
        olivia,
        str(world.environment.pk),
    )
    assert event.details == {
        "deployment": rollback.pk,
        "to": earlier.pk,
        "commit": earlier.commit_sha,
    }
    # One rollout at a time: the queued rollback is still running.
    busy = token_client(olivia).post(url, {"to": earlier.pk}, format="json")
    assert "running" in assert_error(busy, 409, "conflict")["message"]


def test_rollback_to_a_named_deployment_of_another_environment_is_refused(
    olivia: User,
) -> None:
    world, other = make_world(), make_world()
    url = f"/api/v1/environments/{world.environment.pk}/rollback/"
    response = token_client(olivia).post(
        url, {"to": other.deployment.pk}, format="json"
    )
    assert "to" in assert_error(response, 400, "invalid")["details"]
    assert not Deployment.objects.filter(kind=Deployment.Kind.ROLLBACK).exists()


def test_viewer_and_developer_cannot_roll_back_or_promote(
    victor: User, bob: User
) -> None:
    world = make_world()
    _earlier_deployment(world)
    rollback = f"/api/v1/environments/{world.environment.pk}/rollback/"
    promote = f"/api/v1/environments/{world.environment.pk}/promote/"
    for user in (victor, bob):
        client = token_client(user)
        assert_error(client.post(rollback, {}, format="json"), 403, "permission_denied")
        response = client.post(promote, {"source": world.environment.pk}, format="json")
        assert_error(response, 403, "permission_denied")
    assert Deployment.objects.count() == 2
    assert not AuditEvent.objects.filter(action__startswith="environment.").exists()


def test_rollback_without_an_earlier_deployment_is_a_conflict(olivia: User) -> None:
    world = make_world()
    url = f"/api/v1/environments/{world.environment.pk}/rollback/"
    response = token_client(olivia).post(url, {}, format="json")
    err = assert_error(response, 409, "conflict")
    assert "no earlier deployment" in err["message"] and err["details"] == {}
    assert Deployment.objects.count() == 1
    assert not AuditEvent.objects.filter(action="environment.rollback").exists()


def test_operator_promotes_staging_to_production(olivia: User) -> None:
    world = make_world()
    production = Environment.objects.create(
        repository=world.repository,
        name="production",
        cluster=world.cluster,
        namespace="prod",
    )
    client = token_client(olivia)
    url = f"/api/v1/environments/{production.pk}/promote/"
    response = client.post(url, {"source": world.environment.pk}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["environment"], body["source"]) == (
        "promote",
        production.pk,
        world.deployment.pk,
    )
    assert body["namespace"] == "prod"
    promoted = Deployment.objects.get(pk=body["id"])
    assert "namespace: prod" in promoted.manifests
    event = AuditEvent.objects.get(action="environment.promote")
    assert (event.source, event.actor, event.target_id) == (
        "api",
        olivia,
        str(production.pk),
    )
    assert event.details["from"] == "staging"
    # Errors keep the one body: no such source here, and nothing to promote.
    other = make_world()
    stranger = client.post(url, {"source": other.environment.pk}, format="json")
    assert "source" in assert_error(stranger, 400, "invalid")["details"]
    empty = Environment.objects.create(
        repository=world.repository, name="qa", cluster=world.cluster, namespace="qa"
    )
    nothing = client.post(url, {"source": empty.pk}, format="json")
    assert "no successful deployment" in assert_error(nothing, 409)["message"]
    assert_error(client.post(url, {}, format="json"), 400, "invalid")
