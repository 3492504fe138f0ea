"""Dashboard page server times with 100,000 runs and 1,000,000 jobs in PostgreSQL.

Rows are generated inside PostgreSQL (INSERT ... SELECT over generate_series), so a
million jobs take seconds, not minutes. Every column of Run, Stage and Job gets a
value: the ones this file does not name get the model field's default, so a field
added later does not break the generator.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from .common import Result, Results, Stack, load, percentile, session_cookie

REPOSITORIES = 20
JOBS_PER_RUN = 10  # build: 4, test: 6
STAGES = (("build", 0, 4), ("test", 1, 6))


def _literal(field: Any) -> str:
    """Return the SQL literal of FIELD's default (for columns not named below)."""
    from django.db import models

    if field.null and not field.has_default():
        return "NULL"
    value = field.get_default()
    if value is None:
        return "NULL"
    if isinstance(field, models.JSONField):
        return "'" + json.dumps(value).replace("'", "''") + "'::jsonb"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    if hasattr(value, "isoformat"):
        return "now()"
    return "'" + str(value).replace("'", "''") + "'"


def _insert(model: Any, given: dict[str, str], source: str) -> str:
    """Return INSERT INTO model (...) SELECT <given or defaults> SOURCE."""
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(f'"{field.column}"')
        values.append(given.pop(field.column, None) or _literal(field))
    if given:
        raise RuntimeError(f"{model.__name__} has no column(s) {sorted(given)}")
    return (
        f'INSERT INTO "{model._meta.db_table}" ({", ".join(columns)}) '
        f"SELECT {', '.join(values)} {source}"
    )


def seed(runs: int) -> dict[str, Any]:
    """Insert RUNS runs (JOBS_PER_RUN jobs each) across REPOSITORIES repositories."""
    from django.db import connection

    from pipelines.models import Job, Repository, Run, RunCounter, Stage

    started = time.monotonic()
    repos = [
        Repository.objects.create(
            name=f"service-{index:02d}",
            clone_url=f"https://git.example.com/service-{index:02d}.git",
        )
        for index in range(REPOSITORIES)
    ]
    first_repo = repos[0].pk
    n = REPOSITORIES
    run_sql = _insert(
        Run,
        {
            "repository_id": f"{first_repo} + (g % {n})",
            "number": f"g / {n} + 1",
            # The newest 10 runs are still running; 1 in 7 failed; the rest passed.
            "status": f"CASE WHEN g > {runs} - 10 THEN 'running' "
            "WHEN g % 7 = 0 THEN 'failed' ELSE 'success' END",
            "trigger": "CASE WHEN g % 5 = 0 THEN 'manual' ELSE 'push' END",
            "ref": "'refs/heads/' || CASE WHEN g % 4 = 0 THEN 'feature-' || (g % 50) ELSE 'main' END",
            "branch": "CASE WHEN g % 4 = 0 THEN 'feature-' || (g % 50) ELSE 'main' END",
            "commit_sha": "md5(g::text) || substr(md5((g + 1)::text), 1, 8)",
            "commit_message": "'Change number ' || g || E'\\n\\nWith a body.'",
            "commit_author": "'Dev ' || (g % 13)",
            "created_at": f"now() - ({runs} - g) * interval '30 seconds'",
            "started_at": f"now() - ({runs} - g) * interval '30 seconds' + interval '1 second'",
            "finished_at": f"CASE WHEN g > {runs} - 10 THEN NULL ELSE now() - ({runs} - g) "
            "* interval '30 seconds' + interval '1 second' + (g % 300) * interval '1 second' END",
        },
        f"FROM generate_series(1, {runs}) AS g",
    )
    stage_sql = _insert(
        Stage,
        {
            "run_id": "r.id",
            "name": "s.name",
            "index": "s.idx",
            "status": "r.status",
        },
        'FROM "pipelines_run" r CROSS JOIN (VALUES '
        + ", ".join(f"('{name}', {index})" for name, index, _ in STAGES)
        + f") AS s(name, idx) WHERE r.repository_id BETWEEN {first_repo} AND {repos[-1].pk}",
    )
    job_sql = _insert(
        Job,
        {
            "run_id": "r.id",
            "stage_id": "st.id",
            "name": "st.name || '-' || k",
            "status": "CASE WHEN r.status = 'running' THEN "
            "(CASE WHEN st.index = 0 THEN 'running' ELSE 'created' END) "
            "WHEN r.status = 'failed' AND st.index = 1 AND k = 1 THEN 'failed' "
            "ELSE 'success' END",
            "spec": """'{"script": ["make test"], "stage": "test"}'::jsonb""",
            "queue": "'default'",
            "exit_code": "CASE WHEN r.status = 'running' THEN NULL "
            "WHEN r.status = 'failed' AND st.index = 1 AND k = 1 THEN 1 ELSE 0 END",
            "worker": "'worker-' || (k % 4) || '@bench'",
            "created_at": "r.created_at",
            "queued_at": "r.started_at",
            "started_at": "r.started_at + st.index * interval '20 seconds'",
            "finished_at": "CASE WHEN r.status = 'running' THEN NULL ELSE "
            "r.started_at + st.index * interval '20 seconds' + k * interval '3 seconds' END",
            "log_lines": "100 + k",
            "log_bytes": "5000 + k",
        },
        'FROM "pipelines_stage" st JOIN "pipelines_run" r ON r.id = st.run_id '
        "CROSS JOIN LATERAL generate_series(1, CASE WHEN st.index = 0 THEN "
        f"{STAGES[0][2]} ELSE {STAGES[1][2]} END) AS k "
        f"WHERE r.repository_id BETWEEN {first_repo} AND {repos[-1].pk}",
    )
    timings = {}
    with connection.cursor() as cursor:
        for name, sql in (("runs", run_sql), ("stages", stage_sql), ("jobs", job_sql)):
            began = time.monotonic()
            cursor.execute(sql)
            timings[name] = time.monotonic() - began
        cursor.execute("ANALYZE")
    for repo in repos:
        last = (
            Run.objects.filter(repository=repo)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
            or 0
        )
        RunCounter.objects.update_or_create(
            repository=repo, defaults={"last_number": last}
        )
    counts = {
        "runs": Run.objects.count(),
        "jobs": Job.objects.count(),
        "stages": Stage.objects.count(),
    }  # all rows, including the other stages' real runs
    return {
        "seconds": time.monotonic() - started,
        "insert_seconds": timings,
        "counts": counts,
        "repository": repos[5].name,
    }


def _slowest_queries(
    path: str, username: str = "bench", renders: int = 10
) -> list[dict[str, Any]]:
    """Render PATH in this process and return its queries, slowest first.

    The first item also holds ``cpu_ms``: the median CPU time of this thread over
    RENDERS requests (middleware, view, template; not the database's time). Unlike
    the latency, it hardly moves with the machine's load.
    """
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username=username))
    client.get(path)  # warm
    cpu = []
    for _ in range(renders):
        began = time.thread_time()
        client.get(path)
        cpu.append(time.thread_time() - began)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    queries = [
        {"ms": float(q["time"]) * 1000, "sql": q["sql"]}
        for q in captured.captured_queries
    ]
    queries.sort(key=lambda q: -q["ms"])
    head = {
        "status": response.status_code,
        "count": len(queries),
        "cpu_ms": percentile(cpu, 50) * 1000,
    }
    return [head, *queries[:3]]


def _explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def run(stack: Stack, results: Results, *, quick: bool) -> None:
    from pipelines.models import Job, Run

    runs = 10_000 if quick else 100_000
    print(
        f"pages: seeding {runs:,} runs, {runs * JOBS_PER_RUN:,} jobs (load {load()})",
        flush=True,
    )
    seeded = seed(runs)
    print(f"  seeded in {seeded['seconds']:.1f} s: {seeded['counts']}", flush=True)
    cookie = session_cookie()
    recent = (
        Run.objects.filter(repository__name=seeded["repository"])
        .order_by("-id")
        .values_list("pk", flat=True)[5]
    )
    job = (
        Job.objects.filter(run_id=recent)
        .order_by("id")
        .values_list("pk", flat=True)
        .first()
    )
    pages = [
        ("Overview", "/"),
        ("Repository page", f"/repos/{seeded['repository']}/"),
        ("Run page", f"/runs/{recent}/"),
        ("Runs list", "/runs/"),
        ("Runs list, page 50 (cursor)", None),
        ("Job page", f"/jobs/{job}/"),
    ]
    requests = 20 if quick else 50
    with httpx.Client(
        base_url=stack.url, cookies={"sessionid": cookie}, timeout=30
    ) as client:
        # The cursor of a deep page, as the "older" link builds it.
        deep = Run.objects.order_by("-id").values_list("pk", flat=True)[50 * 50]
        pages[4] = ("Runs list, older page (keyset)", f"/runs/?before={deep}")
        for label, path in pages:
            assert path is not None
            for _ in range(5):
                response = client.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}")
            samples = []
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(path)
                samples.append(time.perf_counter() - began)
                response.raise_for_status()
            p50, p95 = percentile(samples, 50), percentile(samples, 95)
            queries = _slowest_queries(path)
            print(
                f"  {label}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                f"server CPU {queries[0]['cpu_ms']:.1f} ms, {queries[0]['count']} "
                f"queries (load {load()})",
                flush=True,
            )
            detail: dict[str, Any] = {
                "path": path,
                "p50_ms": p50 * 1000,
                "p95_ms": p95 * 1000,
                "max_ms": max(samples) * 1000,
                "bytes": len(response.content),
                "queries": queries[0]["count"],
                "render_cpu_ms": queries[0]["cpu_ms"],
                "slowest_queries": queries[1:],
                "data": seeded["counts"],
            }
            if (
                p95 > 0.050
                and len(queries) > 1
                and queries[1]["sql"].lstrip().upper().startswith("SELECT")
            ):
                detail["explain_slowest"] = _explain(queries[1]["sql"])
                print(detail["explain_slowest"], flush=True)
            results.add(
                Result(
                    f"Page {label} `{path.split('?')[0]}` with {seeded['counts']['runs']:,} runs / "
                    f"{seeded['counts']['jobs']:,} jobs, p50 / p95",
                    "p95 ≤ 50 ms",
                    f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms ({queries[0]['count']} queries; "
                    f"slowest {queries[1]['ms']:.0f} ms; "
                    f"server CPU {queries[0]['cpu_ms']:.0f} ms)"
                    if len(queries) > 1
                    else f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms",
                    p95 <= 0.050,
                    detail=detail,
                )
            )
