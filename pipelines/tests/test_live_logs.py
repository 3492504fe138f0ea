"""Live logs over a real WebSocket against the running ASGI application."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from pipelines import logs, services
from pipelines.models import Job, Repository, Run

from .gitrepo import GitRepo
from .livehelpers import collect, connect, session_cookie
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

COUNTING = """
count:
  script:
    - 'for i in $(seq 1 60); do echo "line $i"; sleep 0.03; done'
"""


@pytest.fixture
def counting_repo(tmp_path) -> Repository:
    git = GitRepo(tmp_path / "count")
    git.commit({".slipway.yml": COUNTING})
    return Repository.objects.create(name="count", clone_url=str(git.path))


def _script_lines(lines: list[list]) -> list[str]:
    return [text for _, _, text in lines if text.startswith("line ")]


def test_lines_arrive_live_in_order_then_end(
    counting_repo, workers, asgi_server, victor
) -> None:
    cookie = session_cookie("victor")
    run = services.trigger_run(counting_repo, ref="main")
    job = wait_for(lambda: Job.objects.filter(run=run).first(), 30)

    async def watch() -> dict:
        socket = await connect(asgi_server, f"/ws/jobs/{job.pk}/log/?cursor=0", cookie)
        async with socket:
            return await collect(socket)

    got = asyncio.run(watch())
    numbers = [n for n, _, _ in got["lines"]]
    assert got["ended"] is True
    assert numbers == list(range(1, len(numbers) + 1))
    assert _script_lines(got["lines"]) == [f"line {i}" for i in range(1, 61)]
    assert "running" in got["statuses"] and got["statuses"][-1] == "success"
    job.refresh_from_db()
    assert job.log_lines == len(numbers)


def test_reconnect_with_cursor_gets_every_line_exactly_once(
    counting_repo, workers, asgi_server, victor
) -> None:
    cookie = session_cookie("victor")
    run = services.trigger_run(counting_repo, ref="main")
    job = wait_for(lambda: Job.objects.filter(run=run, status="running").first(), 30)

    async def watch_with_drop() -> tuple[dict, dict]:
        first_socket = await connect(
            asgi_server, f"/ws/jobs/{job.pk}/log/?cursor=0", cookie
        )
        first = await collect(first_socket, stop_after_lines=10)
        await first_socket.close()  # The browser lost its connection mid-run.
        await asyncio.sleep(0.4)
        cursor = first["lines"][-1][0]
        second_socket = await connect(
            asgi_server, f"/ws/jobs/{job.pk}/log/?cursor={cursor}", cookie
        )
        async with second_socket:
            second = await collect(second_socket)
        return first, second

    first, second = asyncio.run(watch_with_drop())
    assert Run.objects.get(pk=run.pk).status == "success"
    combined = first["lines"] + second["lines"]
    numbers = [n for n, _, _ in combined]
    assert numbers == list(range(1, len(numbers) + 1)), "a line was lost or repeated"
    assert _script_lines(combined) == [f"line {i}" for i in range(1, 61)]
    assert second["ended"] is True


def test_finished_log_is_served_from_storage_after_the_stream_expired(
    counting_repo, workers, asgi_server, victor
) -> None:
    cookie = session_cookie("victor")
    run = services.trigger_run(counting_repo, ref="main")
    wait_for(lambda: Run.objects.filter(pk=run.pk, status="success").exists(), 60)
    job = Job.objects.get(run=run)
    client = logs.redis_client()
    client.delete(logs.stream_key(job.pk))  # As after the TTL or a Redis restart.

    async def watch() -> dict:
        socket = await connect(asgi_server, f"/ws/jobs/{job.pk}/log/?cursor=5", cookie)
        async with socket:
            return await collect(socket, timeout=20)

    got = asyncio.run(watch())
    assert got["ended"] is True
    assert [n for n, _, _ in got["lines"]] == list(range(6, job.log_lines + 1))


@pytest.mark.parametrize("user", [None, "charlie"])
def test_anonymous_or_unauthorised_socket_is_refused(
    user, counting_repo, asgi_server, charlie
) -> None:
    run = Run.objects.create(
        repository=counting_repo, number=1, trigger="manual", ref="main"
    )
    cookie = session_cookie(user) if user else None

    async def attempt() -> None:
        # Accepted, then closed with a code the page can show (docs/api.md).
        for path in ("/ws/jobs/1/log/", f"/ws/runs/{run.pk}/", "/ws/activity/"):
            socket = await connect(asgi_server, path, cookie)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 10)
            assert socket.close_code == (4403 if user else 4401), path

    asyncio.run(attempt())


def test_run_socket_sends_status_changes(
    counting_repo, workers, asgi_server, victor
) -> None:
    import json

    cookie = session_cookie("victor")
    run = Run.objects.create(
        repository=counting_repo, number=1, trigger="manual", ref="main"
    )

    async def watch() -> list[dict]:
        socket = await connect(asgi_server, f"/ws/runs/{run.pk}/", cookie)
        messages = []
        async with socket:
            from asgiref.sync import sync_to_async

            await sync_to_async(services.start_run)(run.pk)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                message = json.loads(
                    await asyncio.wait_for(socket.recv(), deadline - loop.time())
                )
                messages.append(message)
                if (
                    message["type"] == "run.status"
                    and message["run"]["status"] == "success"
                ):
                    break
        return messages

    messages = asyncio.run(watch())
    kinds = {m["type"] for m in messages}
    assert {"run.status", "job.status"} <= kinds
    job_statuses = [m["job"]["status"] for m in messages if m["type"] == "job.status"]
    assert job_statuses[0] == "pending" and job_statuses[-1] == "success"


def test_an_idle_socket_stays_open(asgi_server, victor) -> None:
    """The activity socket has no cursor: it must not drop while nothing happens."""
    cookie = session_cookie("victor")

    async def idle() -> None:
        socket = await connect(asgi_server, "/ws/activity/", cookie)
        async with socket:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(socket.recv(), 8)
            await socket.ping()  # Still open after 8 s of silence.

    asyncio.run(idle())
