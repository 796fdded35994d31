"""The report of ``sparkfleet bench mixed``: latency, ETL rate, placement and the goal ratios, as tables."""

from __future__ import annotations

import math
from typing import Sequence

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.mixed_results import (
    ETL_CLIENT,
    PhaseRun,
    clusters_by_client,
    compare,
    etl_throughput,
    group_errors,
    latency_by_query,
    profiles_by_client,
    reference_seconds,
    sharing_etl_cluster,
    summarize_latency,
    verdict_line,
)


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def report(out: Console, runs: Sequence[PhaseRun]) -> None:
    weights = reference_seconds(t for run in runs for t in run.etl())
    latency = {run.phase.key: summarize_latency(run.interactive()) for run in runs}
    throughput = {run.phase.key: etl_throughput(run.etl(), run.measured_from, weights)
                  for run in runs if run.phase.with_etl}

    table = Table(title="interactive queries (seconds, successful queries after warm-up)")
    for column in ("phase", "fleet", "queries", "errors", "p50", "p95", "max", "window s"):
        table.add_column(column, justify="left" if column in ("phase", "fleet") else "right")
    for run in runs:
        s = latency[run.phase.key]
        table.add_row(run.phase.key, run.phase.title, str(s.count), str(s.errors), _s(s.p50_s), _s(s.p95_s),
                      _s(s.max_s), f"{run.ended - run.measured_from:.0f}")
    out.print(table)

    kinds = list(dict.fromkeys(t.query for run in runs for t in run.interactive()))
    by_kind = Table(title="interactive p50 / p95 by query (seconds)")
    by_kind.add_column("query")
    for run in runs:
        by_kind.add_column(f"({run.phase.key})", justify="right")
    per_run = [latency_by_query(run.interactive()) for run in runs]
    for kind in kinds:
        by_kind.add_row(kind, *(f"{_s(k[kind].p50_s)} / {_s(k[kind].p95_s)}" if kind in k else "-" for k in per_run))
    out.print(by_kind)

    etl = Table(title="ETL client (TPC-H " + ", ".join(dict.fromkeys(t.query for r in runs for t in r.etl()))
                + " back to back; the query running at the deadline finishes and counts)")
    for column in ("phase", "fleet", "completed", "errors", "window s", "queries/min", "work rate"):
        etl.add_column(column, justify="left" if column in ("phase", "fleet") else "right")
    for run in runs:
        if run.phase.with_etl:
            t = throughput[run.phase.key]
            etl.add_row(run.phase.key, run.phase.title, str(t.completed), str(t.errors), f"{t.seconds:.0f}",
                        f"{t.per_min:.2f}", f"{t.work_rate:.2f}")
    out.print(etl)
    out.print("work rate: reference seconds of completed queries per elapsed second; a query's reference "
              "is its median time over every phase: "
              + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in weights.items()))

    where = Table(title="where the gateway ran each client's queries (relation ExecutePlan records, warm-up included)")
    for column in ("phase", "client", "clusters (queries)", "profiles"):
        where.add_column(column)
    for run in runs:
        placed = clusters_by_client(run.records, run.sessions)
        profiles = profiles_by_client(run.records, run.sessions)
        for client in sorted(placed, key=lambda c: (c != ETL_CLIENT, c)):
            where.add_row(run.phase.key, client,
                          ", ".join(f"{c} {n}" for c, n in sorted(placed[client].items())) or "-",
                          ", ".join(f"{p} {n}" for p, n in profiles[client].most_common()) or "-")
        if run.phase.with_etl and len(run.clusters) > 1:
            sharing = sharing_etl_cluster(placed)
            where.add_row(run.phase.key, "", f"[dim]interactive clients sharing a cluster with the ETL: "
                          f"{', '.join(sharing) or 'none'}[/dim]", "")
    out.print(where)

    errors = group_errors([t for run in runs for t in run.timings])
    if errors:
        problems = Table(title="client errors")
        for column in ("phase", "client", "query", "error class", "n", "first message"):
            problems.add_column(column, justify="right" if column == "n" else "left", overflow="fold")
        for run in runs:
            for e in group_errors(run.timings):
                problems.add_row(run.phase.key, e.client, e.query, e.error_class, str(e.count), e.example)
        out.print(problems)

    done_per_s = {run.phase.key: latency[run.phase.key].count / max(run.ended - run.measured_from, 1e-9)
                  for run in runs}
    comparison = compare(latency, throughput, done_per_s)
    ratios = Table(title="ratios (phases of this run)")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for r in comparison.ratios:
        ratios.add_row(r.label, _x(r.value))
    out.print(ratios)
    for goal in comparison.goals:
        style = {True: "green", False: "bold red", None: "yellow"}[goal.met]
        out.print(f"[{style}]{verdict_line(goal)}[/{style}]")
