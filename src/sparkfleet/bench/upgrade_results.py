"""What ``sparkfleet bench upgrade`` found: pure summaries of its runs (no I/O)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sparkfleet.bench.upgrade_workloads import INJECTED, USERS


@dataclass(frozen=True, slots=True)
class Run:
    workload: str
    kind: str
    phase: str  # "canary", "general", "pinned"
    ok: bool
    seconds: float
    error: str
    fingerprints: tuple[str, ...]  # of the ExecutePlans the run sent
    runtimes: tuple[str, ...]  # every attempt's runtime, in order
    blinked: bool  # an attempt failed and ran again on the previous runtime


@dataclass(frozen=True, slots=True)
class Summary:
    workloads: int
    distinct_fingerprints: int
    runs: int
    upgrade_failures: list[str]  # runs of workloads that pass on the old runtime, failed for the client
    users_errors_kept: int  # runs of users' workloads that failed for the client, as they must
    injected: int
    found: list[str]  # injected workloads pinned
    missed: list[str]  # injected workloads not pinned
    false_pins: list[str]  # pinned fingerprints of workloads that were not injected
    pins: int
    blinks: int
    added_latency_s: list[float]  # blinked run minus the same workload's run straight on its pin


def summarize(runs: list[Run], pinned: set[str]) -> Summary:
    by_workload: dict[str, list[Run]] = {}
    for r in runs:
        by_workload.setdefault(r.workload, []).append(r)
    kinds = {r.workload: r.kind for r in runs}
    injected = sorted(w for w, k in kinds.items() if k == INJECTED)
    found = [w for w in injected if any(f in pinned for r in by_workload[w] for f in r.fingerprints)]
    injected_fps = {f for w in injected for r in by_workload[w] for f in r.fingerprints}
    added = []
    for w, rs in by_workload.items():
        straight = [r.seconds for r in rs if r.ok and not r.blinked and r.phase == "pinned"]
        for r in rs:
            if r.blinked and r.ok and straight:
                added.append(r.seconds - statistics.median(straight))
    return Summary(
        workloads=len(by_workload),
        distinct_fingerprints=len({r.fingerprints[-1] for r in runs if r.fingerprints}),
        runs=len(runs),
        upgrade_failures=[f"{r.workload} ({r.phase}): {r.error}" for r in runs if not r.ok and r.kind != USERS],
        users_errors_kept=sum(1 for r in runs if r.kind == USERS and not r.ok),
        injected=len(injected),
        found=found,
        missed=[w for w in injected if w not in found],
        false_pins=sorted(pinned - injected_fps),
        pins=len(pinned),
        blinks=sum(1 for r in runs if r.blinked),
        added_latency_s=sorted(added),
    )


def exit_code(summary: Summary) -> int:
    """1 when the upgrade broke a client, missed an injected regression or pinned a sound workload."""
    return 1 if summary.upgrade_failures or summary.missed or summary.false_pins else 0
