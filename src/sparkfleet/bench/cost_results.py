"""What ``sparkfleet bench cost`` measured, summarised (pure: no Spark, no clock)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from sparkfleet.bench import harness

INTERACTIVE = "interactive"
BATCH = "batch"


@dataclass(frozen=True, slots=True)
class QueryTiming:
    client: str
    kind: str  # INTERACTIVE or BATCH
    burst: int
    offset_s: float  # when it was sent, seconds after the measured window began
    latency_s: float  # from the call to its last result (or its error)
    ok: bool
    # The first query a client sent in a burst, after the fleet sat idle.
    first_after_idle: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class ArmRun:
    arm: str  # "standard", "performance" or "static"
    title: str
    window_s: float  # length of the measured window (idle lead-in, then bursts and gaps)
    core_seconds: float  # cores the fleet's clusters held over the window, times seconds
    # Clusters started in the window because queries were waiting for them (they waited for a
    # JVM), and clusters started ahead of demand (warm capacity).
    cold_starts: int
    warm_starts: int
    timings: list[QueryTiming] = field(default_factory=list)
    # Live clusters, sampled through the window: (offset_s, count).
    live_clusters: list[tuple[float, int]] = field(default_factory=list)
    # What the gateway recorded (its /api/queries and /api/clusters), for a closer look.
    records: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ArmSummary:
    arm: str
    core_seconds: float
    average_cores: float
    cold_starts: int
    warm_starts: int
    interactive: int
    interactive_p50_s: float | None
    interactive_p95_s: float | None
    first_after_idle_median_s: float | None
    first_after_idle_max_s: float | None
    batch: int
    batch_mean_s: float | None
    errors: int


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` percentile (interpolated, as every benchmark reports it), or None without values."""
    return harness.percentile(values, q) if values else None


def summarize(run: ArmRun) -> ArmSummary:
    ok = [t for t in run.timings if t.ok]
    interactive = [t.latency_s for t in ok if t.kind == INTERACTIVE]
    first = [t.latency_s for t in ok if t.kind == INTERACTIVE and t.first_after_idle]
    batch = [t.latency_s for t in ok if t.kind == BATCH]
    return ArmSummary(
        arm=run.arm,
        core_seconds=run.core_seconds,
        average_cores=run.core_seconds / run.window_s if run.window_s > 0 else 0.0,
        cold_starts=run.cold_starts,
        warm_starts=run.warm_starts,
        interactive=len(interactive),
        interactive_p50_s=percentile(interactive, 50),
        interactive_p95_s=percentile(interactive, 95),
        first_after_idle_median_s=statistics.median(first) if first else None,
        first_after_idle_max_s=max(first) if first else None,
        batch=len(batch),
        batch_mean_s=statistics.fmean(batch) if batch else None,
        errors=sum(1 for t in run.timings if not t.ok),
    )


def share_of(summary: ArmSummary, baseline: ArmSummary | None) -> float | None:
    """``summary``'s core-seconds as a share of ``baseline``'s (the static fleet's)."""
    if baseline is None or baseline.core_seconds <= 0:
        return None
    return summary.core_seconds / baseline.core_seconds


def exit_code(runs: list[ArmRun]) -> int:
    """0 when every query of every arm succeeded; 1 otherwise."""
    return 0 if runs and all(t.ok for r in runs for t in r.timings) else 1
