"""Real Slipway processes for integration tests: an ASGI server and Celery workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import uvicorn
from django.db import connection

from .servers import ServerError, free_port

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url_for_subprocess() -> str:
    """Return a DATABASE_URL that reaches the database this test process uses."""
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    return (
        f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
        f"{settings_dict['PORT']}/{settings_dict['NAME']}"
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    """Return the environment for a Slipway subprocess on the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    env.pop("SLIPWAY_TEST_DB_NAME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class AsgiServer:
    """config.asgi served by uvicorn in a thread of the test process."""

    def __init__(self) -> None:
        self.port = free_port()
        from config.asgi import application

        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws_ping_interval=None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ServerError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class CeleryWorker:
    """A real `celery -A config worker` process on the test database."""

    launched: ClassVar[list[CeleryWorker]] = []  # Every worker this process started.

    def __init__(
        self,
        name: str,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.queues = queues
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self, log_dir: Path) -> CeleryWorker:
        self.launch(log_dir)
        self.wait_ready()
        return self

    def launch(self, log_dir: Path) -> None:
        self.log_path = log_dir / f"worker-{self.name}.log"
        CeleryWorker.launched.append(self)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-n",
                f"{self.name}@%h",
                "-Q",
                ",".join(self.queues),
                "-c",
                str(self.concurrency),
                "-l",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=BASE_DIR,
            env=subprocess_env(**self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(
                    f"worker {self.name} failed:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def hostname(self) -> str:
        """Return the node name Celery knows it by (`-n NAME@%h`)."""
        return f"{self.name}@{socket.gethostname()}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """Kill the worker and its children at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def workers_paused(queue: str = "default") -> Iterator[None]:
    """Make the running test workers stop taking QUEUE meanwhile.

    For a test that plays the worker itself (takes the messages from the broker and
    counts them): the session's workers, started by earlier tests, would otherwise
    race it for the messages.
    """
    from config.celery import app

    names = [
        w.hostname for w in CeleryWorker.launched if w.running and queue in w.queues
    ]
    if names:
        app.control.cancel_consumer(queue, destination=names, reply=True, timeout=5)
    try:
        yield
    finally:
        if names:
            app.control.add_consumer(queue, destination=names, reply=True, timeout=5)


@contextmanager
def celery_workers(
    log_dir: Path, count: int = 2, **kwargs: object
) -> Iterator[list[CeleryWorker]]:
    """Start COUNT workers; stop them all afterwards."""
    workers = [CeleryWorker(f"w{index}", **kwargs) for index in range(count)]  # type: ignore[arg-type]
    try:
        # Start them side by side: each takes seconds to import Django and Celery.
        for worker in workers:
            worker.launch(log_dir)
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
