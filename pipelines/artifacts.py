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


def matching_files(workspace: Path, patterns: list[str]) -> Iterator[tuple[Path, str]]:
    """Yield (file, archive name) for every file the patterns match, safely."""
    root = workspace.resolve()
    seen: set[str] = set()
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or ".." in pure.parts:
            raise ArtifactError(
                f"artifact path {pattern!r} must stay inside the workspace"
            )
        for match in sorted(root.glob(pattern)):
            candidates = [match] if not match.is_dir() else sorted(match.rglob("*"))
            for candidate in candidates:
                if candidate.is_dir() or not _inside(candidate, root):
                    continue
                if candidate.is_symlink() and not _inside(candidate.resolve(), root):
                    continue
                name = candidate.relative_to(root).as_posix()
                if name.startswith(".git/") or name in seen:
                    continue
                seen.add(name)
                yield candidate, name


def collect(job: Job, workspace: Path, *, succeeded: bool) -> list[str]:
    """Store the job's artifacts; return log lines saying what was kept."""
    config = job.spec.get("artifacts")
    if not config:
        return []
    when = config.get("when", "on_success")
    if (when == "on_success" and not succeeded) or (when == "on_failure" and succeeded):
        return []
    limit = settings.SLIPWAY["ARTIFACT_MAX_BYTES"]
    try:
        files = list(matching_files(workspace, list(config.get("paths", []))))
    except ArtifactError as exc:
        return [f"artifacts: {exc}"]
    if not files:
        return ["artifacts: no file matched " + ", ".join(config.get("paths", []))]
    total = sum(path.stat().st_size for path, _ in files)
    if total > limit:
        return [
            f"artifacts: {total} bytes exceed the limit of {limit} bytes; none kept"
        ]
    name = config.get("name") or f"{job.name}-artifacts"
    expire = config.get("expire_in") or DEFAULT_EXPIRE_SECONDS
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
            expires_at=timezone.now() + timedelta(seconds=int(expire)),
        )
        artifact.file.save(f"{_safe_name(name)}.zip", File(handle), save=False)
        artifact.save()
    return [f"artifacts: kept {len(files)} file(s), {total} bytes, as {name}"]


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
