"""Pipeline pages."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from .models import Job, Repository, Run


def overview(request: HttpRequest) -> HttpResponse:
    """Show runs in progress and recent runs."""
    runs = Run.objects.select_related("repository")[:20]
    return render(request, "pipelines/overview.html", {"runs": runs})


def repository_list(request: HttpRequest) -> HttpResponse:
    """List repositories."""
    return render(
        request,
        "pipelines/repository_list.html",
        {"repositories": Repository.objects.all()},
    )


def repository_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Show one repository and its runs."""
    repository = get_object_or_404(Repository, name=name)
    runs = repository.runs.all()[:50]
    return render(
        request,
        "pipelines/repository_detail.html",
        {"repository": repository, "runs": runs},
    )


def run_list(request: HttpRequest) -> HttpResponse:
    """List recent runs."""
    runs = Run.objects.select_related("repository")[:50]
    return render(request, "pipelines/run_list.html", {"runs": runs})


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a run with its stages and jobs."""
    run = get_object_or_404(Run.objects.select_related("repository"), pk=pk)
    jobs = run.jobs.select_related("stage")
    return render(request, "pipelines/run_detail.html", {"run": run, "jobs": jobs})


def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a job and its log."""
    job = get_object_or_404(Job.objects.select_related("run", "run__repository"), pk=pk)
    return render(request, "pipelines/job_detail.html", {"job": job})
