"""The one write path of the audit log."""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import AuditEvent


def client_ip(request: Any) -> str | None:
    """Return the client's address (the proxy's when not trusted)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    *,
    actor: Any = None,
    target: models.Model | None = None,
    source: str | None = None,
    request: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record ACTION by ACTOR on TARGET.

    Without SOURCE, the request says where the action came from: API views mark
    theirs (``request.audit_source``), so a service called from the API records
    ``api`` without knowing who called it; anything else is the web UI.
    """
    if source is None:
        source = getattr(request, "audit_source", None) or AuditEvent.Source.UI
    if actor is None and request is not None:
        actor = getattr(request, "user", None)
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:300] if target is not None else "",
        source=source,
        ip_address=client_ip(request),
        details=details or {},
    )
