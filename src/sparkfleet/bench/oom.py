"""``sparkfleet bench oom``: queries that run their cluster out of memory, each run twice.

Issue 5's out-of-memory benchmark. Each workload is a query whose memory does not fit a small
cluster: one group collected into one list, one huge array, and so on (each a different plan
shape, so a different workload fingerprint). For each workload a fresh sparkfleet starts with the
product's defaults (autoscaler on, Performance mode) and one cluster of the small size class S
(1 core, 1 GiB); the larger class M (1 core, 4 GiB) holds every workload (L, 8 GiB, is there for
any that M would not hold). The workload runs in a new session, then again in another new session:

- run 1: the fleet has never seen the workload. It runs S out of memory; the gateway restarts it
  on an M cluster that the autoscaler starts for it. The client waits longer, sees no error.
- run 2: the fleet remembers the smallest size that held the workload: it goes straight to M.

Prints each run's attempts (size: outcome) and time, then the first-run success rate, the number
of out-of-memory attempts in second runs (goal 0) and what recovery added to the first run (first
minus second run). Exits 1 if a client saw an error or a wrong result.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.fault_results import first_line
from sparkfleet.bench.harness import exit_now, measured
from sparkfleet.bench.oom_results import Attempt, WorkloadRun, by_workload, exit_code, summarize
from sparkfleet.testing.process import SparkfleetProcess, spark_session

SMALL_MB = 1024
LARGE_MB = 4096


def fleet_toml() -> str:
    """Two size classes of one core each, the default autoscaler, and one S cluster to start."""
    return (f"[sizes.S]\ncores = 1\nmemory_mb = {SMALL_MB}\n\n[sizes.M]\ncores = 1\nmemory_mb = {LARGE_MB}\n\n"
            "[sizes.L]\ncores = 1\nmemory_mb = 8192\n\n"
            '[pool]\nclusters = ["S"]\n\n[autoscaler]\nenabled = true\nmode = "performance"\n')


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    description: str
    query: Callable[[Any], Any]  # spark -> DataFrame with one row and one column
    expected: int


def _one_list_of_longs(spark):  # type: ignore[no-untyped-def]
    return (spark.range(0, 40_000_000, 1, 4).selectExpr("0 as k", "id").groupBy("k")
            .agg({"id": "collect_list"}).selectExpr("size(`collect_list(id)`) as n"))


def _one_list_of_strings(spark):  # type: ignore[no-untyped-def]
    return (spark.range(0, 16_000_000, 1, 4).selectExpr("id % 1 as k", "concat('row-', id) as s")
            .groupBy("k").agg({"s": "collect_list"}).selectExpr("size(`collect_list(s)`) as n"))


def _one_set_of_longs(spark):  # type: ignore[no-untyped-def]
    return (spark.range(0, 16_000_000, 1, 4).selectExpr("0 as k", "id * 3 as v").groupBy("k")
            .agg({"v": "collect_set"}).selectExpr("size(`collect_set(v)`) as n"))


def _one_huge_array(spark):  # type: ignore[no-untyped-def]
    # Built from the row's value, so the optimizer cannot fold it into a constant on the driver.
    return spark.range(1, 2, 1, 1).selectExpr("size(sequence(1L, 150000000L * id)) as n")


WORKLOADS = {
    w.name: w
    for w in (
        Workload("list-longs", "collect_list of 40 M longs in one group", _one_list_of_longs, 40_000_000),
        Workload("list-strings", "collect_list of 16 M strings in one group", _one_list_of_strings, 16_000_000),
        Workload("set-longs", "collect_set of 16 M distinct longs in one group", _one_set_of_longs, 16_000_000),
        Workload("huge-array", "one array of 150 M longs (sequence)", _one_huge_array, 150_000_000),
    )
}


# ---- running ------------------------------------------------------------------------------------


def _attempts(proc: SparkfleetProcess, session_id: str) -> tuple[Attempt, ...]:
    """The attempts of the session's query (each with the size of the cluster it ran on)."""
    sizes = {c["id"]: c["size"] for c in proc.api("/api/clusters?history=0")}
    records = [q for q in proc.api(f"/api/queries?session_id={session_id}&limit=20") if q["kind"] == "relation"]
    if not records:
        return ()
    record = max(records, key=lambda q: q["submitted_at"])
    return tuple(Attempt(sizes.get(a["cluster_id"], "?"), a["outcome"]) for a in record["attempts"])


def run_once(proc: SparkfleetProcess, workload: Workload, run: int) -> WorkloadRun:
    with spark_session(proc.url) as spark:
        started = time.monotonic()
        try:
            rows = workload.query(spark).collect()
        except Exception as exc:  # noqa: BLE001 - the client's error is what this run measured
            return WorkloadRun(workload.name, run, False, time.monotonic() - started,
                               _attempts(proc, spark.session_id), first_line(str(exc)))
        seconds = time.monotonic() - started
        value = rows[0][0] if rows else None
        ok = value == workload.expected
        error = "" if ok else f"wrong result: {value!r}, expected {workload.expected}"
        return WorkloadRun(workload.name, run, ok, seconds, _attempts(proc, spark.session_id), error)


def run_workload(out: Console, workload: Workload) -> list[WorkloadRun]:
    """A fresh fleet for the workload: run it twice, stop the fleet (and every JVM) whatever happens."""
    out.rule(f"{workload.name}: {workload.description}")
    proc = SparkfleetProcess(config_toml=fleet_toml(), name=f"sparkfleet-oom-{workload.name}")
    try:
        proc.start()  # an interrupt while it starts must stop it too, hence no ``with proc``
        runs = []
        for run in (1, 2):
            result = run_once(proc, workload, run)
            status = "ok" if result.ok else f"[red]failed: {result.error}[/red]"
            out.print(f"  run {run}: {result.seconds:6.1f}s  {result.path()}  {status}")
            runs.append(result)
        return runs
    finally:
        proc.stop()


def report(out: Console, runs: list[WorkloadRun]) -> None:
    table = Table(title="out-of-memory workloads, each run twice on a fresh fleet (S = 1 GiB, M = 4 GiB)")
    for column in ("workload", "run 1: attempts", "run 1 s", "run 2: attempts", "run 2 s"):
        table.add_column(column, justify="right" if column.endswith(" s") else "left")
    for name, pair in by_workload(runs).items():
        cells = []
        for run in (1, 2):
            r = pair.get(run)
            cells += ["-", "-"] if r is None else [r.path() + ("" if r.ok else " (client error)"), f"{r.seconds:.1f}"]
        table.add_row(name, *cells)
    out.print(table)
    s = summarize(runs)
    out.print(f"first runs that succeeded: {s.first_run_succeeded}/{s.workloads} "
              f"({s.first_run_success_rate:.0%}); {s.first_run_out_of_memory} of them ran S out of memory first")
    out.print(f"second runs: {s.second_run_succeeded}/{s.workloads} succeeded, "
              f"out-of-memory attempts: {s.second_run_out_of_memory} (goal 0)")
    if s.recovery_added_s:
        added = ", ".join(f"{x:.1f}" for x in s.recovery_added_s)
        out.print(f"added latency of recovery (run 1 - run 2): median {s.median_recovery_added_s:.1f}s ({added})")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench oom", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated workloads to run (default: all of {', '.join(WORKLOADS)})")
    args = p.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or not args.workloads:
        p.error(f"--workloads takes names from {', '.join(WORKLOADS)}; got {unknown or 'none'}")
    return args


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=max(Console().width, 120))
    runs = measured(out, "oom", lambda: [r for name in args.workloads for r in run_workload(out, WORKLOADS[name])])
    out.rule("results")
    report(out, runs)
    exit_now(exit_code(runs))
