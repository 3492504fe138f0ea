"""REST API of the clusters app: read clusters and their live objects, act on them.

Reads need the viewer role, actions the operator role (as on the pages), each on the
cluster in question (a global role or a grant on it); the list shows the clusters the
user may see. Actions go through ``services.perform_action``, which audits every
attempt, refused or not. Registering, editing and removing clusters (credentials)
stay in the web UI.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core import roles
from core.api import ErrorSerializer, error_body
from core.api_views import ApiViewSet

from . import services, snapshot
from .models import Cluster
from .projection import PROJECTIONS as WATCHED  # The kinds the monitor keeps.
from .serializers import (
    ActionResultSerializer,
    ClusterObjectSerializer,
    ClusterSerializer,
    HpaSerializer,
    NodeSerializer,
    PodSerializer,
    RestartSerializer,
    ScaleSerializer,
)

KINDS = sorted(WATCHED)
FAILED = OpenApiResponse(
    ErrorSerializer,
    description="The cluster refused the action or could not be reached "
    "(code action_failed); the attempt is audited.",
)
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer}


def _action_schema(summary: str, request: type[serializers.Serializer]) -> Any:
    return extend_schema(
        summary=f"{summary} (operators)",
        request=request,
        responses={
            200: ActionResultSerializer,
            **ERRORS,
            404: ErrorSerializer,
            409: FAILED,
        },
    )


@extend_schema_view(
    list=extend_schema(summary="List clusters with their health"),
    retrieve=extend_schema(summary="Show a cluster's health"),
)
class ClusterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Registered Kubernetes clusters (credentials are never returned)."""

    queryset = Cluster.objects.all()
    serializer_class = ClusterSerializer
    role_scope = "pk"  # Roles count per cluster: a global role or a grant on it.
    required_roles = {
        "scale": roles.OPERATOR,
        "restart": roles.OPERATOR,
        "cordon": roles.OPERATOR,
        "uncordon": roles.OPERATOR,
        "drain": roles.OPERATOR,
        "delete_pod": roles.OPERATOR,
        "edit_hpa": roles.OPERATOR,
    }

    def _act(
        self, name: str, serializer_class: type[serializers.Serializer]
    ) -> Response:
        cluster = self.get_object()
        params = serializer_class(data=self.request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        if data.get("cpu_target") is None:
            data.pop("cpu_target", None)
        result = services.perform_action(
            cluster, name, data, request=self.request, actor=self.request.user
        )
        if not result.ok:
            return Response(error_body("action_failed", result.message), status=409)
        return Response(ActionResultSerializer(result).data)

    @extend_schema(
        summary="List the live objects of one kind, from the monitor's snapshot",
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, "path", enum=KINDS),
        ],
        responses={200: ClusterObjectSerializer(many=True), 404: ErrorSerializer},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"objects/(?P<kind>[a-z]+)",
        filter_backends=[],
        pagination_class=None,
    )
    def objects(self, request: Request, pk: str, kind: str) -> Response:
        cluster = self.get_object()
        if kind not in WATCHED:
            return Response(
                error_body("not_found", f"Unknown kind {kind!r}.", {"kinds": KINDS}),
                status=404,
            )
        objs = snapshot.read_objects(cluster.pk, kind)
        return Response([{"key": k, "object": objs[k]} for k in sorted(objs)])

    @_action_schema("Scale a deployment, statefulset or replicaset", ScaleSerializer)
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str) -> Response:
        return self._act("scale", ScaleSerializer)

    @_action_schema("Restart a workload's pods (rollout restart)", RestartSerializer)
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str) -> Response:
        return self._act("restart", RestartSerializer)

    @_action_schema("Cordon a node", NodeSerializer)
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, pk: str) -> Response:
        return self._act("cordon", NodeSerializer)

    @_action_schema("Uncordon a node", NodeSerializer)
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, pk: str) -> Response:
        return self._act("uncordon", NodeSerializer)

    @_action_schema("Drain a node (cordon, then evict its pods)", NodeSerializer)
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str) -> Response:
        return self._act("drain", NodeSerializer)

    @_action_schema("Delete a pod", PodSerializer)
    @action(detail=True, methods=["post"], url_path="delete-pod")
    def delete_pod(self, request: Request, pk: str) -> Response:
        return self._act("delete-pod", PodSerializer)

    @_action_schema("Change an HPA's bounds and CPU target", HpaSerializer)
    @action(detail=True, methods=["post"], url_path="edit-hpa")
    def edit_hpa(self, request: Request, pk: str) -> Response:
        return self._act("edit-hpa", HpaSerializer)
