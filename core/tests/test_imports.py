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


def test_the_watchers_names_are_still_reachable_from_the_monitor() -> None:
    from clusters import monitor, watcher

    assert monitor.ClusterWatcher is watcher.ClusterWatcher
    assert monitor.Backoff is watcher.Backoff and monitor.RawWatch is watcher.RawWatch


MONITOR_PROBE = """
import asyncio, json, logging, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)  # An installation with no cluster.
from channels.layers import get_channel_layer
from django.conf import settings
from clusters import monitor
from clusters.management.commands.monitor_clusters import Command  # noqa: F401

monitor.LOCK_NAME = sys.argv[1]  # Not the lock another test's monitor may hold.
warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("slipway.monitor").addHandler(handler)


async def main():
    stop = asyncio.Event()
    m = monitor.Monitor(
        settings.REDIS_URL,
        get_channel_layer(),
        monitor.Settings(refresh_interval=0.2, lock_ttl=3.0),
    )
    task = asyncio.create_task(m.run(stop))
    await asyncio.wait_for(m.active.wait(), 20)
    await asyncio.sleep(1.0)  # Several refreshes of the (empty) cluster table.
    watchers = len(m.watchers)
    stop.set()
    await asyncio.wait_for(task, 20)
    return watchers

watchers = asyncio.run(main())
print(json.dumps({"watchers": watchers, "warnings": warnings,
                  "modules": sorted(sys.modules)}))
"""


def test_a_monitor_with_no_cluster_imports_no_kubernetes_client(tmp_path) -> None:
    # The watcher (kubernetes_asyncio, aiohttp: ~35 MiB) loads with the first
    # cluster to watch; the monitor tests show it does then.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "SLIPWAY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/probe.sqlite3",
    }
    lock = f"slipway:test:monitor-probe:{os.getpid()}"
    done = subprocess.run(
        [sys.executable, "-c", MONITOR_PROBE, lock],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # It really ran: active, read the cluster table without error, watched nothing.
    assert out["watchers"] == 0 and out["warnings"] == []
    modules = set(out["modules"])
    assert {"clusters.monitor", "redis.asyncio"} <= modules
    assert "clusters.watcher" not in modules
    assert {"kubernetes", "kubernetes_asyncio", "aiohttp"} & modules == set()
