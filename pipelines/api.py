"""REST API of the pipelines app: thin views over ``services`` and the models.

Reads, and linting a pipeline file, need the viewer role; starting, canceling,
retrying and playing need a developer; repository, schedule and variable management
need an admin (see ``required_roles`` and ``core.api.required_role``). Roles count
per repository (``role_scope``: a global role or a grant on the row's repository),
and lists show only the repositories the user may see. Every write is audited.
"""

from __future__ import annotations

import io
import json
from typing import Any

import django_filters
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, parsers, renderers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from core import audit, roles
from core.api import ErrorSerializer, IdFilter, RolePermission, require_on
from core.api_views import ApiView, ApiViewSet

from . import delivery, logs, services
from .engine import spec
from .models import (
    Artifact,
    Deployment,
    Environment,
    Job,
    Repository,
    Run,
    Schedule,
    Variable,
    WebhookDelivery,
)
from .serializers import (
    ArtifactSerializer,
    DeploymentDetailSerializer,
    DeploymentSerializer,
    EnvironmentSerializer,
    JobSerializer,
    LintRequestSerializer,
    LintResultSerializer,
    LogQuerySerializer,
    LogSerializer,
    PromoteSerializer,
    RedeliverySerializer,
    RepositorySerializer,
    RollbackSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunSerializer,
    ScheduleSerializer,
    VariableSerializer,
    WebhookDeliverySerializer,
)

CONFLICT = OpenApiResponse(ErrorSerializer, description="Not allowed in this state.")
ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
}


def _audited_save(
    view: Any, serializer: BaseSerializer, verb: str, **details: Any
) -> None:
    with transaction.atomic():
        obj = serializer.save()
        audit.record(
            f"{view.audit_noun}.{verb}",
            target=obj,
            request=view.request,
            details={**details, "fields": sorted(serializer.validated_data)},
        )


class AuditedModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ApiViewSet,
):
    """CRUD whose writes are recorded in the audit log as ``<noun>.<verb>``.

    A row created or moved into a repository needs the write's role there too
    (``_check_target``).
    """

    audit_noun = ""

    def _check_target(self, serializer: BaseSerializer) -> None:
        if (
            self.role_scope == "repository"
            and "repository" in serializer.validated_data
        ):
            require_on(
                self.request,
                roles.ADMIN,
                serializer.validated_data["repository"],
            )

    def perform_create(self, serializer: BaseSerializer) -> None:
        self._check_target(serializer)
        _audited_save(self, serializer, "create")

    def perform_update(self, serializer: BaseSerializer) -> None:
        self._check_target(serializer)
        _audited_save(self, serializer, "update")

    def perform_destroy(self, instance: Any) -> None:
        with transaction.atomic():
            audit.record(
                f"{self.audit_noun}.delete", target=instance, request=self.request
            )
            instance.delete()


# --- repositories -------------------------------------------------------------------


class RepositoryFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    forge = django_filters.ChoiceFilter(choices=Repository.Forge.choices)

    class Meta:
        model = Repository
        fields = ["name", "forge"]


@extend_schema_view(
    list=extend_schema(summary="List repositories"),
    retrieve=extend_schema(
        summary="Show a repository", responses={200: RepositorySerializer, **ERRORS}
    ),
    create=extend_schema(summary="Add a repository (admins)"),
    update=extend_schema(summary="Replace a repository's settings (admins)"),
    partial_update=extend_schema(summary="Change a repository's settings (admins)"),
    destroy=extend_schema(summary="Delete a repository and its runs (admins)"),
)
class RepositoryViewSet(AuditedModelViewSet):
    """Git repositories whose .slipway.yml defines a pipeline."""

    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
    filterset_class = RepositoryFilter
    audit_noun = "repository"
    role_scope = "pk"
    global_actions = ("create",)  # Adding a repository needs a global admin.


# --- runs ---------------------------------------------------------------------------


class RunFilter(django_filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    repository_name = django_filters.CharFilter(field_name="repository__name")
    branch = django_filters.CharFilter()
    status = django_filters.MultipleChoiceFilter(choices=Run.Status.choices)
    trigger = django_filters.MultipleChoiceFilter(choices=Run.Trigger.choices)

    class Meta:
        model = Run
        fields = ["repository", "repository_name", "branch", "status", "trigger"]


@extend_schema_view(
    list=extend_schema(summary="List runs, newest first"),
    retrieve=extend_schema(summary="Show a run with its stages and jobs"),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Runs of pipelines: list, inspect, start by hand, cancel, retry."""

    queryset = Run.objects.select_related("repository", "triggered_by")
    filterset_class = RunFilter
    role_scope = "repository"
    required_roles = {
        "create": roles.DEVELOPER,
        "cancel": roles.DEVELOPER,
        "retry_failed": roles.DEVELOPER,
    }

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "list":
            return RunSerializer
        if self.action == "create":
            return RunCreateSerializer
        return RunDetailSerializer

    @extend_schema(
        summary="Start a run of a branch, tag or commit (developers)",
        request=RunCreateSerializer,
        responses={201: RunDetailSerializer, **ERRORS, 409: CONFLICT},
    )
    def create(self, request: Request) -> Response:
        serializer = RunCreateSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_on(request, roles.DEVELOPER, data["repository"])
        run = services.trigger_run(
            data["repository"],
            trigger=Run.Trigger.API,
            ref=data["ref"],
            variables=data["variables"],
            user=request.user,
            request=request,
        )
        return Response(RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Cancel every unfinished job of a run (developers)",
        request=None,
        responses={200: RunDetailSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        services.cancel_run(run, user=request.user, request=request)
        run.refresh_from_db()
        return Response(RunDetailSerializer(run).data)

    @extend_schema(
        summary="Retry the failed and canceled jobs of a run (developers)",
        request=None,
        responses={200: RunDetailSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        services.retry_failed_jobs(run, user=request.user, request=request)
        run.refresh_from_db()
        return Response(RunDetailSerializer(run).data)


# --- jobs and artifacts -------------------------------------------------------------


class JobFilter(django_filters.FilterSet):
    run = IdFilter(field_name="run_id")
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)

    class Meta:
        model = Job
        fields = ["run", "status"]


class ZipRenderer(renderers.BaseRenderer):
    """Let a client ask for an archive; errors are still the JSON error body."""

    media_type = "application/zip"
    format = "zip"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        return json.dumps(data).encode() if data is not None else b""


@extend_schema_view(
    list=extend_schema(summary="List jobs (filter by run)"),
    retrieve=extend_schema(summary="Show a job, with why it is not running"),
)
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Jobs: status, reasons, logs, artifacts and actions."""

    queryset = Job.objects.select_related("run", "stage", "approved_by").order_by("-id")
    serializer_class = JobSerializer
    filterset_class = JobFilter
    role_scope = "run__repository"
    required_roles = {
        "cancel": roles.DEVELOPER,
        "retry": roles.DEVELOPER,
        "play": roles.DEVELOPER,
    }

    @extend_schema(
        summary="Read the stored log from a cursor",
        parameters=[LogQuerySerializer],
        responses={200: LogSerializer, **ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def log(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        lines = logs.read_lines(job, after=after, limit=limit)
        next_cursor = lines[-1][0] if lines else after
        finished = job.is_finished and (
            len(lines) < limit or next_cursor >= job.log_lines
        )
        return Response(
            {
                "lines": [list(line) for line in lines],
                "next_cursor": next_cursor,
                "finished": finished,
            }
        )

    @extend_schema(
        summary="List a job's artifacts",
        responses={200: ArtifactSerializer(many=True), **ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def artifacts(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        return Response(
            ArtifactSerializer(job.artifacts.order_by("name"), many=True).data
        )

    @extend_schema(
        summary="Cancel a job (developers)",
        request=None,
        responses={200: JobSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        services.cancel_job(job, user=request.user, request=request)
        return Response(JobSerializer(self.get_object()).data)

    @extend_schema(
        summary="Start a new attempt of a finished job (developers)",
        request=None,
        responses={201: JobSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        clone = services.retry_job(job, user=request.user, request=request)
        return Response(JobSerializer(clone).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Start a manual job (developers)",
        request=None,
        responses={200: JobSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def play(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        services.play_job(job, user=request.user, request=request)
        return Response(JobSerializer(self.get_object()).data)


@extend_schema_view(retrieve=extend_schema(summary="Show an artifact"))
class ArtifactViewSet(mixins.RetrieveModelMixin, ApiViewSet):
    """Artifacts: archives of files a job produced."""

    queryset = Artifact.objects.select_related("job__run")
    serializer_class = ArtifactSerializer
    role_scope = "job__run__repository"

    @extend_schema(
        summary="Download an artifact archive",
        responses={
            (200, "application/zip"): OpenApiTypes.BINARY,
            404: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[renderers.JSONRenderer, ZipRenderer],
    )
    def download(self, request: Request, pk: str) -> FileResponse:
        artifact = self.get_object()
        if not artifact.file:
            raise Http404
        try:
            handle = artifact.file.open("rb")
        except OSError as exc:
            raise Http404 from exc
        stored = artifact.file.name.rsplit("/", 1)[-1]
        ext = stored[stored.find(".") :] if "." in stored else ""
        name = artifact.name if artifact.name.endswith(ext) else artifact.name + ext
        return FileResponse(
            handle, as_attachment=True, filename=name, content_type="application/zip"
        )


# --- webhook deliveries -------------------------------------------------------------


class DeliveryFilter(django_filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    outcome = django_filters.ChoiceFilter(choices=WebhookDelivery.Outcome.choices)

    class Meta:
        model = WebhookDelivery
        fields = ["repository", "outcome"]


@extend_schema_view(
    list=extend_schema(summary="List webhook deliveries (filter by repository)"),
    retrieve=extend_schema(summary="Show a webhook delivery"),
)
class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Every webhook request received, with what Slipway made of it."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    filterset_class = DeliveryFilter
    role_scope = "repository"
    required_roles = {"redeliver": roles.DEVELOPER}

    @extend_schema(
        summary="Process a stored delivery again (developers)",
        request=None,
        responses={
            200: RedeliverySerializer,
            201: RedeliverySerializer,
            **ERRORS,
            409: CONFLICT,
        },
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str) -> Response:
        delivery = self.get_object()
        run = services.redeliver(delivery, user=request.user, request=request)
        return Response(
            {"run": RunSerializer(run).data if run is not None else None},
            status=status.HTTP_201_CREATED if run is not None else status.HTTP_200_OK,
        )


# --- schedules and variables --------------------------------------------------------


class ScheduleFilter(django_filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Schedule
        fields = ["repository", "enabled"]


@extend_schema_view(
    list=extend_schema(summary="List schedules"),
    retrieve=extend_schema(summary="Show a schedule"),
    create=extend_schema(summary="Add a cron schedule (admins)"),
    update=extend_schema(summary="Replace a schedule (admins)"),
    partial_update=extend_schema(summary="Change a schedule (admins)"),
    destroy=extend_schema(summary="Delete a schedule (admins)"),
)
class ScheduleViewSet(AuditedModelViewSet):
    """Cron schedules that start runs of a branch."""

    queryset = Schedule.objects.select_related("repository")
    serializer_class = ScheduleSerializer
    filterset_class = ScheduleFilter
    audit_noun = "schedule"
    role_scope = "repository"


class VariableFilter(django_filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    is_global = django_filters.BooleanFilter(
        field_name="repository", lookup_expr="isnull", label="Global variables only"
    )
    is_secret = django_filters.BooleanFilter()

    class Meta:
        model = Variable
        fields = ["repository", "is_global", "is_secret"]


@extend_schema_view(
    list=extend_schema(summary="List variables and secrets (secret values hidden)"),
    retrieve=extend_schema(summary="Show a variable (a secret's value is hidden)"),
    create=extend_schema(summary="Add a variable or secret (admins)"),
    update=extend_schema(summary="Replace a variable (admins)"),
    partial_update=extend_schema(summary="Change a variable (admins)"),
    destroy=extend_schema(summary="Delete a variable (admins)"),
)
class VariableViewSet(AuditedModelViewSet):
    """Pipeline variables and secrets; global when repository is null."""

    queryset = Variable.objects.all()
    serializer_class = VariableSerializer
    filterset_class = VariableFilter
    audit_noun = "variable"
    # Global variables (no repository) are seen and managed with a global role only.
    role_scope = "repository"

    def get_queryset(self) -> QuerySet[Variable]:
        return Variable.objects.order_by("repository_id", "name")

    def perform_create(self, serializer: BaseSerializer) -> None:
        self._check_target(serializer)
        _audited_save(
            self,
            serializer,
            "create",
            secret=serializer.validated_data.get("is_secret", False),
        )


# --- environments and deployments ---------------------------------------------------


class EnvironmentFilter(django_filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    name = django_filters.CharFilter()

    class Meta:
        model = Environment
        fields = ["repository", "name"]


@extend_schema_view(
    list=extend_schema(summary="List environments"),
    retrieve=extend_schema(summary="Show an environment"),
)
class EnvironmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Deploy targets. Rolling back and promoting need the environment's deploy
    role (operator unless the environment says otherwise; see may_deploy)."""

    queryset = Environment.objects.select_related("repository", "deploy_group")
    serializer_class = EnvironmentSerializer
    filterset_class = EnvironmentFilter
    role_scope = "repository"
    # The gate lets developers through: the environment decides (delivery.may_deploy).
    required_roles = {"rollback": roles.DEVELOPER, "promote": roles.DEVELOPER}

    def _deployable(self) -> Environment:
        # Check who may deploy before the body, so a refused user learns nothing.
        environment = self.get_object()
        if not delivery.may_deploy(self.request.user, environment):
            raise PermissionDenied(
                f"Deploying to {environment.name} needs the "
                f"{environment.deploy_role} role."
            )
        return environment

    @extend_schema(
        summary="Roll back to an earlier deployment (deploy role)",
        request=RollbackSerializer,
        responses={201: DeploymentSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        environment = self._deployable()
        params = RollbackSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        to = None
        if params.validated_data.get("to"):
            to = environment.deployments.filter(pk=params.validated_data["to"]).first()
            if to is None:
                raise ValidationError({"to": "No such deployment."})
        deployment = delivery.rollback(
            environment, to=to, user=request.user, request=request
        )
        return Response(
            DeploymentSerializer(deployment).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Deploy what runs on another environment here (deploy role)",
        request=PromoteSerializer,
        responses={201: DeploymentSerializer, **ERRORS, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str) -> Response:
        target = self._deployable()
        params = PromoteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        source = target.repository.environments.filter(
            pk=params.validated_data["source"]
        ).first()
        if source is None:
            raise ValidationError({"source": "No such environment."})
        deployment = delivery.promote(
            source, target, user=request.user, request=request
        )
        return Response(
            DeploymentSerializer(deployment).data, status=status.HTTP_201_CREATED
        )


class DeploymentFilter(django_filters.FilterSet):
    environment = IdFilter(field_name="environment_id")
    repository = IdFilter(field_name="environment__repository_id")
    status = django_filters.ChoiceFilter(choices=Deployment.Status.choices)
    kind = django_filters.ChoiceFilter(choices=Deployment.Kind.choices)

    class Meta:
        model = Deployment
        fields = ["environment", "repository", "status", "kind"]


@extend_schema_view(
    list=extend_schema(summary="List deployments, newest first"),
    retrieve=extend_schema(summary="Show a deployment with its manifests and log"),
)
class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Rollouts to environments: deploy jobs, rollbacks and promotions."""

    queryset = Deployment.objects.select_related("user", "environment")
    filterset_class = DeploymentFilter
    role_scope = "environment__repository"

    def get_serializer_class(self) -> type[BaseSerializer]:
        return (
            DeploymentSerializer
            if self.action == "list"
            else DeploymentDetailSerializer
        )


# --- linting ------------------------------------------------------------------------

# JSON escapes a byte in at most six: a file at the spec's own limit still fits, and
# a larger one gets the spec's message about its size rather than a parse error.
LINT_MAX_BODY = 6 * spec.MAX_SPEC_BYTES
TEXT_MEDIA_TYPES = ("text/", "application/yaml", "application/x-yaml")


def _read_bounded(stream: Any) -> bytes:
    data: bytes = stream.read(LINT_MAX_BODY + 1) if stream is not None else b""
    if len(data) > LINT_MAX_BODY:
        raise ParseError(f"The body is larger than {LINT_MAX_BODY} bytes.")
    return data


class BoundedJSONParser(parsers.JSONParser):
    """JSON, of at most LINT_MAX_BODY bytes."""

    def parse(
        self, stream: Any, media_type: Any = None, parser_context: Any = None
    ) -> Any:
        data = _read_bounded(stream)
        return super().parse(io.BytesIO(data), media_type, parser_context)


class PipelineTextParser(parsers.BaseParser):
    """A pipeline file sent as the body itself (``curl --data-binary @.slipway.yml``)."""

    media_type = "text/*"

    def parse(
        self, stream: Any, media_type: Any = None, parser_context: Any = None
    ) -> str:
        try:
            return _read_bounded(stream).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The pipeline file is not UTF-8 text.") from None


class PipelineYamlParser(PipelineTextParser):
    media_type = "application/yaml"


class PipelineXYamlParser(PipelineTextParser):
    media_type = "application/x-yaml"


def lint(text: str) -> dict[str, Any]:
    """Return LintResultSerializer's body for the pipeline file TEXT."""
    try:
        pipeline = spec.parse(text, filename=services.SPEC_FILE)
    except spec.SpecError as exc:
        return {
            "valid": False,
            "errors": [
                {
                    "message": issue.message,
                    "line": issue.line,
                    "column": issue.column,
                    "key": issue.path,
                    "text": issue.format(exc.filename),
                }
                for issue in exc.issues
            ],
            "stages": None,
            "jobs": None,
        }
    return {
        "valid": True,
        "errors": [],
        "stages": list(pipeline.stages),
        "jobs": [
            {
                "name": job.name,
                "stage": job.stage,
                "when": job.when,
                "needs": None if job.needs is None else [n.job for n in job.needs],
                "allow_failure": job.allow_failure,
                "tags": list(job.tags),
                "line": job.line,
            }
            for job in pipeline.jobs
        ],
    }


class LintView(ApiView):
    """Validate a .slipway.yml without running it, as ``manage.py lint_pipeline``.

    A viewer anywhere may lint. Nothing is stored or audited, so a read-scope token
    may lint too (``TokenScopePermission`` is left out on purpose).
    """

    parser_classes = [
        BoundedJSONParser,
        PipelineTextParser,
        PipelineYamlParser,
        PipelineXYamlParser,
    ]
    permission_classes = [RolePermission]
    required_roles = {"POST": roles.VIEWER}
    role_scope = roles.ANY

    @extend_schema(
        summary="Validate a pipeline file without running it (viewers)",
        description=(
            "Send the file as the body (Content-Type text/plain, text/yaml or "
            'application/yaml) or as JSON {"content": "..."}. An invalid '
            "file is still a 200: valid is false and errors names each problem's "
            "line, column and key."
        ),
        request={
            "application/json": LintRequestSerializer,
            "text/plain": OpenApiTypes.STR,
            "text/yaml": OpenApiTypes.STR,
        },
        responses={200: LintResultSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if isinstance(data, str):
            text = data
        elif request.content_type.startswith(TEXT_MEDIA_TYPES):
            text = ""  # An empty body: DRF parses nothing.
        else:
            params = LintRequestSerializer(data=data)
            params.is_valid(raise_exception=True)
            text = params.validated_data["content"]
        return Response(lint(text))
