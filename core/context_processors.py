"""Template context available on every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from . import roles


def slipway(request: HttpRequest) -> dict[str, Any]:
    """Expose the user's role to templates (buttons shown according to role).

    ``user_role`` is the global role (the header, the admin-only links).
    ``can_trigger`` and ``can_operate`` answer for the repository or cluster the
    page is about when its view named one (``core.roles.role_required``), so a
    user granted a role on that object sees its buttons; they are lazy, so a page
    that shows no button asks nothing.
    """
    user = getattr(request, "user", None)

    def may(role: str) -> Any:
        def check() -> bool:
            if roles.has_role(user, role):
                return True
            held = roles.access(user)
            if held is None or not held.grants:
                return False
            scope = roles.request_scope(request)
            return scope is not None and roles.has_role(user, role, scope)

        return SimpleLazyObject(check)

    return {
        "user_role": roles.role_of(user),
        "can_trigger": may(roles.DEVELOPER),
        "can_operate": may(roles.OPERATOR),
    }
