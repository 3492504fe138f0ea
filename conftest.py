"""Shared fixtures: users, a live ASGI server, real Celery workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User

from core.testing.processes import AsgiServer, CeleryWorker, celery_workers


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Give every test its own channel layer instance.

    A layer object belongs to the event loop that receives on it; tests start and
    stop servers and loops, and a receive still pending in a finished test's loop
    would otherwise block the next one ("two event loops … receive()").
    """
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def _user(username: str, role: str | None, *, superuser: bool = False) -> User:
    user = User.objects.create_user(
        username,
        f"{username}@example.com",
        "pw-" + username,
        is_staff=superuser,
        is_superuser=superuser,
    )
    if role:
        # get_or_create: transactional tests flush the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def alice(db: None) -> User:
    """An admin."""
    return _user("alice", "admin", superuser=True)


@pytest.fixture
def bob(db: None) -> User:
    """A developer: may trigger, cancel and retry."""
    return _user("bob", "developer")


@pytest.fixture
def olivia(db: None) -> User:
    """An operator: may deploy and act on clusters."""
    return _user("olivia", "operator")


@pytest.fixture
def victor(db: None) -> User:
    """A viewer: may only read."""
    return _user("victor", "viewer")


@pytest.fixture
def charlie(db: None) -> User:
    """A user without any role."""
    return _user("charlie", None)


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[AsgiServer]:
    """Serve config.asgi (HTTP and WebSockets) on a free loopback port."""
    server = AsgiServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _session_workers(
    django_db_setup: None,
    django_db_blocker: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[CeleryWorker]]:
    # One pair for the whole session: starting Celery takes seconds, and the workers
    # only need the test database to exist (each test's rows are its own).
    with celery_workers(tmp_path_factory.mktemp("workers"), count=2) as started:
        yield started


@pytest.fixture
def workers(
    transactional_db: None, _session_workers: list[CeleryWorker]
) -> Iterator[list[CeleryWorker]]:
    """Two real Celery worker processes on the test database and Redis."""
    for worker in _session_workers:
        assert worker.proc is not None and worker.proc.poll() is None, (
            worker.log_text()[-2000:]
        )
    yield _session_workers
    _settle_workers()


def _settle_workers(timeout: float = 20) -> None:
    """Stop this test's leftover work before the next test flushes the tables."""
    import time

    from config.celery import app
    from pipelines import services
    from pipelines.models import Job, Run

    # A fresh connection, not the pool: a test may have restarted Redis, leaving
    # the pooled connections dead.
    with app.connection_for_write() as connection:
        app.control.purge(connection=connection)
        for run in Run.objects.filter(status__in=["created", "pending", "running"]):
            try:
                services.cancel_run(run)
            except services.ActionError:
                pass
        deadline = time.monotonic() + timeout
        while (
            Job.objects.filter(status="running").exists()
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        # Tasks already taken (advance_run, reports) must finish too: a worker
        # writing while the next test truncates the tables makes the flush fail.
        inspector = app.control.inspect(timeout=0.5, connection=connection)
        while time.monotonic() < deadline:
            if not any((inspector.active() or {}).values()):
                break
            time.sleep(0.1)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (installed by platform/test.sh).

    Module-scoped: Playwright's sync API keeps an event loop running on the main
    thread while it lives, which would break later tests that call asyncio.run().
    """
    import os

    from playwright.sync_api import sync_playwright

    # The ORM calls tests make beside that loop are still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            yield launched
            launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def browser_login(page: object, base_url: str, username: str) -> None:
    """Log USERNAME in through the login form (password pw-<username>)."""
    page.goto(f"{base_url}/login/")  # type: ignore[attr-defined]
    page.fill("#id_username", username)  # type: ignore[attr-defined]
    page.fill("#id_password", f"pw-{username}")  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{base_url}/")  # type: ignore[attr-defined]
