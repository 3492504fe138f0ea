"""Processes pay only for the client libraries they use.

Every Slipway process loads Django, the Celery app with its tasks and (web) the
URLconf. The Kubernetes clients cost ~35 MiB (sync) and ~30 MiB (async) each: they
must be imported on first use, by the worker that runs a pod job or deploys, and by
the monitor, never by merely starting a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import django
django.setup()
from config.celery import app
app.loader.import_default_modules()  # What a worker loads: every tasks module.
import config.asgi, config.urls  # What web loads.
print(json.dumps(sorted(sys.modules)))
"""


def test_starting_a_process_imports_no_kubernetes_client(tmp_path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "SLIPWAY_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    # The probe really loaded the tasks and the URLconf.
    assert {"pipelines.tasks", "pipelines.k8s_executor", "config.urls"} <= modules
    heavy = {"kubernetes", "kubernetes_asyncio", "aiohttp"} & modules
    assert heavy == set()


def test_the_kinds_pages_and_sockets_know_are_the_kinds_the_monitor_watches() -> None:
    # Pages, API and sockets take the kinds from projection (light) instead.
    from clusters.monitor import WATCHED
    from clusters.projection import PROJECTIONS

    assert set(PROJECTIONS) == set(WATCHED) and len(WATCHED) >= 13
