"""REST API representations of repositories, runs, jobs, schedules and variables.

Credentials and secret values are write-only: a serializer accepts them and never
returns them (``has_https_token`` says whether one is stored).
"""

from __future__ import annotations

from typing import Any

from croniter import croniter
from django.core.validators import URLValidator
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import VisibleRelatedField

from .forms import REF_RE, RESERVED_NAMES
from .models import (
    VARIABLE_NAME_VALIDATOR,
    Artifact,
    Deployment,
    Environment,
    Job,
    Repository,
    Run,
    Schedule,
    Stage,
    Variable,
    WebhookDelivery,
)

SECONDS = serializers.FloatField(allow_null=True, help_text="Seconds, or null.")


def _seconds(value: Any) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def validate_ref(value: str, what: str = "a branch, tag or commit SHA") -> str:
    value = value.strip()
    if not REF_RE.match(value) or ".." in value or value.startswith("-"):
        raise serializers.ValidationError(f"Enter {what}.")
    return value


class VariablesField(serializers.DictField):
    """A mapping of variable names to string values."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=serializers.CharField(allow_blank=True, max_length=10_000), **kwargs
        )

    def to_internal_value(self, data: Any) -> dict[str, str]:
        value = super().to_internal_value(data)
        if len(value) > 200:
            raise serializers.ValidationError("At most 200 variables.")
        bad = [name for name in value if not _valid_variable_name(name)]
        if bad:
            raise serializers.ValidationError(
                f"Not a valid variable name: {bad[0][:40]!r} (letters, digits and "
                "underscores, not starting with a digit)."
            )
        return value


def _valid_variable_name(name: str) -> bool:
    try:
        VARIABLE_NAME_VALIDATOR(name)
    except Exception:
        return False
    return True


# --- repositories -------------------------------------------------------------------


class RepositorySerializer(serializers.ModelSerializer):
    """A repository; the token, SSH key and webhook secret are write-only."""

    https_token = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=10_000
    )
    ssh_private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=20_000
    )
    # A CharField: the schema's "uri" format would refuse the stored empty string.
    forge_api_url = serializers.CharField(
        required=False, allow_blank=True, max_length=200, validators=[URLValidator()]
    )
    has_https_token = serializers.SerializerMethodField()
    has_ssh_private_key = serializers.SerializerMethodField()
    webhook_url = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = Repository
        fields = [
            "id",
            "name",
            "description",
            "clone_url",
            "default_branch",
            "forge",
            "branch_filter",
            "tag_filter",
            "concurrency_limit",
            "cancel_superseded",
            "poll_interval",
            "forge_api_url",
            "forge_project",
            "created_at",
            "https_token",
            "ssh_private_key",
            "has_https_token",
            "has_ssh_private_key",
            "webhook_url",
            "web_url",
        ]
        extra_kwargs = {
            "concurrency_limit": {"max_value": 1000},
            "poll_interval": {"max_value": 7 * 86400},
        }

    def get_has_https_token(self, obj: Repository) -> bool:
        return bool(obj.https_token)

    def get_has_ssh_private_key(self, obj: Repository) -> bool:
        return bool(obj.ssh_private_key)

    def get_webhook_url(self, obj: Repository) -> str:
        return reverse("webhook", args=[obj.forge, obj.name])

    def get_web_url(self, obj: Repository) -> str:
        return obj.get_absolute_url()

    def validate_name(self, value: str) -> str:
        if value.lower() in RESERVED_NAMES:
            raise serializers.ValidationError(f"{value!r} is reserved.")
        return value

    def validate_clone_url(self, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise serializers.ValidationError("A clone URL cannot contain spaces.")
        if value.startswith("-"):
            raise serializers.ValidationError("A clone URL cannot start with a dash.")
        return value

    def validate_default_branch(self, value: str) -> str:
        return validate_ref(value, "a branch name")

    def validate_ssh_private_key(self, value: str) -> str:
        value = value.strip()
        if value and "PRIVATE KEY" not in value:
            raise serializers.ValidationError(
                "This does not look like a private key (expected a "
                "-----BEGIN … PRIVATE KEY----- block)."
            )
        return value + "\n" if value else ""

    def _globs(self, value: str) -> str:
        return ", ".join(p.strip() for p in value.split(",") if p.strip())

    def validate_branch_filter(self, value: str) -> str:
        return self._globs(value)

    def validate_tag_filter(self, value: str) -> str:
        return self._globs(value)


# --- runs, stages, jobs -------------------------------------------------------------


class JobSummarySerializer(serializers.ModelSerializer):
    """A job as listed inside its run."""

    duration = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "status",
            "reason",
            "attempt",
            "retried",
            "allow_failure",
            "when",
            "started_at",
            "finished_at",
            "duration",
        ]

    @extend_schema_field(SECONDS)
    def get_duration(self, obj: Job) -> float | None:
        return _seconds(obj.duration)


class StageSerializer(serializers.ModelSerializer):
    jobs = serializers.SerializerMethodField()

    class Meta:
        model = Stage
        fields = ["id", "name", "index", "status", "jobs"]

    @extend_schema_field(JobSummarySerializer(many=True))
    def get_jobs(self, obj: Stage) -> list[dict[str, Any]]:
        jobs = self.context.get("jobs_by_stage", {}).get(obj.pk, [])
        return JobSummarySerializer(jobs, many=True).data


class RunSerializer(serializers.ModelSerializer):
    """A run as listed."""

    repository_name = serializers.CharField(source="repository.name", read_only=True)
    triggered_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    duration = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "repository",
            "repository_name",
            "number",
            "status",
            "status_reason",
            "trigger",
            "ref",
            "branch",
            "tag",
            "commit_sha",
            "commit_message",
            "commit_author",
            "triggered_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "web_url",
        ]
        read_only_fields = fields

    @extend_schema_field(SECONDS)
    def get_duration(self, obj: Run) -> float | None:
        return _seconds(obj.duration)

    def get_web_url(self, obj: Run) -> str:
        return obj.get_absolute_url()


class RunDetailSerializer(RunSerializer):
    """A run with its error, variable names, stages and jobs."""

    variables = serializers.SerializerMethodField()
    stages = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "error", "variables", "stages"]
        read_only_fields = fields

    def get_variables(self, obj: Run) -> list[str]:
        # Names only: a value given for one run may be sensitive.
        return sorted(obj.variables or {})

    @extend_schema_field(StageSerializer(many=True))
    def get_stages(self, obj: Run) -> list[dict[str, Any]]:
        jobs_by_stage: dict[int, list[Job]] = {}
        for job in obj.jobs.order_by("stage__index", "id"):
            jobs_by_stage.setdefault(job.stage_id, []).append(job)
        return StageSerializer(
            obj.stages.order_by("index"),
            many=True,
            context={"jobs_by_stage": jobs_by_stage},
        ).data


class RunCreateSerializer(serializers.Serializer):
    """Start a run of a branch, tag or commit by hand."""

    repository = VisibleRelatedField(queryset=Repository.objects.all())
    ref = serializers.CharField(max_length=255)
    variables = VariablesField(required=False, default=dict)

    def validate_ref(self, value: str) -> str:
        return validate_ref(value)


class JobSerializer(serializers.ModelSerializer):
    """A job in full: why it is (not) running, where, and how it ended."""

    stage = serializers.CharField(source="stage.name", read_only=True)
    approved_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    duration = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "run",
            "stage",
            "name",
            "status",
            "reason",
            "failure_reason",
            "exit_code",
            "attempt",
            "retried",
            "allow_failure",
            "when",
            "needs",
            "executor",
            "queue",
            "worker",
            "cancel_requested",
            "approved_by",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "duration",
            "log_lines",
            "log_truncated",
            "web_url",
        ]
        read_only_fields = fields

    @extend_schema_field(SECONDS)
    def get_duration(self, obj: Job) -> float | None:
        return _seconds(obj.duration)

    def get_web_url(self, obj: Job) -> str:
        return obj.get_absolute_url()


class LogQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0, max_value=2**31)
    limit = serializers.IntegerField(min_value=1, max_value=5000, default=1000)


class LogSerializer(serializers.Serializer):
    """A page of a job's stored log, from a cursor."""

    lines = serializers.ListField(
        child=serializers.ListField(child=serializers.JSONField()),
        help_text="[number, unix timestamp, text] per line, in order.",
    )
    next_cursor = serializers.IntegerField(
        help_text="Pass as ?after= to get the lines that follow."
    )
    finished = serializers.BooleanField(
        help_text="The job has finished and no stored line follows this page."
    )


class ArtifactSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = [
            "id",
            "job",
            "name",
            "size",
            "file_count",
            "created_at",
            "expires_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, obj: Artifact) -> str:
        return reverse("api:artifact-download", args=[obj.pk])


# --- linting ------------------------------------------------------------------------


class LintRequestSerializer(serializers.Serializer):
    """A pipeline file to validate, as a JSON string."""

    content = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="The text of a .slipway.yml.",
    )


class LintIssueSerializer(serializers.Serializer):
    """One problem in the file; line and column are 1-based, null when unknown."""

    message = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    column = serializers.IntegerField(allow_null=True)
    key = serializers.CharField(
        allow_blank=True,
        help_text="The key it concerns, e.g. jobs.build.script; empty for the file.",
    )
    text = serializers.CharField(
        help_text="The problem as one line: .slipway.yml:LINE:COLUMN: key: message."
    )


class LintJobSerializer(serializers.Serializer):
    """A job the file defines (after extends, default: and matrix expansion)."""

    name = serializers.CharField()
    stage = serializers.CharField()
    when = serializers.CharField()
    needs = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="Jobs it waits for; null: every job of the earlier stages.",
    )
    allow_failure = serializers.BooleanField()
    tags = serializers.ListField(child=serializers.CharField())
    line = serializers.IntegerField(help_text="Where the job is defined.")


class LintResultSerializer(serializers.Serializer):
    """Whether a pipeline file is valid: its problems, or what it defines."""

    valid = serializers.BooleanField()
    errors = LintIssueSerializer(many=True)
    stages = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="The stages in order; null when the file is invalid.",
    )
    jobs = LintJobSerializer(
        many=True,
        allow_null=True,
        help_text="The jobs in file order; null when the file is invalid.",
    )


# --- deliveries, schedules, variables -----------------------------------------------


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "repository",
            "forge",
            "delivery_id",
            "event",
            "outcome",
            "reason",
            "status_code",
            "run",
            "duration_ms",
            "received_at",
            "redelivery_of",
        ]
        read_only_fields = fields


class RedeliverySerializer(serializers.Serializer):
    run = RunSerializer(allow_null=True)


class ScheduleSerializer(serializers.ModelSerializer):
    """A cron schedule; next_run_at is computed from the expression."""

    serializer_related_field = VisibleRelatedField
    variables = VariablesField(required=False)

    class Meta:
        model = Schedule
        fields = [
            "id",
            "repository",
            "description",
            "cron",
            "branch",
            "variables",
            "enabled",
            "next_run_at",
            "last_run",
        ]
        read_only_fields = ["next_run_at", "last_run"]

    def validate_cron(self, value: str) -> str:
        cron = " ".join(value.split())
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise serializers.ValidationError(
                "Enter a five-field cron expression: minute hour day-of-month month "
                "day-of-week, e.g. 0 3 * * *."
            )
        return cron

    def validate_branch(self, value: str) -> str:
        return validate_ref(value, "a branch name")

    def _next_run(self, validated: dict[str, Any]) -> None:
        instance = self.instance
        cron = validated.get("cron", instance.cron if instance else "")
        enabled = validated.get("enabled", instance.enabled if instance else True)
        validated["next_run_at"] = (
            croniter(cron, timezone.now()).get_next(timezone.datetime)
            if enabled
            else None
        )

    def create(self, validated_data: dict[str, Any]) -> Schedule:
        self._next_run(validated_data)
        return super().create(validated_data)

    def update(self, instance: Schedule, validated_data: dict[str, Any]) -> Schedule:
        self._next_run(validated_data)
        return super().update(instance, validated_data)


class VariableSerializer(serializers.ModelSerializer):
    """A variable or secret; a secret's value is never returned.

    ``repository`` null means a global variable. A secret stays secret: turning
    ``is_secret`` off would reveal its value, so it is refused.
    """

    serializer_related_field = VisibleRelatedField

    value = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        max_length=100_000,
        help_text="Write-only for secrets: null in responses when is_secret.",
    )

    class Meta:
        model = Variable
        fields = ["id", "repository", "name", "value", "is_secret", "updated_at"]
        read_only_fields = ["updated_at"]
        # Uniqueness is checked in validate(): the constraints are conditional.
        validators: list[Any] = []

    def validate_value(self, value: str | None) -> str:
        return value or ""

    def to_representation(self, instance: Variable) -> dict[str, Any]:
        data = super().to_representation(instance)
        if instance.is_secret:
            data["value"] = None
        return data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        if instance is not None:
            if instance.is_secret and attrs.get("is_secret") is False:
                raise serializers.ValidationError(
                    {"is_secret": "A secret cannot become a plain variable."}
                )
            if "repository" in attrs and attrs["repository"] != instance.repository:
                raise serializers.ValidationError(
                    {"repository": "A variable cannot move to another repository."}
                )
        repository = attrs.get("repository", instance.repository if instance else None)
        name = attrs.get("name", instance.name if instance else None)
        clash = Variable.objects.filter(repository=repository, name=name)
        if instance is not None:
            clash = clash.exclude(pk=instance.pk)
        if name and clash.exists():
            raise serializers.ValidationError({"name": f"{name} already exists here."})
        return attrs


# --- environments and deployments ---------------------------------------------------


class EnvironmentSerializer(serializers.ModelSerializer):
    """Where a repository deploys to, and what runs there now."""

    repository_name = serializers.CharField(source="repository.name", read_only=True)
    url = serializers.CharField(read_only=True)
    deploy_group = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )
    current_deployment = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = Environment
        fields = [
            "id",
            "repository",
            "repository_name",
            "name",
            "cluster",
            "namespace",
            "url",
            "protected",
            "deploy_role",
            "deploy_group",
            "created_at",
            "current_deployment",
            "web_url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_current_deployment(self, obj: Environment) -> int | None:
        current = obj.current_deployment()
        return current.pk if current else None

    def get_web_url(self, obj: Environment) -> str:
        return obj.get_absolute_url()


class DeploymentSerializer(serializers.ModelSerializer):
    """One rollout to an environment (the applied manifests only in the detail)."""

    user = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "environment",
            "kind",
            "status",
            "run",
            "job",
            "source",
            "commit_sha",
            "ref",
            "user",
            "trigger",
            "namespace",
            "images",
            "message",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class DeploymentDetailSerializer(DeploymentSerializer):
    class Meta(DeploymentSerializer.Meta):
        fields = [*DeploymentSerializer.Meta.fields, "manifests", "log"]
        read_only_fields = fields


class RollbackSerializer(serializers.Serializer):
    to = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="The deployment to restore; default: the previous successful one.",
    )


class PromoteSerializer(serializers.Serializer):
    source = serializers.IntegerField(
        min_value=1, help_text="The environment whose current deployment to copy."
    )
