"""Shared REST API pieces: roles as permissions, the error body, pagination, audit.

Every API error has one shape::

    {"error": {"code": "not_found", "message": "Not found.", "details": {}}}

Nothing here imports ``rest_framework.views``: the settings name these classes, and
DRF's views module reads the settings when it is imported (see ``core.api_views``
for the base views).

Roles are the same as on the pages (``core.roles``): a view names the least role each
action needs in ``required_roles``; reads need a viewer, writes default to admin so a
new write action is closed until someone opens it on purpose. A view whose rows
belong to a repository or cluster names the path to it in ``role_scope`` (``"pk"``
for the repository or cluster itself, ``"run__repository"`` for a job): its list
shows only what the user may see, and the role is checked on the row's object, so a
grant on one repository counts there and nowhere else. A view without
``role_scope``, and the actions a view lists in ``global_actions`` (adding a
repository), need a global role.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, pagination, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from . import roles
from .models import ApiToken, AuditEvent

logger = logging.getLogger(__name__)

# --- errors -------------------------------------------------------------------------

_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "throttled",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Return the one error body of the API."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _action_errors() -> tuple[type[Exception], ...]:
    # Imported late: core must not import the apps at module level.
    from clusters.services import ActionError as ClusterActionError
    from pipelines.delivery import DeliveryError
    from pipelines.services import ActionError

    return (ActionError, ClusterActionError, DeliveryError)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn any exception of an API view into the error body (EXCEPTION_HANDLER)."""
    if isinstance(exc, _action_errors()):
        return Response(error_body("conflict", str(exc)), status=409)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, (OverflowError, DataError)):
        # A number too large for the database column (SQLite raises OverflowError,
        # PostgreSQL DataError): bad input, not a server fault.
        return Response(
            error_body("invalid", "A value is out of range for this field."),
            status=400,
        )
    elif isinstance(exc, IntegrityError):
        # A race lost against a unique constraint: the row exists already.
        logger.info("API integrity error: %s", exc)
        return Response(
            error_body("conflict", "This conflicts with an existing object."),
            status=409,
        )
    if not isinstance(exc, exceptions.APIException):
        logger.exception("API view failed", exc_info=exc)
        return Response(
            error_body("server_error", "Internal error; it has been logged."),
            status=500,
        )
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    status = exc.status_code
    code = _CODES.get(status, "error")
    if isinstance(exc, exceptions.AuthenticationFailed):
        code = "authentication_failed"
    elif isinstance(exc, exceptions.ParseError):
        code = "parse_error"
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        message = "Invalid input."
        return Response(error_body(code, message, details), status=status)
    message = str(exc.detail) if not isinstance(exc.detail, (list, dict)) else ""
    return Response(
        error_body(code, message or "Error.", {}), status=status, headers=headers
    )


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Answer an unknown /api/ URL with the error body instead of the HTML page."""
    return JsonResponse(
        error_body("not_found", f"No API endpoint at {request.path}."), status=404
    )


not_found.login_required = False  # type: ignore[attr-defined]


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(child=serializers.JSONField())


class ErrorSerializer(serializers.Serializer):
    """The body of every API error."""

    error = ErrorDetailSerializer()


# --- permissions --------------------------------------------------------------------


def required_role(request: Request, view: Any) -> str:
    """Return the least role the request needs on VIEW.

    ``view.required_roles`` maps a viewset action (``"list"``, ``"cancel"``) or an
    HTTP method to a role; anything unnamed needs a viewer to read, an admin to write.
    """
    table: dict[str, str] = getattr(view, "required_roles", {})
    action = getattr(view, "action", None)
    if action and action in table:
        return table[action]
    if request.method in table:
        return table[request.method]
    if request.method in permissions.SAFE_METHODS:
        return table.get("read", roles.VIEWER)
    return table.get("write", roles.ADMIN)


class RolePermission(permissions.BasePermission):
    """Allow the request when the user holds the role its action needs.

    On a view with ``role_scope``, holding the role on any object lets the request
    in; the row's own object decides in ``has_object_permission`` (and the
    queryset, filtered with ``scoped_queryset``, hides what the user cannot see).
    """

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        role = required_role(request, view)
        if roles.has_role(request.user, role):
            return True
        global_only = getattr(view, "action", None) in getattr(
            view, "global_actions", ()
        )
        if (
            getattr(view, "role_scope", None)
            and not global_only
            and roles.has_role(request.user, role, roles.ANY)
        ):
            return True
        self.message = f"This needs the {role} role."
        return False

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        role = required_role(request, view)
        if roles.has_role(request.user, role):
            return True
        via = getattr(view, "role_scope", None)
        if not via or via == roles.ANY:
            return False
        scope = roles.scope_of(obj, None if via == "pk" else via)
        if scope is not None and roles.has_role(request.user, role, scope):
            return True
        self.message = f"This needs the {role} role on it."
        return False


def scoped_queryset(request: Request, view: Any, queryset: Any) -> Any:
    """Return the rows of QUERYSET the request's user may see (``role_scope``)."""
    via = getattr(view, "role_scope", None)
    if not via or via == roles.ANY:
        return queryset
    return roles.visible(request.user, queryset, None if via == "pk" else via)


class VisibleRelatedField(serializers.PrimaryKeyRelatedField):
    """An id of a related row the request's user may see (``core.roles.visible``).

    Another id is "does not exist", as a 404 would say: a grant holder learns
    nothing about other repositories from a request body either. Without a request
    in the serializer's context nothing is valid.
    """

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        request = self.context.get("request")
        if request is None:
            return queryset.none()
        try:
            return roles.visible(request.user, queryset)
        except ValueError:  # Not tied to a repository or cluster: no filter.
            return queryset


def require_on(request: Request, role: str, obj: Any) -> None:
    """Raise 403 unless the user holds ROLE on OBJ (a row named in a request body)."""
    if not roles.has_role(request.user, role, roles.scope_of(obj)):
        raise exceptions.PermissionDenied(f"This needs the {role} role on it.")


def HasRole(min_role: str) -> type[permissions.BasePermission]:  # noqa: N802
    """Return a permission class that requires MIN_ROLE for every method."""

    class _HasRole(permissions.BasePermission):
        message = f"This needs the {min_role} role."

        def has_permission(self, request: Request, view: Any) -> bool:
            return bool(
                request.user
                and request.user.is_authenticated
                and roles.has_role(request.user, min_role)
            )

    _HasRole.__name__ = f"HasRole_{min_role}"
    return _HasRole


class TokenScopePermission(permissions.BasePermission):
    """Refuse writes made with a read-only API token."""

    message = "This token has the read scope; writes need a write token."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and not token.can_write:
            return request.method in permissions.SAFE_METHODS
        return True


DEFAULT_PERMISSIONS = [RolePermission, TokenScopePermission]

# Ids in URLs and filters: at most 18 digits, so always within a 64-bit column.
MAX_ID = 10**18 - 1
ID_REGEX = r"[0-9]{1,18}"


class AuditSourceMixin:
    """Mark the request so audit records made under it say ``source="api"``."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        request._request.audit_source = AuditEvent.Source.API  # type: ignore[attr-defined]
        super().initial(request, *args, **kwargs)  # type: ignore[misc]


class IdFilter(django_filters.NumberFilter):
    """Filter by an object id: a whole number that fits a 64-bit column."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


# --- pagination ---------------------------------------------------------------------


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M`` (at most 200); the body has count, next, previous."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


# --- audit log ----------------------------------------------------------------------


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time filter that queries in UTC.

    Python accepts offsets up to ±23:59, PostgreSQL only to ±15:59: compared as
    given, "2026-01-01T00:00-20:00" is a database error instead of a moment.
    """

    def filter(self, qs: Any, value: Any) -> Any:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return super().filter(qs, value)


class AuditEventFilter(django_filters.FilterSet):
    """Filters of the audit log, shared by the page and the API."""

    actor = django_filters.CharFilter(field_name="actor_name", label="Actor")
    action = django_filters.CharFilter(
        field_name="action", lookup_expr="startswith", label="Action"
    )
    target_type = django_filters.CharFilter(label="Target type")
    target_id = django_filters.CharFilter(label="Target id")
    source = django_filters.ChoiceFilter(choices=AuditEvent.Source.choices)
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Since")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Until")
    date = django_filters.DateFilter(field_name="created_at", lookup_expr="date")

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "target_type", "target_id", "source"]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "source",
            "ip_address",
            "details",
        ]
