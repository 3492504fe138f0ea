"""Production security settings: CSRF on every form, secure cookies, HSTS, check --deploy.

Settings are read from the environment once, at import; the tests that depend on
that import ``config.settings`` in a subprocess with a production-like environment
(and nothing of the test runner's), as a real deployment would.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from core.models import AuditEvent
from pipelines.models import Run
from pipelines.tests.factories import make_repository, make_run

from .api_helpers import assert_error, token_client

BASE_DIR = Path(django_settings.BASE_DIR)


# --- CSRF ---------------------------------------------------------------------------


def _csrf_token(client: Client, page: str = "/") -> str:
    """Load PAGE (it has a form) and return the CSRF token its cookie holds."""
    assert client.get(page).status_code == 200
    return client.cookies[django_settings.CSRF_COOKIE_NAME].value


@pytest.mark.django_db
def test_login_form_without_its_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    form = {"username": "alice", "password": "pw-alice"}
    assert client.post("/login/", form).status_code == 403
    token = _csrf_token(client, "/login/")
    response = client.post("/login/", {**form, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"


@pytest.mark.django_db
def test_page_form_without_its_csrf_token_changes_nothing(bob: User) -> None:
    run = make_run(status=Run.Status.RUNNING)
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    url = f"/runs/{run.pk}/cancel/"
    assert client.post(url).status_code == 403
    assert client.post(url, {"csrfmiddlewaretoken": "x" * 64}).status_code == 403
    assert not AuditEvent.objects.filter(action="run.cancel").exists()
    token = _csrf_token(client)
    assert client.post(url, {"csrfmiddlewaretoken": token}).status_code == 302
    assert AuditEvent.objects.filter(action="run.cancel", actor=bob).exists()


@pytest.mark.django_db
def test_admin_form_without_its_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    form = {"name": "NEW_VAR", "value": "v"}
    assert client.post("/admin/pipelines/variable/add/", form).status_code == 403
    token = _csrf_token(client, "/admin/pipelines/variable/add/")
    response = client.post(
        "/admin/pipelines/variable/add/", {**form, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


@pytest.mark.django_db
def test_api_with_a_session_needs_the_csrf_header_a_token_does_not(bob: User) -> None:
    repository = make_repository()
    body = {"repository": repository.pk, "ref": "main"}
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(bob)
    err = assert_error(
        client.post("/api/v1/runs/", body, format="json"), 403, "permission_denied"
    )
    assert "CSRF" in err["message"]
    assert not Run.objects.exists()
    token = _csrf_token(client)
    response = client.post("/api/v1/runs/", body, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content
    # A bearer token is not an ambient credential a browser sends: no CSRF check.
    bearer = token_client(bob)
    bearer.handler.enforce_csrf_checks = True
    assert bearer.post("/api/v1/runs/", body, format="json").status_code == 201
    assert Run.objects.count() == 2


# --- secure cookies and HSTS, in this process ------------------------------------------


@pytest.mark.django_db
def test_secure_settings_mark_the_cookies_and_send_hsts(
    settings: Any, alice: User
) -> None:
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 3600
    client = Client()  # A new client loads the middleware with these settings.
    client.get("/login/", secure=True)
    csrf = client.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf["secure"] is True
    response = client.post(
        "/login/", {"username": "alice", "password": "pw-alice"}, secure=True
    )
    assert response.status_code == 302
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] is True and session["httponly"] is True
    page = client.get("/healthz", secure=True)
    assert page["Strict-Transport-Security"] == "max-age=3600"
    # HSTS means nothing over plain HTTP, and browsers ignore it there.
    assert "Strict-Transport-Security" not in client.get("/healthz")


# --- settings from the environment, in a subprocess ------------------------------------


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Return a production-like environment, with nothing from the test runner."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SLIPWAY_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SLIPWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "ci.example.com",
        **extra,
    }


SHOW_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in (
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
    "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER",
)}))
"""


def _settings_with(tmp_path: Path, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=BASE_DIR,
        env=_production_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_https_url_makes_the_cookies_secure(tmp_path: Path) -> None:
    found = _settings_with(tmp_path, SLIPWAY_URL="https://ci.example.com")
    assert found["DEBUG"] is False
    assert found["SESSION_COOKIE_SECURE"] is True
    assert found["CSRF_COOKIE_SECURE"] is True
    assert found["SESSION_COOKIE_HTTPONLY"] is True
    # HSTS is a promise that is hard to take back: off until asked for.
    assert found["SECURE_HSTS_SECONDS"] == 0


def test_plain_http_url_leaves_cookies_unsecured(tmp_path: Path) -> None:
    found = _settings_with(tmp_path, SLIPWAY_URL="http://ci.internal:8000")
    assert found["SESSION_COOKIE_SECURE"] is False
    assert found["CSRF_COOKIE_SECURE"] is False


def test_security_settings_follow_their_variables(tmp_path: Path) -> None:
    found = _settings_with(
        tmp_path,
        SLIPWAY_URL="https://ci.example.com",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_SSL_REDIRECT="true",
        SLIPWAY_BEHIND_PROXY="true",
        CSRF_COOKIE_SECURE="false",
    )
    assert found["SECURE_HSTS_SECONDS"] == 31536000
    assert found["SECURE_SSL_REDIRECT"] is True
    assert found["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert found["SESSION_COOKIE_SECURE"] is True
    assert found["CSRF_COOKIE_SECURE"] is False  # An explicit value wins.


def _deploy_warnings(tmp_path: Path, **env: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=_production_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"\((\w+\.[WE]\d+)\)", done.stdout + done.stderr))


def test_check_deploy_has_only_the_documented_warnings(tmp_path: Path) -> None:
    production = {
        "SLIPWAY_URL": "https://ci.example.com",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_SSL_REDIRECT": "true",
    }
    # HSTS for subdomains and the preload list are the domain owner's decision:
    # docs/configuration.md names these two.
    assert _deploy_warnings(tmp_path, **production) == {
        "security.W005",
        "security.W021",
    }
    # Before HTTPS works: the two the same page says to set once it does.
    assert _deploy_warnings(tmp_path, SLIPWAY_URL="https://ci.example.com") == {
        "security.W004",
        "security.W008",
    }
