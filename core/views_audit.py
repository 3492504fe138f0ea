"""The audit log page: admins only, filterable by actor, action, target and date."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import roles
from .api import AuditEventFilter
from .models import AuditEvent

PAGE_SIZE = 50


@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    """List audit events, newest first."""
    if not roles.has_role(request.user, roles.ADMIN):
        raise PermissionDenied("The audit log needs the admin role.")
    filters = AuditEventFilter(request.GET or None, queryset=AuditEvent.objects.all())
    events = (
        filters.qs
        if filters.is_bound and filters.is_valid()
        else (
            AuditEvent.objects.all()
            if not filters.is_bound
            else AuditEvent.objects.none()
        )
    )
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "core/audit_list.html",
        {
            "filters": filters,
            "page": page,
            "query": query.urlencode(),
            "sources": AuditEvent.Source.choices,
            "target_types": AuditEvent.objects.order_by()
            .values_list("target_type", flat=True)
            .distinct(),
            "errors": filters.errors if filters.is_bound else {},
        },
        status=400 if filters.is_bound and not filters.is_valid() else 200,
    )
