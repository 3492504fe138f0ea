"""The cluster admin's "Test connection" action, against the fake API server."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.models import AuditEvent

from .factories import make_cluster

pytestmark = pytest.mark.django_db


def test_test_connection_action_reports_the_version_and_audits(admin_client, fake):
    good = make_cluster(fake, name="good")
    bad = make_cluster(
        None,
        name="gone",
        auth_mode="token",
        api_server="https://127.0.0.1:9",
        token="t",
    )
    response = admin_client.post(
        reverse("admin:clusters_cluster_changelist"),
        {"action": "test_connection", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    said = sorted(str(message) for message in response.context["messages"])
    assert said[0].startswith("gone: cannot reach the cluster")
    assert said[1] == "good: reachable, v1.36.2"
    events = AuditEvent.objects.filter(action="cluster.test_connection")
    outcomes = {e.target_id: e.details["ok"] for e in events}
    assert outcomes == {str(good.pk): True, str(bad.pk): False}
    assert {e.source for e in events} == {"admin"}
