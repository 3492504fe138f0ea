"""Collect a job's artifacts into a zip, and hand them to the jobs that need them.

Paths are globs relative to the workspace. Nothing outside the workspace is ever read
or written: no `..`, no absolute paths, no symlink that leads out.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.utils import timezone

from .models import Artifact, Job

DEFAULT_EXPIRE_SECONDS = 30 * 86400


class ArtifactError(Exception):
    """An artifact path is unsafe or the artifact is too large."""


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def matching_files(
    workspace: Path, patterns: list[str], refused: list[str] | None = None
) -> Iterator[tuple[Path, str]]:
    """Yield (resolved file, archive name) for every file the patterns match, safely.

    Raise ArtifactError for a pattern that leaves the workspace (absolute, ``..``).
    A match that leads out of it through a symlink is skipped, its name appended
    to REFUSED. The file yielded is the link's target as checked, so the archive
    reads what was checked, not where the link points later.
    """
    root = workspace.resolve()
    seen: set[str] = set()
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or ".." in pure.parts:
            raise ArtifactError(
                f"artifact path {pattern!r} must stay inside the workspace"
            )
        for match in sorted(root.glob(pattern)):
            # A directory link leading out is refused whole, never walked.
            walk = match.is_dir() and _inside(match, root)
            candidates = sorted(match.rglob("*")) if walk else [match]
            for candidate in candidates:
                try:
                    name = candidate.relative_to(root).as_posix()
                except ValueError:
                    continue
                if name.startswith(".git/") or name in seen:
                    continue
                if not _inside(candidate, root):
                    seen.add(name)
                    if refused is not None:
                        refused.append(name)
                    continue
                if not candidate.is_file():
                    # A directory, a dangling link, or a FIFO or socket, which
                    # reading would block on.
                    continue
                seen.add(name)
                yield candidate.resolve(), name


MAX_REFUSED_SHOWN = 5


def collect(job: Job, workspace: Path, *, succeeded: bool) -> list[str]:
    """Store the job's artifacts; return log lines saying what was kept or refused.

    Nothing outside the workspace is read: an unsafe pattern or an archive over
    ARTIFACT_MAX_BYTES keeps nothing, a symlink leading out is left out.
    """
    config = job.spec.get("artifacts")
    if not config:
        return []
    when = config.get("when", "on_success")
    if (when == "on_success" and not succeeded) or (when == "on_failure" and succeeded):
        return []
    limit = settings.SLIPWAY["ARTIFACT_MAX_BYTES"]
    refused: list[str] = []
    try:
        files = list(matching_files(workspace, list(config.get("paths", [])), refused))
    except ArtifactError as exc:
        return [f"artifacts: {exc}; none kept"]
    lines = []
    if refused:
        shown = ", ".join(refused[:MAX_REFUSED_SHOWN])
        more = len(refused) - MAX_REFUSED_SHOWN
        lines.append(
            f"artifacts: skipped {len(refused)} path(s) whose symlink leads out of "
            f"the workspace: {shown}" + (f" and {more} more" if more > 0 else "")
        )
    if not files:
        return [
            *lines,
            "artifacts: no file matched " + ", ".join(config.get("paths", [])),
        ]
    total = sum(path.stat().st_size for path, _ in files)
    if total > limit:
        return [
            *lines,
            f"artifacts: {total} bytes exceed the limit of {limit} bytes; none kept",
        ]
    name = config.get("name") or f"{job.name}-artifacts"
    # None is the platform's default; 0 is `expire_in: never`.
    expire = config.get("expire_in")
    if expire is None:
        expire = DEFAULT_EXPIRE_SECONDS
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in files:
                archive.write(path, arcname)
        handle.seek(0)
        artifact = Artifact(
            job=job,
            name=name,
            size=total,
            file_count=len(files),
            expires_at=(
                timezone.now() + timedelta(seconds=int(expire)) if expire else None
            ),
        )
        artifact.file.save(f"{_safe_name(name)}.zip", File(handle), save=False)
        artifact.save()
    kept = f"artifacts: kept {len(files)} file(s), {total} bytes, as {name}"
    return [*lines, kept + ("" if expire else "; it never expires")]


def _safe_name(name: str) -> str:
    return (
        "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
        or "artifacts"
    )


def _source_jobs(job: Job) -> list[Job]:
    siblings = Job.objects.filter(
        run_id=job.run_id, retried=False, status=Job.Status.SUCCESS
    ).select_related("stage")
    if job.needs is None:
        return [j for j in siblings if j.stage.index < job.stage.index]
    wanted = {
        need["job"]
        for need in job.spec.get("needs") or []
        if isinstance(need, dict) and need.get("artifacts", True)
    }
    return [j for j in siblings if j.name in wanted]


def download_for(job: Job, workspace: Path) -> list[str]:
    """Extract the artifacts of the jobs JOB depends on into its workspace."""
    lines = []
    root = workspace.resolve()
    sources = _source_jobs(job)
    for artifact in Artifact.objects.filter(job__in=sources).select_related("job"):
        with artifact.file.open("rb") as handle, zipfile.ZipFile(handle) as archive:
            for member in archive.infolist():
                target = (root / member.filename).resolve()
                if not str(target).startswith(str(root) + os.sep):
                    raise ArtifactError(f"artifact member {member.filename!r} escapes")
                archive.extract(member, root)
        lines.append(f"artifacts: restored {artifact.name} from {artifact.job.name}")
    return lines


def expire() -> int:
    """Delete expired artifacts and their files; return how many."""
    count = 0
    for artifact in Artifact.objects.filter(expires_at__lt=timezone.now()):
        artifact.file.delete(save=False)
        artifact.delete()
        count += 1
    return count
