"""Personal API tokens: hashed at rest, shown once, revocable, expiring, scoped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core import tokens
from core.models import ApiToken, AuditEvent

from .api_helpers import assert_error, make_world

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_token_is_hashed_at_rest(bob: User) -> None:
    new = tokens.create_token(bob, name="ci", scope="write")
    assert new.secret.startswith("slp_") and len(new.secret) >= 40
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM core_apitoken")
        rows = cursor.fetchall()
    dumped = repr(rows)
    assert new.secret not in dumped
    assert new.secret.removeprefix("slp_") not in dumped
    token = ApiToken.objects.get()
    assert token.key_hash == tokens.hash_secret(new.secret)
    assert token.prefix == new.secret[4:12]


def test_token_authenticates_and_records_last_use(victor: User) -> None:
    new = tokens.create_token(victor, name="ci")
    assert new.token.last_used_at is None
    response = bearer(new.secret).get("/api/v1/runs/")
    assert response.status_code == 200
    new.token.refresh_from_db()
    assert new.token.last_used_at is not None


def test_revoked_token_is_refused(victor: User) -> None:
    new = tokens.create_token(victor, name="ci")
    assert tokens.revoke_token(new.token, user=victor)
    assert not tokens.revoke_token(new.token, user=victor)
    assert_error(bearer(new.secret).get("/api/v1/runs/"), 401, "authentication_failed")


def test_expired_token_is_refused(victor: User) -> None:
    new = tokens.create_token(
        victor, name="ci", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert_error(bearer(new.secret).get("/api/v1/runs/"), 401, "authentication_failed")


def test_unknown_or_malformed_token_is_refused(db: None) -> None:
    assert_error(bearer("slp_" + "x" * 43).get("/api/v1/runs/"), 401)
    assert_error(bearer("nope").get("/api/v1/runs/"), 401)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer a b")
    assert_error(client.get("/api/v1/runs/"), 401)


def test_inactive_user_token_is_refused(victor: User) -> None:
    new = tokens.create_token(victor, name="ci")
    User.objects.filter(pk=victor.pk).update(is_active=False)
    assert_error(bearer(new.secret).get("/api/v1/runs/"), 401)


def test_read_scope_cannot_write(bob: User) -> None:
    world = make_world()
    read = tokens.create_token(bob, name="ro", scope="read").secret
    write = tokens.create_token(bob, name="rw", scope="write").secret
    body = {"repository": world.repository.pk, "ref": "main"}
    assert bearer(read).get("/api/v1/runs/").status_code == 200
    err = assert_error(bearer(read).post("/api/v1/runs/", body, format="json"), 403)
    assert "read scope" in err["message"]
    assert bearer(write).post("/api/v1/runs/", body, format="json").status_code == 201


def test_a_token_cannot_exceed_its_users_role(victor: User) -> None:
    world = make_world()
    secret = tokens.create_token(victor, name="rw", scope="write").secret
    response = bearer(secret).post(
        f"/api/v1/runs/{world.run.pk}/cancel/", format="json"
    )
    assert_error(response, 403, "permission_denied")


def test_token_page_shows_the_secret_once_and_revokes(charlie: User) -> None:
    client = Client()
    client.force_login(charlie)
    assert client.get("/settings/tokens/").status_code == 200
    response = client.post(
        "/settings/tokens/", {"name": "laptop", "scope": "read", "expires": "30"}
    )
    assert response.status_code == 200
    new = response.context["created"]
    assert new.secret.encode() in response.content
    token = ApiToken.objects.get(user=charlie)
    assert token.expires_at is not None and token.scope == "read"
    listing = client.get("/settings/tokens/")
    assert new.secret.encode() not in listing.content
    assert f"slp_{token.prefix}".encode() in listing.content
    assert client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    actions = list(
        AuditEvent.objects.order_by("id").values_list("action", "source", "actor_id")
    )
    assert actions == [
        ("token.create", "ui", charlie.pk),
        ("token.revoke", "ui", charlie.pk),
    ]


def test_token_page_rejects_bad_input_and_other_users_tokens(
    bob: User, victor: User
) -> None:
    client = Client()
    client.force_login(bob)
    response = client.post(
        "/settings/tokens/", {"name": " ", "scope": "admin", "expires": "2"}
    )
    assert response.status_code == 400
    assert not ApiToken.objects.exists()
    other = tokens.create_token(victor, name="theirs").token
    assert client.post(f"/settings/tokens/{other.pk}/revoke/").status_code == 404
    assert client.get(f"/settings/tokens/{other.pk}/revoke/").status_code == 405
    other.refresh_from_db()
    assert other.revoked_at is None


def test_token_page_needs_login(db: None) -> None:
    response = Client().get("/settings/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
