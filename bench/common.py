"""The benchmark stack: real Redis, PostgreSQL, uvicorn, Celery workers, beat, monitor.

Everything listens on 127.0.0.1 only, every process is started in its own session
(process group) and stopped with killpg at the end, also on failure. Every wait is
bounded in time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (a process did not start, a wait timed out)."""


# --- small helpers ------------------------------------------------------------------


def load() -> str:
    """Return the 1-minute load average as text (other engineers share the machine)."""
    return f"{os.getloadavg()[0]:.2f}"


def percentile(values: Iterable[float], p: float) -> float:
    """Return the P-th percentile (nearest rank) of VALUES."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = ""
) -> T:
    """Return PREDICATE's first truthy value; raise BenchError after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    """Return VmRSS of PID in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Return the proportional set size of PID in KiB (shared pages split)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def python_tree(pid: int) -> list[int]:
    """Return PID and its descendants that are Python processes (not job scripts)."""
    tree = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            exe = os.readlink(f"/proc/{current}/exe")
        except OSError:
            continue
        if "python" in os.path.basename(exe):
            found.append(current)
            todo.extend(tree.get(current, []))
    return found


def machine() -> dict[str, str]:
    """Describe this machine for the results table."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    pg = ""
    try:
        from core.testing.servers import _postgres_bin

        pg = subprocess.run(
            [_postgres_bin("postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        pass
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split(" ")[2:3]
    return {
        "cpu": model or platform.processor(),
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg,
        "redis": (redis_version[0] if redis_version else "").removeprefix("v="),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- results ------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the results table."""

    metric: str
    target: str
    measured: str
    ok: bool | None  # None: informational, no target
    load: str = field(default_factory=load)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "**FAIL**", None: "info"}[self.ok]


class Results:
    """Collect rows; write them as JSON lines as they come (a crash keeps them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[Result] = []

    def add(self, row: Result) -> Result:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(
                json.dumps(
                    {
                        "metric": row.metric,
                        "target": row.target,
                        "measured": row.measured,
                        "verdict": row.verdict,
                        "load": row.load,
                        "detail": row.detail,
                    }
                )
                + "\n"
            )
        print(
            f"  {row.verdict:>8}  {row.metric}: {row.measured}"
            f"  (target {row.target}; load {row.load})",
            flush=True,
        )
        return row


# --- processes ----------------------------------------------------------------------


class Proc:
    """A Slipway process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float) -> None:
        def seen() -> bool:
            if not self.alive():
                raise BenchError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            return needle in self.log_text()

        wait_for(seen, timeout, 0.05, f"{self.name} to log {needle!r}")

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in python_tree(self.pid)) if self.alive() else 0

    def pss_kib(self) -> int:
        return sum(pss_kib(pid) for pid in python_tree(self.pid)) if self.alive() else 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Also anything left in the group (job scripts, pool children).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class Stack:
    """Redis + PostgreSQL + Slipway processes for one benchmark session."""

    def __init__(self, workdir: Path | None = None, *, keep: bool = False) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="slipway-bench-"))
        os.chmod(self.workdir, 0o755)
        self.keep = keep
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis: Any = None
        self.postgres: Any = None
        self.procs: list[Proc] = []
        self.web: Proc | None = None
        self.workers: list[Proc] = []
        self.env: dict[str, str] = {}
        self.web_port = 0

    # servers -----------------------------------------------------------------------

    def start_servers(self) -> None:
        from core.testing.servers import PostgresServer, RedisServer

        self.redis = RedisServer(self.workdir / "redis").start()
        self.postgres = PostgresServer(self.workdir / "postgres").start()
        from cryptography.fernet import Fernet

        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.postgres.url,
            "DB_CONN_MAX_AGE": "60",  # docs/scaling.md's production advice
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "SLIPWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SLIPWAY_VAR_DIR": str(self.workdir / "var"),
            "LOG_LEVEL": "WARNING",
            # The bench posts thousands of webhooks from one address.
            "SLIPWAY_RATELIMIT_HOOKS": "0",
            "SLIPWAY_RATELIMIT_LOGIN": "0",
        }
        (self.workdir / "var").mkdir(exist_ok=True)

    def setup_django(self) -> None:
        """Point this process at the stack and set Django up (once per process)."""
        os.environ.update(self.env)
        os.environ.pop("SLIPWAY_TEST_DB_NAME", None)
        if str(BASE_DIR) not in sys.path:
            sys.path.insert(0, str(BASE_DIR))
        import django

        django.setup()

    def migrate(self) -> float:
        started = time.monotonic()
        done = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode:
            raise BenchError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
        return time.monotonic() - started

    # Slipway processes (the commands of platform/Procfile) --------------------------

    def _proc(self, name: str, argv: list[str], **extra: str) -> Proc:
        proc = Proc(name, argv, {**self.env, **extra}, self.logs).start()
        self.procs.append(proc)
        return proc

    def start_web(self) -> Proc:
        from core.testing.servers import free_port

        self.web_port = free_port()
        self.web = self._proc(
            "web",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.web_port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
                "--log-level",
                "warning",
            ],
        )
        import socket

        def listening() -> bool:
            if not self.web or not self.web.alive():
                raise BenchError(
                    f"uvicorn exited:\n{self.web.log_text() if self.web else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.web_port), 0.2):
                    return True
            except OSError:
                return False

        wait_for(listening, 60, 0.05, "uvicorn to listen")
        return self.web

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}"

    def worker_argv(
        self, name: str, concurrency: int, queues: str = "default"
    ) -> list[str]:
        return [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-l",
            "INFO",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
        ]

    def start_workers(
        self,
        count: int = 2,
        concurrency: int = 1,
        prefix: str = "bench-w",
        **extra: str,
    ) -> list[Proc]:
        started = [
            self._proc(
                f"{prefix}{i}", self.worker_argv(f"{prefix}{i}", concurrency), **extra
            )
            for i in range(count)
        ]
        for proc in started:
            proc.wait_log("ready.", 120)
        self.workers.extend(started)
        return started

    def start_beat(self) -> Proc:
        proc = self._proc(
            "beat",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(self.workdir / "var" / "celerybeat-schedule"),
            ],
        )
        proc.wait_log("beat: Starting", 60)
        return proc

    def start_monitor(self, name: str = "monitor") -> Proc:
        return self._proc(
            name, [PYTHON, "manage.py", "monitor_clusters"], LOG_LEVEL="INFO"
        )

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.workers = []

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - stop the rest anyway
                pass
        self.procs = []
        for server in (self.postgres, self.redis):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # noqa: BLE001
                    pass
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


# --- Slipway objects the benchmarks use ---------------------------------------------


def git_repo(path: Path, files: dict[str, str]) -> str:
    """Create a git repository at PATH with FILES committed; return the head SHA."""
    env = {
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
    }
    path.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()

    if not (path / ".git").exists():
        git("init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", "bench")
    return git("rev-parse", "HEAD")


def make_repository(stack: Stack, name: str, spec: str) -> tuple[Any, str]:
    """Create a git repository with SPEC as .slipway.yml and its Repository row."""
    from pipelines.models import Repository

    path = stack.workdir / "git" / name
    sha = git_repo(path, {".slipway.yml": spec})
    repository, _ = Repository.objects.update_or_create(
        name=name, defaults={"clone_url": str(path)}
    )
    return repository, sha


def session_cookie(username: str = "bench") -> str:
    """Return the session cookie of a logged-in admin (created if missing)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.filter(username=username).first()
    if user is None:
        user = User.objects.create_superuser(username, f"{username}@example.com", "pw")
        user.groups.add(Group.objects.get_or_create(name="admin")[0])
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def wait_run(run_id: int, timeout: float) -> Any:
    """Return the run once it has finished (bounded)."""
    from pipelines.models import Run

    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=Run.FINISHED).first(),
        timeout,
        0.01,
        f"run {run_id} to finish",
    )


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"
