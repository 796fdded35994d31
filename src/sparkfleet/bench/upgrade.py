"""``sparkfleet bench upgrade``: over 200 distinct workloads through a live runtime upgrade with
regressions injected in a known subset.

Issue 6's benchmark. Two runtimes of the installed Spark serve side by side, one cluster each:
``old`` (ANSI mode off) is general, ``new`` (ANSI mode on, as Spark 4 made it) arrives as a
canary taking ``--canary-fraction`` of the workloads. The workloads (``bench/upgrade_workloads.py``)
run in three phases, in one session that reads a small temp view and the TPC-H tables:

1. canary: every workload once, ``new`` taking its share;
2. general: the operator promotes ``new`` (``sparkfleet runtimes stage new general``, while the
   gateway runs) and every workload runs again;
3. pinned: every workload once more: the ones ``new`` broke go straight to ``old``.

Prints: workloads and distinct fingerprints, runs, client-visible failures caused by the upgrade
(goal 0), injected regressions found against injected (goal: all, no false pins), pins, and the
added latency of the runs that blinked. Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.fault_results import first_line
from sparkfleet.bench.harness import exit_now, measured
from sparkfleet.bench.tpch import TPCH_QUERIES, ensure_tpch_data, register_tpch
from sparkfleet.bench.upgrade_results import Run, Summary, exit_code, summarize
from sparkfleet.bench.upgrade_workloads import VIEW_ROWS, Workload, workloads
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session, sparkfleet_runtimes, wait_until

PHASES = ("canary", "general", "pinned")


def fleet_toml(canary_fraction: float) -> str:
    return (f'[pool]\nclusters = ["S@old", "S@new"]\n\n[rollout]\ncanary_fraction = {canary_fraction}\n'
            "promote_after_workloads = 0\n" + FIXED_FLEET)


def register_runtimes(data_dir: Path) -> None:
    import pyspark

    sparkfleet_runtimes(data_dir, "add", pyspark.__version__, "--name", "old", "--conf", "spark.sql.ansi.enabled=false",
                     "--stage", "general")
    sparkfleet_runtimes(data_dir, "add", pyspark.__version__, "--name", "new", "--conf", "spark.sql.ansi.enabled=true",
                     "--stage", "canary")


def _new_records(proc: SparkfleetProcess, session_id: str, seen: set[str]) -> list[dict]:
    records = [q for q in proc.api(f"/api/queries?session_id={session_id}&limit=20") if q["id"] not in seen]
    seen.update(q["id"] for q in records)
    return sorted(records, key=lambda q: q["submitted_at"])


def run_one(proc: SparkfleetProcess, spark, workload: Workload, phase: str, seen: set[str]) -> Run:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        spark.sql(workload.sql).collect()
        ok, error = True, ""
    except Exception as exc:  # noqa: BLE001 - the client's error is what this run measured
        ok, error = False, first_line(str(exc))
    seconds = time.monotonic() - started
    records = _new_records(proc, spark.session_id, seen)
    attempts = [a for q in records for a in q["attempts"]]
    return Run(workload.name, workload.kind, phase, ok, seconds, error,
               tuple(q["fingerprint"] for q in records if q.get("fingerprint")),
               tuple(a["runtime"] for a in attempts),
               any("run again on" in (a.get("reason") or "") for a in attempts))


def measure(out: Console, args: argparse.Namespace) -> tuple[list[Run], set[str], list[dict]]:
    suite = workloads(dict(TPCH_QUERIES) if not args.no_tpch else None)
    tpch_dir = None if args.no_tpch else ensure_tpch_data(args.data, args.sf, out).resolve()
    with tempfile.TemporaryDirectory(prefix="sparkfleet-upgrade-") as tmp:
        data_dir = Path(tmp)
        register_runtimes(data_dir)
        out.print(f"[dim]{len(suite)} workloads; starting sparkfleet with runtimes old (general) and new "
                  f"(canary, {args.canary_fraction:.0%} of workloads)...[/dim]")
        with SparkfleetProcess(fleet_toml(args.canary_fraction), data_dir=data_dir, name="sparkfleet-upgrade") as proc:
            runs: list[Run] = []
            with spark_session(proc.url) as spark:
                spark.sql(f"CREATE OR REPLACE TEMP VIEW t(a, s, d) AS VALUES {VIEW_ROWS}")
                if tpch_dir is not None:
                    register_tpch(spark, tpch_dir)
                seen: set[str] = {q["id"] for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=100")}
                for phase in PHASES:
                    if phase == "general":
                        sparkfleet_runtimes(data_dir, "stage", "new", "general")
                        wait_until(lambda: any(r["name"] == "new" and r["stage"] == "general"
                                               for r in proc.api("/api/runtimes")), 30, what="the promotion")
                    phase_started = time.monotonic()
                    for i, workload in enumerate(suite):
                        runs.append(run_one(proc, spark, workload, phase, seen))
                        if (i + 1) % 50 == 0:
                            out.print(f"[dim]  {phase}: {i + 1}/{len(suite)} workloads[/dim]")
                    phase_runs = [r for r in runs if r.phase == phase]
                    out.print(f"{phase}: {len(phase_runs)} runs in {time.monotonic() - phase_started:.0f}s, "
                              f"{sum(r.blinked for r in phase_runs)} blinked, "
                              f"{sum(not r.ok for r in phase_runs)} failed for the client")
            pinned = {p["fingerprint"] for r in proc.api("/api/runtimes") for p in r["pinned_workloads"]}
            regressions = proc.api("/api/regressions")
    return runs, pinned, regressions


def report(out: Console, s: Summary, regressions: list[dict]) -> None:
    table = Table(title="regressions the upgrade caused, by error class")
    for column in ("broken on", "passed on", "error class", "workloads"):
        table.add_column(column)
    for g in regressions:
        table.add_row(g["broken_on"], g["passed_on"], g["error_class"], str(g["affected_workloads"]))
    out.print(table)
    out.print(f"workloads: {s.workloads} ({s.distinct_fingerprints} distinct fingerprints), runs: {s.runs}")
    out.print(f"client-visible failures caused by the upgrade: {len(s.upgrade_failures)} (goal 0)")
    for line in s.upgrade_failures[:10]:
        out.print(f"  [red]{line}[/red]")
    out.print(f"users' own errors passed on to the client: {s.users_errors_kept} runs (never pinned)")
    out.print(f"regressions found: {len(s.found)} of {s.injected} injected (goal: all); "
              f"false pins: {len(s.false_pins)} (goal 0); pins: {s.pins}")
    if s.missed:
        out.print(f"  [red]missed: {', '.join(s.missed)}[/red]")
    if s.added_latency_s:
        out.print(f"runs that blinked: {s.blinks}; added latency (blinked run - the same workload straight on "
                  f"its pin): median {statistics.median(s.added_latency_s):.2f}s, max {max(s.added_latency_s):.2f}s")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench upgrade", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--canary-fraction", type=float, default=0.2, help="share of workloads the canary runs first")
    p.add_argument("--sf", type=float, default=0.01, help="TPC-H scale factor of the TPC-H workloads (default 0.01)")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "sparkfleet" / "tpch",
                   help="where TPC-H data is generated and kept")
    p.add_argument("--no-tpch", action="store_true", help="leave the 22 TPC-H queries out")
    args = p.parse_args(argv)
    if not 0 <= args.canary_fraction <= 1 or args.sf <= 0:
        p.error("--canary-fraction must be within [0, 1] and --sf positive")
    return args


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False)
    runs, pinned, regressions = measured(out, "upgrade", lambda: measure(out, args))
    summary = summarize(runs, pinned)
    report(out, summary, regressions)
    exit_now(exit_code(summary))
