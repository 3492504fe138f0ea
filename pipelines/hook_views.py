"""The webhook endpoint: authenticated by signature, not by login.

Two doors into the same steps of ``hooks``:

- ``receive``, a Django view, for the test client, WSGI and anything routed through
  Django;
- ``HookApp``, a small ASGI app that ``config.asgi`` puts in front of Django for
  ``POST /hooks/<forge>/<name>/``. Django's ASGI handler runs each request in a new
  thread behind the whole middleware stack (about 10 ms of CPU per request here);
  a webhook needs none of it. ``HookApp`` verifies in the event loop, asks Redis
  through ``redis.asyncio``, and hands the inserts to one writer thread that
  records all the deliveries waiting at that moment in one statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.db import close_old_connections, connection
from django.http import HttpRequest, JsonResponse
from django.http.request import split_domain_port, validate_host
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import ratelimit
from core.middleware import CONTENT_SECURITY_POLICY

from . import hooks
from .models import NAME_VALIDATOR
from .webhooks import WebhookError, get_forge

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@csrf_exempt
@login_not_required
@require_POST
def receive(request: HttpRequest, forge: str, name: str) -> JsonResponse:
    """Verify and record a webhook delivery, and queue a run for a push."""
    limit = settings.SLIPWAY["WEBHOOK_MAX_BYTES"]
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"error": "bad Content-Length"}, status=400)
    if declared > limit:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    result = hooks.receive(
        forge,
        name,
        dict(request.headers),
        body,
        remote_addr=request.META.get("REMOTE_ADDR"),
    )
    return JsonResponse(result.body, status=result.status)


# --- the ASGI route ------------------------------------------------------------------

HOOK_PATH = re.compile(r"/hooks/([^/]+)/([^/]+)/")
# The most deliveries one INSERT records.
MAX_BATCH = 200

# One thread owns the database connection of the webhook route: every insert and
# repository lookup of this process runs there, so there is no thread per request
# and no connection per thread.
_database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hooks-db")


def _in_database_thread(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except Exception:
        # A broken connection (a database restart) must not poison the next batch.
        connection.close()
        raise
    finally:
        # Give the connection back as a request would (to the pool, or closed
        # when CONN_MAX_AGE says so): tests flush and drop the database between.
        close_old_connections()


class _Writer:
    """Record the deliveries of one event loop, batching those that wait together."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: list[tuple[hooks.Pending, asyncio.Future[hooks.HookResult]]] = []
        self.busy = False

    async def record(self, pending: hooks.Pending) -> hooks.HookResult:
        future: asyncio.Future[hooks.HookResult] = self.loop.create_future()
        self.waiting.append((pending, future))
        if not self.busy:
            self.busy = True
            self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self.waiting[:MAX_BATCH]
                del self.waiting[:MAX_BATCH]
                pendings = [pending for pending, _ in batch]
                try:
                    results = await self.loop.run_in_executor(
                        _database, _in_database_thread, hooks.record, pendings
                    )
                except Exception as exc:  # noqa: BLE001 - answered 503, not lost.
                    logger.exception("webhook deliveries not recorded")
                    await self.loop.run_in_executor(None, hooks.release, pendings)
                    results = [
                        hooks.HookResult(
                            503, {"error": f"deliveries not recorded: {exc}"[:300]}
                        )
                    ] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.busy = False


class _LoopState:
    """What HookApp keeps per event loop (redis.asyncio clients belong to one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        self.gate = self.redis.register_script(hooks.GATE_SCRIPT)
        self.writer = _Writer(loop)


class HookApp:
    """Serve POST /hooks/<forge>/<name>/ in the event loop; pass the rest to Django."""

    def __init__(self, django: ASGIApp) -> None:
        self.django = django
        self._states: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopState
        ] = weakref.WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = HOOK_PATH.fullmatch(path)
            if match is not None:
                await self.handle(scope, receive, send, match[1], match[2])
                return
        await self.django(scope, receive, send)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(loop)
        return state

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, forge: str, name: str
    ) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        extra: list[tuple[bytes, bytes]] = []
        status, body = await self._answer(
            scope, receive, headers, forge, name, started, extra
        )
        await _respond(send, status, body, extra)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        forge: str,
        name: str,
        started: float,
        extra: list[tuple[bytes, bytes]],
    ) -> tuple[int, dict[str, Any]]:
        """Return the status and JSON body to answer (EXTRA: more headers)."""
        # What Django checks before any view: the Host header.
        host, _ = split_domain_port(headers.get("Host", ""))
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        if not host or not validate_host(host, allowed):
            return 400, {"error": "bad Host header"}
        state = self._state()
        rate = ratelimit.parse_rate(settings.SLIPWAY.get("RATELIMIT_HOOKS", ""))
        if rate is not None:
            client = scope.get("client")
            ident = client[0] if client else "unknown"
            verdict = await ratelimit.ahit(state.redis, "hooks", ident, rate)
            if not verdict.allowed:
                extra.append((b"retry-after", str(verdict.retry_after).encode()))
                return 429, ratelimit.throttled_body(verdict)
        limit = settings.SLIPWAY["WEBHOOK_MAX_BYTES"]
        try:
            declared = int(headers.get("Content-Length") or 0)
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        if declared > limit:
            return 413, {"error": f"body larger than {limit} bytes"}
        body = await _read_body(receive, limit)
        if body is None:
            return 413, {"error": f"body larger than {limit} bytes"}
        try:
            get_forge(forge)
        except WebhookError as exc:
            return exc.status, {"error": exc.message}
        if not NAME_VALIDATOR.regex.fullmatch(name):
            return 404, hooks.not_found(name).body
        loop = asyncio.get_running_loop()
        cached = hooks.repositories.cached(name)
        if cached is None:
            cached = await loop.run_in_executor(
                _database, _in_database_thread, hooks.repositories.load, name
            )
        repository, version = cached
        pending: hooks.Pending | None = None
        verdict: int | None = None
        for attempt in range(2):
            pending = (
                None
                if repository is None
                else hooks.examine(forge, repository, headers, body, started=started)
            )
            keys = hooks.gate_keys(pending)
            try:
                verdict = int(
                    await state.gate(keys=keys, args=[version, hooks.SEEN_TTL])
                )
            except Exception:  # noqa: BLE001 - the unique index still decides.
                logger.warning("webhook gate skipped: Redis unavailable")
                verdict = None
            if verdict != hooks.STALE or attempt:
                break
            repository, version = await loop.run_in_executor(
                _database, _in_database_thread, hooks.repositories.load, name
            )
        if pending is None:
            result = hooks.not_found(name)
            return result.status, result.body
        if verdict == hooks.SEEN:
            hooks.as_duplicate(pending)
        result = await state.writer.record(pending)
        return result.status, result.body


def _headers(scope: Scope) -> dict[str, str]:
    """Return the request headers named as Django's request.headers names them."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").replace("_", "-").title()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Return the request body, or None once it grows past LIMIT bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


_RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


async def _respond(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    content = json.dumps(body).encode()
    headers = [
        *_RESPONSE_HEADERS,
        *extra,
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
