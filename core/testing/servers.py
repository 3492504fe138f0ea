"""Real Redis and PostgreSQL servers for tests and benchmarks, on free loopback ports.

Loaded as a pytest plugin (``-p core.testing.servers``): before Django reads its
settings, it starts a private redis-server and, when ``SLIPWAY_TEST_DB=postgres``, a
private PostgreSQL, and points the environment at them. Both stop when pytest exits.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


class ServerError(RuntimeError):
    """A test server did not start."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    port: int, proc: subprocess.Popen[bytes], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"{what} did not listen on port {port} within {timeout} s")


class RedisServer:
    """A private redis-server; ``restart()`` keeps its port (for fault tests)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError(
                "redis-server is not installed (apt-get install redis-server)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.proc, 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    binary = shutil.which(name)
    if binary is None:
        raise ServerError(
            f"{name} not found: install PostgreSQL (apt-get install postgresql)"
        )
    return binary


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, tuned for tests (no fsync)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgres://slipway@127.0.0.1:{self.port}/slipway"

    def _as_owner(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: run it as the postgres system user.
        if os.geteuid() == 0:
            return ["runuser", "-u", self._user or "postgres", "--", *argv]
        return argv

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError(
                    "running as root needs the postgres system user"
                ) from None
            self._user = "postgres"
        data = self.directory / "data"
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, user="postgres")
        if not data.exists():
            subprocess.run(
                self._as_owner(
                    [
                        _postgres_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "slipway",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-sync",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        self.proc = subprocess.Popen(
            self._as_owner(
                [
                    _postgres_bin("postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.proc, 30, "postgres")
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "slipway",
                    "-d",
                    "postgres",
                    "-tAc",
                    "SELECT 1",
                ],
                capture_output=True,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ServerError(
                    f"postgres did not accept connections: {done.stderr!r}"
                )
            time.sleep(0.1)
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "slipway",
                "-d",
                "postgres",
                "-tAc",
                "CREATE DATABASE slipway",
            ],
            capture_output=True,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


_started: dict[str, object] = {}


def _stop_all() -> None:
    for server in list(_started.values()):
        if isinstance(server, RedisServer | PostgresServer):
            server.stop()
    tmp = _started.get("tmp")
    if isinstance(tmp, str):
        shutil.rmtree(tmp, ignore_errors=True)
    _started.clear()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: object, args: object
) -> None:
    """Start the servers and point the settings at them before Django loads."""
    if _started:
        return
    tmp = tempfile.mkdtemp(prefix="slipway-test-")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)
    _started["tmp"] = tmp
    atexit.register(_stop_all)
    redis = RedisServer(Path(tmp) / "redis").start()
    _started["redis"] = redis
    os.environ["REDIS_URL"] = redis.url
    os.environ.pop("CELERY_BROKER_URL", None)
    if os.environ.get("SLIPWAY_TEST_DB", "sqlite") == "postgres":
        postgres = PostgresServer(Path(tmp) / "postgres").start()
        _started["postgres"] = postgres
        os.environ["DATABASE_URL"] = postgres.url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/slipway.sqlite3"
        # A file, not memory: worker and server processes share the test database.
        os.environ["SLIPWAY_TEST_DB_NAME"] = f"{tmp}/test-slipway.sqlite3"
    os.environ["SLIPWAY_VAR_DIR"] = f"{tmp}/var"
    os.environ["SECRET_KEY"] = "test-secret-key-" + "x" * 40
    from cryptography.fernet import Fernet

    os.environ["SLIPWAY_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver,[::1]"
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_all()


def test_redis() -> RedisServer:
    """Return the Redis server this test session started (fault tests restart it)."""
    server = _started.get("redis")
    if not isinstance(server, RedisServer):
        raise ServerError("the servers plugin did not start Redis")
    return server
