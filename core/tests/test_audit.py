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
