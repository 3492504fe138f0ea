"""static/js/live.js after a refusal: no reconnect, and the page says why.

A small ``websockets`` server accepts every handshake and closes with the code in
the path (``/ws/close/4403/``), as Slipway's consumers do (docs/api.md); the
browser is the shared Chromium of the root conftest.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.sync.server as ws_sync

from .test_static_js import http_base, page  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


class Closer:
    """Accept, then close with the path's code; count the connections per code."""

    def __init__(self) -> None:
        self.connections: Counter[int] = Counter()
        self.lock = threading.Lock()

    def handler(self, ws: Any) -> None:
        code = int(ws.request.path.strip("/").split("/")[-1])
        with self.lock:
            self.connections[code] += 1
        ws.close(code=code, reason="")


@pytest.fixture(scope="module")
def closer() -> Iterator[Closer]:
    state = Closer()
    server = ws_sync.serve(state.handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.base = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"  # type: ignore[attr-defined]
    yield state
    server.shutdown()


def connect(pg: Any, closer: Closer, code: int) -> None:
    pg.evaluate(
        "([url, code]) => { window.conns = window.conns || {};"
        " window.conns[code] = Slipway.live.connect(url, {minDelay: 50, maxDelay: 100}); }",
        [f"{closer.base}/ws/close/{code}/", code],
    )


@pytest.mark.parametrize(
    ("code", "says"),
    [(4401, "signed out"), (4403, "role does not allow"), (4404, "no longer exists")],
)
def test_a_refused_socket_stays_closed_and_says_why(
    page: Any,  # noqa: F811
    http_base: str,  # noqa: F811
    closer: Closer,
    code: int,
    says: str,
) -> None:
    page.goto(f"{http_base}/harness/components.html")
    connect(page, closer, code)
    page.wait_for_function(
        f"window.conns[{code}].refused === {code}", timeout=10_000, polling=50
    )
    notice = page.locator("[data-live-refused]")
    assert says in notice.inner_text()
    assert notice.get_attribute("data-code") == str(code)
    time.sleep(1.0)  # Twenty reconnect delays of 50 ms: none may happen.
    assert closer.connections[code] == 1
    assert page.locator("[data-live-refused]").count() == 1
    assert not page.js_errors


def test_a_dropped_socket_reconnects_without_a_notice(
    page: Any,  # noqa: F811
    http_base: str,  # noqa: F811
    closer: Closer,
) -> None:
    page.goto(f"{http_base}/harness/components.html")
    connect(page, closer, 1011)  # A server error: worth another try.
    deadline = time.monotonic() + 10
    while closer.connections[1011] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closer.connections[1011] >= 3
    assert page.locator("[data-live-refused]").count() == 0
    assert page.evaluate("window.conns[1011].refused") is None
    page.evaluate("window.conns[1011].close()")
