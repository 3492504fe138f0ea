"""The executor interface every backend (shell, docker, kubernetes) implements.

Contract of `Executor.run(spec, output, cancel)`:

* It blocks until the job is over and returns an `ExecResult`.
* It calls `output(chunk)` with raw bytes, only from the calling thread, in order.
* It never raises because the script failed: a non-zero exit is `status="failed"`.
  Problems of the executor itself (no such workdir, daemon gone) are `status="error"`
  with a message; it raises only on programming errors.
* It enforces `spec.timeout` (seconds, for before_script + script) and returns
  `status="timeout"`.
* It honours `cancel` within 2 seconds: it kills the whole process group (or the
  container) and returns `status="canceled"`.
* When the worker shuts down (`shell.WORKER_STOPPING`), the shell and docker
  executors kill the job the same way and return `status="lost"`, which the engine
  records as failed with worker_lost.
* `after_script` runs after success, failure and timeout (not after cancel), with its
  own 5-minute limit; its exit code never changes the result.
* The job sees exactly `spec.env` (plus a minimal PATH/HOME/LANG if absent): the
  worker's own environment (database URL, secrets) is never passed through.
* When `run()` returns, no process or container of the job is left running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "AFTER_SCRIPT_TIMEOUT",
    "ExecSpec",
    "ExecResult",
    "Executor",
    "OutputFn",
    "CHUNK_QUEUE_SIZE",
    "put_chunk",
    "take_chunks",
    "get_executor",
    "register_executor",
    "executor_names",
]

AFTER_SCRIPT_TIMEOUT = 300

OutputFn = Callable[[bytes], None]

# Executors whose output arrives on a reader thread hand it over through a queue of
# at most this many chunks: a reader ahead of the log sink waits instead of
# buffering the whole log in the worker's memory.
CHUNK_QUEUE_SIZE = 256
# At most this many queued bytes are joined into one `output` call.
TAKE_LIMIT = 1024 * 1024


def put_chunk(
    chunks: queue.Queue[bytes | None], item: bytes | None, stop: threading.Event
) -> bool:
    """Queue ITEM, waiting while the queue is full; give up once STOP is set.

    Return whether ITEM was queued. The caller sets STOP when it stops reading, so a
    reader thread never blocks forever on a queue nobody empties.
    """
    while not stop.is_set():
        try:
            chunks.put(item, timeout=0.5)
        except queue.Full:
            continue
        return True
    return False


def take_chunks(chunks: queue.Queue[bytes | None], first: bytes) -> tuple[bytes, bool]:
    """Return FIRST joined with the chunks queued behind it, and whether the end
    marker (None) was among them.

    Many small chunks (a container log arrives a write at a time) become one call
    of the log sink, which costs per call, not per byte.
    """
    parts = [first]
    size = len(first)
    while size < TAKE_LIMIT:
        try:
            item = chunks.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return b"".join(parts), True
        parts.append(item)
        size += len(item)
    return b"".join(parts), False


@dataclass(frozen=True)
class ExecSpec:
    """What to run; `timeout` is in seconds, `workdir` is the checked-out workspace."""

    job_name: str
    script: tuple[str, ...]
    before_script: tuple[str, ...]
    after_script: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    timeout: int
    image: str | None = None


@dataclass(frozen=True)
class ExecResult:
    """How it ended: status is success, failed, timeout, canceled, error or lost."""

    status: str
    exit_code: int | None
    started_at: float
    finished_at: float
    message: str = ""


class Executor(Protocol):
    """A place jobs run; see the module docstring for the contract of `run`."""

    name: str

    def available(self) -> tuple[bool, str]:
        """Return (True, "") if jobs can run here, else (False, human reason)."""
        ...

    def run(
        self, spec: ExecSpec, output: OutputFn, cancel: threading.Event
    ) -> ExecResult:
        """Run the job to completion; see the module docstring."""
        ...


@dataclass
class _Registry:
    factories: dict[str, Callable[[], Executor]] = field(default_factory=dict)


_registry = _Registry()


def register_executor(name: str, factory: Callable[[], Executor]) -> None:
    """Make `get_executor(name)` build executors with `factory`."""
    _registry.factories[name] = factory


def executor_names() -> tuple[str, ...]:
    """Return the names of the registered executors."""
    _load_builtin()
    return tuple(sorted(_registry.factories))


def get_executor(name: str) -> Executor:
    """Return a new executor called `name`; raise KeyError naming the known ones."""
    _load_builtin()
    try:
        factory = _registry.factories[name]
    except KeyError:
        known = ", ".join(sorted(_registry.factories))
        raise KeyError(f"unknown executor {name!r} (known: {known})") from None
    return factory()


def _load_builtin() -> None:
    # Imported lazily: the docker module imports the docker SDK, which a worker using
    # only the shell executor should not pay for at import time.
    if "shell" not in _registry.factories:
        from .shell import ShellExecutor

        register_executor("shell", ShellExecutor)
    if "docker" not in _registry.factories:
        from .docker import DockerExecutor

        register_executor("docker", DockerExecutor)
