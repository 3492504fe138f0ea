"""`python -m bench`: start Slipway on loopback, measure it, write docs/performance.md.

    python -m bench                 # everything (about 15 minutes on 2 cores)
    python -m bench --quick         # fewer samples, smaller data (a few minutes)
    python -m bench --only pipeline,logs
    python -m bench --list

`--quick` figures go to bench/results-quick.json only (the table holds full runs).

Stages: idle, pipeline, logs, pages, faults, plus the external ones when their
scripts exist (webhooks: bench/webhooks.py; clusters: bench/clusters.py, the
cluster monitor's load; both owned by other engineers and run as subprocesses that
print `BENCH {json}` rows). Results are
merged into bench/results.json (one entry per metric, the newest wins) and the table
in docs/performance.md is rewritten from it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback

from .common import BASE_DIR, Result, Results, Stack, load, machine

STAGES = ["idle", "pipeline", "logs", "pages", "faults"]
EXTERNAL = {"webhooks": "bench/webhooks.py", "clusters": "bench/clusters.py"}
EXTRA_ARGS = {"webhooks": ["--postgres"]}
RESULTS_JSON = BASE_DIR / "bench" / "results.json"
DOC = BASE_DIR / "docs" / "performance.md"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def _stages(only: str | None) -> list[str]:
    available = STAGES + [n for n, p in EXTERNAL.items() if (BASE_DIR / p).exists()]
    if not only:
        return available
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in STAGES + list(EXTERNAL)]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {available}")
    return wanted


def _run_external(name: str, quick: bool, results: Results) -> None:
    """Run a benchmark script another engineer owns; keep its table rows if any."""
    script = BASE_DIR / EXTERNAL[name]
    if not script.exists():
        print(f"{name}: {script} does not exist; skipped", flush=True)
        return
    module = f"bench.{script.stem}"
    argv = [sys.executable, "-m", module, *EXTRA_ARGS.get(name, [])]
    argv += ["--quick"] if quick else []
    print(f"{name}: {' '.join(argv[1:])} (load {load()})", flush=True)
    out = BASE_DIR / "bench" / f".{name}.out"
    started = time.monotonic()
    with out.open("w") as handle:
        done = subprocess.run(
            argv, cwd=BASE_DIR, stdout=handle, stderr=subprocess.STDOUT, timeout=1800
        )
    text = out.read_text(errors="replace")
    rows = [line for line in text.splitlines() if line.startswith("BENCH ")]
    for line in rows:
        data = json.loads(line[6:])
        results.add(
            Result(
                data["metric"],
                data.get("target", "—"),
                data["measured"],
                {"pass": True, "fail": False}.get(str(data.get("verdict")).lower()),
                load=str(data.get("load") or load()),
                detail=data.get("detail", {}),
            )
        )
    if not rows:
        tail = "\n".join(text.splitlines()[-15:])
        results.add(
            Result(
                f"{name} benchmark ({EXTERNAL[name]})",
                "—",
                f"exit {done.returncode} after {time.monotonic() - started:.0f} s; "
                "see its output (no `BENCH {json}` rows)",
                None if done.returncode == 0 else False,
                detail={"tail": tail},
            )
        )
    out.unlink(missing_ok=True)


def stage_of(metric: str) -> str:
    """Return the stage that measures METRIC (rows are stored without it)."""
    prefixes = [
        ("Idle RSS", "idle"),
        ("Page ", "pages"),
        ("Fault", "faults"),
        ("Webhook deliveries", "webhooks"),
        ("Log ", "logs"),
        ("1,000,000-line", "logs"),
        ("Every line", "logs"),
        ("Peak RSS", "logs"),
    ]
    for prefix, stage in prefixes:
        if metric.startswith(prefix):
            return stage
    if "pods" in metric or metric.startswith(("Monitor", "clusters")):
        return "clusters"
    return "webhooks" if metric.startswith("webhooks") else "pipeline"


def _merge(rows: list[dict], info: dict[str, str], command: str) -> dict:
    """Merge ROWS into bench/results.json; a stage that ran replaces all its rows.

    Replacing by stage, not by metric name, keeps a renamed metric (the page rows
    name the data they ran on) from standing twice in the table.
    """
    previous: dict = {}
    if RESULTS_JSON.exists():
        try:
            previous = json.loads(RESULTS_JSON.read_text())
        except ValueError:
            previous = {}
    # Only the stages that produced rows: a stage that raised keeps its old figures.
    ran = {stage_of(row["metric"]) for row in rows}
    metrics = {
        row["metric"]: row
        for row in previous.get("rows", [])
        if stage_of(row["metric"]) not in ran
    }
    for row in rows:
        row = {**row, "date": info["date"]}
        metrics[row["metric"]] = row
    merged = {"machine": info, "command": command, "rows": list(metrics.values())}
    RESULTS_JSON.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
    return merged


ORDER = [
    "Webhook",
    "No-op",
    "Run of 100",
    "200 queued",
    "Idle RSS",
    "Log line latency at 10 ",
    "Log line latency at 10,000",
    "1,000,000-line",
    "Every line",
    "Peak RSS",
    "Page",
    "Webhook deliveries",
    "Monitor",
]


def _rank(metric: str) -> tuple[int, str]:
    for index, prefix in enumerate(ORDER):
        if metric.startswith(prefix) or prefix in metric:
            return index, metric
    return len(ORDER), metric


def write_doc(merged: dict) -> None:
    info = merged["machine"]
    rows = sorted(merged["rows"], key=lambda r: _rank(r["metric"]))
    table = [
        f"Machine: {info['cpu']}, {info['nproc']} cores (`nproc`), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}, {info['postgres']}, "
        f"Redis {info['redis']}.",
        f"Last run: {info['date']}, load average at start {info['load']}; "
        "the load column is the 1-minute load average when the figure was taken "
        "(other engineers' tests share this machine).",
        "",
        "Reproduce every row: `.venv/bin/python -m bench` (rows are merged across runs; "
        f"the last one was `{merged['command']}`).",
        "",
        "| metric | target | measured | verdict | load | date |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row["metric"],
            row["target"],
            row["measured"],
            row["verdict"],
            row["load"],
            row.get("date", "")[:10],
        ]
        table.append(
            "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        )
    block = START + "\n" + "\n".join(table) + "\n" + END
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, less data")
    parser.add_argument(
        "--only", help="comma-separated stages: " + ", ".join(STAGES + list(EXTERNAL))
    )
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-doc", action="store_true", help="do not touch docs/performance.md"
    )
    args = parser.parse_args()
    if args.list:
        print("\n".join(_stages(None)))
        return 0
    stages = _stages(args.only)
    command = "python -m bench" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    info = machine()
    print(
        f"slipway bench: {', '.join(stages)}; {info['cpu']}, {info['nproc']} cores, load {info['load']}"
    )
    stack = Stack(keep=args.keep)
    results = Results(stack.workdir / "results.jsonl")
    failed = []
    internal = [s for s in stages if s in STAGES]
    try:
        if internal:
            stack.start_servers()
            stack.setup_django()
            print(f"migrate: {stack.migrate():.1f} s", flush=True)
            stack.start_web()
            stack.start_beat()
            if "idle" in internal:
                _guard(
                    "idle",
                    failed,
                    lambda: importlib.import_module("bench.pipeline").idle_memory(
                        stack, results
                    ),
                )
            needs_workers = {"pipeline", "logs", "faults"} & set(internal)
            if needs_workers:
                stack.start_workers(2, 1)
            for name in ("pipeline", "logs", "pages", "faults"):
                if name in internal:
                    module = importlib.import_module(f"bench.{name}")
                    _guard(
                        name,
                        failed,
                        lambda m=module: m.run(stack, results, quick=args.quick),
                    )
    finally:
        stack.stop()
    for name in stages:
        if name in EXTERNAL:
            _guard(name, failed, lambda n=name: _run_external(n, args.quick, results))
    rows = [
        {
            "metric": r.metric,
            "target": r.target,
            "measured": r.measured,
            "verdict": r.verdict,
            "load": r.load,
            "detail": r.detail,
        }
        for r in results.rows
    ]
    if rows and args.quick:
        # Quick figures are smaller experiments: keep them out of the table.
        out = BASE_DIR / "bench" / "results-quick.json"
        out.write_text(
            json.dumps({"machine": info, "rows": rows}, indent=1, ensure_ascii=False)
        )
        print(
            f"quick run: figures in {out.relative_to(BASE_DIR)}; the table is left alone"
        )
    elif rows:
        merged = _merge(rows, info, command)
        if not args.no_doc:
            write_doc(merged)
            print(f"wrote {DOC.relative_to(BASE_DIR)}")
    if stack.keep:
        print(f"work directory kept: {stack.workdir}")
    if failed:
        print(f"stages that raised: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or any(r.ok is False for r in results.rows) else 0


def _guard(name: str, failed: list[str], func) -> None:  # type: ignore[no-untyped-def]
    try:
        func()
    except Exception:  # noqa: BLE001 - report and go on with the other stages
        traceback.print_exc()
        failed.append(name)


if __name__ == "__main__":
    os.chdir(BASE_DIR)
    sys.exit(main())
