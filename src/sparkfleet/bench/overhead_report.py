"""The tables ``sparkfleet bench overhead`` prints from its results (no measuring here)."""

from __future__ import annotations

import math
from typing import Mapping

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.harness import CpuMeter, median
from sparkfleet.bench.overhead_results import (
    CLIENT,
    CLUSTER_CPU_RATIO_GOAL,
    CLUSTER_DIRECT,
    FLEET,
    FLEET_PARTS,
    GATEWAY_CPU_GOAL_MS,
    IDLE_GOAL_PERCENT,
    LATENCY_RATIO_GOAL,
    PLAIN,
    THROUGHPUT_GOAL,
    Pass,
    Results,
    cpu_rows,
    gateway_added_ms,
    goals,
    latency,
    total_cpu,
)

MIN_LARGE_BYTES = 150 * 1000 * 1000
SHORT = {CLUSTER_DIRECT: "cluster"}  # column headers


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _table(title: str, columns: tuple[str, ...], goal: str = "") -> Table:
    table = Table(title=title, caption=f"goal: {goal}" if goal else None)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def latency_table(p: Pass, fleet_pass: Pass | None = None) -> Table:
    """Median and p95 per side, the ratio of medians and the paired added latency; for the
    breakdown pass (``fleet_pass`` given) also what the gateway adds, estimated across passes."""
    other = SHORT.get(p.side, p.side)
    title = f"{p.side} vs plain, alternating (ms; added = {other} - plain in the same iteration, median and p95)"
    columns = ("workload", "n", "plain p50", "plain p95", f"{other} p50", f"{other} p95", f"{other}/plain",
               "added p50", "added p95")
    if fleet_pass is not None:
        columns += ("gateway adds",)
    goal = f"{FLEET}/plain <= {LATENCY_RATIO_GOAL:g} for every workload" if p.side == FLEET else ""
    table = _table(title, columns, goal)
    fleet_blocks = {b.workload: b for b in fleet_pass.blocks} if fleet_pass else {}
    for block in p.blocks:
        lat = latency(block)
        row = [block.workload, str(block.queries), _ms(lat.plain_p50_ms), _ms(lat.plain_p95_ms),
               _ms(lat.other_p50_ms), _ms(lat.other_p95_ms), f"{lat.ratio:.3f}",
               f"{lat.added_p50_ms:+.3f}", f"{lat.added_p95_ms:+.3f}"]
        if fleet_pass is not None:
            row.append(f"{gateway_added_ms(fleet_blocks[block.workload], block):+.3f}")
        table.add_row(*row)
    return table


def cpu_table(p: Pass) -> Table:
    served = "through the gateway" if p.side == FLEET else "straight to a cluster; the gateway only idles"
    table = _table(
        f"CPU ms per query, {p.side} pass: fleet parts per {p.side} query ({served}), plain JVM per plain query",
        ("workload", "queries/side", "plain JVM", "fleet clusters", "clusters/plain", "metastore", "gateway",
         "client"),
        f"gateway <= {GATEWAY_CPU_GOAL_MS:g} ms per small query; clusters/plain <= {CLUSTER_CPU_RATIO_GOAL:g}"
        if p.side == FLEET else "",
    )
    for row in cpu_rows(p):
        style = "bold" if row.label in ("small workloads", "all workloads") else None
        table.add_row(row.label, str(row.queries), *(_ms(row.ms.get(part, math.nan)) for part in ("plain", "clusters")),
                      f"{row.clusters_to_plain:.2f}", *(_ms(row.ms.get(part, math.nan)) for part in ("metastore", "gateway", CLIENT)),
                      style=style)
    return table


def report(out: Console, r: Results) -> None:
    fleet, direct = r.passes[FLEET], r.passes[CLUSTER_DIRECT]
    out.print()
    out.print(latency_table(fleet))
    out.print(cpu_table(fleet))
    out.print(f"{FLEET} pass: {CpuMeter.describe(*total_cpu(fleet))}")
    out.print(f"the fleet ran the {FLEET} pass's queries on: {_clusters(fleet.queries_per_cluster)}")
    out.print()
    out.print(f"breakdown: {CLUSTER_DIRECT} sends the same queries straight to cluster {r.cluster_direct}, "
              "the one that ran the fleet side's warm-up")
    out.print(latency_table(direct, fleet))
    out.print("  added = what the fleet does to its cluster (CPU pinning, bookkeeping); gateway adds = "
              f"({FLEET} - plain) - ({CLUSTER_DIRECT} - plain), paired medians of the two passes")
    out.print(cpu_table(direct))
    out.print(f"{CLUSTER_DIRECT} pass: {CpuMeter.describe(*total_cpu(direct))}")
    out.print()
    _idle(out, r)
    out.print()
    _large(out, r)
    for note in r.notes:
        out.print(f"[yellow]note: {note}[/yellow]")
    out.print()
    _headline(out, r)


def _clusters(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{cluster} ({n} queries)" for cluster, n in sorted(counts.items())) or "none recorded"


def _idle(out: Console, r: Results) -> None:
    idle = r.idle
    table = _table(f"idle {idle.seconds:.0f}s, sessions open", ("part", "CPU s", "% of one core"),
                   f"gateway + fleet JVMs <= {IDLE_GOAL_PERCENT:g}%")
    for part in (*FLEET_PARTS, PLAIN):
        table.add_row(part, f"{idle.cpu.get(part, 0.0):.2f}", f"{idle.percent_of_core(part):.2f}")
    fleet_total = sum(idle.cpu.get(p, 0.0) for p in FLEET_PARTS)
    table.add_row("gateway + fleet JVMs", f"{fleet_total:.2f}", f"{idle.percent_of_core(*FLEET_PARTS):.2f}",
                  style="bold")
    out.print(table)
    out.print(f"idle: {CpuMeter.describe(idle.cpu, idle.seconds)}")


def _large(out: Console, r: Results) -> None:
    large = r.large
    runs = len(large.rates[FLEET])
    table = _table(f"large result, {large.nbytes / 1e6:.1f} MB Arrow: MB/s",
                   ("side", *(f"run {i + 1}" for i in range(runs)), "median"), f"fleet/plain >= {THROUGHPUT_GOAL:g}")
    for side in (PLAIN, FLEET):
        table.add_row(side, *(f"{x:.1f}" for x in large.rates[side]), f"{median(large.rates[side]):.1f}")
    table.add_row("fleet/plain", *(f"{x:.3f}" for x in large.paired_ratios()), f"{large.ratio:.3f}", style="bold")
    out.print(table)
    out.print(f"large results: {CpuMeter.describe(large.cpu, large.wall_s)}")
    out.print(f"gateway CPU per MB relayed: {large.gateway_ms_per_mb():.2f} ms; "
              f"the fleet ran them on: {_clusters(large.queries_per_cluster)}")
    if large.nbytes < MIN_LARGE_BYTES:
        out.print(f"[yellow]note: the large result is {large.nbytes / 1e6:.1f} MB, under the "
                  f"{MIN_LARGE_BYTES / 1e6:.0f} MB this benchmark is meant for; raise --rows[/yellow]")


def _headline(out: Console, r: Results) -> None:
    table = _table("goals: the default fleet against a plain Spark Connect server", ("goal", "measured", "goal", ""))
    for goal in goals(r):
        verdict = "[green]met[/green]" if goal.met else "[red]missed[/red]"
        table.add_row(goal.name, goal.measured, goal.target, verdict)
    out.print(table)

