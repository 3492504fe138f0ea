"""Run jobs as bash scripts on the worker itself, each in its own process group."""

from __future__ import annotations

import fcntl
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .base import AFTER_SCRIPT_TIMEOUT, ExecResult, ExecSpec, OutputFn

__all__ = [
    "LOST_MESSAGE",
    "WORKER_STOPPING",
    "ShellExecutor",
    "minimal_env",
    "render_script",
    "stop_all_jobs",
]

READ_SIZE = 65536
# A larger pipe lets a fast job write ahead while its last chunk is processed, so it
# neither waits for the worker nor wakes it for every 64 KiB (Linux; best effort).
PIPE_SIZE = 1024 * 1024
# Cancel and timeout are checked at least this often (seconds).
TICK = 0.1
TERM_GRACE = 1.0
KILL_WAIT = 2.0

_RED = b"\x1b[31;1m"
_YELLOW = b"\x1b[33;1m"
_RESET = b"\x1b[0;m"

# Set once when the worker process shuts down (Celery's worker_shutting_down, see
# pipelines.tasks): every job it runs kills its process group within TICK + TERM_GRACE
# and ends as "lost", recorded as failed with worker_lost. Job scripts run in their
# own session, so nothing else would stop them: a graceful shutdown would wait for
# them, and the final SIGKILL of the worker would leave them running as orphans.
WORKER_STOPPING = threading.Event()
LOST_MESSAGE = "the worker shut down while the job ran"


# The process groups of the scripts running now (pgid -> None), for stop_all_jobs.
_running_groups: dict[int, None] = {}


def stop_all_jobs() -> None:
    """End every job of this process now; safe to call from a signal handler.

    SIGTERM goes to every running group at once, so even a worker that is killed
    right after (a second Ctrl-C, the supervisor's SIGKILL) leaves nothing behind
    but scripts that ignore SIGTERM; the executors' own threads follow with SIGKILL.
    """
    WORKER_STOPPING.set()
    for pgid in list(_running_groups):
        _signal_group(pgid, signal.SIGTERM)


def render_script(
    commands: Sequence[str], *, section: str, header: str, posix: bool = False
) -> str:
    """Return a shell script that echoes and runs `commands` inside a log section.

    The script stops at the first failing command (`set -e`, plus `pipefail`), prints
    each command GitLab-style before running it, and closes its section even when a
    command fails. With `posix`, it runs under any POSIX sh (for container images
    without bash) and enables pipefail only where the shell supports it.
    """
    lines = ["#!/bin/bash" if not posix else "#!/bin/sh"]
    if posix:
        lines += [
            "set -e",
            "if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi",
        ]
    else:
        lines.append("set -eo pipefail")
    name = shlex.quote(section)
    lines += [
        "printf '\\033[0Ksection_start:%s:%s\\r\\033[0K%s\\n' "
        f'"$(date +%s)" {name} {shlex.quote(header)}',
        # Keep the exit status: the trap must not turn a failure into a success.
        'trap \'__slipway_rc=$?; printf "\\033[0Ksection_end:%s:%s\\r\\033[0K\\n" '
        f'"$(date +%s)" {shlex.quote(name)}; exit $__slipway_rc\' EXIT',
    ]
    for command in commands:
        shown = command.strip("\n")
        if "\n" in shown:
            shown = shown.split("\n", 1)[0] + " # collapsed multi-line command"
        lines.append(f"printf '\\033[32;1m$ %s\\033[0;m\\n' {shlex.quote(shown)}")
        lines.append(command)
    return "\n".join(lines) + "\n"


def minimal_env(env: Mapping[str, str], home: str) -> dict[str, str]:
    """Return `env` plus PATH, HOME and LANG when it lacks them; nothing else."""
    result = dict(env)
    result.setdefault(
        "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    result.setdefault("HOME", home)
    result.setdefault("LANG", "C.UTF-8")
    return result


def _check_env(env: Mapping[str, str]) -> str | None:
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return f"environment entries must be strings: {key!r}"
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            return f"invalid environment variable name or value: {key!r}"
    return None


def _group_alive(pgid: int) -> bool:
    """Return True while a live (non-zombie) process is in group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not sys.platform.startswith("linux"):
        return True
    # kill(0) also succeeds for zombies, which are dead but wait for their (new)
    # parent to reap them; a container's PID 1 may never do that. Look closer.
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pgid: int, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()  # Reap the main process so it does not linger as a zombie.
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _kill_group(pgid: int, proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate every process of the group: SIGTERM, then SIGKILL after `grace`."""
    if not _group_alive(pgid):
        proc.poll()
        return
    _signal_group(pgid, signal.SIGTERM)
    if _wait_gone(pgid, proc, grace):
        return
    _signal_group(pgid, signal.SIGKILL)
    _wait_gone(pgid, proc, KILL_WAIT)


def _grow_pipe(fd: int) -> None:
    """Ask for a PIPE_SIZE pipe buffer; keep the default if the system refuses."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, PIPE_SIZE)
    except OSError:
        pass  # Over /proc/sys/fs/pipe-max-size or the user's pipe quota.


def _exit_code(returncode: int) -> int:
    # Shell convention: death by signal N is reported as 128 + N.
    return returncode if returncode >= 0 else 128 - returncode


class ShellExecutor:
    """Run scripts with bash on this machine; see `base` for the contract."""

    name = "shell"

    def __init__(self, bash: str | None = None) -> None:
        self._bash = bash or shutil.which("bash") or ""

    def available(self) -> tuple[bool, str]:
        """Return whether bash exists here."""
        if self._bash and os.access(self._bash, os.X_OK):
            return True, ""
        return False, "bash was not found on the worker's PATH"

    def run(
        self, spec: ExecSpec, output: OutputFn, cancel: threading.Event
    ) -> ExecResult:
        """Run before_script + script, then after_script; block until done."""
        started = time.time()
        if WORKER_STOPPING.is_set():
            return ExecResult("lost", None, started, time.time(), LOST_MESSAGE)
        ok, reason = self.available()
        if not ok:
            return ExecResult("error", None, started, time.time(), reason)
        problem = _check_env(spec.env)
        if problem:
            return ExecResult("error", None, started, time.time(), problem)
        if not os.path.isdir(spec.workdir):
            return ExecResult(
                "error",
                None,
                started,
                time.time(),
                f"workdir {spec.workdir!r} does not exist",
            )
        # The script lives outside the workspace, so the job cannot see or change it
        # and artifacts globs never pick it up.
        tmp = tempfile.mkdtemp(prefix="slipway-job-")
        try:
            home = os.path.join(tmp, "home")
            os.mkdir(home)
            env = minimal_env(spec.env, home)
            main = os.path.join(tmp, "script.sh")
            Path(main).write_text(
                render_script(
                    (*spec.before_script, *spec.script),
                    section="step_script",
                    header='Executing "step_script" stage of the job script',
                )
            )
            status, code, message = self._execute(
                main, spec.workdir, env, spec.timeout, output, cancel
            )
            if spec.after_script and status in ("success", "failed", "timeout"):
                after = os.path.join(tmp, "after_script.sh")
                Path(after).write_text(
                    render_script(
                        spec.after_script,
                        section="after_script",
                        header="Running after_script",
                    )
                )
                a_status, a_code, _ = self._execute(
                    after, spec.workdir, env, AFTER_SCRIPT_TIMEOUT, output, cancel
                )
                if a_status != "success":
                    detail = f"exit code {a_code}" if a_code is not None else a_status
                    output(
                        _YELLOW
                        + f"WARNING: after_script failed ({detail}); ignored\n".encode()
                        + _RESET
                    )
            return ExecResult(status, code, started, time.time(), message)
        except OSError as exc:
            return ExecResult(
                "error", None, started, time.time(), f"could not run the job: {exc}"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _execute(
        self,
        path: str,
        workdir: str,
        env: dict[str, str],
        timeout: int,
        output: OutputFn,
        cancel: threading.Event,
    ) -> tuple[str, int | None, str]:
        """Run one script; return (status, exit code, message)."""
        proc = subprocess.Popen(
            [self._bash, path],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pgid = proc.pid  # A new session makes the child the leader of its own group.
        _running_groups[pgid] = None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        _grow_pipe(fd)
        deadline = time.monotonic() + timeout
        stopped: str | None = None
        eof = False
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            try:
                while True:
                    if cancel.is_set():
                        stopped = "canceled"
                        break
                    if WORKER_STOPPING.is_set():
                        stopped = "lost"
                        break
                    if time.monotonic() >= deadline:
                        stopped = "timeout"
                        break
                    if proc.poll() is not None:
                        break
                    if eof:
                        # Output closed but the process lives on: just wait for it.
                        time.sleep(TICK / 2)
                        continue
                    if selector.select(TICK):
                        eof = self._read_available(fd, output)
                if not eof:
                    eof = self._read_available(fd, output)
                # Background children outlive the script: stop them, then collect the
                # output they wrote until their pipe closed.
                _kill_group(pgid, proc, TERM_GRACE)
                self._drain(fd, output, selector)
            finally:
                if proc.poll() is None:
                    _signal_group(pgid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                _running_groups.pop(pgid, None)
        if stopped == "canceled":
            output(b"\n" + _RED + b"ERROR: job canceled" + _RESET + b"\n")
            return "canceled", None, "canceled"
        if stopped == "lost":
            output(b"\n" + _RED + f"ERROR: {LOST_MESSAGE}".encode() + _RESET + b"\n")
            return "lost", None, LOST_MESSAGE
        if stopped == "timeout":
            text = f"ERROR: job timed out after {timeout} seconds"
            output(b"\n" + _RED + text.encode() + _RESET + b"\n")
            return "timeout", None, f"timed out after {timeout} seconds"
        code = _exit_code(proc.returncode)
        if code == 0:
            return "success", 0, ""
        output(_RED + f"ERROR: job failed: exit code {code}".encode() + _RESET + b"\n")
        return "failed", code, f"exit code {code}"

    @staticmethod
    def _read_available(fd: int, output: OutputFn) -> bool:
        """Read what the pipe holds now; return True at end of file."""
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return False
            if not data:
                return True
            output(data)

    def _drain(
        self, fd: int, output: OutputFn, selector: selectors.BaseSelector
    ) -> None:
        deadline = time.monotonic() + KILL_WAIT
        while time.monotonic() < deadline:
            if selector.select(TICK) and self._read_available(fd, output):
                return
