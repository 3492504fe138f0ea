"""Helpers for tests that talk to the live ASGI server like a browser does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from django.test import Client


def session_cookie(username: str) -> str:
    """Log USERNAME in through the login form and return its session cookie."""
    client = Client()
    response = client.post(
        "/login/", {"username": username, "password": f"pw-{username}"}
    )
    assert response.status_code == 302, response.content[:500]
    return client.cookies["sessionid"].value


async def connect(server: Any, path: str, cookie: str | None) -> Any:
    headers = {"Origin": server.url}
    if cookie:
        headers["Cookie"] = f"sessionid={cookie}"
    return await websockets.connect(
        server.ws_url + path, additional_headers=headers, open_timeout=10, max_size=None
    )


async def collect(
    socket: Any, *, stop_after_lines: int | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Read log messages until `end` (or STOP_AFTER_LINES lines); return what came."""
    lines: list[list[Any]] = []
    statuses: list[str] = []
    ended = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no end after {timeout} s; got {len(lines)} lines")
        try:
            raw = await asyncio.wait_for(socket.recv(), remaining)
        except websockets.ConnectionClosed:
            break
        message = json.loads(raw)
        if message["type"] == "lines":
            lines.extend(message["lines"])
            if stop_after_lines is not None and len(lines) >= stop_after_lines:
                break
        elif message["type"] == "status":
            statuses.append(message["status"])
        elif message["type"] == "end":
            ended = True
            break
    return {"lines": lines, "statuses": statuses, "ended": ended}
