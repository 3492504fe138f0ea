"""Parse and validate `.slipway.yml` into frozen dataclasses.

The file format follows GitLab CI closely (stages, jobs, `needs`, `rules`, `extends`,
`parallel: matrix`), with a few deliberate differences documented in
`docs/pipeline-reference.md`. Every problem found is reported with the key path, line
and column, and all problems are collected before `SpecError` is raised.

This module never imports Django.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_SPEC_BYTES",
    "MAX_NODES",
    "DEFAULT_STAGES",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "EVENTS",
    "FrozenMap",
    "SpecIssue",
    "SpecError",
    "Need",
    "Rule",
    "Retry",
    "Artifacts",
    "Cache",
    "Environment",
    "Deploy",
    "JobSpec",
    "Pipeline",
    "RuleContext",
    "Decision",
    "parse",
    "parse_duration",
    "expand",
    "evaluate_rules",
    "evaluate_workflow",
]

MAX_SPEC_BYTES = 256 * 1024
# An alias can point at a subtree that itself contains aliases, so a tiny file can
# describe an exponentially large document ("billion laughs"). Counting the nodes we
# construct, aliases included, bounds the work no matter how the file is written.
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_EXTENDS_DEPTH = 11
MAX_MATRIX_JOBS = 200
DEFAULT_STAGES: tuple[str, ...] = ("build", "test", "deploy")
DEFAULT_TIMEOUT = 3600
MAX_TIMEOUT = 24 * 3600
DEFAULT_DEPLOY_TIMEOUT = 600
AFTER_SCRIPT_TIMEOUT = 300

EVENTS = ("push", "tag", "manual", "schedule", "merge_request", "api", "webhook")
JOB_WHEN = ("on_success", "on_failure", "always", "manual")
RULE_WHEN = ("on_success", "manual", "never", "always", "on_failure")
WORKFLOW_WHEN = ("always", "never")
RETRY_WHEN = ("script_failure", "timeout", "worker_lost", "always")
ARTIFACT_WHEN = ("on_success", "on_failure", "always")
ENVIRONMENT_ACTIONS = ("start", "stop")

_K = TypeVar("_K")
_V_co = TypeVar("_V_co")


class FrozenMap(Mapping[_K, _V_co]):
    """An immutable, hashable mapping.

    `types.MappingProxyType` is immutable but not hashable, which would make the
    generated `__hash__` of the frozen dataclasses below raise `TypeError`.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[_K, _V_co] | None = None) -> None:
        self._data: dict[_K, _V_co] = dict(data) if data else {}
        self._hash: int | None = None

    def __getitem__(self, key: _K) -> _V_co:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


# --- errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline file; `line` and `column` are 1-based."""

    path: str
    message: str
    line: int | None
    column: int | None

    def format(self, filename: str = ".slipway.yml") -> str:
        """Return the issue as `file:line:col: path: message`."""
        where = filename
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class SpecError(Exception):
    """The pipeline file is invalid; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[SpecIssue], filename: str = ".slipway.yml"):
        self.issues: list[SpecIssue] = list(issues)
        self.filename = filename
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(issue.format(self.filename) for issue in self.issues)


# --- the result -----------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """A job this job waits for (and whose artifacts it downloads)."""

    job: str
    artifacts: bool = True
    optional: bool = False


@dataclass(frozen=True)
class Rule:
    """One entry of `rules:`; every condition that is set must match.

    `when` and `allow_failure` are None when the rule does not set them: the job's own
    values apply then.
    """

    if_branch: tuple[str, ...] | None = None
    if_tag: tuple[str, ...] | None = None
    if_event: tuple[str, ...] | None = None
    changes: tuple[str, ...] | None = None
    if_variable: str | None = None
    when: str | None = None
    allow_failure: bool | None = None


@dataclass(frozen=True)
class Retry:
    """How often, and on which failures, a job is retried."""

    max: int = 0
    when: tuple[str, ...] = ("always",)


@dataclass(frozen=True)
class Artifacts:
    """Files kept after the job; `expire_in` is None for the platform default, 0 for
    `never` (a duration is at least 1 second)."""

    paths: tuple[str, ...]
    expire_in: int | None = None
    when: str = "on_success"
    name: str | None = None


@dataclass(frozen=True)
class Cache:
    """Files restored before and saved after the job, shared by `key`."""

    key: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Environment:
    """The environment a job deploys to (or stops)."""

    name: str
    url: str | None = None
    action: str = "start"


@dataclass(frozen=True)
class Deploy:
    """A Kubernetes rollout done by the platform after the job's script succeeds."""

    manifests: str | None = None
    kustomize: str | None = None
    images: Mapping[str, str] = field(default_factory=FrozenMap)
    timeout: int = DEFAULT_DEPLOY_TIMEOUT
    namespace: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One job after `extends`, `default:` and matrix expansion.

    `needs` is None when the job waits for every job of the earlier stages, and an
    empty tuple when it starts at once.
    """

    name: str
    stage: str = "test"
    script: tuple[str, ...] = ()
    before_script: tuple[str, ...] = ()
    after_script: tuple[str, ...] = ()
    needs: tuple[Need, ...] | None = None
    variables: Mapping[str, str] = field(default_factory=FrozenMap)
    rules: tuple[Rule, ...] = ()
    when: str = "on_success"
    allow_failure: bool = False
    timeout: int = DEFAULT_TIMEOUT
    retry: Retry = field(default_factory=Retry)
    tags: tuple[str, ...] = ()
    artifacts: Artifacts | None = None
    cache: Cache | None = None
    image: str | None = None
    environment: Environment | None = None
    deploy: Deploy | None = None
    interruptible: bool = False
    line: int = 0


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline: stages in order and jobs in file order."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    variables: Mapping[str, str] = field(default_factory=FrozenMap)
    jobs: tuple[JobSpec, ...] = ()
    workflow_rules: tuple[Rule, ...] = ()

    def job(self, name: str) -> JobSpec:
        """Return the job called `name`; raise KeyError if there is none."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def stage_index(self, stage: str) -> int:
        """Return the position of `stage` in `stages`."""
        return self.stages.index(stage)


# --- durations and variables ----------------------------------------------------------

_UNITS: dict[str, int] = {}
for _names, _seconds in (
    (("s", "sec", "secs", "second", "seconds"), 1),
    (("m", "min", "mins", "minute", "minutes"), 60),
    (("h", "hr", "hrs", "hour", "hours"), 3600),
    (("d", "day", "days"), 86400),
    (("w", "wk", "wks", "week", "weeks"), 7 * 86400),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_DURATION_PART = re.compile(r"(\d+)\s*([a-z]+)")
_DURATION_SEP = re.compile(r"[\s,]+|\band\b")


def parse_duration(text: str | int) -> int:
    """Return the number of seconds in `text` ("90s", "10m", "1h 30m", "2 days", 600).

    Raise ValueError with an example of the accepted forms on bad input.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h 30m")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid duration {text}: must not be negative")
        return text
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h 30m")
    s = text.strip().lower()
    if s.isdigit() and s.isascii():
        return int(s)
    total = 0
    pos = 0
    matched = False
    while pos < len(s):
        sep = _DURATION_SEP.match(s, pos)
        if sep and sep.end() > pos:
            pos = sep.end()
            continue
        part = _DURATION_PART.match(s, pos)
        if part is None or part.group(2) not in _UNITS:
            raise ValueError(
                f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h 30m, 2 days"
            )
        total += int(part.group(1)) * _UNITS[part.group(2)]
        matched = True
        pos = part.end()
    if not matched:
        raise ValueError(
            f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h 30m, 2 days"
        )
    return total


def format_duration(seconds: int) -> str:
    """Return `seconds` as short human text ("1h 30m", "90s" stays "1m 30s")."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts)


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VAR_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Return `value` with `$VAR` and `${VAR}` replaced from `variables`.

    `$$` gives a literal `$`, unknown variables become empty, and the substituted text
    is not expanded again: one pass per variable set keeps expansion predictable and
    cannot loop. A `$` not followed by a name is kept as is.
    """
    if "$" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name is None:
            return "$"
        return variables.get(name, "")

    return _VAR_REF.sub(sub, value)


# --- rule evaluation ------------------------------------------------------------------


@dataclass(frozen=True)
class RuleContext:
    """What rules are evaluated against; `changed_paths` None means unknown."""

    branch: str | None
    tag: str | None
    event: str
    changed_paths: tuple[str, ...] | None = None
    variables: Mapping[str, str] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class Decision:
    """Whether a job (or the whole run) is included, and why."""

    included: bool
    when: str
    allow_failure: bool
    reason: str


_IF_VARIABLE = re.compile(
    r"""\s*\$?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*
    (?:(?P<op>==|!=)\s*(?P<value>"[^"]*"|'[^']*'|.*?))?\s*\Z""",
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def _parse_if_variable(text: str) -> tuple[str, str | None, str]:
    """Return (name, operator or None, value) for an `if_variable` expression."""
    match = _IF_VARIABLE.match(text)
    if match is None:
        raise ValueError(
            f"invalid if_variable {text!r}: expected 'NAME', 'NAME == value' "
            "or 'NAME != value'"
        )
    value = match.group("value") or ""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return match.group("name"), match.group("op"), value


@functools.lru_cache(maxsize=4096)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: `**` crosses `/`, `*` and `?` do not."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _path_matches(path: str, pattern: str) -> bool:
    pattern = pattern.removeprefix("./")
    try:
        return _glob_regex(pattern).match(path.removeprefix("./")) is not None
    except re.error:
        return False


def _describe_rule(rule: Rule) -> str:
    parts = []
    if rule.if_branch is not None:
        parts.append("if_branch: " + ", ".join(rule.if_branch))
    if rule.if_tag is not None:
        parts.append("if_tag: " + ", ".join(rule.if_tag))
    if rule.if_event is not None:
        parts.append("if_event: " + ", ".join(rule.if_event))
    if rule.changes is not None:
        parts.append("changes: " + ", ".join(rule.changes))
    if rule.if_variable is not None:
        parts.append("if_variable: " + rule.if_variable)
    return "; ".join(parts) if parts else "no conditions"


def _rule_matches(rule: Rule, ctx: RuleContext, variables: Mapping[str, str]) -> bool:
    # Branch and tag globs use fnmatch, where `*` also matches `/`: `feature/*`
    # should match `feature/a/b`, which is what people mean for ref names.
    if rule.if_branch is not None and (
        ctx.branch is None
        or not any(fnmatch.fnmatchcase(ctx.branch, g) for g in rule.if_branch)
    ):
        return False
    if rule.if_tag is not None and (
        ctx.tag is None or not any(fnmatch.fnmatchcase(ctx.tag, g) for g in rule.if_tag)
    ):
        return False
    if rule.if_event is not None and ctx.event not in rule.if_event:
        return False
    if rule.changes is not None and ctx.changed_paths is not None:
        if not any(
            _path_matches(path, pattern)
            for path in ctx.changed_paths
            for pattern in rule.changes
        ):
            return False
    if rule.if_variable is not None:
        name, op, expected = _parse_if_variable(rule.if_variable)
        actual = variables.get(name)
        if op is None:
            if not actual:
                return False
        elif op == "==":
            if (actual or "") != expected:
                return False
        elif (actual or "") == expected:
            return False
    return True


def evaluate_rules(job: JobSpec, ctx: RuleContext) -> Decision:
    """Decide whether `job` runs in a run described by `ctx`.

    The first rule whose conditions all match decides; a job with rules of which none
    matches is excluded. `if_variable` sees the job's variables overlaid by
    `ctx.variables` (run, project and predefined variables win over the file).
    """
    if not job.rules:
        return Decision(True, job.when, job.allow_failure, "no rules")
    variables = {**job.variables, **ctx.variables}
    for number, rule in enumerate(job.rules, start=1):
        if not _rule_matches(rule, ctx, variables):
            continue
        what = _describe_rule(rule)
        when = rule.when or job.when
        allow_failure = (
            rule.allow_failure if rule.allow_failure is not None else job.allow_failure
        )
        if when == "never":
            return Decision(
                False, "never", allow_failure, f"rule {number}: when never ({what})"
            )
        return Decision(True, when, allow_failure, f"rule {number} matched ({what})")
    return Decision(
        False, "never", job.allow_failure, f"no rule matched (rules: {len(job.rules)})"
    )


def evaluate_workflow(p: Pipeline, ctx: RuleContext) -> Decision:
    """Decide whether a run is created at all, from `workflow: rules`."""
    if not p.workflow_rules:
        return Decision(True, "always", False, "no workflow rules")
    variables = {**p.variables, **ctx.variables}
    for number, rule in enumerate(p.workflow_rules, start=1):
        if not _rule_matches(rule, ctx, variables):
            continue
        what = _describe_rule(rule)
        if rule.when == "never":
            return Decision(
                False, "never", False, f"workflow rule {number}: when never ({what})"
            )
        return Decision(
            True, "always", False, f"workflow rule {number} matched ({what})"
        )
    return Decision(
        False,
        "never",
        False,
        f"no workflow rule matched (rules: {len(p.workflow_rules)})",
    )


# --- YAML with positions --------------------------------------------------------------


@dataclass(slots=True)
class _Y:
    """A YAML value with where it was written (1-based); maps hold `_Y` values."""

    value: Any
    line: int
    column: int
    raw: str | None = None  # The scalar's source text, e.g. "3.10" for a float.
    key_line: int = 0
    key_column: int = 0


class _Fatal(Exception):
    """Stop building: the document cannot be read any further."""


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_RESERVED_TOP = ("stages", "variables", "default", "workflow")


class _Builder:
    """Turn a composed node tree into `_Y` values, like `yaml.safe_load` would."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        self.count = 0
        self.active: set[int] = set()
        self.constructor = SafeConstructor()

    def issue(self, keys: Sequence[str], message: str, node: Node) -> None:
        self.issues.append(
            SpecIssue(
                _doc_path(keys),
                message,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
            )
        )

    def build(self, node: Node, keys: list[str]) -> _Y:
        self.count += 1
        if self.count > MAX_NODES:
            self.issue(
                keys,
                f"document too large: more than {MAX_NODES} values after expanding "
                "aliases",
                node,
            )
            raise _Fatal
        if len(keys) > MAX_DEPTH:
            self.issue(keys, f"nested deeper than {MAX_DEPTH} levels", node)
            raise _Fatal
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if id(node) in self.active:
            self.issue(keys, "recursive alias", node)
            raise _Fatal
        if isinstance(node, ScalarNode):
            return _Y(self.scalar(node, keys), line, column, raw=node.value)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    self.issue(keys, _tag_message(node.tag), node)
                items = [
                    self.build(child, [*keys, f"[{i}]"])
                    for i, child in enumerate(node.value)
                ]
                return _Y(items, line, column)
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    self.issue(keys, _tag_message(node.tag), node)
                return _Y(self.mapping(node, keys), line, column)
        finally:
            self.active.discard(id(node))
        raise _Fatal  # pragma: no cover - the composer makes only these three kinds

    def scalar(self, node: ScalarNode, keys: list[str]) -> Any:
        tag = node.tag
        if tag == _STR_TAG:
            return node.value
        if tag in (
            "tag:yaml.org,2002:null",
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
        ):
            try:
                return self.constructor.construct_object(node, deep=True)
            except (ValueError, yaml.YAMLError, OverflowError):
                return node.value
            finally:
                self.constructor.constructed_objects.clear()
        if tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"):
            return node.value  # Dates stay text: "2024-01-01" is a string to a job.
        self.issue(keys, _tag_message(tag), node)
        return node.value

    def mapping(self, node: MappingNode, keys: list[str]) -> dict[str, _Y]:
        result: dict[str, _Y] = {}
        merged: dict[str, _Y] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for part in self.merge_sources(value_node, keys):
                    for k, v in part.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, ScalarNode):
                self.issue(keys, "mapping keys must be strings", key_node)
                continue
            key = key_node.value
            if key in result:
                self.issue([*keys, key], f"duplicate key {key!r}", key_node)
            value = self.build(value_node, [*keys, key])
            value.key_line = key_node.start_mark.line + 1
            value.key_column = key_node.start_mark.column + 1
            result[key] = value
        for k, v in merged.items():
            result.setdefault(k, v)
        return result

    def merge_sources(self, node: Node, keys: list[str]) -> list[dict[str, _Y]]:
        built = self.build(node, [*keys, "<<"])
        sources = built.value if isinstance(built.value, list) else [built]
        parts = []
        for source in sources:
            if isinstance(source.value, dict):
                parts.append(source.value)
            else:
                self.issue(
                    keys, "`<<` merge key needs a mapping or a list of them", node
                )
        return parts


def _tag_message(tag: str) -> str:
    hint = ""
    if tag == "!reference":
        hint = " (use `extends:` or YAML anchors instead of !reference)"
    return f"unsupported YAML tag {tag!r}{hint}"


def _doc_path(keys: Sequence[str]) -> str:
    if not keys:
        return ""
    parts = list(keys)
    if not parts[0].startswith("[") and parts[0] not in _RESERVED_TOP:
        parts.insert(0, "jobs")
    out = ""
    for part in parts:
        if part.startswith("[") or not out:
            out += part
        else:
            out += "." + part
    return out


def _load(text: str, filename: str) -> _Y | None:
    """Return the document as `_Y` values; raise SpecError on YAML errors."""
    issues: list[SpecIssue] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.context}: {exc.problem}"
        message = "invalid YAML: " + message
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise SpecError([SpecIssue("", message, line, column)], filename) from None
    except yaml.reader.ReaderError as exc:
        before = text[: max(exc.position, 0)]
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise SpecError(
            [SpecIssue("", f"invalid YAML: {exc.reason}", line, column)], filename
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            [SpecIssue("", f"invalid YAML: {exc}", None, None)], filename
        ) from None
    except RecursionError:
        raise SpecError(
            [SpecIssue("", "invalid YAML: nested too deeply", None, None)], filename
        ) from None
    if node is None:
        return None
    builder = _Builder(issues)
    try:
        root = builder.build(node, [])
    except (_Fatal, RecursionError):
        if not issues:
            issues.append(SpecIssue("", "nested too deeply", None, None))
        raise SpecError(issues, filename) from None
    if issues:
        raise SpecError(issues, filename)
    return root


# --- validation -----------------------------------------------------------------------

_TOP_LEVEL_HINTS = {
    "image": "put it under `default:`",
    "before_script": "put it under `default:`",
    "after_script": "put it under `default:`",
    "timeout": "put it under `default:`",
    "retry": "put it under `default:`",
    "tags": "put it under `default:`",
    "cache": "set it on each job (or a hidden template used with `extends:`)",
    "services": "services are not supported",
    "include": "include is not supported; use hidden templates and `extends:`",
}

_JOB_KEYS = (
    "stage",
    "script",
    "before_script",
    "after_script",
    "needs",
    "variables",
    "rules",
    "when",
    "allow_failure",
    "timeout",
    "retry",
    "tags",
    "parallel",
    "artifacts",
    "cache",
    "image",
    "environment",
    "deploy",
    "interruptible",
    "extends",
)
_JOB_KEY_HINTS = {
    "only": "only/except are not supported; use `rules:` (e.g. `if_branch: main`)",
    "except": "only/except are not supported; use `rules:` (e.g. `if_branch: main`)",
    "dependencies": "use `needs:` (with `artifacts: true`) to get another job's artifacts",
    "start_in": "delayed jobs are not supported",
    "services": "services are not supported",
    "trigger": "child pipelines are not supported",
}
_DEFAULT_KEYS = ("before_script", "after_script", "image", "timeout", "retry", "tags")
_RULE_KEYS = (
    "if_branch",
    "if_tag",
    "if_event",
    "changes",
    "if_variable",
    "when",
    "allow_failure",
)
_RULE_KEY_HINTS = {
    "if": "use if_branch, if_tag, if_event or if_variable",
    "exists": "`exists` is not supported",
}


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _is_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, list | dict)


class _Checker:
    """Collect issues while converting `_Y` values into typed values."""

    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []

    def error(
        self, path: str, message: str, y: _Y | None, *, at_key: bool = False
    ) -> None:
        if y is None:
            self.issues.append(SpecIssue(path, message, None, None))
        elif at_key and y.key_line:
            self.issues.append(SpecIssue(path, message, y.key_line, y.key_column))
        else:
            self.issues.append(SpecIssue(path, message, y.line, y.column))

    def keys(
        self,
        m: dict[str, _Y],
        allowed: Sequence[str],
        path: str,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        for key, y in m.items():
            if key in allowed:
                continue
            hint = (hints or {}).get(key)
            text = f"; {hint}" if hint else _did_you_mean(key, allowed)
            self.error(f"{path}.{key}", f"unknown key {key!r}{text}", y, at_key=True)

    def mapping(self, y: _Y, path: str) -> dict[str, _Y] | None:
        if isinstance(y.value, dict):
            return y.value
        self.error(path, f"expected a mapping, got {_kind(y.value)}", y)
        return None

    def string(self, y: _Y, path: str, *, nonempty: bool = True) -> str | None:
        if isinstance(y.value, str) and (y.value or not nonempty):
            return y.value
        if isinstance(y.value, str):
            self.error(path, "must not be empty", y)
        else:
            self.error(path, f"expected a string, got {_kind(y.value)}", y)
        return None

    def boolean(self, y: _Y, path: str) -> bool | None:
        if isinstance(y.value, bool):
            return y.value
        self.error(path, f"expected true or false, got {_kind(y.value)}", y)
        return None

    def choice(self, y: _Y, path: str, options: Sequence[str]) -> str | None:
        if isinstance(y.value, str) and y.value in options:
            return y.value
        shown = ", ".join(options)
        if isinstance(y.value, str):
            hint = _did_you_mean(y.value, options)
            self.error(path, f"{y.value!r} is not one of: {shown}{hint}", y)
        else:
            self.error(path, f"expected one of: {shown}; got {_kind(y.value)}", y)
        return None

    def duration(self, y: _Y, path: str, *, maximum: int = MAX_TIMEOUT) -> int | None:
        if isinstance(y.value, bool) or not isinstance(y.value, str | int):
            self.error(
                path, f"expected a duration like 10m or 1h 30m, got {_kind(y.value)}", y
            )
            return None
        try:
            seconds = parse_duration(y.value)
        except ValueError as exc:
            self.error(path, str(exc), y)
            return None
        if seconds < 1:
            self.error(path, "must be at least 1 second", y)
            return None
        if seconds > maximum:
            self.error(path, f"must be at most {format_duration(maximum)}", y)
            return None
        return seconds

    def string_list(
        self, y: _Y, path: str, *, allow_single: bool = False, nonempty: bool = False
    ) -> tuple[str, ...] | None:
        if allow_single and isinstance(y.value, str):
            return (y.value,)
        if not isinstance(y.value, list):
            self.error(path, f"expected a list of strings, got {_kind(y.value)}", y)
            return None
        out = []
        ok = True
        for i, item in enumerate(y.value):
            if isinstance(item.value, str):
                out.append(item.value)
            else:
                ok = False
                self.error(
                    f"{path}[{i}]", f"expected a string, got {_kind(item.value)}", item
                )
        if ok and nonempty and not out:
            self.error(path, "must not be empty", y)
            return None
        return tuple(out) if ok else None

    def script(self, y: _Y, path: str, *, required: bool) -> tuple[str, ...] | None:
        """Read a script: a string or a list of lines; nested lists are flattened.

        Scalars keep their source text, so `- true` is the shell command `true`. Nested
        lists come from anchors (`- *setup_steps`) and are flattened like GitLab does.
        """
        if isinstance(y.value, str):
            lines: list[str] = [y.value]
        elif isinstance(y.value, list):
            lines = []
            ok = True
            stack: list[tuple[str, _Y, int]] = [
                (f"{path}[{i}]", item, 0) for i, item in enumerate(y.value)
            ]
            stack.reverse()
            while stack:
                p, item, depth = stack.pop()
                if isinstance(item.value, list) and depth < 10:
                    nested = [
                        (f"{p}[{i}]", x, depth + 1) for i, x in enumerate(item.value)
                    ]
                    stack.extend(reversed(nested))
                elif _is_scalar(item.value) and item.raw is not None:
                    lines.append(
                        item.value if isinstance(item.value, str) else item.raw
                    )
                else:
                    ok = False
                    hint = ""
                    if isinstance(item.value, dict):
                        hint = " (quote the line: YAML reads `key: value` as a mapping)"
                    self.error(p, f"expected a list of strings{hint}", item)
            if not ok:
                return None
        else:
            self.error(
                path, f"expected a string or a list of strings, got {_kind(y.value)}", y
            )
            return None
        if required and not any(line.strip() for line in lines):
            self.error(path, "must contain at least one command", y)
            return None
        return tuple(lines)

    def variables(self, y: _Y, path: str) -> dict[str, str] | None:
        if y.value is None:
            return {}
        m = self.mapping(y, path)
        if m is None:
            return None
        out: dict[str, str] = {}
        for name, v in m.items():
            if not _VAR_NAME.match(name):
                self.error(
                    f"{path}.{name}",
                    "variable names use letters, digits and _, and do not start "
                    "with a digit",
                    v,
                    at_key=True,
                )
                continue
            if v.value is None:
                out[name] = ""
            elif _is_scalar(v.value) and v.raw is not None:
                # Source text, not the YAML value: `PY: 3.10` means "3.10", not "3.1".
                out[name] = v.value if isinstance(v.value, str) else v.raw
            else:
                self.error(
                    f"{path}.{name}",
                    f"expected a string or number, got {_kind(v.value)}",
                    v,
                )
        return out

    def relative_paths(self, y: _Y, path: str) -> tuple[str, ...] | None:
        paths = self.string_list(y, path, nonempty=True)
        if paths is None:
            return None
        ok = True
        for i, p in enumerate(paths):
            if not _is_relative_inside(p):
                ok = False
                item = y.value[i] if isinstance(y.value, list) else y
                self.error(
                    f"{path}[{i}]",
                    f"{p!r} must be a relative path inside the workspace",
                    item,
                )
        return paths if ok else None

    def relative_path(self, y: _Y, path: str) -> str | None:
        p = self.string(y, path)
        if p is not None and not _is_relative_inside(p):
            self.error(path, f"{p!r} must be a relative path inside the workspace", y)
            return None
        return p

    def retry(self, y: _Y, path: str) -> Retry | None:
        if isinstance(y.value, int) and not isinstance(y.value, bool):
            if 0 <= y.value <= 2:
                return Retry(y.value)
            self.error(path, "must be 0, 1 or 2", y)
            return None
        m = self.mapping(y, path) if isinstance(y.value, dict) else None
        if m is None:
            if not isinstance(y.value, dict):
                self.error(
                    path, f"expected 0, 1, 2 or {{max, when}}, got {_kind(y.value)}", y
                )
            return None
        self.keys(m, ("max", "when"), path)
        maximum = 0
        if "max" in m:
            my = m["max"]
            if (
                isinstance(my.value, int)
                and not isinstance(my.value, bool)
                and 0 <= my.value <= 2
            ):
                maximum = my.value
            else:
                self.error(f"{path}.max", "must be 0, 1 or 2", my)
        when: tuple[str, ...] = ("always",)
        if "when" in m:
            wy = m["when"]
            items = wy.value if isinstance(wy.value, list) else [wy]
            values = []
            for i, item in enumerate(items):
                sub = (
                    f"{path}.when[{i}]"
                    if isinstance(wy.value, list)
                    else f"{path}.when"
                )
                c = self.choice(item, sub, RETRY_WHEN)
                if c is not None:
                    values.append(c)
            if values:
                when = tuple(values)
        return Retry(maximum, when)

    def rules(self, y: _Y, path: str, *, workflow: bool) -> tuple[Rule, ...] | None:
        if y.value is None:
            return ()
        if not isinstance(y.value, list):
            self.error(path, f"expected a list of rules, got {_kind(y.value)}", y)
            return None
        out = []
        for i, item in enumerate(y.value):
            rule = self.rule(item, f"{path}[{i}]", workflow=workflow)
            if rule is not None:
                out.append(rule)
        return tuple(out)

    def rule(self, y: _Y, path: str, *, workflow: bool) -> Rule | None:
        m = self.mapping(y, path)
        if m is None:
            return None
        allowed = _RULE_KEYS[:-1] if workflow else _RULE_KEYS
        self.keys(m, allowed, path, _RULE_KEY_HINTS)
        values: dict[str, Any] = {}
        for key in ("if_branch", "if_tag"):
            if key in m:
                values[key] = self.string_list(
                    m[key], f"{path}.{key}", allow_single=True, nonempty=True
                )
        if "if_event" in m:
            ey = m["if_event"]
            items = ey.value if isinstance(ey.value, list) else [ey]
            events = []
            for i, item in enumerate(items):
                sub = (
                    f"{path}.if_event[{i}]"
                    if isinstance(ey.value, list)
                    else f"{path}.if_event"
                )
                c = self.choice(item, sub, EVENTS)
                if c is not None:
                    events.append(c)
            if not items:
                self.error(f"{path}.if_event", "must not be empty", ey)
            values["if_event"] = tuple(events)
        if "changes" in m:
            values["changes"] = self.string_list(
                m["changes"], f"{path}.changes", allow_single=True, nonempty=True
            )
        if "if_variable" in m:
            vy = m["if_variable"]
            text = self.string(vy, f"{path}.if_variable")
            if text is not None:
                try:
                    _parse_if_variable(text)
                    values["if_variable"] = text
                except ValueError as exc:
                    self.error(f"{path}.if_variable", str(exc), vy)
        if "when" in m:
            values["when"] = self.choice(
                m["when"], f"{path}.when", WORKFLOW_WHEN if workflow else RULE_WHEN
            )
        if "allow_failure" in m and not workflow:
            values["allow_failure"] = self.boolean(
                m["allow_failure"], f"{path}.allow_failure"
            )
        return Rule(**{k: v for k, v in values.items() if v is not None})

    def needs(self, y: _Y, path: str) -> list[tuple[Need, _Y]] | None:
        if y.value is None:
            return None
        if not isinstance(y.value, list):
            self.error(path, f"expected a list of job names, got {_kind(y.value)}", y)
            return None
        out = []
        for i, item in enumerate(y.value):
            sub = f"{path}[{i}]"
            if isinstance(item.value, str):
                out.append((Need(item.value), item))
                continue
            m = self.mapping(item, sub) if isinstance(item.value, dict) else None
            if m is None:
                if not isinstance(item.value, dict):
                    self.error(
                        sub,
                        f"expected a job name or {{job, artifacts, optional}}, got {_kind(item.value)}",
                        item,
                    )
                continue
            self.keys(m, ("job", "artifacts", "optional"), sub)
            if "job" not in m:
                self.error(sub, "missing key 'job'", item)
                continue
            name = self.string(m["job"], f"{sub}.job")
            artifacts = (
                self.boolean(m["artifacts"], f"{sub}.artifacts")
                if "artifacts" in m
                else True
            )
            optional = (
                self.boolean(m["optional"], f"{sub}.optional")
                if "optional" in m
                else False
            )
            if name is not None:
                out.append(
                    (Need(name, artifacts is not False, optional is True), m["job"])
                )
        return out

    def artifacts(self, y: _Y, path: str) -> Artifacts | None:
        m = self.mapping(y, path)
        if m is None:
            return None
        self.keys(m, ("paths", "expire_in", "when", "name"), path)
        if "paths" not in m:
            self.error(path, "missing key 'paths'", y)
            return None
        paths = self.relative_paths(m["paths"], f"{path}.paths")
        expire = None
        if "expire_in" in m:
            ey = m["expire_in"]
            if isinstance(ey.value, str) and ey.value.strip().lower() == "never":
                expire = 0
            else:
                expire = self.duration(
                    ey, f"{path}.expire_in", maximum=10 * 365 * 86400
                )
        when = (
            self.choice(m["when"], f"{path}.when", ARTIFACT_WHEN)
            if "when" in m
            else "on_success"
        )
        name = self.string(m["name"], f"{path}.name") if "name" in m else None
        if paths is None or when is None:
            return None
        return Artifacts(paths, expire, when, name)

    def cache(self, y: _Y, path: str) -> Cache | None:
        m = self.mapping(y, path)
        if m is None:
            return None
        self.keys(m, ("key", "paths"), path)
        key = self.string(m["key"], f"{path}.key") if "key" in m else "default"
        if "paths" not in m:
            self.error(path, "missing key 'paths'", y)
            return None
        paths = self.relative_paths(m["paths"], f"{path}.paths")
        if key is None or paths is None:
            return None
        return Cache(key, paths)

    def environment(self, y: _Y, path: str) -> Environment | None:
        if isinstance(y.value, str):
            name = self.string(y, path)
            return Environment(name) if name else None
        m = self.mapping(y, path)
        if m is None:
            return None
        self.keys(m, ("name", "url", "action"), path)
        if "name" not in m:
            self.error(path, "missing key 'name'", y)
            return None
        name = self.string(m["name"], f"{path}.name")
        url = self.string(m["url"], f"{path}.url") if "url" in m else None
        action = (
            self.choice(m["action"], f"{path}.action", ENVIRONMENT_ACTIONS)
            if "action" in m
            else "start"
        )
        if name is None or action is None:
            return None
        return Environment(name, url, action)

    def deploy(self, y: _Y, path: str) -> Deploy | None:
        m = self.mapping(y, path)
        if m is None:
            return None
        self.keys(m, ("manifests", "kustomize", "images", "timeout", "namespace"), path)
        manifests = (
            self.relative_path(m["manifests"], f"{path}.manifests")
            if "manifests" in m
            else None
        )
        kustomize = (
            self.relative_path(m["kustomize"], f"{path}.kustomize")
            if "kustomize" in m
            else None
        )
        if ("manifests" in m) == ("kustomize" in m):
            self.error(path, "set exactly one of 'manifests' or 'kustomize'", y)
        images: dict[str, str] = {}
        if "images" in m:
            im = self.mapping(m["images"], f"{path}.images")
            for name, ref in (im or {}).items():
                r = self.string(ref, f"{path}.images.{name}")
                if r is not None:
                    images[name] = r
        timeout = (
            self.duration(m["timeout"], f"{path}.timeout")
            if "timeout" in m
            else DEFAULT_DEPLOY_TIMEOUT
        )
        namespace = (
            self.string(m["namespace"], f"{path}.namespace")
            if "namespace" in m
            else None
        )
        return Deploy(
            manifests,
            kustomize,
            FrozenMap(images),
            timeout or DEFAULT_DEPLOY_TIMEOUT,
            namespace,
        )

    def matrix(self, y: _Y, path: str) -> list[list[tuple[str, str]]] | None:
        """Return one list of (variable, value) pairs per matrix instance."""
        m = self.mapping(y, path)
        if m is None:
            return None
        self.keys(m, ("matrix",), path, {"": ""})
        if "matrix" not in m:
            self.error(path, "missing key 'matrix' (parallel: N is not supported)", y)
            return None
        my = m["matrix"]
        if not isinstance(my.value, list) or not my.value:
            self.error(f"{path}.matrix", "expected a non-empty list of mappings", my)
            return None
        instances: list[list[tuple[str, str]]] = []
        for i, entry in enumerate(my.value):
            sub = f"{path}.matrix[{i}]"
            em = self.mapping(entry, sub)
            if em is None:
                continue
            if not em:
                self.error(sub, "must not be empty", entry)
                continue
            axes: list[list[tuple[str, str]]] = []
            for name, vy in em.items():
                if not _VAR_NAME.match(name):
                    self.error(
                        f"{sub}.{name}", "not a valid variable name", vy, at_key=True
                    )
                    continue
                raw_items = vy.value if isinstance(vy.value, list) else [vy]
                values = []
                for j, item in enumerate(raw_items):
                    if _is_scalar(item.value) and item.raw is not None:
                        values.append(
                            item.value if isinstance(item.value, str) else item.raw
                        )
                    else:
                        self.error(
                            f"{sub}.{name}[{j}]", "expected a string or number", item
                        )
                if not raw_items:
                    self.error(f"{sub}.{name}", "must not be empty", vy)
                axes.append([(name, v) for v in values])
            count = 1
            for axis in axes:
                count *= len(axis)
            if count + len(instances) > MAX_MATRIX_JOBS:
                self.error(sub, f"expands to more than {MAX_MATRIX_JOBS} jobs", entry)
                return None
            for combo in itertools.product(*axes):
                instances.append(list(combo))
        return instances


def _is_relative_inside(path: str) -> bool:
    if not path or path.startswith(("/", "\\", "~")) or "\x00" in path:
        return False
    if re.match(r"[A-Za-z]:", path):
        return False
    return ".." not in re.split(r"[/\\]", path)


def _merge(base: dict[str, _Y], child: dict[str, _Y]) -> dict[str, _Y]:
    """Deep-merge maps GitLab-style: the child wins; lists and scalars are replaced."""
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if (
            old is not None
            and isinstance(old.value, dict)
            and isinstance(value.value, dict)
        ):
            merged = _Y(
                _merge(old.value, value.value),
                value.line,
                value.column,
                None,
                value.key_line,
                value.key_column,
            )
            out[key] = merged
        else:
            out[key] = value
    return out


@dataclass
class _Defaults:
    before_script: tuple[str, ...] = ()
    after_script: tuple[str, ...] = ()
    image: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    retry: Retry = field(default_factory=Retry)
    tags: tuple[str, ...] = ()


def parse(text: str, *, filename: str = ".slipway.yml") -> Pipeline:
    """Parse and validate a pipeline file; raise SpecError listing every problem."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            [
                SpecIssue(
                    "",
                    f"file is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes",
                    None,
                    None,
                )
            ],
            filename,
        )
    root = _load(text, filename)
    checker = _Checker()
    if root is None:
        raise SpecError(
            [SpecIssue("", "the file is empty; define at least one job", None, None)],
            filename,
        )
    if not isinstance(root.value, dict):
        raise SpecError(
            [
                SpecIssue(
                    "",
                    f"expected a mapping of stages, variables and jobs, got {_kind(root.value)}",
                    root.line,
                    root.column,
                )
            ],
            filename,
        )
    pipeline = _validate(root.value, checker)
    if checker.issues:
        raise SpecError(_dedupe(checker.issues), filename)
    assert pipeline is not None
    return pipeline


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    # A template used by several jobs would report the same mistake once per job.
    seen: set[tuple[int | None, int | None, str]] = set()
    out = []
    for issue in issues:
        key = (issue.line, issue.column, issue.message)
        if issue.line is not None and key in seen:
            continue
        seen.add(key)
        out.append(issue)
    # Report in file order, the order a reader fixes them in.
    out.sort(key=lambda i: (i.line or 0, i.column or 0))
    return out


def _validate(top: dict[str, _Y], c: _Checker) -> Pipeline | None:
    stages = DEFAULT_STAGES
    if "stages" in top:
        sy = top["stages"]
        values = c.string_list(sy, "stages", nonempty=True)
        if values is not None:
            seen: set[str] = set()
            for i, stage in enumerate(values):
                if stage in seen:
                    c.error(f"stages[{i}]", f"duplicate stage {stage!r}", sy.value[i])
                seen.add(stage)
            stages = tuple(dict.fromkeys(values))
    variables = c.variables(top["variables"], "variables") if "variables" in top else {}

    defaults = _Defaults()
    if "default" in top:
        dm = (
            c.mapping(top["default"], "default")
            if top["default"].value is not None
            else {}
        )
        if dm is not None:
            c.keys(dm, _DEFAULT_KEYS, "default")
            for key in ("before_script", "after_script"):
                if key in dm:
                    s = c.script(dm[key], f"default.{key}", required=False)
                    if s is not None:
                        setattr(defaults, key, s)
            if "image" in dm:
                defaults.image = c.string(dm["image"], "default.image")
            if "timeout" in dm:
                defaults.timeout = (
                    c.duration(dm["timeout"], "default.timeout") or DEFAULT_TIMEOUT
                )
            if "retry" in dm:
                defaults.retry = c.retry(dm["retry"], "default.retry") or Retry()
            if "tags" in dm:
                defaults.tags = c.string_list(dm["tags"], "default.tags") or ()

    workflow_rules: tuple[Rule, ...] = ()
    if "workflow" in top:
        wm = c.mapping(top["workflow"], "workflow")
        if wm is not None:
            c.keys(wm, ("rules",), "workflow")
            if "rules" in wm:
                workflow_rules = (
                    c.rules(wm["rules"], "workflow.rules", workflow=True) or ()
                )

    # Collect jobs and templates.
    definitions: dict[str, _Y] = {}
    for key, y in top.items():
        if key in _RESERVED_TOP:
            continue
        if key in _TOP_LEVEL_HINTS:
            c.error(
                key,
                f"top-level {key!r} is not supported; {_TOP_LEVEL_HINTS[key]}",
                y,
                at_key=True,
            )
            continue
        path = f"jobs.{key}"
        if not key.strip():
            c.error(path, "job names must not be empty", y, at_key=True)
            continue
        if key.startswith(".") and not isinstance(y.value, dict):
            continue  # A hidden key may hold anything, e.g. a list kept for an anchor.
        if not isinstance(y.value, dict):
            hint = _did_you_mean(key, _RESERVED_TOP)
            c.error(
                path,
                f"a job must be a mapping with at least `script:`, got {_kind(y.value)}{hint}",
                y,
            )
            continue
        definitions[key] = y

    if not any(not name.startswith(".") for name in definitions) and not c.issues:
        c.error(
            "",
            "no jobs defined (every top-level key other than stages, variables, default and workflow is a job; keys starting with '.' are hidden templates)",
            None,
        )

    resolved: dict[str, dict[str, _Y] | None] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, _Y] | None:
        if name in resolved:
            return resolved[name]
        y = definitions[name]
        m: dict[str, _Y] = y.value
        ext = m.get("extends")
        result: dict[str, _Y] | None = m
        if ext is not None:
            parents = c.string_list(
                ext, f"jobs.{name}.extends", allow_single=True, nonempty=True
            )
            if parents is None:
                result = None
            else:
                base: dict[str, _Y] = {}
                for parent in parents:
                    if parent in chain or parent == name:
                        cycle = (
                            " -> ".join([*chain[chain.index(parent) :], name, parent])
                            if parent in chain
                            else f"{name} -> {name}"
                        )
                        c.error(f"jobs.{name}.extends", f"extends cycle: {cycle}", ext)
                        result = None
                        break
                    if parent not in definitions:
                        hint = _did_you_mean(parent, list(definitions))
                        c.error(
                            f"jobs.{name}.extends",
                            f"unknown job or template {parent!r}{hint}",
                            ext,
                        )
                        result = None
                        break
                    if len(chain) >= MAX_EXTENDS_DEPTH:
                        c.error(
                            f"jobs.{name}.extends",
                            f"extends nested deeper than {MAX_EXTENDS_DEPTH} levels",
                            ext,
                        )
                        result = None
                        break
                    parent_map = resolve(parent, (*chain, name))
                    if parent_map is None:
                        result = None
                        break
                    base = _merge(base, parent_map)
                if result is not None:
                    result = _merge(
                        base, {k: v for k, v in m.items() if k != "extends"}
                    )
        resolved[name] = result
        return result

    jobs: list[JobSpec] = []
    broken: set[str] = set()  # Jobs with errors: needing them is not another error.
    broken_needs: list[tuple[str, list[tuple[Need, _Y]]]] = []
    need_sources: dict[str, list[tuple[Need, _Y]] | None] = {}
    base_names: dict[str, list[str]] = {}
    job_lines: dict[str, _Y] = {}
    for name, y in definitions.items():
        if name.startswith("."):
            continue
        m = resolve(name, ())
        built = _build_job(name, y, m, c, stages, defaults) if m is not None else None
        if built is None:
            broken.add(name)
            continue
        base, needs, matrix = built
        if base is None:
            broken.add(name)
            if needs:
                broken_needs.append((name, needs))
            continue
        if matrix is None:
            instances = [base]
        else:
            instances = []
            for combo in matrix:
                label = ", ".join(value for _, value in combo)
                instances.append(
                    replace(
                        base,
                        name=f"{name}: [{label}]",
                        variables=FrozenMap({**base.variables, **dict(combo)}),
                    )
                )
        base_names[name] = [job.name for job in instances]
        for job in instances:
            if job.name in job_lines:
                c.error(
                    f"jobs.{name}",
                    f"duplicate job name {job.name!r} after matrix expansion",
                    y,
                    at_key=True,
                )
                continue
            jobs.append(job)
            need_sources[job.name] = needs
            job_lines[job.name] = y

    return _link_needs(
        jobs,
        need_sources,
        base_names,
        job_lines,
        broken,
        broken_needs,
        stages,
        variables,
        workflow_rules,
        c,
    )


def _build_job(
    name: str,
    y: _Y,
    m: dict[str, _Y],
    c: _Checker,
    stages: tuple[str, ...],
    defaults: _Defaults,
) -> tuple[
    JobSpec | None, list[tuple[Need, _Y]] | None, list[list[tuple[str, str]]] | None
]:
    path = f"jobs.{name}"
    before = len(c.issues)
    c.keys(
        {k: v for k, v in m.items() if k != "extends"}, _JOB_KEYS, path, _JOB_KEY_HINTS
    )

    stage = "test"
    if "stage" in m:
        sy = m["stage"]
        s = c.string(sy, f"{path}.stage")
        if s is not None and s not in stages:
            hint = _did_you_mean(s, stages)
            c.error(
                f"{path}.stage",
                f"stage {s!r} is not in stages ({', '.join(stages)}){hint}",
                sy,
            )
        elif s is not None:
            stage = s
    elif "test" not in stages:
        c.error(
            f"{path}.stage",
            f"missing key 'stage' (the default 'test' is not in stages: {', '.join(stages)})",
            y,
            at_key=True,
        )

    script: tuple[str, ...] | None = None
    if "script" in m:
        script = c.script(m["script"], f"{path}.script", required=True)
    else:
        hint = (
            "; 'deploy' jobs still need a script (e.g. `script: [\"true\"]`)"
            if "deploy" in m
            else ""
        )
        c.error(f"{path}.script", f"missing key 'script'{hint}", y, at_key=True)

    before_script = (
        c.script(m["before_script"], f"{path}.before_script", required=False)
        if "before_script" in m
        else defaults.before_script
    )
    after_script = (
        c.script(m["after_script"], f"{path}.after_script", required=False)
        if "after_script" in m
        else defaults.after_script
    )
    needs = c.needs(m["needs"], f"{path}.needs") if "needs" in m else None
    variables = (
        c.variables(m["variables"], f"{path}.variables") if "variables" in m else {}
    )
    rules = c.rules(m["rules"], f"{path}.rules", workflow=False) if "rules" in m else ()

    when = "on_success"
    if "when" in m:
        wy = m["when"]
        if wy.value == "delayed":
            c.error(f"{path}.when", "when: delayed is not supported", wy)
        elif wy.value == "never":
            c.error(f"{path}.when", "when: never is only valid inside rules", wy)
        else:
            when = c.choice(wy, f"{path}.when", JOB_WHEN) or "on_success"

    # GitLab: a manual job is non-blocking (allow_failure true) unless it says otherwise.
    allow_failure = when == "manual"
    if "allow_failure" in m:
        allow_failure = bool(c.boolean(m["allow_failure"], f"{path}.allow_failure"))

    timeout = (
        c.duration(m["timeout"], f"{path}.timeout")
        if "timeout" in m
        else defaults.timeout
    )
    retry = c.retry(m["retry"], f"{path}.retry") if "retry" in m else defaults.retry
    tags = c.string_list(m["tags"], f"{path}.tags") if "tags" in m else defaults.tags
    matrix = c.matrix(m["parallel"], f"{path}.parallel") if "parallel" in m else None
    artifacts = (
        c.artifacts(m["artifacts"], f"{path}.artifacts") if "artifacts" in m else None
    )
    cache = c.cache(m["cache"], f"{path}.cache") if "cache" in m else None
    image = c.string(m["image"], f"{path}.image") if "image" in m else defaults.image
    environment = (
        c.environment(m["environment"], f"{path}.environment")
        if "environment" in m
        else None
    )
    deploy = c.deploy(m["deploy"], f"{path}.deploy") if "deploy" in m else None
    if "deploy" in m and "environment" not in m:
        c.error(
            f"{path}.deploy",
            "a deploy job needs `environment:`",
            m["deploy"],
            at_key=True,
        )
    interruptible = (
        bool(c.boolean(m["interruptible"], f"{path}.interruptible"))
        if "interruptible" in m
        else False
    )

    if len(c.issues) > before or script is None:
        return None, needs, matrix
    job = JobSpec(
        name=name,
        stage=stage,
        script=script,
        before_script=before_script or (),
        after_script=after_script or (),
        needs=None,
        variables=FrozenMap(variables or {}),
        rules=rules or (),
        when=when,
        allow_failure=allow_failure,
        timeout=timeout or DEFAULT_TIMEOUT,
        retry=retry or Retry(),
        tags=tags or (),
        artifacts=artifacts,
        cache=cache,
        image=image,
        environment=environment,
        deploy=deploy,
        interruptible=interruptible,
        line=y.key_line or y.line,
    )
    return job, needs, matrix


def _link_needs(
    jobs: list[JobSpec],
    need_sources: dict[str, list[tuple[Need, _Y]] | None],
    base_names: dict[str, list[str]],
    job_lines: dict[str, _Y],
    broken: set[str],
    broken_needs: list[tuple[str, list[tuple[Need, _Y]]]],
    stages: tuple[str, ...],
    variables: dict[str, str] | None,
    workflow_rules: tuple[Rule, ...],
    c: _Checker,
) -> Pipeline | None:
    by_name = {job.name: job for job in jobs}
    known = set(by_name) | set(base_names) | broken
    # A job with other errors still gets its needs checked: report everything at once.
    for name, pending in broken_needs:
        for need, y in pending:
            if need.job not in known:
                hint = _did_you_mean(need.job, sorted(known))
                c.error(
                    f"jobs.{name}.needs", f"needs unknown job {need.job!r}{hint}", y
                )
    linked: list[JobSpec] = []
    for job in jobs:
        sources = need_sources[job.name]
        if sources is None:
            linked.append(job)
            continue
        needs: dict[str, Need] = {}
        path = f"jobs.{_base_of(job.name, base_names)}.needs"
        for need, y in sources:
            if need.job in by_name:
                targets = [need.job]
            elif need.job in base_names:
                targets = base_names[need.job]
            elif need.job in broken:
                continue
            else:
                hint = _did_you_mean(need.job, list(base_names) + list(by_name))
                c.error(path, f"needs unknown job {need.job!r}{hint}", y)
                continue
            for target in targets:
                other = by_name[target]
                if stages.index(other.stage) > stages.index(job.stage):
                    c.error(
                        path,
                        f"needs {target!r}, which is in a later stage ({other.stage}) than {job.name!r} ({job.stage})",
                        y,
                    )
                    continue
                needs.setdefault(target, replace(need, job=target))
        linked.append(replace(job, needs=tuple(needs.values())))

    _check_cycles(linked, base_names, job_lines, c)
    if c.issues:
        return None
    return Pipeline(stages, FrozenMap(variables or {}), tuple(linked), workflow_rules)


def _base_of(name: str, base_names: dict[str, list[str]]) -> str:
    for base, names in base_names.items():
        if name in names:
            return base
    return name


def _check_cycles(
    jobs: list[JobSpec],
    base_names: dict[str, list[str]],
    job_lines: dict[str, _Y],
    c: _Checker,
) -> None:
    graph = {job.name: [n.job for n in job.needs or ()] for job in jobs}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    reported: set[frozenset[str]] = set()
    for start in graph:
        if state.get(start):
            continue
        # Iterative DFS: a 10k-job chain must not hit the recursion limit.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(child) == 1:
                cycle = path[path.index(child) :] + [child]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    first = cycle[0]
                    y = job_lines[first]
                    c.error(
                        f"jobs.{_base_of(first, base_names)}.needs",
                        "needs cycle: " + " -> ".join(cycle),
                        y.value.get("needs", y) if isinstance(y.value, dict) else y,
                    )
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph[child])))
