import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from config.env import SettingError

ROOT = Path(__file__).resolve().parents[2]
# A valid key (Fernet.generate_key()), so a list can hold one good and one bad key.
GOOD_FERNET_KEY = "4YhkHgXH2EBX9NdQ8-3UsOqZWbWnmDqtTkSSy8G_yBI="


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
        (
            {"SLIPWAY_ENCRYPTION_KEY": "not-a-fernet-key"},
            "SLIPWAY_ENCRYPTION_KEY: the key is not a Fernet key",
        ),
        (
            {"SLIPWAY_ENCRYPTION_KEY": f"{GOOD_FERNET_KEY},{'A' * 40}"},
            "SLIPWAY_ENCRYPTION_KEY: key 2 of 2 is not a Fernet key",
        ),
        (
            {"FORWARDED_ALLOW_IPS": "10.0.0.1,10.244.0.0/33"},
            "FORWARDED_ALLOW_IPS: '10.244.0.0/33' is not an IP address or network",
        ),
        (
            {"SLIPWAY_WORKER_POOL": "fibres"},
            "SLIPWAY_WORKER_POOL must be one of threads, prefork, solo",
        ),
    ],
)
def test_bad_setting_stops_startup_with_one_line(
    env: dict[str, str], message: str
) -> None:
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


def _entry_point_command(
    entry: str, tmp_path: Path
) -> tuple[list[str], dict[str, str]]:
    """Return the argv (and extra environment) that starts ENTRY as production does."""
    python = sys.executable
    if entry == "uvicorn":
        return [python, "-m", "uvicorn", "config.asgi:application", "--port", "0"], {}
    if entry == "celery-worker":
        return [python, "-m", "celery", "-A", "config", "worker", "--pool", "solo"], {}
    if entry == "celery-beat":
        schedule = str(tmp_path / "beat-schedule")
        return [python, "-m", "celery", "-A", "config", "beat", "-s", schedule], {}
    if entry == "manage.py":
        return [python, "manage.py", "check"], {}
    # The container's entrypoint with the real Python first on PATH: its preflight
    # must stop before uvicorn starts (a stub records whether it did).
    stubs = tmp_path / "bin"
    stubs.mkdir()
    stub = stubs / "uvicorn"
    stub.write_text(f"#!/bin/sh\ntouch {tmp_path / 'uvicorn-started'}\n")
    stub.chmod(0o755)
    path = f"{Path(python).parent}:{stubs}:/usr/bin:/bin"
    return ["bash", str(ROOT / "platform" / "docker-entrypoint.sh"), "web"], {
        "PATH": path,
        "SLIPWAY_APP_DIR": str(ROOT),
        "SLIPWAY_ROLE_FILE": str(tmp_path / "role"),
        "SLIPWAY_COLLECTED_STATIC": str(tmp_path / "none"),
    }


@pytest.mark.parametrize(
    "entry", ["uvicorn", "celery-worker", "celery-beat", "manage.py", "entrypoint"]
)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be true or false, not 'maybe'"),
        (
            {"SLIPWAY_ENCRYPTION_KEY": "c2hvcnQ="},
            "SLIPWAY_ENCRYPTION_KEY: the key is not a Fernet key",
        ),
    ],
    ids=["DEBUG", "SLIPWAY_ENCRYPTION_KEY"],
)
def test_every_entry_point_stops_on_a_bad_setting_with_one_line(
    entry: str, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    argv, extra = _entry_point_command(entry, tmp_path)
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SLIPWAY_VAR_DIR": str(tmp_path / "var"),
        **extra,
        **env,
    }
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=120
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"slipway: configuration error: {lines[0].split(': ', 2)[2]}"]
    assert message in lines[0], done.stderr
    # The key itself is a secret: the message names the variable, never the value.
    assert "c2hvcnQ=" not in done.stderr
    assert not (tmp_path / "uvicorn-started").exists()


@pytest.mark.parametrize(
    "key",
    [
        GOOD_FERNET_KEY,
        GOOD_FERNET_KEY.rstrip("="),
        "A" * 43 + "=",
        "A" * 40,
        "c2hvcnQ=",
        "!" * 44,
        "slipway-insecure-development-key",
    ],
)
def test_fernet_key_check_agrees_with_cryptography(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    from config.env import env_fernet_keys

    try:
        Fernet(key.encode())
    except ValueError:
        fernet_accepts = False
    else:
        fernet_accepts = True
    monkeypatch.setenv("SLIPWAY_TEST_KEY", key)
    try:
        env_fernet_keys("SLIPWAY_TEST_KEY", [])
    except SettingError as exc:
        assert "SLIPWAY_TEST_KEY" in str(exc) and key not in str(exc)
        ours_accepts = False
    else:
        ours_accepts = True
    assert ours_accepts is fernet_accepts


@pytest.mark.parametrize(
    ("env", "max_size"),
    [
        ({}, 10),
        ({"SLIPWAY_WORKER_CONCURRENCY": "8"}, 18),
        ({"SLIPWAY_WORKER_CONCURRENCY": "8", "DB_POOL_MAX_SIZE": "30"}, 30),
    ],
)
def test_postgres_pool_fits_the_worker_concurrency(
    env: dict[str, str], max_size: int
) -> None:
    """Two connections per running job: a pool of -c 8 must hold 16 and spares."""
    full_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SLIPWAY_WORKER_CONCURRENCY", "DB_POOL_MAX_SIZE"}
    }
    full_env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL="postgres://slipway@127.0.0.1:1/slipway",
        **env,
    )
    code = (
        "from django.conf import settings;"
        "print(settings.DATABASES['default']['OPTIONS']['pool']['max_size'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == max_size
