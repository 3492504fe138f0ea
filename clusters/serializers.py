"""REST API representations of clusters and of the actions on them.

Credentials (kubeconfig, token) are never part of a representation. The action
serializers check the input before anything talks to the cluster, so a bad value is
a 400 with the field named, not a refused request to the API server.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import snapshot
from .models import Cluster

# Kubernetes object names (RFC 1123 subdomain) and namespaces (RFC 1123 label).
k8s_name = RegexValidator(
    r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", "Not a valid Kubernetes name."
)
k8s_namespace = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "Not a valid Kubernetes namespace."
)


class ClusterSerializer(serializers.ModelSerializer):
    """A cluster, what the monitor last saw of it, and never its credentials."""

    health = serializers.CharField(read_only=True)
    stale = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = [
            "id",
            "name",
            "description",
            "api_server",
            "auth_mode",
            "context",
            "verify_tls",
            "monitored",
            "created_at",
            "last_seen_at",
            "reachable",
            "server_version",
            "last_error",
            "health",
            "stale",
            "metrics",
            "web_url",
        ]
        read_only_fields = fields

    def _state(self, obj: Cluster) -> dict[str, str]:
        cache = self.context.setdefault("_states", {})
        if obj.pk not in cache:
            cache[obj.pk] = snapshot.read_state(obj.pk)
        return cache[obj.pk]

    def get_stale(self, obj: Cluster) -> bool:
        return snapshot.is_stale(self._state(obj))

    def get_metrics(self, obj: Cluster) -> str:
        """ok (metrics-server answers), none (no metrics-server) or unknown."""
        return self._state(obj).get("metrics", "unknown")

    def get_web_url(self, obj: Cluster) -> str:
        return obj.get_absolute_url()


class ClusterObjectSerializer(serializers.Serializer):
    """One object from the monitor's snapshot, as the pages show it."""

    key = serializers.CharField(help_text="namespace/name, or name when cluster-wide.")
    object = serializers.DictField(
        child=serializers.JSONField(), help_text="The compact projection."
    )


class WorkloadSerializer(serializers.Serializer):
    namespace = serializers.CharField(validators=[k8s_namespace], max_length=63)
    name = serializers.CharField(validators=[k8s_name], max_length=253)


class ScaleSerializer(WorkloadSerializer):
    kind = serializers.ChoiceField(
        choices=["deployments", "statefulsets", "replicasets"]
    )
    replicas = serializers.IntegerField(min_value=0, max_value=10_000)


class RestartSerializer(WorkloadSerializer):
    kind = serializers.ChoiceField(
        choices=["deployments", "statefulsets", "daemonsets"]
    )


class NodeSerializer(serializers.Serializer):
    name = serializers.CharField(validators=[k8s_name], max_length=253)


class PodSerializer(WorkloadSerializer):
    pass


class HpaSerializer(WorkloadSerializer):
    min_replicas = serializers.IntegerField(min_value=1, max_value=10_000)
    max_replicas = serializers.IntegerField(min_value=1, max_value=10_000)
    cpu_target = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, allow_null=True
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["max_replicas"] < attrs["min_replicas"]:
            raise serializers.ValidationError(
                {"max_replicas": "Must be at least min_replicas."}
            )
        return attrs


class ActionResultSerializer(serializers.Serializer):
    """What the cluster did."""

    ok = serializers.BooleanField()
    message = serializers.CharField()
    details = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_details(self, obj: Any) -> dict[str, Any]:
        return dict(obj.details)
