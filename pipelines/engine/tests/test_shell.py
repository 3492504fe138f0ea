"""Tests for the shell executor with real subprocesses (and docker's availability)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.engine.executors import ExecResult, ExecSpec, get_executor
from pipelines.engine.executors.docker import DockerExecutor
from pipelines.engine.executors.shell import ShellExecutor


def alive(pid: int) -> bool:
    """Return True if `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def run(
    tmp_path: Path,
    script: tuple[str, ...],
    *,
    after: tuple[str, ...] = (),
    timeout: int = 30,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[ExecResult, str]:
    chunks: list[bytes] = []
    caller = threading.get_ident()

    def output(data: bytes) -> None:
        assert threading.get_ident() == caller  # The contract: the calling thread only.
        chunks.append(data)

    spec = ExecSpec(
        job_name="job",
        script=script,
        before_script=("echo before",),
        after_script=after,
        env=env or {},
        workdir=str(tmp_path),
        timeout=timeout,
    )
    result = ShellExecutor().run(spec, output, cancel or threading.Event())
    return result, b"".join(chunks).decode()


def read_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def test_output_exit_code_and_sections(tmp_path: Path) -> None:
    result, out = run(tmp_path, ("echo hello", "pwd"))
    assert result.status == "success"
    assert result.exit_code == 0
    assert result.finished_at >= result.started_at
    assert "\x1b[32;1m$ echo hello\x1b[0;m\nhello\n" in out
    assert f"\n{tmp_path}\n" in out
    assert out.index("before") < out.index("hello")
    assert "section_start:" in out and ":step_script\r\x1b[0K" in out
    assert "section_end:" in out


def test_set_e_stops_at_the_first_failure(tmp_path: Path) -> None:
    result, out = run(tmp_path, ("echo one", "exit 3", "echo never"))
    assert (result.status, result.exit_code) == ("failed", 3)
    assert "never" not in out.replace("$ echo never", "")
    assert "exit code 3" in out
    # The section is closed even though the script failed.
    assert "section_end:" in out


def test_pipefail(tmp_path: Path) -> None:
    result, _ = run(tmp_path, ("false | cat",))
    assert result.status == "failed"


def test_environment_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPWAY_TEST_WORKER_SECRET", "do-not-leak")
    result, out = run(
        tmp_path,
        ('echo "leak=${SLIPWAY_TEST_WORKER_SECRET:-unset} mine=$MINE"', "env"),
        env={"MINE": "value"},
    )
    assert result.status == "success"
    assert "leak=unset mine=value" in out
    assert "do-not-leak" not in out
    assert "PATH=" in out and "HOME=" in out and "LANG=" in out


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    began = time.monotonic()
    result, out = run(
        tmp_path,
        (f"(sleep 300; echo child) & echo $! > {pids}; sleep 300",),
        after=("echo after-ran",),
        timeout=1,
    )
    elapsed = time.monotonic() - began
    assert result.status == "timeout"
    assert result.exit_code is None
    assert elapsed < 1 + 2 + 1  # Timeout, kill within 2 s, plus process start-up.
    assert "timed out" in out
    assert "after-ran" in out  # after_script also runs after a timeout.
    for pid in read_pids(pids):
        assert not alive(pid)


def test_cancel_kills_within_two_seconds_and_skips_after_script(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cancel = threading.Event()
    canceled_at: list[float] = []

    def cancel_soon() -> None:
        read_pids(pids)
        canceled_at.append(time.monotonic())
        cancel.set()

    helper = threading.Thread(target=cancel_soon)
    helper.start()
    result, out = run(
        tmp_path,
        (f"sleep 300 & echo $! > {pids}", "trap '' TERM; sleep 300"),
        after=("echo after-ran",),
        cancel=cancel,
    )
    returned_at = time.monotonic()
    helper.join()
    assert result.status == "canceled"
    assert returned_at - canceled_at[0] < 2.5
    assert "after-ran" not in out
    for pid in read_pids(pids):
        assert not alive(pid)


def test_after_script_runs_after_failure_and_does_not_change_the_result(
    tmp_path: Path,
) -> None:
    result, out = run(tmp_path, ("exit 2",), after=("echo cleaning", "exit 7"))
    assert (result.status, result.exit_code) == ("failed", 2)
    assert "cleaning" in out
    assert "after_script failed" in out
    assert ":after_script\r" in out


def test_background_child_is_killed_when_the_script_ends(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    began = time.monotonic()
    result, _ = run(tmp_path, (f"sleep 300 & echo $! > {pids}", "echo done"))
    assert result.status == "success"
    assert time.monotonic() - began < 5
    for pid in read_pids(pids):
        assert not alive(pid)


def test_script_is_not_left_in_the_workspace(tmp_path: Path) -> None:
    result, out = run(tmp_path, ('echo "$0"', "ls -A"))
    assert result.status == "success"
    assert list(tmp_path.iterdir()) == []
    script_path = out.split("\n$ ls -A")[0]
    assert str(tmp_path) not in script_path


def test_missing_workdir_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result, _ = run(tmp_path / "nope", ("true",))
    assert result.status == "error"
    assert "does not exist" in result.message


def test_invalid_env_is_an_error(tmp_path: Path) -> None:
    result, _ = run(tmp_path, ("true",), env={"A=B": "x"})
    assert result.status == "error"


def test_registry() -> None:
    assert get_executor("shell").name == "shell"
    assert get_executor("docker").name == "docker"
    # Other executors (kubernetes) register themselves when Django starts.
    with pytest.raises(KeyError, match=r"known: docker, .*shell"):
        get_executor("nope")


def test_docker_unavailable_gives_a_clear_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    began = time.monotonic()
    ok, reason = DockerExecutor().available()
    assert time.monotonic() - began < 5
    assert ok is False
    assert reason.startswith(
        "no Docker daemon reachable at unix:///nonexistent/docker.sock: "
    )


def test_a_pull_that_fails_mid_stream_reports_the_daemons_error() -> None:
    from pipelines.engine.executors.docker import pull_error

    # POST /images/create answers 200 and streams these; the error is an event.
    events = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1"},
        {"status": "Downloading", "progressDetail": {"current": 1, "total": 9}},
        {"status": "Downloading", "progressDetail": {"current": 5, "total": 9}},
        {
            "errorDetail": {"message": "write /var/lib/docker/tmp: no space left"},
            "error": "write /var/lib/docker/tmp: no space left",
        },
        {"status": "never read"},
    ]
    shown: list[bytes] = []
    assert pull_error(iter(events), shown.append) == (
        "write /var/lib/docker/tmp: no space left"
    )
    assert b"".join(shown).decode().splitlines() == [
        "latest: Pulling from library/busybox",
        "a1: Pulling fs layer",
    ]
    assert pull_error([{"status": "Status: Image is up to date"}], shown.append) == ""


@pytest.fixture
def stopping() -> Iterator[threading.Event]:
    from pipelines.engine.executors.shell import WORKER_STOPPING

    WORKER_STOPPING.clear()
    yield WORKER_STOPPING
    WORKER_STOPPING.clear()  # Set for good in a real worker; per test here.


def test_a_worker_shutdown_kills_the_group_and_reports_the_job_lost(
    tmp_path: Path, stopping: threading.Event
) -> None:
    from pipelines.engine.executors.shell import stop_all_jobs

    pids = tmp_path / "pids"
    stopped_at: list[float] = []

    def stop_soon() -> None:
        read_pids(pids)
        stopped_at.append(time.monotonic())
        stop_all_jobs()

    helper = threading.Thread(target=stop_soon)
    helper.start()
    result, out = run(
        tmp_path,
        (f"sleep 300 & echo $! > {pids}", "trap '' TERM; sleep 300"),
        after=("echo after-ran",),
    )
    returned_at = time.monotonic()
    helper.join()
    assert (result.status, result.exit_code) == ("lost", None)
    assert result.message == "the worker shut down while the job ran"
    assert returned_at - stopped_at[0] < 2.5  # TERM ignored: KILL after the grace.
    assert "the worker shut down" in out and "after-ran" not in out
    for pid in read_pids(pids):
        assert not alive(pid)
    # A job handed over after the shutdown began does not start at all.
    result, out = run(tmp_path, (f"echo started > {tmp_path / 'late'}",))
    assert result.status == "lost" and not (tmp_path / "late").exists()
