"""Rate limits on login and webhook endpoints (core/ratelimit.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from core.ratelimit import Rate, RateError, hit, parse_rate


def test_parse_rate() -> None:
    assert parse_rate("10/min") == Rate(10, 60)
    assert parse_rate("600/60") == Rate(600, 60)
    assert parse_rate(" 5 / h ") == Rate(5, 3600)
    assert parse_rate("0") is None and parse_rate("") is None
    for bad in ("ten/min", "10/fortnight", "10", "0/min"):
        with pytest.raises(RateError):
            parse_rate(bad)


def test_fixed_window_counts_and_resets(db: None) -> None:
    ident = uuid.uuid4().hex
    rate = Rate(2, 60)
    start = 6_000_000.0  # The start of a window.
    assert hit("t", ident, rate, now=start).allowed
    assert hit("t", ident, rate, now=start + 1).allowed
    refused = hit("t", ident, rate, now=start + 2)
    assert not refused.allowed and refused.retry_after == 58
    assert hit("t", ident, rate, now=start + 60).allowed


@pytest.fixture
def limits(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # One fixed instant inside a window: a window edge must not reset the count.
    monkeypatch.setattr("core.ratelimit._now", lambda: 7_000_030.0)
    settings.SLIPWAY = {
        **settings.SLIPWAY,
        "RATELIMIT_LOGIN": "3/min",
        "RATELIMIT_HOOKS": "2/min",
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("limits")
def test_login_is_limited_per_address_and_username() -> None:
    client = Client(REMOTE_ADDR=f"10.1.{uuid.uuid4().int % 250}.7")
    name = uuid.uuid4().hex[:10]
    for _ in range(3):
        response = client.post("/login/", {"username": name, "password": "x"})
        assert response.status_code == 200  # The form, with its error.
    refused = client.post("/login/", {"username": name, "password": "x"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Another username from the same address is counted on its own.
    other = client.post("/login/", {"username": name + "x", "password": "x"})
    assert other.status_code == 200
    # Showing the login page is never limited.
    assert client.get("/login/").status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("limits")
def test_admin_login_is_limited_and_shares_the_login_count() -> None:
    client = Client(REMOTE_ADDR=f"10.3.{uuid.uuid4().int % 250}.5")
    name = uuid.uuid4().hex[:10]
    form = {"username": name, "password": "x", "next": "/admin/"}
    for _ in range(2):
        response = client.post("/admin/login/", form)
        assert response.status_code == 200  # The admin's form, with its error.
    # The third guess comes through the other door: one limit for both.
    assert client.post("/login/", form).status_code == 200
    refused = client.post("/admin/login/", form)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert client.post("/login/", form).status_code == 429
    # Another username is counted on its own; showing the page is never limited.
    other = client.post("/admin/login/", {**form, "username": name + "x"})
    assert other.status_code == 200
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("limits")
def test_hooks_are_limited_per_address() -> None:
    client = Client(REMOTE_ADDR=f"10.2.{uuid.uuid4().int % 250}.9")
    for _ in range(2):
        response = client.post(
            "/hooks/github/nothing/", b"{}", content_type="application/json"
        )
        assert response.status_code != 429
    refused = client.post(
        "/hooks/github/nothing/", b"{}", content_type="application/json"
    )
    assert refused.status_code == 429 and refused["Retry-After"]
    assert refused.json()["error"]["code"] == "throttled"


@pytest.mark.django_db
def test_limiter_fails_open_without_the_cache(settings: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    from django.core.cache import caches

    caches._settings = None  # type: ignore[attr-defined]
    try:
        assert hit("t", "x", Rate(1, 60)).allowed
        assert hit("t", "x", Rate(1, 60)).allowed
    finally:
        caches._settings = None  # type: ignore[attr-defined]
