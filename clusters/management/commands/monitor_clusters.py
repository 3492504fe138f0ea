"""Run the cluster monitor: ``python manage.py monitor_clusters``."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand

from clusters.monitor import Monitor, Settings


class Command(BaseCommand):
    help = (
        "Watch every registered Kubernetes cluster and publish live changes. "
        "Run several for failover: one is active (Redis lock), the others wait."
    )
    # The system checks import the whole URLconf (every view and what it imports,
    # ~12 MB) into a process that serves no URL; `manage.py check` runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--refresh",
            type=float,
            default=10.0,
            help="Seconds between re-reads of the cluster table (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._main(options["refresh"]))

    async def _main(self, refresh: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        monitor = Monitor(
            settings.REDIS_URL, get_channel_layer(), Settings(refresh_interval=refresh)
        )
        self.stdout.write(f"monitor {monitor.identity}: waiting for the lock")
        await monitor.run(stop)
        self.stdout.write("monitor stopped")
