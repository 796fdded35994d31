"""What ``sparkfleet bench oom`` measured, summarised (pure: no Spark, no clock)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

OUT_OF_MEMORY = "out of memory"


@dataclass(frozen=True, slots=True)
class Attempt:
    size: str  # the size class of the cluster it ran on
    outcome: str  # "succeeded", "out of memory", "cluster lost", ...


@dataclass(frozen=True, slots=True)
class WorkloadRun:
    workload: str
    run: int  # 1: first time the fleet sees the workload; 2: the same workload again
    ok: bool  # the client got the right result
    seconds: float  # from the client's call to its result (or error)
    attempts: tuple[Attempt, ...] = ()
    error: str = ""

    @property
    def out_of_memory(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == OUT_OF_MEMORY)

    def path(self) -> str:
        """Where it ran, e.g. "S: out of memory -> M: succeeded"."""
        return " -> ".join(f"{a.size}: {a.outcome}" for a in self.attempts) or "-"


@dataclass(frozen=True, slots=True)
class Summary:
    workloads: int
    first_run_succeeded: int
    first_run_out_of_memory: int  # first runs that ran a cluster out of memory (and were recovered or not)
    second_run_succeeded: int
    second_run_out_of_memory: int  # out-of-memory attempts across all second runs (goal 0)
    # First run minus second run, for each workload whose both runs succeeded and whose first run
    # was recovered from an out-of-memory attempt: what recovery added to the client's wait.
    recovery_added_s: list[float] = field(default_factory=list)

    @property
    def first_run_success_rate(self) -> float:
        return self.first_run_succeeded / self.workloads if self.workloads else 0.0

    @property
    def median_recovery_added_s(self) -> float | None:
        return statistics.median(self.recovery_added_s) if self.recovery_added_s else None


def by_workload(runs: list[WorkloadRun]) -> dict[str, dict[int, WorkloadRun]]:
    """Each workload's runs by number, in the order the workloads first ran."""
    grouped: dict[str, dict[int, WorkloadRun]] = {}
    for run in runs:
        grouped.setdefault(run.workload, {})[run.run] = run
    return grouped


def summarize(runs: list[WorkloadRun]) -> Summary:
    pairs = by_workload(runs)
    firsts = [r[1] for r in pairs.values() if 1 in r]
    seconds = [r[2] for r in pairs.values() if 2 in r]
    added = [
        r[1].seconds - r[2].seconds
        for r in pairs.values()
        if 1 in r and 2 in r and r[1].ok and r[2].ok and r[1].out_of_memory
    ]
    return Summary(
        workloads=len(pairs),
        first_run_succeeded=sum(1 for r in firsts if r.ok),
        first_run_out_of_memory=sum(1 for r in firsts if r.out_of_memory),
        second_run_succeeded=sum(1 for r in seconds if r.ok),
        second_run_out_of_memory=sum(r.out_of_memory for r in seconds),
        recovery_added_s=added,
    )


def exit_code(runs: list[WorkloadRun]) -> int:
    """0 when every run gave its client the right result; 1 otherwise."""
    return 0 if runs and all(r.ok for r in runs) else 1
