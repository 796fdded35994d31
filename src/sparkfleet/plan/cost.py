"""What a query costs: observed on a cluster, or expected before it runs, and its cost class.

Shared vocabulary of the plan reader (static estimates), the workload history (observed costs)
and the placement policy. Pure data: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CostClass(str, enum.Enum):
    """Coarse size of a query by the CPU time it takes on a cluster (core-seconds)."""

    TINY = "tiny"  # answered in well under a second of CPU: lookups, small local data
    SMALL = "small"  # a few core-seconds: interactive analysis
    MEDIUM = "medium"  # up to about a minute of CPU: a report over moderate data
    LARGE = "large"  # more: ETL, big joins and aggregations

    @property
    def rank(self) -> int:
        return _ORDER.index(self)


_ORDER = (CostClass.TINY, CostClass.SMALL, CostClass.MEDIUM, CostClass.LARGE)
# Upper bounds (exclusive) in core-seconds; one place, used for estimates and observations alike.
COST_CLASS_LIMITS_CORE_S = {CostClass.TINY: 0.5, CostClass.SMALL: 5.0, CostClass.MEDIUM: 60.0}


def cost_class_of(core_seconds: float) -> CostClass:
    """The class of a query that takes ``core_seconds`` of CPU (task time summed over cores)."""
    for cost_class, limit in COST_CLASS_LIMITS_CORE_S.items():
        if core_seconds < limit:
            return cost_class
    return CostClass.LARGE


@dataclass(frozen=True, slots=True)
class ObservedCost:
    """What runs of one workload fingerprint cost, summarised over its recorded history.

    Times are milliseconds, sizes bytes. ``task_ms`` is executor run time summed over tasks (the
    work, in core-milliseconds); ``duration_ms`` the wall time the client waited.
    """

    runs: int
    duration_ms: float  # median over runs
    task_ms: float  # median over runs
    cpu_ms: float  # median over runs (executor CPU time)
    peak_execution_memory: int  # max over runs, of the largest task's peak execution memory sum per stage
    spilled_bytes: int  # max over runs (memory + disk spill)
    shuffle_bytes: int  # median over runs (shuffle read + write)
    input_bytes: int  # median over runs

    @property
    def core_seconds(self) -> float:
        return self.task_ms / 1000.0

    @property
    def cost_class(self) -> CostClass:
        return cost_class_of(self.core_seconds)


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a query is expected to cost before it runs, and why."""

    core_seconds: float  # expected CPU work
    memory_bytes: int  # expected peak execution memory (0: nothing notable)
    scan_bytes: int  # bytes read from files, tables and local data (0 when unknown)
    source: str  # "static" (from the plan) or "history" (from past runs of the same workload)
    reason: str  # one line a person can read: "scans 1.2 GB, 2 joins, 1 aggregate"
    known: bool = True  # False when inputs could not be sized (the class is then a guess)

    @property
    def cost_class(self) -> CostClass:
        return cost_class_of(self.core_seconds)

    def describe(self) -> str:
        return f"{self.cost_class.value} (~{self.core_seconds:.3g} core-s, {self.source}: {self.reason})"
