"""Base classes of the API's views and schema, and the audit log endpoint (admins)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.openapi import AutoSchema as _SpectacularAutoSchema
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.views import APIView

from . import roles
from .api import (
    ID_REGEX,
    AuditEventFilter,
    AuditEventSerializer,
    AuditSourceMixin,
    ErrorSerializer,
    scoped_queryset,
)
from .models import AuditEvent

# --- schema: defined before any extend_schema use, which reads this setting --------


class AutoSchema(_SpectacularAutoSchema):
    """Document the error body for every status any API operation can answer."""

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        bodies = super()._get_response_bodies(direction)
        if direction != "response":
            return bodies
        codes = ["400", "401", "403", "404", "405", "406", "415", "429"]
        if self.method != "GET":
            codes.append("409")
        for code in codes:
            if code not in bodies:
                bodies[code] = self._get_response_for_code(
                    ErrorSerializer, code, direction=direction
                )
        return bodies


class ApiView(AuditSourceMixin, APIView):
    """Base of the API's plain views."""


class ApiViewSet(AuditSourceMixin, viewsets.GenericViewSet):
    """Base of the API's viewsets: ids in URLs are whole numbers (else a JSON 404).

    ``role_scope`` names the path from a row to its repository or cluster (see
    ``core.api``): every list and lookup then sees only the rows the user may see,
    and a row's actions need the role on its object.
    """

    lookup_value_regex = ID_REGEX
    role_scope: str | None = None

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return super().filter_queryset(scoped_queryset(self.request, self, queryset))


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
