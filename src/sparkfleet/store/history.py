"""Workload history: one row per finished run of a plan fingerprint, and its observed cost."""

from __future__ import annotations

import statistics
from dataclasses import astuple, dataclass, fields
from typing import Any

from sparkfleet.plan.cost import ObservedCost
from sparkfleet.store.db import Database

# The outcome of a run whose cost teaches something; every other outcome ("failed", "cancelled",
# "cluster lost", ...) is recorded but never counted as what the workload costs.
SUCCEEDED = "succeeded"
OUT_OF_MEMORY = "out_of_memory"  # an attempt that ran its cluster out of memory


@dataclass(frozen=True, slots=True)
class WorkloadRun:
    """One finished run, as recorded. Metrics are None when Spark's UI could not be read."""

    fingerprint: str
    query_id: str
    cluster_id: str | None
    size_class: str | None
    runtime: str | None
    outcome: str
    recorded_at: float  # seconds since the epoch
    duration_ms: float | None = None
    task_ms: float | None = None
    cpu_ms: float | None = None
    peak_execution_memory: int | None = None
    spilled_bytes: int | None = None
    shuffle_bytes: int | None = None
    input_bytes: int | None = None
    # What placement expected when it chose the cluster (None: nothing was estimated).
    estimated_class: str | None = None
    estimated_core_seconds: float | None = None


_COLUMNS = tuple(f.name for f in fields(WorkloadRun))


def record_run(db: Database, run: WorkloadRun) -> None:
    """Queue one run for the store (applied in order, behind the hot path)."""
    db.write(
        f"INSERT INTO workload_runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
        astuple(run),
    )


def recent_runs(db: Database, fingerprint: str, last_n: int = 20) -> list[WorkloadRun]:
    """The newest ``last_n`` runs of a fingerprint, whatever their outcome, newest first."""
    rows = db.read(
        f"SELECT {', '.join(_COLUMNS)} FROM workload_runs WHERE fingerprint=? ORDER BY seq DESC LIMIT ?",
        (fingerprint, last_n),
    )
    return [WorkloadRun(**row) for row in rows]


def observed_cost(db: Database, fingerprint: str, last_n: int = 20) -> ObservedCost | None:
    """What the newest ``last_n`` successful, measured runs of a fingerprint cost; None if none.

    Medians for the typical run (time, work, shuffle, input), maxima for what a run may need at
    worst (memory, spill), as documented on :class:`ObservedCost`.
    """
    rows = db.read(
        "SELECT duration_ms, task_ms, cpu_ms, peak_execution_memory, spilled_bytes, shuffle_bytes,"
        " input_bytes FROM workload_runs WHERE fingerprint=? AND outcome=? AND task_ms IS NOT NULL"
        " ORDER BY seq DESC LIMIT ?",
        (fingerprint, SUCCEEDED, last_n),
    )
    return summarise_runs(rows)


def sized_runs(db: Database, fingerprint: str, last_n: int = 20) -> list[dict[str, Any]]:
    """The newest ``last_n`` successful or out-of-memory runs of a fingerprint, newest first:
    the size class each ran on, whether it ran out of memory, its peak execution memory."""
    return db.read(
        "SELECT size_class, outcome, peak_execution_memory FROM workload_runs WHERE fingerprint=? AND"
        " outcome IN (?, ?) AND size_class IS NOT NULL ORDER BY seq DESC LIMIT ?",
        (fingerprint, SUCCEEDED, OUT_OF_MEMORY, last_n),
    )


def summarise_runs(rows: list[dict[str, float | int | None]]) -> ObservedCost | None:
    """The :class:`ObservedCost` of measured successful runs (a missing value counts as 0)."""
    if not rows:
        return None

    def values(column: str) -> list[float]:
        return [float(row[column] or 0) for row in rows]

    return ObservedCost(
        runs=len(rows),
        duration_ms=statistics.median(values("duration_ms")),
        task_ms=statistics.median(values("task_ms")),
        cpu_ms=statistics.median(values("cpu_ms")),
        peak_execution_memory=int(max(values("peak_execution_memory"))),
        spilled_bytes=int(max(values("spilled_bytes"))),
        shuffle_bytes=round(statistics.median(values("shuffle_bytes"))),
        input_bytes=round(statistics.median(values("input_bytes"))),
    )
