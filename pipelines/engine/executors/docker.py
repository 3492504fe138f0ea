"""Run jobs in containers through a Docker daemon (the `docker` SDK).

The workspace is bind-mounted at /workspace and the generated scripts (read-only) at
/slipway. Scripts run under bash when the image has it, else under POSIX sh. The
container is removed when the script ends, and killed on cancel or timeout.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .base import (
    AFTER_SCRIPT_TIMEOUT,
    CHUNK_QUEUE_SIZE,
    ExecResult,
    ExecSpec,
    OutputFn,
    put_chunk,
    take_chunks,
)
from .shell import LOST_MESSAGE, WORKER_STOPPING, render_script

__all__ = ["DockerExecutor"]

PING_TIMEOUT = 2
# Engine API calls other than the ping (create, start, wait, remove) may take longer
# than 2 s on a loaded daemon; streams (logs, pull) have no read timeout at all.
API_TIMEOUT = 60
TICK = 0.1
WORKSPACE = "/workspace"
SCRIPTS = "/slipway"
_LAUNCH = (
    'if command -v bash >/dev/null 2>&1; then exec bash "$0"; else exec sh "$0"; fi'
)
_RED = b"\x1b[31;1m"
_YELLOW = b"\x1b[33;1m"
_RESET = b"\x1b[0;m"


def _daemon_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def pull_error(events: Iterable[Mapping[str, Any]], output: OutputFn) -> str:
    """Follow a pull's progress EVENTS into OUTPUT; return its error or "".

    Per-layer progress bars are left out: only status changes are written.
    """
    last = ""
    for event in events:
        detail = event.get("errorDetail") or {}
        error = detail.get("message") or event.get("error")
        if error:
            return str(error)
        status = str(event.get("status") or "")
        if not status or event.get("progressDetail"):
            continue
        line = f"{event['id']}: {status}" if event.get("id") else status
        if line != last:
            output(f"{line}\n".encode())
            last = line
    return ""


class DockerExecutor:
    """Run scripts in `spec.image` containers; see `base` for the contract."""

    name = "docker"

    def __init__(self, default_image: str = "alpine:3.20") -> None:
        self.default_image = default_image

    def _client(self, timeout: int = API_TIMEOUT) -> Any:
        import docker  # The SDK is imported only when this executor is used.

        return docker.from_env(timeout=timeout)

    def available(self) -> tuple[bool, str]:
        """Return whether a Docker daemon answers a ping within 2 seconds."""
        url = _daemon_url()
        try:
            client = self._client(PING_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not here".
            return False, f"no Docker daemon reachable at {url}: {exc}"
        return True, ""

    def run(
        self, spec: ExecSpec, output: OutputFn, cancel: threading.Event
    ) -> ExecResult:
        """Run before_script + script, then after_script, each in a new container."""
        started = time.time()
        try:
            client = self._client()
        except Exception as exc:  # noqa: BLE001
            return ExecResult(
                "error",
                None,
                started,
                time.time(),
                f"no Docker daemon reachable at {_daemon_url()}: {exc}",
            )
        tmp = tempfile.mkdtemp(prefix="slipway-job-")
        try:
            image = spec.image or self.default_image
            error = self._pull(client, image, output)
            if error:
                return ExecResult("error", None, started, time.time(), error)
            Path(tmp, "script.sh").write_text(
                render_script(
                    (*spec.before_script, *spec.script),
                    section="step_script",
                    header='Executing "step_script" stage of the job script',
                    posix=True,
                )
            )
            status, code, message = self._container(
                client, spec, image, tmp, "script.sh", spec.timeout, output, cancel
            )
            if spec.after_script and status in ("success", "failed", "timeout"):
                Path(tmp, "after_script.sh").write_text(
                    render_script(
                        spec.after_script,
                        section="after_script",
                        header="Running after_script",
                        posix=True,
                    )
                )
                a_status, a_code, _ = self._container(
                    client,
                    spec,
                    image,
                    tmp,
                    "after_script.sh",
                    AFTER_SCRIPT_TIMEOUT,
                    output,
                    cancel,
                )
                if a_status != "success":
                    detail = f"exit code {a_code}" if a_code is not None else a_status
                    output(
                        _YELLOW
                        + f"WARNING: after_script failed ({detail}); ignored\n".encode()
                        + _RESET
                    )
            return ExecResult(status, code, started, time.time(), message)
        except Exception as exc:  # noqa: BLE001 - daemon errors are job errors, not crashes.
            return ExecResult("error", None, started, time.time(), f"docker: {exc}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            client.close()

    @staticmethod
    def _pull(client: Any, image: str, output: OutputFn) -> str | None:
        """Pull IMAGE unless it is present; return the daemon's error, if any.

        POST /images/create answers 200 and then streams progress; a pull that fails
        on the way (unknown manifest, refused registry, full disk) still ends 200 and
        reports itself in an ``errorDetail`` event. The SDK's ``images.pull`` drops
        those events and then fails with a misleading "No such image", so the stream
        is read here and its error shown.
        """
        import docker
        from docker.utils import parse_repository_tag

        try:
            client.images.get(image)
            return None
        except docker.errors.ImageNotFound:
            pass
        output(f"Pulling image {image} ...\n".encode())
        repository, tag = parse_repository_tag(image)
        try:
            events = client.api.pull(
                repository, tag=tag or "latest", stream=True, decode=True
            )
            error = pull_error(events, output)
        except docker.errors.APIError as exc:
            error = str(exc.explanation or exc)
        if error:
            return f"could not pull image {image!r}: {error}"
        return None

    def _container(
        self,
        client: Any,
        spec: ExecSpec,
        image: str,
        scripts: str,
        script: str,
        timeout: int,
        output: OutputFn,
        cancel: threading.Event,
    ) -> tuple[str, int | None, str]:
        """Run one script in a fresh container; return (status, exit code, message)."""
        container = client.containers.create(
            image,
            command=["sh", "-c", _LAUNCH, f"{SCRIPTS}/{script}"],
            entrypoint=[],
            working_dir=WORKSPACE,
            environment=dict(spec.env),
            volumes={
                os.path.abspath(spec.workdir): {"bind": WORKSPACE, "mode": "rw"},
                scripts: {"bind": SCRIPTS, "mode": "ro"},
            },
            labels={"slipway.job": spec.job_name},
            stdin_open=False,
            tty=False,
            detach=True,
        )
        chunks: queue.Queue[bytes | None] = queue.Queue(CHUNK_QUEUE_SIZE)
        reading = threading.Event()  # Set once this thread stops reading `chunks`.

        def pump() -> None:
            # The SDK's log stream blocks; a thread turns it into a queue so the calling
            # thread can watch cancel and the deadline, and call `output` itself.
            try:
                for chunk in container.logs(
                    stream=True, follow=True, stdout=True, stderr=True
                ):
                    if not put_chunk(chunks, bytes(chunk), reading):
                        return
            except Exception:  # noqa: BLE001, S110 - the container went away.
                pass
            finally:
                put_chunk(chunks, None, reading)

        stopped: str | None = None
        try:
            container.start()
            reader = threading.Thread(
                target=pump, name=f"docker-logs-{spec.job_name}", daemon=True
            )
            reader.start()
            deadline = time.monotonic() + timeout
            while True:
                if cancel.is_set():
                    stopped = "canceled"
                    break
                if WORKER_STOPPING.is_set():
                    stopped = "lost"  # The worker shuts down: no container outlives it.
                    break
                if time.monotonic() >= deadline:
                    stopped = "timeout"
                    break
                try:
                    chunk = chunks.get(timeout=TICK)
                except queue.Empty:
                    continue
                if chunk is None:
                    break
                data, ended = take_chunks(chunks, chunk)
                output(data)
                if ended:
                    break
            if stopped:
                try:
                    container.kill()
                except Exception:  # noqa: BLE001, S110 - it ended meanwhile (409).
                    pass
            result = container.wait(timeout=30)
            # Deliver what the reader still holds, without waiting long for it.
            end = time.monotonic() + 2
            while time.monotonic() < end:
                try:
                    chunk = chunks.get(timeout=TICK)
                except queue.Empty:
                    continue
                if chunk is None:
                    break
                data, ended = take_chunks(chunks, chunk)
                output(data)
                if ended:
                    break
        finally:
            reading.set()
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001, S110 - already gone.
                pass
        if stopped == "canceled":
            output(b"\n" + _RED + b"ERROR: job canceled" + _RESET + b"\n")
            return "canceled", None, "canceled"
        if stopped == "lost":
            output(b"\n" + _RED + f"ERROR: {LOST_MESSAGE}".encode() + _RESET + b"\n")
            return "lost", None, LOST_MESSAGE
        if stopped == "timeout":
            output(
                b"\n"
                + _RED
                + f"ERROR: job timed out after {timeout} seconds".encode()
                + _RESET
                + b"\n"
            )
            return "timeout", None, f"timed out after {timeout} seconds"
        code = int(result.get("StatusCode", 1))
        if code == 0:
            return "success", 0, ""
        output(_RED + f"ERROR: job failed: exit code {code}".encode() + _RESET + b"\n")
        return "failed", code, f"exit code {code}"
