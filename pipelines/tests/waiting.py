"""Bounded waiting for asynchronous results in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Return PREDICATE's first truthy value; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {message or predicate}"
            )
        time.sleep(interval)
