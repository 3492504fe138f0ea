"""Verify forge webhooks and normalise them to one :class:`PushEvent`.

Use from a view::

    forge = get_forge(name)                      # UnknownForge (404) if unknown
    forge.verify(request.headers, request.body, repository.webhook_secret)
    event = forge.parse(request.headers, request.body)
    if event.ignored:
        ...  # record "ignored: event {event.forge_event} not handled"

Every failure is a :class:`WebhookError` whose ``status`` is the HTTP status to answer
with; nothing else escapes ``verify`` or ``parse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from . import generic, gitea, github, gitlab
from .base import (
    ZERO_SHA,
    BadPayload,
    BadSignature,
    Commit,
    Forbidden,
    Forge,
    MissingSignature,
    PushEvent,
    UnknownForge,
    WebhookError,
    normalise_repo_url,
)

FORGES: Final[Mapping[str, Forge]] = {
    "github": github,
    "gitlab": gitlab,
    "gitea": gitea,
    "forgejo": gitea,
    "generic": generic,
}


def get_forge(name: str) -> Forge:
    """Return the forge module for ``name`` or raise :class:`UnknownForge`."""
    try:
        return FORGES[name.strip().lower()]
    except KeyError:
        raise UnknownForge(f"unknown forge {name[:40]!r}") from None


def verify_and_parse(
    forge: str, headers: Mapping[str, str], body: bytes, secret: str
) -> PushEvent:
    """Verify the request with ``forge``'s rules, then return its normalised event."""
    module = get_forge(forge)
    module.verify(headers, body, secret)
    event = module.parse(headers, body)
    if forge.strip().lower() == "forgejo" and event.forge == "gitea":
        # One module serves both; report the name the repository was configured with.
        event = replace(event, forge="forgejo")
    return event


__all__ = [
    "FORGES",
    "ZERO_SHA",
    "BadPayload",
    "BadSignature",
    "Commit",
    "Forbidden",
    "Forge",
    "MissingSignature",
    "PushEvent",
    "UnknownForge",
    "WebhookError",
    "get_forge",
    "normalise_repo_url",
    "verify_and_parse",
]
