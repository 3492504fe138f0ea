"""Fixed-window rate limits on login and webhook endpoints, counted in the cache.

A rate is ``"<count>/<period>"`` with the period in seconds or as ``s``, ``min``,
``h`` (``"10/min"``, ``"600/60"``); an empty string or ``"0"`` turns a limit off.
The counter of a window is one cache key (``INCR``; it expires with the window), so
every web process shares it through Redis. A fixed window allows at most twice the
rate across a window boundary, which is fine for slowing down password guessing
and floods; it is not a quota.

When the cache is down the request is let through (and logged): a Redis outage
must not lock everyone out of the login page.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+|[a-z]+)\s*$")


class RateError(ValueError):
    """A rate setting cannot be parsed."""


@dataclass(frozen=True)
class Rate:
    """COUNT requests per PERIOD seconds."""

    count: int
    period: int


def parse_rate(text: str) -> Rate | None:
    """Return the rate TEXT describes, or None when it turns the limit off."""
    text = (text or "").strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise RateError(f"Not a rate: {text!r} (expected e.g. 10/min or 600/60).")
    count, unit = int(match[1]), match[2]
    period = int(unit) if unit.isdigit() else _PERIODS.get(unit, 0)
    if count < 1 or period < 1:
        raise RateError(f"Not a rate: {text!r} (expected e.g. 10/min or 600/60).")
    return Rate(count, period)


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Verdict:
    """The outcome of one hit: allowed, and when the window ends."""

    allowed: bool
    retry_after: int


def _window(scope: str, ident: str, rate: Rate, now: float) -> tuple[str, int]:
    """Return the counter key of NOW's window and the seconds until it ends."""
    window = int(now // rate.period)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    key = f"ratelimit:{scope}:{digest}:{window}"
    return key, max(1, math.ceil((window + 1) * rate.period - now))


def hit(scope: str, ident: str, rate: Rate, *, now: float | None = None) -> Verdict:
    """Count one request of IDENT in SCOPE against RATE."""
    now = _now() if now is None else now
    key, retry_after = _window(scope, ident, rate, now)
    try:
        # add() sets the key with its expiry only if it is new; incr() is atomic.
        cache.add(key, 0, timeout=rate.period + 1)
        count = cache.incr(key)
    except Exception:  # Any cache failure: fail open, see the module docstring.
        logger.warning("rate limit %s not checked: cache unavailable", scope)
        return Verdict(True, 0)
    return Verdict(count <= rate.count, retry_after)


# INCR the window's counter and give a new one its expiry, in one round trip.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return count
"""


async def ahit(
    redis: Any, scope: str, ident: str, rate: Rate, *, now: float | None = None
) -> Verdict:
    """Count one request like ``hit``, on a ``redis.asyncio`` client, in one call.

    For ASGI routes that bypass Django (the webhook route): the counter is the same
    cache key ``hit`` uses, so both doors share one limit.
    """
    now = _now() if now is None else now
    key, retry_after = _window(scope, ident, rate, now)
    try:
        count = int(
            await redis.eval(_HIT_SCRIPT, 1, cache.make_key(key), rate.period + 1)
        )
    except Exception:  # Any cache failure: fail open, see the module docstring.
        logger.warning("rate limit %s not checked: cache unavailable", scope)
        return Verdict(True, 0)
    return Verdict(count <= rate.count, retry_after)


def throttled_body(verdict: Verdict) -> dict[str, Any]:
    """Return the JSON error body of a refused request."""
    message = f"Too many requests. Try again in {verdict.retry_after} s."
    return {"error": {"code": "throttled", "message": message, "details": {}}}


def client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _rate(name: str) -> Rate | None:
    return parse_rate(settings.SLIPWAY.get(name, ""))


def _too_many(request: HttpRequest, verdict: Verdict, json: bool) -> HttpResponse:
    message = f"Too many requests. Try again in {verdict.retry_after} s."
    response: HttpResponse
    if json:
        response = JsonResponse(throttled_body(verdict), status=429)
    else:
        response = render(
            request,
            "core/429.html",
            {"message": message, "retry_after": verdict.retry_after},
            status=429,
        )
    response["Retry-After"] = str(verdict.retry_after)
    return response


def _login_paths() -> tuple[str, ...]:
    return (reverse("login"), reverse("admin:login"))


class RateLimitMiddleware:
    """Limit POST /login/ and /admin/login/ per client address and username, and
    /hooks/ per address.

    Both login forms count against one limit: a second door must not double the
    rate of guesses.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        verdict = self.check(request)
        if verdict is not None and not verdict.allowed:
            return _too_many(request, verdict, json=request.path.startswith("/hooks/"))
        return self.get_response(request)

    def check(self, request: HttpRequest) -> Verdict | None:
        """Return the verdict for a limited request, None for any other."""
        if request.method == "POST" and request.path in _login_paths():
            rate = _rate("RATELIMIT_LOGIN")
            if rate is None:
                return None
            username = str(request.POST.get("username", ""))[:150].lower()
            return hit("login", f"{client_ip(request)}|{username}", rate)
        if request.path.startswith("/hooks/"):
            rate = _rate("RATELIMIT_HOOKS")
            if rate is None:
                return None
            return hit("hooks", client_ip(request), rate)
        return None
