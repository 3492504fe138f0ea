"""Which repository a page, API call or socket is about, for ``core.roles``.

Each resolver takes the URL's keyword arguments and returns the repository's scope
(one indexed lookup of an id, no row loaded) or None when there is no such object.
They run only for users whose global role does not decide (see
``core.roles.role_required``).
"""

from __future__ import annotations

from typing import Any

from core import roles

from .models import Artifact, Job, Repository, Run


def _scope(queryset: Any, field: str) -> roles.Scope | None:
    pk = queryset.values_list(field, flat=True).first()
    return None if pk is None else roles.repository(pk)


def by_name(kwargs: dict[str, Any]) -> roles.Scope | None:
    """The repository named by ``name`` (repository and environment pages)."""
    return _scope(Repository.objects.filter(name=kwargs["name"]), "pk")


def by_run(kwargs: dict[str, Any]) -> roles.Scope | None:
    """The repository of the run ``pk`` (or ``run_id``)."""
    pk = kwargs.get("run_id", kwargs.get("pk"))
    return _scope(Run.objects.filter(pk=pk), "repository_id")


def by_job(kwargs: dict[str, Any]) -> roles.Scope | None:
    """The repository of the job ``pk`` (or ``job_id``)."""
    pk = kwargs.get("job_id", kwargs.get("pk"))
    return _scope(Job.objects.filter(pk=pk), "run__repository_id")


def by_artifact(kwargs: dict[str, Any]) -> roles.Scope | None:
    """The repository of the artifact ``pk``."""
    return _scope(Artifact.objects.filter(pk=kwargs["pk"]), "job__run__repository_id")
