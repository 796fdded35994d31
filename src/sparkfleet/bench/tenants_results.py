"""What ``sparkfleet bench tenants`` observed, its summaries (pure functions) and its report.

Times are seconds of one monotonic clock shared by every client thread. A window's measurement
starts when every client finished its warm-up; the figures cover only what ran after. A phase's
windows alternate with those of its baseline on the same fleet and are pooled.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.mixed_results import LatencySummary, Timing, ratio, summarize_latency

# Issue 7's goal: the quiet tenant's p95 beside the flood at most this many times its p95 alone.
QUIET_P95_GOAL = 1.5
QUIET, FLOOD = "quiet", "flood"
QUOTA_ERROR = "SPARKFLEET.QUOTA_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Phase:
    key: str  # "alone", "flood", "alone-2", "unlimited"
    title: str
    flood: bool  # the flooding tenant runs
    quotas: bool  # the fleet has the flooding tenant's [tenants.flood] table
    baseline: str = ""  # the phase (on the same fleet) its quiet p95 is compared with


@dataclass
class PhaseRun:
    """One phase: its windows pooled."""

    phase: Phase
    seconds: float  # measured, over every window
    timings: list[Timing] = field(default_factory=list)  # client names start with the tenant
    # Refusals counted in /metrics during the windows: (tenant, quota) -> n.
    refusals: dict[tuple[str, str], float] = field(default_factory=dict)
    # The gateway's records of the windows' relation queries: tenant -> cluster id -> n.
    placed: dict[str, Counter[str]] = field(default_factory=dict)
    # CPU seconds used during the windows: gateway, clusters, clients (this process), other.
    cpu: dict[str, float] = field(default_factory=dict)
    windows: int = 1

    def of(self, tenant: str) -> list[Timing]:
        return [t for t in self.timings if t.client.startswith(tenant) and not t.warm_up]


def pool_windows(windows: Sequence[PhaseRun]) -> list[PhaseRun]:
    """One run per phase, in the order phases first appear, each window's figures added up."""
    pooled: dict[str, PhaseRun] = {}
    for w in windows:
        run = pooled.get(w.phase.key)
        if run is None:
            pooled[w.phase.key] = PhaseRun(w.phase, w.seconds, list(w.timings), dict(w.refusals),
                                           {t: Counter(c) for t, c in w.placed.items()}, dict(w.cpu), 1)
            continue
        run.seconds += w.seconds
        run.timings += w.timings
        run.windows += 1
        for key, n in w.refusals.items():
            run.refusals[key] = run.refusals.get(key, 0.0) + n
        for tenant, clusters in w.placed.items():
            run.placed.setdefault(tenant, Counter()).update(clusters)
        for part, seconds in w.cpu.items():
            run.cpu[part] = run.cpu.get(part, 0.0) + seconds
    return list(pooled.values())


@dataclass(frozen=True, slots=True)
class TenantSummary:
    latency: LatencySummary
    done: int
    refused: int  # RESOURCE_EXHAUSTED naming a quota
    errors: int  # anything else


def summarize_tenant(timings: Sequence[Timing]) -> TenantSummary:
    refused = sum(1 for t in timings if t.error_class == QUOTA_ERROR)
    errors = sum(1 for t in timings if not t.ok and t.error_class != QUOTA_ERROR)
    return TenantSummary(summarize_latency([t for t in timings if t.ok]), sum(1 for t in timings if t.ok),
                         refused, errors)


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    value: float
    met: bool | None  # None: not measured


def verdicts(runs: Sequence[PhaseRun]) -> list[Verdict]:
    """The quiet tenant's p95 beside a flood over its p95 alone on the same fleet, for each flood
    phase. The goal is the quotas'; the unlimited phase shows what they buy."""
    by_key = {run.phase.key: summarize_tenant(run.of(QUIET)).latency.p95_s for run in runs}
    found = []
    for run in runs:
        if not run.phase.flood:
            continue
        value = ratio(by_key[run.phase.key], by_key.get(run.phase.baseline, math.nan))
        met = None if math.isnan(value) or not run.phase.quotas else value <= QUIET_P95_GOAL
        found.append(Verdict(f"quiet p95 ({run.phase.key}) / quiet p95 ({run.phase.baseline})", value, met))
    return found


def exit_code(runs: Sequence[PhaseRun]) -> int:
    """1 if a quiet client saw any error or a flooding client an error other than a quota
    refusal, else 0 (the goal is reported, not enforced)."""
    bad = [t for run in runs for t in run.timings
           if not t.ok and (t.client.startswith(QUIET) or t.error_class != QUOTA_ERROR)]
    return 1 if bad else 0


def tenant_of_records(records: Sequence[Mapping[str, Any]], sessions: Mapping[str, str]) -> dict[str, Counter[str]]:
    """tenant -> cluster id -> relation queries it ran there, from the gateway's query records."""
    placed: dict[str, Counter[str]] = {}
    for record in records:
        tenant = sessions.get(record.get("session_id", ""))
        if tenant is None or record.get("kind") != "relation" or not record.get("cluster_id"):
            continue
        placed.setdefault(tenant, Counter())[record["cluster_id"]] += 1
    return placed


# ---- report -------------------------------------------------------------------------------------


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def report(out: Console, runs: Sequence[PhaseRun], quotas: Mapping[str, Any], cores: int) -> None:
    table = Table(title="the quiet tenant's queries (seconds, successful queries after warm-up)")
    for column in ("phase", "", "done", "errors", "p50", "p95", "max", "windows", "measured s"):
        table.add_column(column, justify="left" if column in ("phase", "") else "right")
    for run in runs:
        quiet = summarize_tenant(run.of(QUIET))
        table.add_row(run.phase.key, run.phase.title, str(quiet.done), str(quiet.errors + quiet.refused),
                      _s(quiet.latency.p50_s), _s(quiet.latency.p95_s), _s(quiet.latency.max_s),
                      str(run.windows), f"{run.seconds:.0f}")
    out.print(table)

    got = Table(title="what each tenant got")
    for column in ("phase", "tenant", "queries done", "per minute", "p50", "p95", "refused (quota)", "other errors",
                   "refusals in /metrics", "clusters (queries, warm-up included)"):
        got.add_column(column, justify="left" if column in ("phase", "tenant") else "right", overflow="fold")
    for run in runs:
        minutes = max(run.seconds, 1e-9) / 60.0
        for tenant in (QUIET, FLOOD) if run.phase.flood else (QUIET,):
            s = summarize_tenant(run.of(tenant))
            metric = ", ".join(f"{quota} {n:g}" for (t, quota), n in sorted(run.refusals.items()) if t == tenant and n)
            where = ", ".join(f"{c} {n}" for c, n in sorted(run.placed.get(tenant, Counter()).items()))
            got.add_row(run.phase.key, tenant, str(s.done), f"{s.done / minutes:.1f}", _s(s.latency.p50_s),
                        _s(s.latency.p95_s), str(s.refused), str(s.errors), metric or "-", where or "-")
    out.print(got)
    out.print("flooding tenant's quotas in (flood): "
              + (", ".join(f"{k} = {v}" for k, v in quotas.items()) or "none")
              + "; in (unlimited): none")

    cpu = Table(title="CPU used, in cores (CPU seconds per measured second; the machine has "
                      f"{cores} cores)")
    for column in ("phase", "gateway", "clusters", "clients (bench)", "other processes"):
        cpu.add_column(column, justify="left" if column == "phase" else "right")
    for run in runs:
        if run.cpu:
            per = {part: seconds / max(run.seconds, 1e-9) for part, seconds in run.cpu.items()}
            cpu.add_row(run.phase.key, *(f"{per.get(p, math.nan):.2f}" for p in ("gateway", "clusters", "client", "other")))
    out.print(cpu)

    errors: dict[tuple[str, str, str], list[Timing]] = {}
    for run in runs:
        for t in run.timings:
            if not t.ok:
                errors.setdefault((run.phase.key, t.client.split("-")[0], t.error_class or ""), []).append(t)
    if errors:
        problems = Table(title="client errors")
        for column in ("phase", "tenant", "error class", "n", "first message"):
            problems.add_column(column, justify="right" if column == "n" else "left", overflow="fold")
        for (phase, tenant, error_class), found in errors.items():
            problems.add_row(phase, tenant, error_class, str(len(found)), found[0].message)
        out.print(problems)

    for verdict in verdicts(runs):
        style = {True: "green", False: "bold red", None: "yellow"}[verdict.met]
        value = "n/a" if math.isnan(verdict.value) else f"{verdict.value:.2f}x"
        goal = {True: f"goal <= {QUIET_P95_GOAL}x: met", False: f"goal <= {QUIET_P95_GOAL}x: MISSED",
                None: "no goal: what the flood does without quotas"}[verdict.met]
        out.print(f"[{style}]{verdict.label} = {value} ({goal})[/{style}]")
