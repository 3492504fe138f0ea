"""Roles are Django groups ordered by power: viewer < developer < operator < admin.

A superuser holds every role. Each role includes the powers of the ones below it.
"""

from __future__ import annotations

from typing import Any

VIEWER = "viewer"
DEVELOPER = "developer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (VIEWER, DEVELOPER, OPERATOR, ADMIN)
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def role_of(user: Any) -> str | None:
    """Return USER's strongest role, or None for a user without access."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_slipway_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))
    best = None
    for role in ROLES:
        if role in names:
            best = role
    user._slipway_role = best
    return best


def has_role(user: Any, role: str) -> bool:
    """Return whether USER holds ROLE or a stronger one."""
    held = role_of(user)
    return held is not None and _RANK[held] >= _RANK[role]
