"""The overview's usage charts in a real browser: drawn from the stored history, then
moved by the monitor's live metrics.

The page is photographed (light and dark) into $SLIPWAY_SCREENSHOTS, a temporary
folder by default, as the dashboard's browser tests do.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from clusters import snapshot

from .factories import make_cluster, node, pod
from .test_browser import MonitorThread
from .test_browser_pods import login_cookie

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

SHOTS = Path(
    os.environ.get(
        "SLIPWAY_SCREENSHOTS", Path(tempfile.gettempdir()) / "slipway-screenshots"
    )
)

# How many points the chart says it plots, and how many its path has (one M or L
# command per point): read together, as a live sample may redraw it in between.
PLOTTED = """el => {
  const d = el.querySelector("path.chart-line")?.getAttribute("d") || "";
  return [Number(el.getAttribute("data-points")), (d.match(/[ML]/g) || []).length];
}"""


def seed_history(cluster_id: int, samples: int) -> None:
    """Store SAMPLES past totals, five seconds apart, as the monitor would have."""
    now = int(time.time()) - 2
    r = snapshot.client()
    for i in range(samples):
        at = now - (samples - 1 - i) * 5
        wave = (i % 24) / 24
        r.lpush(
            snapshot.history_key(cluster_id),
            json.dumps(
                {
                    "at": at,
                    "cpu": int(1800 + 900 * abs(wave - 0.5) * 2),
                    "mem": int((7 + 2 * wave) * (1 << 30)),
                }
            ),
        )


def requesting_pod(name: str, node_name: str) -> dict:
    manifest = pod(name, node_name=node_name)
    manifest["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "500m", "memory": "1Gi"}
    }
    return manifest


def test_usage_charts_plot_the_history_and_move_with_live_metrics(
    asgi_server, victor, fake, browser
):
    from playwright.sync_api import expect

    fake.metrics_enabled = True
    fake.store.create(node("n2"))
    for i in range(6):
        fake.store.create(requesting_pod(f"web-{i}", "n1" if i % 2 else "n2"))
    fake.set_node_usage("n1", "1100m", "4Gi")
    fake.set_node_usage("n2", "900m", "4Gi")
    cluster = make_cluster(fake, name="production", server_version="v1.36.2")
    seed_history(cluster.pk, 60)
    monitor = MonitorThread(metrics_interval=1.0).start()
    contexts = []
    try:
        deadline = time.monotonic() + 15
        while snapshot.read_state(cluster.pk).get("metrics") != "ok":
            assert time.monotonic() < deadline, "monitor did not sample metrics"
            time.sleep(0.1)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        contexts.append(context)
        context.add_cookies([login_cookie(victor, asgi_server.url)])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: errors.append(msg.text) if msg.type == "error" else None,
        )
        page.goto(f"{asgi_server.url}/clusters/{cluster.pk}/")
        cpu = page.locator('[data-usage-chart="cpu"]')
        mem = page.locator('[data-usage-chart="mem"]')
        expect(cpu.locator("svg")).to_be_visible()
        expect(mem.locator("svg")).to_be_visible()
        first, path_points = cpu.evaluate(PLOTTED)
        assert first >= 60 and path_points == first
        mem_points, mem_path_points = mem.evaluate(PLOTTED)
        assert mem_points >= 60 and mem_path_points == mem_points
        # Allocatable (two nodes of 4 cores) and requested (6 x 500m) are drawn.
        expect(cpu.locator("text.chart-ref-label.ref-alloc")).to_have_text(
            "allocatable 8"
        )
        expect(cpu.locator("text.chart-ref-label.ref-req")).to_have_text("requested 3")
        expect(page.locator('[data-usage-now="cpu"]')).to_contain_text("2 of 8 cores")

        # New usage reaches the page through the monitor and the socket: the chart
        # gains points and its headline follows, without a reload.
        fake.set_node_usage("n1", "3500m", "6Gi")
        expect(page.locator('[data-usage-now="cpu"]')).to_contain_text(
            "4.4 of 8 cores", timeout=15000
        )
        grown, path_points = cpu.evaluate(PLOTTED)
        assert grown > first and path_points == grown
        expect(page.locator('[data-usage-total="cpu"]')).to_contain_text("4.4")
        cpu.hover()
        expect(cpu.locator(".chart-tip")).to_be_visible()
        page.mouse.move(0, 0)
        assert not errors, errors

        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "cluster-overview.png"), full_page=True)
        dark = browser.new_context(
            viewport={"width": 1280, "height": 800}, color_scheme="dark"
        )
        contexts.append(dark)
        dark.add_cookies([login_cookie(victor, asgi_server.url)])
        night = dark.new_page()
        night.goto(f"{asgi_server.url}/clusters/{cluster.pk}/")
        expect(night.locator('[data-usage-chart="mem"] svg')).to_be_visible()
        night.screenshot(path=str(SHOTS / "cluster-overview-dark.png"), full_page=True)
    finally:
        for context in contexts:
            context.close()
        monitor.stop()
