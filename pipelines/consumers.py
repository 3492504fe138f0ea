"""WebSocket consumers: authenticate, authorise, subscribe, forward. No model writes.

Every consumer accepts the handshake and then, when the user may not watch, closes
with a code the page can read (``core.roles.socket_refusal``): 4401 not signed in,
4403 the role does not allow it, 4404 no such run or job (or one the user cannot
see). Roles count per repository: a global role or a grant on the run's repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer, JsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from core import roles

from . import access, events, logs
from .models import Job, Repository

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = roles.CLOSE_UNAUTHENTICATED
CLOSE_FORBIDDEN = roles.CLOSE_FORBIDDEN
CLOSE_NOT_FOUND = roles.CLOSE_NOT_FOUND


class _GroupConsumer(JsonWebsocketConsumer):
    """Forward one group's messages to an authorised viewer."""

    def target(self) -> roles.Scope | str | None:
        """Return the repository the socket is about (None: no such object)."""
        raise NotImplementedError

    def group_name(self) -> str:
        raise NotImplementedError

    def connect(self) -> None:
        # Accept first, then close with a code: a refused handshake reaches the
        # browser as a bare HTTP 403, and the page could not tell why.
        self.accept()
        user = self.scope.get("user")
        code = roles.socket_refusal(
            user,
            roles.VIEWER,
            self.target() if user and user.is_authenticated else None,
        )
        if code is not None:
            self.close(code=code)
            return
        group = self.group_name()
        self.group = group
        self.groups = [group]
        from asgiref.sync import async_to_sync

        async_to_sync(self.channel_layer.group_add)(group, self.channel_name)

    def forward(self, event: dict[str, Any]) -> None:
        self.send_json(event["message"])


class RunConsumer(_GroupConsumer):
    """Status changes of one run, its stages and its jobs."""

    def target(self) -> roles.Scope | None:
        return access.by_run(self.scope["url_route"]["kwargs"])

    def group_name(self) -> str:
        return events.run_group(int(self.scope["url_route"]["kwargs"]["run_id"]))


class ActivityConsumer(_GroupConsumer):
    """The feed of runs created, started and finished, in the repositories the user
    may see (all of them with a global role; the granted ones otherwise, as they
    were when the socket opened)."""

    def target(self) -> str:
        return roles.ANY

    def group_name(self) -> str:
        user = self.scope["user"]
        ids = roles.visible_ids(user, roles.REPOSITORY)
        self.repositories: set[str] | None = (
            None
            if ids is None
            else set(
                Repository.objects.filter(pk__in=ids).values_list("name", flat=True)
            )
        )
        return events.ACTIVITY_GROUP

    def forward(self, event: dict[str, Any]) -> None:
        message = event["message"]
        if self.repositories is not None:
            about = message.get("event", {}) if isinstance(message, dict) else {}
            if about.get("repository") not in self.repositories:
                return
        self.send_json(message)


class LogConsumer(AsyncWebsocketConsumer):
    """Send a job's stored log after the client's cursor, then follow it live.

    The client connects with ``?cursor=N`` (the last line it has). Lines are sent in
    order, each exactly once per connection; when the job has finished and every line
    was sent, the consumer says ``end`` and closes.
    """

    async def connect(self) -> None:
        # Accept first, then close with a code (see the module's docstring).
        await self.accept()
        user = self.scope.get("user")
        kwargs = self.scope["url_route"]["kwargs"]
        self.job_id = int(kwargs["job_id"])

        def refusal() -> int | None:
            if user is None or not user.is_authenticated:
                return CLOSE_UNAUTHENTICATED
            return roles.socket_refusal(user, roles.VIEWER, access.by_job(kwargs))

        code = await database_sync_to_async(refusal)()
        if code is not None:
            await self.close(code=code)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.sent = max(0, int(query.get("cursor", ["0"])[0]))
        except ValueError:
            self.sent = 0
        self.follower = asyncio.create_task(self._follow())

    async def disconnect(self, code: int) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        return  # The client only listens.

    async def _send_lines(self, lines: list[logs.Line]) -> None:
        fresh = [line for line in lines if line[0] > self.sent]
        if fresh:
            await self.send(
                text_data=json.dumps(
                    {"type": "lines", "lines": fresh}, separators=(",", ":")
                )
            )
            self.sent = fresh[-1][0]

    async def _send_stored(self, upto: int | None = None) -> None:
        while True:
            lines = await database_sync_to_async(logs.read_lines)(
                self.job_id, self.sent, 5000
            )
            if upto is not None:
                lines = [line for line in lines if line[0] <= upto]
            if not lines:
                return
            await self._send_lines(lines)

    async def _job_state(self) -> tuple[str, int | None, int, bool]:
        def read() -> tuple[str, int | None, int, bool]:
            status, exit_code, count = Job.objects.filter(pk=self.job_id).values_list(
                "status", "exit_code", "log_lines"
            )[0]
            finished = status in Job.FINISHED or status == Job.Status.MANUAL
            return status, exit_code, count, finished

        return await database_sync_to_async(read)()

    async def _follow(self) -> None:
        try:
            await self._follow_inner()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("log follower of job %s failed", self.job_id)
            with contextlib.suppress(Exception):
                await self.send(
                    text_data=json.dumps(
                        {"type": "error", "message": "log stream failed"}
                    )
                )
                await self.close()

    async def _follow_inner(self) -> None:
        await self._send_stored()
        key = logs.stream_key(self.job_id)
        client: aioredis.Redis | None = None
        last_id = "0-0"
        last_status: tuple[str, int | None] | None = None
        last_check = 0.0
        while True:
            got_entries = False
            try:
                if client is None:
                    client = aioredis.from_url(
                        settings.REDIS_URL, socket_connect_timeout=2
                    )
                reply = await client.xread({key: last_id}, count=200, block=500)
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        got_entries = True
                        last_id = entry_id
                        await self._forward_entry(fields)
            except RedisError:
                # Redis restarted or is away: the stored log keeps us going.
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
                client = None
                await asyncio.sleep(0.5)
            now = time.monotonic()
            if got_entries and now - last_check < 1.0:
                continue
            last_check = now
            status, exit_code, count, finished = await self._job_state()
            if (status, exit_code) != last_status:
                last_status = (status, exit_code)
                await self.send(
                    text_data=json.dumps(
                        {
                            "type": "status",
                            "status": status,
                            "exit_code": exit_code,
                            "finished": finished,
                        }
                    )
                )
            if finished or not got_entries:
                await self._send_stored()
            if finished and self.sent >= count:
                await self.send(text_data=json.dumps({"type": "end"}))
                if client is not None:
                    await client.aclose()
                await self.close()
                return

    async def _forward_entry(self, fields: dict[bytes, bytes]) -> None:
        first, last = int(fields[b"first"]), int(fields[b"last"])
        if last <= self.sent:
            return
        if first > self.sent + 1:
            # The stream was trimmed or we joined late: fill the gap from storage.
            await self._send_stored(upto=first - 1)
        payload = fields[b"lines"].decode()
        if first == self.sent + 1:
            await self.send(text_data=f'{{"type":"lines","lines":{payload}}}')
            self.sent = last
        else:
            await self._send_lines([tuple(line) for line in json.loads(payload)])
