"""Generic trigger webhooks: a bearer token and a small JSON body.

For scripts, other CI systems and forges without a dedicated module::

    POST /hooks/<repo>/generic
    Authorization: Bearer <token>
    X-Slipway-Delivery: <optional unique id>

    {"ref": "refs/heads/main" | "main" | "refs/tags/v1",
     "after": "<sha>"            (optional; alias "commit"; default: the ref's tip),
     "before": "<sha>"           (optional),
     "repository": "<url>"       (optional),
     "variables": {"KEY": "value"} (optional; values must be scalars),
     "delivery_id": "<id>"       (optional; the header wins)}

A bare ``ref`` such as ``main`` means the branch ``refs/heads/main``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import (
    ZERO_SHA,
    BadPayload,
    BadSignature,
    MissingSignature,
    PushEvent,
    check_ref,
    check_sha,
    check_token,
    clean_delivery_id,
    get_str,
    header,
    load_json,
    opt_obj,
    opt_str,
    redact,
    require_secret,
    split_ref,
)

NAME = "generic"

AUTH_HEADER = "Authorization"
DELIVERY_HEADER = "X-Slipway-Delivery"

_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_VARIABLES = 100
_MAX_VARIABLE_VALUE = 64 * 1024


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise unless ``Authorization: Bearer <token>`` carries ``secret``."""
    require_secret(secret)
    given = header(headers, AUTH_HEADER)
    if given is None:
        raise MissingSignature(f"missing header {AUTH_HEADER}")
    scheme, _, token = given.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BadSignature("Authorization must be 'Bearer <token>'")
    check_token(token.strip(), secret)


def delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """Return ``X-Slipway-Delivery``, else the body's ``delivery_id``, or ``None``."""
    try:
        from_header = clean_delivery_id(header(headers, DELIVERY_HEADER))
        if from_header:
            return from_header
        value = load_json(body).get("delivery_id")
    except BadPayload:
        return None
    return clean_delivery_id(value) if isinstance(value, str) else None


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the bearer token and credentials replaced."""
    return redact(headers, (AUTH_HEADER,))


def _variables(data: Mapping[str, object]) -> dict[str, str]:
    raw = opt_obj(data, "variables")
    if raw is None:
        return {}
    if len(raw) > _MAX_VARIABLES:
        raise BadPayload(f"field variables holds more than {_MAX_VARIABLES} entries")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not _VARIABLE_NAME.match(key):
            raise BadPayload(f"field variables.{key[:64]} is not a valid variable name")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise BadPayload(f"field variables.{key} must be a string or number")
        if len(text) > _MAX_VARIABLE_VALUE or "\x00" in text:
            raise BadPayload(f"field variables.{key} is too long or holds NUL")
        out[key] = text
    return out


def parse(headers: Mapping[str, str], body: bytes) -> PushEvent:
    """Normalise a generic trigger into a :class:`PushEvent` (a push or a tag)."""
    data = load_json(body)
    raw_ref = check_ref(get_str(data, "ref").strip(), "ref")
    ref = raw_ref if raw_ref.startswith("refs/") else f"refs/heads/{raw_ref}"
    branch, tag = split_ref(ref)
    if branch is None and tag is None:
        raise BadPayload("field ref must name a branch or a tag")
    after_raw = opt_str(data, "after")
    after_field = "after"
    if after_raw is None:
        after_raw, after_field = opt_str(data, "commit"), "commit"
    after = check_sha(after_raw, after_field) if after_raw else ""
    before_raw = opt_str(data, "before")
    before = check_sha(before_raw, "before") if before_raw else ZERO_SHA
    repository = opt_str(data, "repository")
    return PushEvent(
        forge=NAME,
        event="tag" if tag is not None else "push",
        ref=ref,
        before=before,
        after=after,
        branch=branch,
        tag=tag,
        repository_urls=(repository,) if repository else (),
        commits=(),
        author=opt_str(data, "author") or "",
        message=opt_str(data, "message") or "",
        delivery_id=delivery_id(headers, body),
        deleted=after == ZERO_SHA,
        forge_event="trigger",
        variables=_variables(data),
    )
