"""Tests for engine/spec.py: parsing, validation messages, rules, expansion."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.engine.spec import (
    MAX_SPEC_BYTES,
    Artifacts,
    Deploy,
    Environment,
    Need,
    Retry,
    RuleContext,
    SpecError,
    SpecIssue,
    evaluate_rules,
    evaluate_workflow,
    expand,
    parse,
    parse_duration,
)


def p(text: str):  # type: ignore[no-untyped-def]
    return parse(textwrap.dedent(text))


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(textwrap.dedent(text))
    return str(info.value).splitlines()


FULL = """\
stages: [build, test, deploy]
variables:
  PY: 3.10
  NAME: app
default:
  image: python:3.12
  before_script: [echo setup]
  timeout: 30m
  retry: 1
.tests:
  stage: test
  tags: [linux]
  variables: {A: "1", B: "2"}
  artifacts: {paths: [reports/], expire_in: 1 week}
compile:
  stage: build
  script: make
  cache: {key: deps, paths: [.cache/]}
lint:
  stage: build
  needs: []
  script:
    - ruff check .
    - true
unit:
  extends: .tests
  variables: {B: "3"}
  script: [pytest]
  parallel:
    matrix:
      - PYV: ["3.11", "3.12"]
        OS: linux
  needs: [compile]
  retry: {max: 2, when: [script_failure, worker_lost]}
  timeout: 1h 30m
deploy:
  stage: deploy
  script: ["true"]
  needs: [unit, {job: lint, artifacts: false}]
  environment: {name: production, url: "https://example.com"}
  deploy:
    manifests: k8s/
    images: {app: "registry/app:$SLIPWAY_COMMIT_SHA"}
    timeout: 5m
    namespace: prod
  rules:
    - if_branch: main
      when: manual
    - if_tag: "v*"
    - when: never
  interruptible: false
"""


def test_full_example() -> None:
    pipe = parse(FULL)
    assert pipe.stages == ("build", "test", "deploy")
    assert dict(pipe.variables) == {"PY": "3.10", "NAME": "app"}  # "3.10", not 3.1
    assert [j.name for j in pipe.jobs] == [
        "compile",
        "lint",
        "unit: [3.11, linux]",
        "unit: [3.12, linux]",
        "deploy",
    ]
    compile_ = pipe.job("compile")
    assert compile_.needs is None
    assert compile_.image == "python:3.12"
    assert compile_.before_script == ("echo setup",)
    assert compile_.timeout == 1800
    assert compile_.retry == Retry(1)
    assert compile_.line == 15
    assert pipe.job("lint").needs == ()
    assert pipe.job("lint").script == ("ruff check .", "true")
    unit = pipe.job("unit: [3.12, linux]")
    assert unit.stage == "test"
    assert dict(unit.variables) == {"A": "1", "B": "3", "PYV": "3.12", "OS": "linux"}
    assert unit.tags == ("linux",)
    assert unit.artifacts == Artifacts(("reports/",), 7 * 86400, "on_success", None)
    assert unit.retry == Retry(2, ("script_failure", "worker_lost"))
    assert unit.timeout == 5400
    assert unit.needs == (Need("compile"),)
    deploy = pipe.job("deploy")
    assert deploy.needs == (
        Need("unit: [3.11, linux]"),
        Need("unit: [3.12, linux]"),
        Need("lint", artifacts=False),
    )
    assert deploy.environment == Environment("production", "https://example.com")
    assert deploy.deploy is not None
    assert deploy.deploy == Deploy(
        "k8s/", None, {"app": "registry/app:$SLIPWAY_COMMIT_SHA"}, 300, "prod"
    )
    hash(pipe)  # Frozen all the way down.
    with pytest.raises(KeyError):
        pipe.job("nope")


def test_defaults() -> None:
    pipe = p("""
        job:
          script: echo hi
        """)
    job = pipe.job("job")
    assert pipe.stages == ("build", "test", "deploy")
    assert (job.stage, job.when, job.allow_failure, job.timeout) == (
        "test",
        "on_success",
        False,
        3600,
    )
    assert job.script == ("echo hi",)
    assert job.retry.max == 0


def test_manual_jobs_default_to_allow_failure() -> None:
    pipe = p("""
        a: {script: x, when: manual}
        b: {script: x, when: manual, allow_failure: false}
        """)
    assert pipe.job("a").allow_failure is True
    assert pipe.job("b").allow_failure is False


def test_extends_chain_and_list_merge_deeply() -> None:
    pipe = p("""
        .a:
          variables: {X: a, Y: a}
          script: from-a
          tags: [one]
        .b:
          extends: .a
          variables: {Y: b}
          tags: [two]
        .c:
          variables: {Z: c}
        job:
          extends: [.b, .c]
          variables: {X: job}
        """)
    job = pipe.job("job")
    assert dict(job.variables) == {"X": "job", "Y": "b", "Z": "c"}
    assert job.tags == ("two",)  # Lists are replaced, not merged.
    assert job.script == ("from-a",)


def test_yaml_anchors_and_merge_keys_work() -> None:
    pipe = p("""
        .setup: &setup
          - echo one
          - echo two
        .base: &base
          stage: build
        job:
          <<: *base
          script:
            - *setup
            - echo three
        """)
    job = pipe.job("job")
    assert job.stage == "build"
    assert job.script == ("echo one", "echo two", "echo three")


def test_issue_format_with_line_and_column() -> None:
    lines = errors("""\
        job:
          script: {a: 1}
        """)
    assert lines == [
        ".slipway.yml:2:11: jobs.job.script: expected a string or a list of strings, "
        "got a mapping"
    ]


def test_script_list_item_error_names_index() -> None:
    lines = errors("""\
        job:
          script:
            - echo ok
            - [[{a: 1}]]
        """)
    assert lines[0].startswith(".slipway.yml:4:9: jobs.job.script[1][0][0]: expected")


def test_error_attributes() -> None:
    with pytest.raises(SpecError) as info:
        parse("job:\n  scrpt: x\n", filename="ci.yml")
    err = info.value
    assert (
        SpecIssue("jobs.job.scrpt", "unknown key 'scrpt'; did you mean 'script'?", 2, 3)
        in err.issues
    )
    assert str(err).splitlines()[0] == (
        "ci.yml:1:1: jobs.job.script: missing key 'script'"
    )


def test_all_errors_are_collected_in_file_order() -> None:
    lines = errors("""\
        stages: [build, test]
        build:
          stage: biuld
          script: make
          only: [main]
        test:
          script: [pytest]
          timeout: 10x
          retry: 5
          when: delayed
          needs: [nope]
        """)
    assert lines == [
        ".slipway.yml:3:10: jobs.build.stage: stage 'biuld' is not in stages "
        "(build, test); did you mean 'build'?",
        ".slipway.yml:5:3: jobs.build.only: unknown key 'only'; only/except are not "
        "supported; use `rules:` (e.g. `if_branch: main`)",
        ".slipway.yml:8:12: jobs.test.timeout: invalid duration '10x': expected e.g. "
        "90s, 10m, 1h 30m, 2 days",
        ".slipway.yml:9:10: jobs.test.retry: must be 0, 1 or 2",
        ".slipway.yml:10:9: jobs.test.when: when: delayed is not supported",
        ".slipway.yml:11:11: jobs.test.needs: needs unknown job 'nope'",
    ]


def test_did_you_mean_for_needs_rules_and_extends() -> None:
    lines = errors("""\
        compile: {stage: build, script: x}
        test:
          script: x
          needs: [compil]
          extends: .tmpl
          rules:
            - if_brnch: main
        .templ: {tags: [a]}
        """)
    text = "\n".join(lines)
    assert "unknown job or template '.tmpl'; did you mean '.templ'?" in text
    # `extends` failing stops that job; fix it and the other errors show up.
    lines = errors("""\
        compile: {stage: build, script: x}
        test:
          script: x
          needs: [compil]
          rules:
            - if_brnch: main
        """)
    assert lines == [
        ".slipway.yml:4:11: jobs.test.needs: needs unknown job 'compil'; "
        "did you mean 'compile'?",
        ".slipway.yml:6:7: jobs.test.rules[0].if_brnch: unknown key 'if_brnch'; "
        "did you mean 'if_branch'?",
    ]


def test_needs_cycle_is_named() -> None:
    lines = errors("""\
        a:
          script: x
          needs: [b]
        b:
          script: x
          needs: [c]
        c:
          script: x
          needs: [a]
        """)
    assert lines == [".slipway.yml:3:10: jobs.a.needs: needs cycle: a -> b -> c -> a"]


def test_needs_on_later_stage() -> None:
    lines = errors("""\
        build:
          stage: build
          script: x
          needs: [ship]
        ship:
          stage: deploy
          script: x
        """)
    assert lines == [
        ".slipway.yml:4:11: jobs.build.needs: needs 'ship', which is in a later "
        "stage (deploy) than 'build' (build)"
    ]


def test_duplicate_names_after_matrix_expansion() -> None:
    lines = errors("""\
        test:
          script: x
          parallel:
            matrix:
              - V: [a, a]
        """)
    assert lines == [
        ".slipway.yml:1:1: jobs.test: duplicate job name 'test: [a]' after matrix "
        "expansion"
    ]


def test_needs_on_specific_matrix_instance() -> None:
    pipe = p("""
        test:
          script: x
          parallel: {matrix: [{V: [a, b]}]}
        one:
          script: x
          needs: ["test: [b]"]
        """)
    assert pipe.job("one").needs == (Need("test: [b]"),)


def test_deploy_requires_environment_and_one_source() -> None:
    lines = errors("""\
        ship:
          script: x
          deploy: {manifests: k8s/, kustomize: overlays/prod}
        """)
    assert lines == [
        ".slipway.yml:3:3: jobs.ship.deploy: a deploy job needs `environment:`",
        ".slipway.yml:3:11: jobs.ship.deploy: set exactly one of 'manifests' or "
        "'kustomize'",
    ]


def test_paths_must_stay_in_the_workspace() -> None:
    lines = errors("""\
        job:
          script: x
          artifacts: {paths: [../etc/passwd, /abs]}
        """)
    assert len(lines) == 2
    assert "must be a relative path inside the workspace" in lines[0]


def test_yaml_syntax_error_has_position() -> None:
    lines = errors("job:\n  script: [a, b\n")
    assert len(lines) == 1
    assert lines[0].startswith(".slipway.yml:3:1: invalid YAML:")


def test_unsupported_tags_are_rejected() -> None:
    lines = errors("job:\n  script: !!python/object/apply:os.system [ls]\n")
    assert "unsupported YAML tag" in lines[0]
    lines = errors("job:\n  script: !reference [.a, script]\n")
    assert "use `extends:`" in lines[0]


def test_size_limit() -> None:
    text = "job:\n  script: x\n#" + "x" * MAX_SPEC_BYTES
    assert errors(text) == [
        f".slipway.yml: file is {len(text)} bytes; the limit is {MAX_SPEC_BYTES} bytes"
    ]


def test_alias_bomb_is_stopped() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    out = errors("\n".join(lines) + "\n")
    assert "document too large" in out[0]


def test_recursive_alias_and_empty_file() -> None:
    assert "recursive alias" in errors("a: &a [*a]\n")[0]
    assert errors("") == [".slipway.yml: the file is empty; define at least one job"]
    assert "no jobs defined" in errors("stages: [a]\n")[0]


def test_top_level_globals_get_a_hint() -> None:
    assert errors("image: x\njob: {script: y}\n") == [
        ".slipway.yml:1:1: image: top-level 'image' is not supported; put it "
        "under `default:`"
    ]


# --- rules ----------------------------------------------------------------------------

RULES = """\
job:
  script: x
  variables: {MODE: fast}
  rules:
    - if_branch: [main, "release/*"]
      changes: ["src/**/*.py"]
    - if_tag: "v*"
      when: manual
      allow_failure: true
    - if_event: schedule
      when: never
    - if_variable: MODE == slow
      when: always
    - if_variable: $DEPLOY
      when: on_failure
"""


def ctx(**kw: object) -> RuleContext:
    base: dict[str, object] = {"branch": None, "tag": None, "event": "push"}
    base.update(kw)
    return RuleContext(**base)  # type: ignore[arg-type]


def test_rule_evaluation() -> None:
    job = parse(RULES).job("job")
    d = evaluate_rules(job, ctx(branch="release/1.2"))
    assert (d.included, d.when, d.reason) == (
        True,
        "on_success",
        "rule 1 matched (if_branch: main, release/*; changes: src/**/*.py)",
    )
    d = evaluate_rules(job, ctx(branch="main", changed_paths=("src/app/x.py",)))
    assert d.included
    d = evaluate_rules(job, ctx(branch="main", changed_paths=("docs/x.md",)))
    assert not d.included
    assert d.reason == "no rule matched (rules: 5)"
    d = evaluate_rules(job, ctx(tag="v1.0", event="tag"))
    assert (d.included, d.when, d.allow_failure) == (True, "manual", True)
    d = evaluate_rules(job, ctx(event="schedule"))
    assert (d.included, d.reason) == (False, "rule 3: when never (if_event: schedule)")
    d = evaluate_rules(job, ctx(variables={"MODE": "slow"}))
    assert (d.included, d.when) == (True, "always")
    d = evaluate_rules(job, ctx(variables={"DEPLOY": "1"}))
    assert d.when == "on_failure"
    assert not evaluate_rules(job, ctx(variables={"DEPLOY": ""})).included


def test_no_rules_means_included() -> None:
    job = parse("job: {script: x, when: manual}").job("job")
    d = evaluate_rules(job, ctx())
    assert (d.included, d.when, d.allow_failure, d.reason) == (
        True,
        "manual",
        True,
        "no rules",
    )


def test_workflow_rules() -> None:
    pipe = parse("""\
workflow:
  rules:
    - if_event: merge_request
      when: never
    - if_branch: "*"
job: {script: x}
""")
    assert evaluate_workflow(pipe, ctx(branch="dev")).included
    assert not evaluate_workflow(
        pipe, ctx(branch="dev", event="merge_request")
    ).included
    d = evaluate_workflow(pipe, ctx(tag="v1"))
    assert (d.included, d.reason) == (False, "no workflow rule matched (rules: 2)")
    assert "when: 'manual' is not one of: always, never" in "\n".join(
        errors("workflow: {rules: [{when: manual}]}\njob: {script: x}\n")
    ).replace("when: ", "when: ", 1).replace("workflow.rules[0].when: ", "when: ")


def test_invalid_if_variable() -> None:
    assert (
        "invalid if_variable"
        in errors("job: {script: x, rules: [{if_variable: 'A =~ b'}]}")[0]
    )


# --- helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("1h 30m", 5400),
        ("1h30m", 5400),
        ("2 days", 172800),
        ("1 week", 604800),
        ("3h", 10800),
        ("45", 45),
        (120, 120),
        ("1 hour, 5 minutes", 3900),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "h", "-5", "1.5h", "ten minutes", True])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_timeout_limits() -> None:
    assert "must be at most 1d" in errors("job: {script: x, timeout: 25h}")[0]
    assert "must be at least 1 second" in errors("job: {script: x, timeout: 0}")[0]


def test_expand() -> None:
    variables = {"A": "1", "B": "$A", "LONG": "x"}
    assert expand("$A-${A}-$$A-$NOPE-${B}-$LONGER-$LONG", variables) == (
        "1-1-$A--$A--x"
    )
    assert expand("cost: $ 5 and ${", variables) == "cost: $ 5 and ${"


# --- robustness -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_spec_error(text: str) -> None:
    try:
        parse(text)
    except SpecError:
        pass


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(
        ["script", "stage", "needs", "build", "test", "manual", "10m", ".tmpl", "main"]
    ),
)
_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "script",
            "stage",
            "needs",
            "rules",
            "extends",
            "parallel",
            "matrix",
            "variables",
            "artifacts",
            "deploy",
            "environment",
            "retry",
            "when",
            "timeout",
            "stages",
            "default",
            "workflow",
            ".tmpl",
            "job",
            "if_branch",
            "job2",
        ]
    ),
)
_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _trees, max_size=6))
def test_arbitrary_structures_raise_only_spec_error(tree: dict[str, object]) -> None:
    text = yaml.safe_dump(tree, allow_unicode=True)
    try:
        pipe = parse(text)
    except SpecError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.message
    else:
        assert pipe.jobs


def test_reference_examples_are_valid() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "pipeline-reference.md"
    text = doc.read_text()
    examples = text.split("## Complete examples", 1)[1].split("```yaml\n")[1:]
    assert len(examples) == 3
    for example in examples:
        pipe = parse(example.split("```", 1)[0])
        assert pipe.jobs
