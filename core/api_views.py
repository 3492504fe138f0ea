"""Base classes of the API's views, and the audit log endpoint (admins only)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.views import APIView

from . import roles
from .api import AuditEventFilter, AuditEventSerializer, AuditSourceMixin
from .models import AuditEvent


class ApiView(AuditSourceMixin, APIView):
    """Base of the API's plain views."""


class ApiViewSet(AuditSourceMixin, viewsets.GenericViewSet):
    """Base of the API's viewsets."""


@extend_schema_view(
    list=extend_schema(summary="List audit events (admins)"),
    retrieve=extend_schema(summary="Show one audit event (admins)"),
)
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """The audit log: who did what to which target, when and from where."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    required_roles = {"read": roles.ADMIN}
