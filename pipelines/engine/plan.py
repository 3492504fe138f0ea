"""Decide which jobs of a run can start, GitLab-style.

`step()` looks at the current job statuses and says which `created` jobs start, which
are skipped (with a reason), which become `manual` (waiting for a click) and which keep
waiting. It is pure: the caller applies the result with conditional updates and calls
`step()` again whenever a job finishes. `run_status()` gives the run's final status.

Semantics (see also docs/pipeline-reference.md):

* A job without `needs` waits for every job of the earlier stages; a job with `needs`
  waits only for those jobs; `needs: ()` starts at once.
* A prerequisite that failed with `allow_failure` counts as a success.
* A job left in `manual` (never clicked) does not hold back later *stages*: like GitLab,
  it counts as satisfied for stage ordering. An explicit `needs` on a manual job does
  wait for it to be run, because the dependent usually needs its result.
* A `skipped` prerequisite is neutral for stage ordering (an `on_failure` cleanup job
  that did not run must not skip the next stage), but a job that *needs* a skipped job
  is skipped too (`on_success`), so a skipped chain stays skipped.
* A `canceled` prerequisite skips every dependent, whatever its `when`: cancel means
  stop, and `always` cleanup jobs are the caller's business on cancel.
* A need naming a job absent from `nodes` is ignored: that is how an `optional` need
  on a job excluded by rules behaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CREATED",
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "CANCELED",
    "SKIPPED",
    "MANUAL",
    "STATUSES",
    "TERMINAL",
    "ACTIVE",
    "Node",
    "Step",
    "step",
    "run_status",
]

CREATED = "created"
PENDING = "pending"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
CANCELED = "canceled"
SKIPPED = "skipped"
MANUAL = "manual"
STATUSES = frozenset(
    {CREATED, PENDING, RUNNING, SUCCESS, FAILED, CANCELED, SKIPPED, MANUAL}
)
TERMINAL = frozenset({SUCCESS, FAILED, CANCELED, SKIPPED})
ACTIVE = frozenset({CREATED, PENDING, RUNNING})

_SHOWN_NAMES = 5


@dataclass(frozen=True)
class Node:
    """One job as the planner sees it.

    `needs` None waits for all jobs of earlier stages; `()` waits for nothing. Names
    are already matrix-expanded. `stage` is only used in human-readable reasons.
    """

    name: str
    stage_index: int
    needs: tuple[str, ...] | None
    when: str = "on_success"
    allow_failure: bool = False
    stage: str = ""


@dataclass(frozen=True)
class Step:
    """What to do now; every name appears in at most one field."""

    start: tuple[str, ...] = ()
    skip: tuple[tuple[str, str], ...] = ()
    manual: tuple[str, ...] = ()
    waiting: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Return True when nothing changes: only waiting jobs, if any."""
        return not (self.start or self.skip or self.manual)


class _Upstream:
    """A summary of a set of prerequisites: counts plus the first few names."""

    __slots__ = ("blocking", "failed", "canceled", "skipped", "counts")

    def __init__(self) -> None:
        self.blocking: list[str] = []
        self.failed: list[str] = []
        self.canceled: list[str] = []
        self.skipped: list[str] = []
        # Counts kept apart from the names, which are capped: a stage of 10k jobs
        # must not make every later job copy 10k names.
        self.counts = {"blocking": 0, "failed": 0, "canceled": 0, "skipped": 0}

    def _note(self, kind: str, names: list[str], name: str) -> None:
        self.counts[kind] += 1
        if len(names) < _SHOWN_NAMES:
            names.append(name)

    def add(self, name: str, status: str, allow_failure: bool, explicit: bool) -> None:
        if status in ACTIVE or (status == MANUAL and explicit):
            self._note("blocking", self.blocking, name)
        elif status == FAILED and not allow_failure:
            self._note("failed", self.failed, name)
        elif status == CANCELED:
            self._note("canceled", self.canceled, name)
        elif status == SKIPPED and explicit:
            self._note("skipped", self.skipped, name)

    def copy_extended(self, other: _Upstream) -> _Upstream:
        result = _Upstream()
        for kind in ("blocking", "failed", "canceled", "skipped"):
            mine: list[str] = getattr(self, kind)
            theirs: list[str] = getattr(other, kind)
            merged = (mine + theirs)[:_SHOWN_NAMES]
            setattr(result, kind, merged)
            result.counts[kind] = self.counts[kind] + other.counts[kind]
        return result

    def names(self, kind: str) -> str:
        names: list[str] = getattr(self, kind)
        shown = ", ".join(names)
        extra = self.counts[kind] - len(names)
        return f"{shown} and {extra} more" if extra > 0 else shown


def _status_of(statuses: Mapping[str, str], name: str) -> str:
    status = statuses.get(name, CREATED)
    if status not in STATUSES:
        raise ValueError(f"unknown job status {status!r} for job {name!r}")
    return status


def step(nodes: Sequence[Node], statuses: Mapping[str, str]) -> Step:
    """Return which `created` jobs start, are skipped, become manual or keep waiting.

    A job missing from `statuses` counts as `created`. Raise ValueError on an unknown
    status. Runs in O(jobs + needs): stage prerequisites are summarised per stage once.
    """
    by_name = {node.name: node for node in nodes}
    status = {node.name: _status_of(statuses, node.name) for node in nodes}

    # Summaries of each stage, then of all stages before each stage index.
    stage_indexes = sorted({node.stage_index for node in nodes})
    per_stage: dict[int, _Upstream] = {i: _Upstream() for i in stage_indexes}
    stage_names: dict[int, str] = {}
    for node in nodes:
        per_stage[node.stage_index].add(
            node.name, status[node.name], node.allow_failure, explicit=False
        )
        stage_names.setdefault(node.stage_index, node.stage)
    before: dict[int, _Upstream] = {}
    cumulative = _Upstream()
    for i in stage_indexes:
        before[i] = cumulative
        cumulative = cumulative.copy_extended(per_stage[i])
    return _decide(nodes, by_name, status, before, per_stage, stage_names)


def _decide(
    nodes: Sequence[Node],
    by_name: Mapping[str, Node],
    status: Mapping[str, str],
    before: Mapping[int, _Upstream],
    per_stage: Mapping[int, _Upstream],
    stage_names: Mapping[int, str],
) -> Step:
    start: list[str] = []
    skip: list[tuple[str, str]] = []
    manual: list[str] = []
    waiting: dict[str, str] = {}
    for node in nodes:
        if status[node.name] != CREATED:
            continue
        if node.needs is None:
            up = before[node.stage_index]
            if up.blocking:
                waiting[node.name] = _stage_wait_reason(node, per_stage, stage_names)
                continue
        else:
            up = _Upstream()
            for need in node.needs:
                other = by_name.get(need)
                if other is None:
                    continue
                up.add(need, status[need], other.allow_failure, explicit=True)
            if up.blocking:
                waiting[node.name] = "waiting for needs: " + up.names("blocking")
                continue
        if up.canceled:
            skip.append((node.name, f"skipped: {up.names('canceled')} canceled"))
            continue
        upstream_failed = bool(up.failed)
        if node.when == "always":
            start.append(node.name)
        elif node.when == "on_failure":
            if upstream_failed:
                start.append(node.name)
            else:
                skip.append((node.name, "skipped: no earlier job failed"))
        elif upstream_failed:
            skip.append((node.name, f"skipped: {up.names('failed')} failed"))
        elif up.skipped:
            skip.append((node.name, f"skipped: {up.names('skipped')} skipped"))
        elif node.when == "manual":
            manual.append(node.name)
        else:
            start.append(node.name)
    return Step(tuple(start), tuple(skip), tuple(manual), waiting)


def _stage_wait_reason(
    node: Node, per_stage: Mapping[int, _Upstream], stage_names: Mapping[int, str]
) -> str:
    for i in sorted(per_stage):
        if i >= node.stage_index:
            break
        if per_stage[i].blocking:
            label = stage_names.get(i) or f"{i + 1}"
            return f"waiting for stage {label}: {per_stage[i].names('blocking')}"
    return "waiting for earlier stages"  # pragma: no cover - blocking implies a stage


def run_status(nodes: Sequence[Node], statuses: Mapping[str, str]) -> str | None:
    """Return the run's final status, or None while it can still progress.

    A run is open while a job is pending or running, or while `step()` would still
    start, skip or gate a job. Jobs left `manual`, and `created` jobs that can only
    wait behind them, do not keep a run open: it finishes as if they were not there
    (GitLab would show such a run as "blocked" only for protected manual gates).
    Otherwise the run `failed` if a job failed without `allow_failure`, is `canceled`
    if a job was canceled, and is a `success` otherwise.
    """
    values = [_status_of(statuses, node.name) for node in nodes]
    if any(s in (PENDING, RUNNING) for s in values):
        return None
    if any(s == CREATED for s in values) and not step(nodes, statuses).empty:
        return None
    failed = any(
        s == FAILED and not node.allow_failure
        for node, s in zip(nodes, values, strict=True)
    )
    if failed:
        return FAILED
    if any(s == CANCELED for s in values):
        return CANCELED
    return SUCCESS
