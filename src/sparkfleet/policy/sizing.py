"""Pure learned sizing: the least memory a workload's cluster must have, from its history.

A workload that ran a cluster out of memory must not be sent to a cluster that small again: the
floor is the largest cluster memory it ran out of in its recent runs, so the next run goes
straight to a size that held it (zero OOMs on the second run). A workload that has since run
many times well within that size's memory drifts back down: the floor is dropped, and the
workload is tried on the smallest size again (at worst one more OOM re-learns it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SizedRun:
    memory_mb: int  # the memory of the cluster it ran on
    out_of_memory: bool
    peak_execution_memory: int = 0  # bytes, for successful measured runs


def memory_floor_mb(
    runs_newest_first: Sequence[SizedRun],
    memory_fraction: float = 0.6,
    drift_after_runs: int = 10,
    drift_below_share: float = 0.5,
) -> int:
    """Clusters must have more memory than this (MB) for the workload; 0 for no floor.

    The floor is dropped once the ``drift_after_runs`` newest runs all succeeded after its last
    out-of-memory run, each needing less than ``drift_below_share`` of the floor size's budget.
    """
    ooms = [r for r in runs_newest_first if r.out_of_memory]
    if not ooms:
        return 0
    floor = max(r.memory_mb for r in ooms)
    since = []
    for run in runs_newest_first:
        if run.out_of_memory:
            break
        since.append(run)
    budget = floor * _MB * memory_fraction
    if len(since) >= drift_after_runs and all(r.peak_execution_memory < drift_below_share * budget for r in since):
        return 0
    return floor
