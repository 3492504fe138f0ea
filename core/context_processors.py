"""Template context available on every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from . import roles


def slipway(request: HttpRequest) -> dict[str, Any]:
    """Expose the user's role to templates (buttons shown according to role)."""
    user = getattr(request, "user", None)
    return {
        "user_role": roles.role_of(user),
        "can_trigger": roles.has_role(user, roles.DEVELOPER),
        "can_operate": roles.has_role(user, roles.OPERATOR),
    }
