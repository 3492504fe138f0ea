"""Kubernetes clusters and their credentials.

Metrics history is deliberately not a model: the monitor samples every node and pod
every few seconds, and one row per sample would dominate the write rate of an
SQLite installation (see ARCHITECTURE.md, "SQLite serves several processes"). The
history feeds charts only, so it lives in Redis as capped lists (see
``clusters.snapshot``), where a bounded length is the retention policy and nothing
needs pruning by a beat task.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.fields import EncryptedTextField

slug_name = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "Use lower-case letters, digits and dashes (like a Kubernetes name).",
)


# A namespace name is a DNS-1123 label: what kube-apiserver accepts.
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Each namespace costs the monitor one watch per namespaced kind (ten of them): fifty
# namespaces are 500 open streams to one API server, beyond which watching the whole
# cluster is the cheaper request.
MAX_NAMESPACES = 50


def validate_namespaces(value: Any) -> None:
    """Accept a list of distinct namespace names (DNS-1123 labels), at most fifty."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Give the namespaces as a list of names.")
    bad = [v for v in value if not NAMESPACE_RE.match(v)]
    if bad:
        raise ValidationError(
            "Not a namespace name: %(names)s. Use at most 63 lower-case letters, "
            "digits and dashes, starting and ending with a letter or digit.",
            params={"names": ", ".join(bad)},
        )
    if len(set(value)) != len(value):
        raise ValidationError("A namespace is listed twice.")
    if len(value) > MAX_NAMESPACES:
        raise ValidationError(
            "Watch at most %(max)d namespaces, or leave the list empty to watch all.",
            params={"max": MAX_NAMESPACES},
        )


class ClusterQuerySet(models.QuerySet["Cluster"]):
    """Table-level queries on clusters."""

    def for_monitor(self) -> ClusterQuerySet:
        """Return the clusters the monitor should watch, with credentials loaded."""
        return self.filter(monitored=True).order_by("pk")


class Cluster(models.Model):
    """A Kubernetes cluster Slipway watches and acts on, and how to reach it.

    Credentials are encrypted at rest. The status fields are written only by the
    monitor and the "test connection" action; they are a cache of what the cluster
    last said, not configuration.
    """

    class AuthMode(models.TextChoices):
        KUBECONFIG = "kubeconfig", "Kubeconfig"
        TOKEN = "token", "Service-account token and CA"
        IN_CLUSTER = "in_cluster", "In-cluster (Slipway runs inside this cluster)"

    name = models.CharField(max_length=63, unique=True, validators=[slug_name])
    description = models.CharField(max_length=200, blank=True)
    api_server = models.URLField(
        "API server URL",
        blank=True,
        help_text="Taken from the kubeconfig when empty; required for token auth.",
    )
    auth_mode = models.CharField(
        max_length=20, choices=AuthMode.choices, default=AuthMode.KUBECONFIG
    )
    kubeconfig = EncryptedTextField(blank=True)
    context = models.CharField(
        max_length=253, blank=True, help_text="The kubeconfig context to use."
    )
    token = EncryptedTextField(blank=True)
    ca_cert = models.TextField(
        "CA certificate (PEM)", blank=True, help_text="Trusted CA for the API server."
    )
    verify_tls = models.BooleanField(
        "verify TLS",
        default=True,
        help_text="Turn off only for throw-away test clusters.",
    )
    monitored = models.BooleanField(
        default=True, help_text="Watch this cluster live with the monitor process."
    )
    namespaces = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_namespaces],
        help_text=(
            "The namespaces to watch. Empty: all namespaces, which needs list and "
            "watch across the cluster (a ClusterRole)."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # Written by the monitor and by "test connection".
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    reachable = models.BooleanField(default=False, editable=False)
    server_version = models.CharField(max_length=100, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    objects = ClusterQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("clusters:cluster-detail", args=[self.pk])

    @property
    def group_name(self) -> str:
        """Return the Channels group that carries this cluster's changes."""
        return f"cluster.{self.pk}"

    @property
    def all_namespaces(self) -> bool:
        """Return whether the monitor watches every namespace (no list is set)."""
        return not self.namespaces

    @property
    def health(self) -> str:
        """Return a status word for badges: success, failed or pending (never seen)."""
        if self.last_seen_at is None and not self.last_error:
            return "pending"
        return "success" if self.reachable else "failed"

    def mark_seen(self, version: str = "") -> None:
        """Record that the API server answered just now."""
        self.reachable = True
        self.last_seen_at = timezone.now()
        self.last_error = ""
        fields = ["reachable", "last_seen_at", "last_error"]
        if version:
            self.server_version = version
            fields.append("server_version")
        Cluster.objects.filter(pk=self.pk).update(
            **{field: getattr(self, field) for field in fields}
        )

    def mark_unreachable(self, error: str) -> None:
        """Record that the API server could not be reached or refused us."""
        self.reachable = False
        self.last_error = error[:2000]
        Cluster.objects.filter(pk=self.pk).update(
            reachable=False, last_error=self.last_error
        )
