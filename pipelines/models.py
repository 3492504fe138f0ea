"""Repositories, triggers, runs, stages, jobs, logs, artifacts, variables."""

from __future__ import annotations

import secrets as pysecrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from core.fields import EncryptedTextField

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "Use letters, digits, dots, dashes and underscores (start with a letter or digit).",
)
VARIABLE_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
    "A variable name is letters, digits and underscores, not starting with a digit.",
)


def generate_webhook_secret() -> str:
    """Return a fresh random webhook secret."""
    return pysecrets.token_urlsafe(32)


class Repository(models.Model):
    """A git repository whose `.slipway.yml` defines a pipeline."""

    class Forge(models.TextChoices):
        GITHUB = "github", "GitHub"
        GITLAB = "gitlab", "GitLab"
        GITEA = "gitea", "Gitea"
        FORGEJO = "forgejo", "Forgejo"
        GENERIC = "generic", "Generic"

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    description = models.CharField(max_length=300, blank=True)
    clone_url = models.CharField(
        max_length=500,
        help_text="https://, ssh://, git@host:path, or a local path for mirrors and tests.",
    )
    default_branch = models.CharField(max_length=200, default="main")
    forge = models.CharField(
        max_length=10, choices=Forge.choices, default=Forge.GENERIC
    )
    https_token = EncryptedTextField(
        blank=True, help_text="Token for HTTPS clones and commit statuses."
    )
    ssh_private_key = EncryptedTextField(
        blank=True, help_text="SSH deploy key (private part)."
    )
    webhook_secret = EncryptedTextField(default=generate_webhook_secret)
    branch_filter = models.CharField(
        max_length=500,
        blank=True,
        help_text="Comma-separated branch globs that may start runs; empty allows all.",
    )
    tag_filter = models.CharField(
        max_length=500,
        blank=True,
        help_text="Comma-separated tag globs that may start runs; empty allows all.",
    )
    concurrency_limit = models.PositiveIntegerField(
        default=0, help_text="Most runs at once; 0 means no limit."
    )
    cancel_superseded = models.BooleanField(
        default=False,
        help_text="A new push to a branch cancels that branch's older unfinished runs.",
    )
    poll_interval = models.PositiveIntegerField(
        default=0,
        help_text="Seconds between polls for new commits; 0 turns polling off.",
    )
    last_polled_at = models.DateTimeField(null=True, blank=True)
    forge_api_url = models.URLField(
        blank=True,
        help_text="API base URL for commit statuses, e.g. https://api.github.com.",
    )
    forge_project = models.CharField(
        max_length=300,
        blank=True,
        help_text="owner/name (GitHub, Gitea) or project id (GitLab).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("pipelines:repository-detail", args=[self.name])

    @property
    def mirror_key(self) -> str:
        return f"repo-{self.pk}"


class Timed:
    """Shared facts of things that start and finish: runs and jobs."""

    FINISHED: tuple[str, ...]
    status: str
    started_at: Any
    finished_at: Any

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


class Run(Timed, models.Model):
    """One execution of a repository's pipeline at one commit."""

    class Status(models.TextChoices):
        CREATED = "created"
        PENDING = "pending"
        RUNNING = "running"
        SUCCESS = "success"
        FAILED = "failed"
        CANCELED = "canceled"
        SKIPPED = "skipped"

    class Trigger(models.TextChoices):
        PUSH = "push"
        TAG = "tag"
        MERGE_REQUEST = "merge_request"
        MANUAL = "manual"
        SCHEDULE = "schedule"
        POLL = "poll"
        API = "api"
        WEBHOOK = "webhook"

    FINISHED = (Status.SUCCESS, Status.FAILED, Status.CANCELED, Status.SKIPPED)

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="runs"
    )
    number = models.PositiveIntegerField()
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.CREATED
    )
    trigger = models.CharField(max_length=15, choices=Trigger.choices)
    ref = models.CharField(max_length=300, blank=True)
    branch = models.CharField(max_length=255, blank=True, db_index=True)
    tag = models.CharField(max_length=255, blank=True)
    commit_sha = models.CharField(max_length=64, blank=True)
    before_sha = models.CharField(max_length=64, blank=True)
    commit_message = models.TextField(blank=True)
    commit_author = models.CharField(max_length=200, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    variables = models.JSONField(default=dict, blank=True)
    error = models.TextField(
        blank=True, help_text="Why the run could not start, line by line."
    )
    status_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "number"], name="run_number_unique"
            )
        ]
        indexes = [
            models.Index(fields=["repository", "-id"], name="run_repo_recent"),
            models.Index(fields=["status", "-id"], name="run_status_recent"),
            models.Index(
                fields=["repository", "branch", "-id"], name="run_repo_branch"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository_id and self.repository.name} #{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("pipelines:run-detail", args=[self.pk])

    @property
    def short_sha(self) -> str:
        return self.commit_sha[:8]

    @property
    def commit_title(self) -> str:
        return (
            self.commit_message.strip().splitlines()[0]
            if self.commit_message.strip()
            else ""
        )


class Stage(models.Model):
    """A stage of a run: its jobs start only after every earlier stage finishes."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=100)
    index = models.PositiveIntegerField()
    status = models.CharField(
        max_length=10, choices=Run.Status.choices, default=Run.Status.CREATED
    )

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="stage_index_unique")
        ]

    def __str__(self) -> str:
        return self.name


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=[Job.Status.PENDING, Job.Status.RUNNING])


class JobManager(models.Manager["Job"]):
    def get_queryset(self) -> JobQuerySet:
        return JobQuerySet(self.model, using=self._db)

    def claim(self, job_id: int, worker: str) -> Job | None:
        """Move a pending job to running for WORKER; return it, or None if taken.

        A conditional UPDATE, so a task delivered twice claims the job once.
        """
        now = timezone.now()
        claimed = self.filter(
            pk=job_id, status=Job.Status.PENDING, cancel_requested=False
        ).update(
            status=Job.Status.RUNNING,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            reason="",
        )
        if not claimed:
            return None
        return self.select_related("run", "run__repository", "stage").get(pk=job_id)

    def transition(self, job_id: int, from_statuses: list[str], **changes: Any) -> bool:
        """Apply CHANGES to the job if its status is one of FROM_STATUSES."""
        return bool(self.filter(pk=job_id, status__in=from_statuses).update(**changes))

    def lapsed(self, lapse_seconds: int) -> JobQuerySet:
        """Return running jobs whose heartbeat lapsed (their worker died)."""
        limit = timezone.now() - timedelta(seconds=lapse_seconds)
        return self.get_queryset().filter(
            status=Job.Status.RUNNING, heartbeat_at__lt=limit
        )


class Job(Timed, models.Model):
    """One job of a run, executed by one worker."""

    class Status(models.TextChoices):
        CREATED = "created"
        PENDING = "pending"
        RUNNING = "running"
        SUCCESS = "success"
        FAILED = "failed"
        CANCELED = "canceled"
        SKIPPED = "skipped"
        MANUAL = "manual"

    FINISHED = (Status.SUCCESS, Status.FAILED, Status.CANCELED, Status.SKIPPED)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="jobs")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.CREATED
    )
    spec = models.JSONField(default=dict, help_text="The job's validated spec.")
    needs = models.JSONField(
        null=True, blank=True, help_text="Job names, or null for stage order."
    )
    when = models.CharField(max_length=12, default="on_success")
    allow_failure = models.BooleanField(default=False)
    executor = models.CharField(max_length=20, default="shell")
    queue = models.CharField(max_length=100, default="default")
    attempt = models.PositiveIntegerField(default=1)
    retried = models.BooleanField(
        default=False,
        help_text="A newer attempt of this job exists; the plan ignores it.",
    )
    reason = models.CharField(
        max_length=500, blank=True, help_text="Why the job is not running."
    )
    failure_reason = models.CharField(max_length=30, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    log_lines = models.PositiveIntegerField(default=0)
    log_bytes = models.BigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = JobManager()

    class Meta:
        ordering = ["stage__index", "id"]
        indexes = [
            models.Index(fields=["run", "status"], name="job_run_status"),
            models.Index(
                fields=["status", "heartbeat_at"], name="job_status_heartbeat"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("pipelines:job-detail", args=[self.pk])


class LogChunk(models.Model):
    """A batch of a job's log lines, each stored as ``"<unix ts> <text>"``.

    Lines never become one row each: the worker writes a chunk per batch and
    compacts the chunks into a few large ones when the job ends.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_chunks")
    first_line = models.PositiveIntegerField()
    last_line = models.PositiveIntegerField()
    data = models.TextField()

    class Meta:
        ordering = ["job", "first_line"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "first_line"], name="logchunk_first_unique"
            )
        ]


def artifact_path(instance: Artifact, filename: str) -> str:
    return f"artifacts/{instance.job.run_id}/{instance.job_id}/{filename}"


class Artifact(models.Model):
    """An archive of files a job produced, handed to later jobs that need it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    file = models.FileField(upload_to=artifact_path, max_length=500)
    size = models.BigIntegerField(default=0)
    file_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return self.name


class Variable(models.Model):
    """A pipeline variable or secret; global when repository is empty.

    Secret values are encrypted at rest, masked in logs and never shown back.
    """

    repository = models.ForeignKey(
        Repository,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="variables",
    )
    name = models.CharField(max_length=128, validators=[VARIABLE_NAME_VALIDATOR])
    value = EncryptedTextField(blank=True)
    is_secret = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "name"], name="variable_unique_per_repo"
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(repository=None),
                name="variable_unique_global",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """Every webhook request received, with what Slipway made of it."""

    class Outcome(models.TextChoices):
        CREATED = "created", "Run created"
        IGNORED = "ignored", "Ignored"
        REJECTED = "rejected", "Rejected"
        DUPLICATE = "duplicate", "Already seen"

    repository = models.ForeignKey(
        Repository,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
    )
    forge = models.CharField(max_length=10)
    delivery_id = models.CharField(max_length=200, null=True, blank=True)
    event = models.CharField(max_length=50, blank=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.CharField(max_length=500, blank=True)
    status_code = models.PositiveIntegerField(default=200)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    duration_ms = models.FloatField(default=0)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    redelivery_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # A redelivery never starts a second run: the id is unique per repository.
            models.UniqueConstraint(
                fields=["repository", "delivery_id"],
                condition=Q(outcome="created"),
                name="delivery_created_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.forge} {self.delivery_id or self.pk}"


class Schedule(models.Model):
    """A cron schedule that starts runs of a branch."""

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="schedules"
    )
    description = models.CharField(max_length=200)
    cron = models.CharField(
        max_length=100, help_text="Five-field cron expression, e.g. 0 3 * * *."
    )
    branch = models.CharField(max_length=200)
    variables = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["repository", "description"]

    def __str__(self) -> str:
        return self.description


class RunCounter(models.Model):
    """The last run number handed out per repository (a row lock serialises it)."""

    repository = models.OneToOneField(
        Repository, on_delete=models.CASCADE, primary_key=True
    )
    last_number = models.PositiveIntegerField(
        default=0, validators=[MinValueValidator(0)]
    )

    @classmethod
    def next_number(cls, repository: Repository) -> int:
        with transaction.atomic():
            cls.objects.get_or_create(repository=repository)
            cls.objects.filter(repository=repository).update(
                last_number=F("last_number") + 1
            )
            return cls.objects.get(repository=repository).last_number


# --- continuous delivery: environments and deployments ------------------------------

ENVIRONMENT_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "Use letters, digits, dots, dashes and underscores.",
)
NAMESPACE_VALIDATOR = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "A Kubernetes namespace: lower-case letters, digits and dashes.",
)


class Environment(models.Model):
    """Where a repository deploys to: a cluster and namespace, perhaps protected.

    A protected environment's deploy jobs wait for an approval by an allowed user;
    unprotected ones deploy as soon as their job succeeds. Who may deploy (approve,
    roll back, promote) is a role threshold, optionally narrowed to one group.
    """

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="environments"
    )
    name = models.CharField(max_length=100, validators=[ENVIRONMENT_NAME_VALIDATOR])
    cluster = models.ForeignKey(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="environments",
        help_text="The cluster deploys go to; deploys fail while it is empty.",
    )
    namespace = models.CharField(
        max_length=63, default="default", validators=[NAMESPACE_VALIDATOR]
    )
    url = models.URLField(blank=True, help_text="Where the deployed app answers.")
    protected = models.BooleanField(
        default=False,
        help_text="Deploy jobs wait for an approval by an allowed user.",
    )
    deploy_role = models.CharField(
        max_length=20,
        default="operator",
        choices=[
            ("developer", "Developer"),
            ("operator", "Operator"),
            ("admin", "Admin"),
        ],
        help_text="The weakest role that may approve, roll back and promote.",
    )
    deploy_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="When set, only members of this group (and admins) may deploy.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["repository", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "name"], name="environment_unique_per_repo"
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository_id and self.repository.name}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("environments:detail", args=[self.repository.name, self.name])

    def current_deployment(self) -> Deployment | None:
        """Return the latest successful deployment: what runs there now."""
        return (
            self.deployments.filter(status=Deployment.Status.SUCCESS)
            .order_by("-created_at", "-pk")
            .first()
        )


class Deployment(models.Model):
    """One rollout to an environment: a deploy job, a rollback or a promotion.

    The rendered manifests are stored as applied, so a rollback re-applies exactly
    what ran before and a promotion copies it to another environment.
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCESS = "success"
        FAILED = "failed"
        ROLLED_BACK = "rolled_back", "Rolled back"

    class Kind(models.TextChoices):
        DEPLOY = "deploy"
        ROLLBACK = "rollback"
        PROMOTE = "promote"

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="deployments"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DEPLOY)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.RUNNING
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The deployment a rollback or promotion re-applied.",
    )
    commit_sha = models.CharField(max_length=64, blank=True)
    ref = models.CharField(max_length=300, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    trigger = models.CharField(
        max_length=100, blank=True, help_text="Who or what started it, as shown."
    )
    namespace = models.CharField(max_length=63, blank=True)
    manifests = models.TextField(blank=True, help_text="The YAML stream applied.")
    images = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True, help_text="Why it ended as it did.")
    log = models.TextField(
        blank=True, help_text="Apply and rollout progress (also in the job's log)."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["environment", "status", "-created_at"],
                name="deployment_env_status",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} to {self.environment_id}"

    @property
    def short_sha(self) -> str:
        return self.commit_sha[:8]

    @property
    def badge_status(self) -> str:
        """Return the status word the badge CSS knows (rolled back shows muted)."""
        return "canceled" if self.status == self.Status.ROLLED_BACK else self.status

    @property
    def duration(self) -> timedelta | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.created_at

    def finish(self, status: str, message: str = "") -> bool:
        """Move a running deployment to STATUS; return False if it had ended."""
        now = timezone.now()
        done = Deployment.objects.filter(
            pk=self.pk, status=Deployment.Status.RUNNING
        ).update(status=status, message=message[:5000], finished_at=now)
        if done:
            self.status, self.message, self.finished_at = status, message, now
        return bool(done)
