"""Models shared by both apps: the audit log, personal API tokens, role grants."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver


class AuditEvent(models.Model):
    """One mutating action: who did what to which target, when and from where."""

    class Source(models.TextChoices):
        UI = "ui", "Web UI"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        WEBHOOK = "webhook", "Webhook"
        SYSTEM = "system", "System"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UI)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.action} {self.target_repr}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    """Table-level queries on API tokens."""

    def usable(self) -> ApiTokenQuerySet:
        """Return the tokens that still authenticate: not revoked, not expired."""
        from django.utils import timezone

        return self.filter(revoked_at=None).filter(
            models.Q(expires_at=None) | models.Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    """A personal API token: ``Authorization: Bearer slp_<secret>``.

    Only the SHA-256 of the whole token is stored (see ``core.tokens`` for why a fast
    hash is right here); the first characters of the secret are kept in clear so a
    list can tell tokens apart. A token acts as its user with at most its scope.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8)
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} (slp_{self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        from django.utils import timezone

        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE


class RoleGrantQuerySet(models.QuerySet["RoleGrant"]):
    """Table-level operations on grants."""

    def grant(self, holder: Any, role: str, obj: models.Model) -> RoleGrant:
        """Give HOLDER (a user or a group) ROLE on OBJ, replacing an earlier grant."""
        from django.contrib.auth.models import Group
        from django.contrib.contenttypes.models import ContentType

        from .roles import GRANT_TARGETS

        if obj._meta.label_lower not in GRANT_TARGETS:
            raise ValueError(f"Roles can be granted on {GRANT_TARGETS}, not {obj!r}.")
        who = {"group": holder} if isinstance(holder, Group) else {"user": holder}
        grant, _ = self.update_or_create(
            **who,
            content_type=ContentType.objects.get_for_model(obj),
            object_id=obj.pk,
            defaults={"role": role},
        )
        return grant

    def on(self, obj: models.Model) -> RoleGrantQuerySet:
        """Return the grants on OBJ (a repository or a cluster)."""
        from django.contrib.contenttypes.models import ContentType

        return self.filter(
            content_type=ContentType.objects.get_for_model(obj), object_id=obj.pk
        )


class RoleGrant(models.Model):
    """A role on one repository or one cluster, held by a user or by a group.

    Like a GitLab project membership: the holder's role on that object is the stronger
    of this grant and their global role (``core.roles``). The object is named by
    content type and id so that core depends on neither app; ``core.roles`` lists the
    models a grant may point at (``GRANT_TARGETS``).
    """

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        DEVELOPER = "developer", "Developer"
        OPERATOR = "operator", "Operator"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_grants",
    )
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_grants",
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.CASCADE, related_name="+"
    )
    object_id = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RoleGrantQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["content_type", "object_id"])]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, group__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=False)
                ),
                name="core_rolegrant_user_xor_group",
            ),
            models.UniqueConstraint(
                fields=["user", "content_type", "object_id"],
                condition=models.Q(user__isnull=False),
                name="core_rolegrant_one_per_user_and_object",
            ),
            models.UniqueConstraint(
                fields=["group", "content_type", "object_id"],
                condition=models.Q(group__isnull=False),
                name="core_rolegrant_one_per_group_and_object",
            ),
        ]

    def __str__(self) -> str:
        holder = self.user or (f"group {self.group}" if self.group_id else "?")
        return f"{holder}: {self.role} on {self.target_label}"

    @property
    def target(self) -> models.Model | None:
        """Return the repository or cluster the grant is on (None if it is gone)."""
        model = self.content_type.model_class()
        if model is None:
            return None
        return model._default_manager.filter(pk=self.object_id).first()

    @property
    def target_label(self) -> str:
        target = self.target if self.content_type_id else None
        kind = self.content_type.model if self.content_type_id else "object"
        return f"{kind} {target if target is not None else f'#{self.object_id}'}"


@receiver(post_delete)
def _drop_grants_of_deleted_object(sender: type, instance: Any, **kwargs: Any) -> None:
    """Delete the grants on a repository or cluster that was deleted.

    A generic relation has no ON DELETE CASCADE; without this, a grant would outlive
    its object and wait for whatever row reuses the id.
    """
    from .roles import GRANT_TARGETS

    if sender._meta.label_lower not in GRANT_TARGETS:
        return
    from django.contrib.contenttypes.models import ContentType

    RoleGrant.objects.filter(
        content_type=ContentType.objects.get_for_model(sender),
        object_id=instance.pk,
    ).delete()
