"""Which workers are online, what queues they serve and which executors they can run.

Each worker writes a small record into a Redis hash every few seconds. The engine
reads it to say why a job waits ("no online worker serves queue gpu"), and the
workers page lists it. Routing itself is Celery's: a job goes to its queue and only
workers consuming that queue take it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from . import logs

logger = logging.getLogger(__name__)

REGISTRY_KEY = "slipway:workers"
REFRESH_SECONDS = 5
ONLINE_SECONDS = 20
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
    """Keep this worker's registry entry fresh from a daemon thread."""

    def __init__(self, name: str, queues: list[str], concurrency: int) -> None:
        self.name = name
        self.queues = queues
        self.concurrency = concurrency
        self.active = 0
        self.executors = executor_capabilities()
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

    def _loop(self) -> None:
        while True:
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
            if self._stop.wait(REFRESH_SECONDS):
                return


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
