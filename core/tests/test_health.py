import platform
import subprocess
import sys

import pytest
from django.test import Client

from config.env import SettingError


def test_healthz_answers_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_redis(client: Client) -> None:
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True


@pytest.mark.django_db
def test_readyz_reports_unreachable_redis(client: Client, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False


@pytest.mark.django_db
def test_pages_need_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_login_then_overview(client: Client, alice) -> None:
    response = client.post("/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers


def test_nothing_shadows_the_standard_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == platform.system()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECRET_KEY": "", "DEBUG": "0"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"DATABASE_URL": "nosuch://x"}, "DATABASE_URL is not a valid database URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must start with redis://"),
        (
            {"SLIPWAY_LOG_MAX_BYTES": "lots"},
            "SLIPWAY_LOG_MAX_BYTES must be a whole number",
        ),
    ],
)
def test_bad_setting_stops_startup_with_one_line(
    env: dict[str, str], message: str
) -> None:
    import os

    full_env = {**os.environ, **env}
    if env.get("SECRET_KEY") == "":
        full_env.pop("SECRET_KEY")
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]


def test_setting_error_is_improperly_configured() -> None:
    from django.core.exceptions import ImproperlyConfigured

    assert issubclass(SettingError, ImproperlyConfigured)
