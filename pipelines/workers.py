"""Which workers are online, what queues they serve and which executors they can run.

Each worker writes a small record into a Redis hash every few seconds. The engine
reads it to say why a job waits ("no online worker serves queue gpu"), and the
workers page lists it. Routing itself is Celery's: a job goes to its queue and only
workers consuming that queue take it.

A worker serves ``<queue>:<executor>`` for every non-shell executor it can run
(``default:docker``). It probes its executors again every
``SLIPWAY_CAPABILITY_CHECK_SECONDS`` (30 by default): a Docker daemon or executor
cluster that comes up later is used without a restart, and one that goes away is
withdrawn (its queue is no longer consumed, and jobs for it wait with the reason).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from . import logs

logger = logging.getLogger(__name__)

REGISTRY_KEY = "slipway:workers"
REFRESH_SECONDS = 5
ONLINE_SECONDS = 20
CAPABILITY_CHECK_SECONDS = 30.0
_cache: dict[str, Any] = {"at": 0.0, "workers": []}


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as it last described itself."""

    name: str
    queues: tuple[str, ...]
    executors: dict[str, str]  # name -> "" when available, else why not
    concurrency: int
    active: int
    seen_at: float

    @property
    def online(self) -> bool:
        return time.time() - self.seen_at < ONLINE_SECONDS


def executor_capabilities() -> dict[str, str]:
    """Return, for each configured executor, "" if it can run here or why not."""
    from .engine.executors import get_executor

    result = {}
    for name in settings.SLIPWAY["EXECUTORS"]:
        try:
            ok, why = get_executor(name).available()
        except Exception as exc:  # A broken executor must not stop the worker.
            ok, why = False, str(exc)
        result[name] = "" if ok else (why or "unavailable")
    return result


def capability_check_seconds() -> float:
    """Return how often a worker probes its executors again (seconds, at least 1)."""
    configured: Any = getattr(settings, "SLIPWAY", {}).get("CAPABILITY_CHECK_SECONDS")
    raw = configured or os.environ.get("SLIPWAY_CAPABILITY_CHECK_SECONDS")
    try:
        value = float(raw) if raw else CAPABILITY_CHECK_SECONDS
    except (TypeError, ValueError):
        logger.warning("SLIPWAY_CAPABILITY_CHECK_SECONDS=%r is not a number", raw)
        value = CAPABILITY_CHECK_SECONDS
    return max(1.0, value)


def executor_queues(queues: Iterable[str], capabilities: dict[str, str]) -> list[str]:
    """Return the ``<queue>:<executor>`` queues to serve for CAPABILITIES.

    One per base queue (a name without ":") and per available executor other than
    shell, which runs on the base queues themselves.
    """
    return [
        f"{base}:{executor}"
        for base in queues
        if ":" not in base
        for executor, why in sorted(capabilities.items())
        if executor != "shell" and not why
    ]


Subscribe = Callable[[list[str], list[str]], None]


def publish(
    name: str,
    queues: list[str],
    executors: dict[str, str],
    concurrency: int,
    active: int,
) -> None:
    record = {
        "queues": queues,
        "executors": executors,
        "concurrency": concurrency,
        "active": active,
        "seen_at": time.time(),
    }
    client = logs.redis_client()
    try:
        client.hset(REGISTRY_KEY, name, json.dumps(record))
    finally:
        client.close()


def online_workers(*, fresh: bool = False) -> list[WorkerInfo]:
    """Return the workers seen recently (cached for a second)."""
    if not fresh and time.monotonic() - _cache["at"] < 1.0:
        return list(_cache["workers"])
    result: list[WorkerInfo] = []
    try:
        client = logs.redis_client()
        try:
            raw = client.hgetall(REGISTRY_KEY)
        finally:
            client.close()
    except RedisError:
        return []
    for name, data in raw.items():
        try:
            record = json.loads(data)
            info = WorkerInfo(
                name=name.decode(),
                queues=tuple(record["queues"]),
                executors=dict(record["executors"]),
                concurrency=int(record["concurrency"]),
                active=int(record["active"]),
                seen_at=float(record["seen_at"]),
            )
        except (ValueError, KeyError, TypeError):
            continue
        if info.online:
            result.append(info)
    result.sort(key=lambda w: w.name)
    _cache.update(at=time.monotonic(), workers=result)
    return result


def waiting_reason(queue: str, executor: str) -> str:
    """Return why a job for QUEUE/EXECUTOR would wait, or "" if a worker serves it."""
    workers = online_workers()
    if any(queue in w.queues for w in workers):
        return ""
    base = queue.split(":", 1)[0]
    if executor != "shell":
        serving = [w for w in workers if base in w.queues]
        if serving:
            reasons = sorted(
                {w.executors.get(executor) or "not enabled" for w in serving}
            )
            return f"waiting for a worker that can run {executor} jobs ({'; '.join(reasons)})"
    if not workers:
        return "waiting for a worker: none is online"
    return f"waiting for a worker that serves queue '{base}' (the job's tags)"


class Announcer:
    """Keep this worker's registry entry fresh from a daemon thread.

    Every REFRESH seconds it publishes the entry; every CHECK seconds it probes the
    executors again and, when that changes what it can run, calls SUBSCRIBE(added,
    removed) with the executor queues to start and stop consuming.
    """

    def __init__(
        self,
        name: str,
        queues: list[str],
        concurrency: int,
        *,
        executors: dict[str, str] | None = None,
        probe: Callable[[], dict[str, str]] = executor_capabilities,
        subscribe: Subscribe | None = None,
        check_seconds: float | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.active = 0
        self.probe = probe
        self.subscribe = subscribe
        self.check_seconds = (
            capability_check_seconds() if check_seconds is None else check_seconds
        )
        self.refresh_seconds = refresh_seconds
        self.executors = probe() if executors is None else dict(executors)
        # Queues given on the command line are never withdrawn; only those added
        # for an executor are.
        self._given = list(queues)
        self._derived = [
            q for q in executor_queues(queues, self.executors) if q not in queues
        ]
        self.queues = self._given + self._derived
        self._checked_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name="announcer"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            client = logs.redis_client()
            client.hdel(REGISTRY_KEY, self.name)
            client.close()
        except RedisError:
            pass

    def recheck(self) -> bool:
        """Probe the executors again; (un)subscribe and return whether they changed."""
        self._checked_at = time.monotonic()
        try:
            executors = self.probe()
        except Exception:  # A broken probe keeps what was known.
            logger.exception("capability check of worker %s failed", self.name)
            return False
        if executors == self.executors:
            return False
        wanted = [
            q for q in executor_queues(self._given, executors) if q not in self._given
        ]
        added = [q for q in wanted if q not in self._derived]
        removed = [q for q in self._derived if q not in wanted]
        if (added or removed) and self.subscribe is not None:
            try:
                self.subscribe(added, removed)
            except Exception:  # Try again at the next check.
                logger.exception("worker %s could not change its queues", self.name)
                return False
        logger.info(
            "worker %s executors now %s (queues +%s -%s)",
            self.name,
            executors,
            added,
            removed,
        )
        self.executors = executors
        self._derived = wanted
        self.queues = self._given + self._derived
        return True

    def _loop(self) -> None:
        while True:
            if time.monotonic() - self._checked_at >= self.check_seconds:
                self.recheck()
                # The probe may read the database (the executor cluster's row): give
                # this thread's connection back rather than hold it between checks.
                from django.db import connection

                connection.close()
            try:
                publish(
                    self.name,
                    self.queues,
                    self.executors,
                    self.concurrency,
                    self.active,
                )
            except RedisError as exc:
                logger.warning("cannot announce worker %s: %s", self.name, exc)
            if self._stop.wait(min(self.refresh_seconds, self.check_seconds)):
                return


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
