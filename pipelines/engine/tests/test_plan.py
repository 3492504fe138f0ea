"""Tests for engine/plan.py: which jobs start, skip, gate or wait."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.plan import (
    ACTIVE,
    MANUAL,
    TERMINAL,
    Node,
    run_status,
    step,
)


def n(
    name: str,
    stage: int,
    needs: tuple[str, ...] | None = None,
    when: str = "on_success",
    allow_failure: bool = False,
) -> Node:
    return Node(name, stage, needs, when, allow_failure, stage=f"s{stage}")


PIPE = [
    n("compile", 0),
    n("lint", 0),
    n("unit", 1),
    n("cleanup", 1, when="on_failure"),
    n("deploy", 2),
]


def test_first_stage_starts_and_later_stages_wait_naming_the_stage() -> None:
    result = step(PIPE, {})
    assert result.start == ("compile", "lint")
    assert result.waiting["unit"] == "waiting for stage s0: compile, lint"
    assert result.waiting["deploy"] == "waiting for stage s0: compile, lint"
    assert run_status(PIPE, {}) is None


def test_next_stage_starts_when_previous_succeeded() -> None:
    result = step(PIPE, {"compile": "success", "lint": "success"})
    assert result.start == ("unit",)
    assert result.skip == (("cleanup", "skipped: no earlier job failed"),)
    # Decisions apply to the statuses given: the skip of cleanup is not applied yet.
    assert result.waiting == {"deploy": "waiting for stage s1: unit, cleanup"}


def test_failure_skips_on_success_jobs_and_starts_on_failure_jobs() -> None:
    result = step(PIPE, {"compile": "failed", "lint": "success"})
    assert result.start == ("cleanup",)
    assert ("unit", "skipped: compile failed") in result.skip
    assert result.skip == (("unit", "skipped: compile failed"),)
    after = {
        "compile": "failed",
        "lint": "success",
        "unit": "skipped",
        "cleanup": "success",
    }
    assert step(PIPE, after).skip == (("deploy", "skipped: compile failed"),)
    assert run_status(PIPE, {**after, "deploy": "skipped"}) == "failed"


def test_allowed_failure_counts_as_success() -> None:
    nodes = [n("flaky", 0, allow_failure=True), n("next", 1)]
    statuses = {"flaky": "failed"}
    assert step(nodes, statuses).start == ("next",)
    assert run_status(nodes, {"flaky": "failed", "next": "success"}) == "success"


def test_needs_start_before_the_stage_finishes() -> None:
    nodes = [n("a", 0), n("slow", 0), n("b", 1, needs=("a",)), n("c", 1)]
    result = step(nodes, {"a": "success", "slow": "running"})
    assert result.start == ("b",)
    assert result.waiting == {"c": "waiting for stage s0: slow"}


def test_empty_needs_start_at_once() -> None:
    nodes = [n("a", 0), n("b", 2, needs=())]
    assert step(nodes, {}).start == ("a", "b")


def test_waiting_for_needs_reason() -> None:
    nodes = [n("a", 0), n("b", 1, needs=("a",))]
    assert step(nodes, {"a": "running"}).waiting == {"b": "waiting for needs: a"}


def test_always_runs_after_failure() -> None:
    nodes = [n("a", 0), n("report", 1, when="always")]
    assert step(nodes, {"a": "failed"}).start == ("report",)


def test_manual_job_is_gated_and_does_not_block_later_stages() -> None:
    nodes = [n("build", 0), n("approve", 1, when="manual"), n("after", 2)]
    first = step(nodes, {"build": "success"})
    assert first.manual == ("approve",)
    assert first.waiting == {"after": "waiting for stage s1: approve"}
    # Once gated, the manual job no longer holds back stage ordering.
    assert step(nodes, {"build": "success", "approve": MANUAL}).start == ("after",)


def test_explicit_need_on_manual_job_waits_for_the_click() -> None:
    nodes = [n("approve", 0, when="manual"), n("ship", 1, needs=("approve",))]
    result = step(nodes, {"approve": MANUAL})
    assert result.empty
    assert result.waiting == {"ship": "waiting for needs: approve"}
    # A run waiting only behind a manual gate is finished.
    assert run_status(nodes, {"approve": MANUAL}) == "success"


def test_manual_job_after_failure_is_skipped() -> None:
    nodes = [n("a", 0), n("deploy", 1, when="manual")]
    assert step(nodes, {"a": "failed"}).skip == (("deploy", "skipped: a failed"),)


def test_canceled_upstream_skips_even_always_jobs() -> None:
    nodes = [n("a", 0), n("b", 1, when="always"), n("c", 1, needs=("a",))]
    result = step(nodes, {"a": "canceled"})
    assert result.skip == (("b", "skipped: a canceled"), ("c", "skipped: a canceled"))


def test_needing_a_skipped_job_skips() -> None:
    nodes = [n("a", 0), n("b", 1, needs=("a",)), n("c", 2, needs=("b",))]
    assert step(nodes, {"a": "failed", "b": "skipped"}).skip == (
        ("c", "skipped: b skipped"),
    )


def test_skipped_on_failure_job_does_not_skip_the_next_stage() -> None:
    result = step(
        PIPE,
        {
            "compile": "success",
            "lint": "success",
            "unit": "success",
            "cleanup": "skipped",
        },
    )
    assert result.start == ("deploy",)


def test_need_on_absent_job_is_ignored() -> None:
    nodes = [n("b", 1, needs=("excluded-by-rules",))]
    assert step(nodes, {}).start == ("b",)


def test_only_created_jobs_are_candidates() -> None:
    result = step(PIPE, {"compile": "pending", "lint": "running"})
    assert result.start == ()


def test_unknown_status_is_rejected() -> None:
    try:
        step(PIPE, {"compile": "exploded"})
    except ValueError as exc:
        assert "exploded" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_run_status() -> None:
    done = {
        "compile": "success",
        "lint": "success",
        "unit": "success",
        "cleanup": "skipped",
        "deploy": "success",
    }
    assert run_status(PIPE, done) == "success"
    assert run_status(PIPE, {**done, "deploy": "running"}) is None
    assert run_status(PIPE, {**done, "unit": "failed"}) == "failed"
    assert run_status(PIPE, {**done, "unit": "canceled"}) == "canceled"
    assert run_status(PIPE, {**done, "unit": "canceled", "lint": "failed"}) == "failed"
    # Created jobs that step() would still decide about keep the run open.
    assert run_status(PIPE, {**done, "deploy": "created"}) is None


def test_ten_thousand_jobs_is_fast() -> None:
    nodes = [n(f"j{i}", i // 100) for i in range(10_000)]
    statuses = {f"j{i}": "success" for i in range(5_000)}
    began = time.perf_counter()
    result = step(nodes, statuses)
    run_status(nodes, statuses)
    assert len(result.start) == 100
    assert time.perf_counter() - began < 1.0


# --- properties -----------------------------------------------------------------------


@st.composite
def pipelines(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(1, 12))
    nodes: list[Node] = []
    stage = 0
    for i in range(count):
        stage += draw(st.integers(0, 1))
        earlier = [x.name for x in nodes]
        needs: tuple[str, ...] | None = None
        use_needs: bool = draw(st.booleans())
        if earlier and use_needs:
            needs = tuple(
                draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
            )
        nodes.append(
            Node(
                f"j{i}",
                stage,
                needs,
                draw(st.sampled_from(["on_success", "on_failure", "always", "manual"])),
                draw(st.booleans()),
            )
        )
    return nodes


def _prerequisites(node: Node, nodes: list[Node]) -> list[Node]:
    if node.needs is None:
        return [x for x in nodes if x.stage_index < node.stage_index]
    return [x for x in nodes if x.name in node.needs]


@settings(max_examples=300, deadline=None)
@given(pipelines(), st.randoms(use_true_random=False))
def test_simulated_runs_terminate_and_never_start_early(
    nodes: list[Node], rnd: random.Random
) -> None:
    statuses = {node.name: "created" for node in nodes}
    for _ in range(len(nodes) * 3 + 3):
        result = step(nodes, statuses)
        for name in result.start:
            node = next(x for x in nodes if x.name == name)
            for pre in _prerequisites(node, nodes):
                s = statuses[pre.name]
                assert s in TERMINAL or (s == MANUAL and node.needs is None), (
                    name,
                    pre,
                )
        names = list(result.start) + [x for x, _ in result.skip] + list(result.manual)
        assert len(names) == len(set(names))
        assert not set(names) & set(result.waiting)
        for name, _ in result.skip:
            statuses[name] = "skipped"
        for name in result.manual:
            statuses[name] = MANUAL
        for name in result.start:
            statuses[name] = rnd.choice(["success", "failed", "canceled", "running"])
        # Finish running jobs, and sometimes click a manual one.
        for name, s in statuses.items():
            if s == "running" and rnd.random() < 0.7:
                statuses[name] = rnd.choice(["success", "failed"])
            elif s == MANUAL and rnd.random() < 0.3:
                statuses[name] = rnd.choice(["success", "failed"])
        if run_status(nodes, statuses) is not None:
            break
    else:
        # Only jobs still running may keep the run open at the end.
        assert (
            any(s == "running" for s in statuses.values())
            or run_status(nodes, statuses) is not None
        )
        return
    final = run_status(nodes, statuses)
    assert final in ("success", "failed", "canceled")
    assert not any(s in ACTIVE - {"created"} for s in statuses.values())
