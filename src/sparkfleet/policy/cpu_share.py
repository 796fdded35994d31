"""Pure CPU-sharing policy: which CPUs each local cluster may run on, and at what priority.

Every local cluster owns a CPU set, disjoint from the others' while the machine has enough cores.
Left at that, the cores of a cluster with nothing to do sit idle while a batch query next door
runs on one core. So, by what each cluster runs now:

- **batch only** (batch work running, or its pipeline between two queries): every CPU of the
  pool, at the lowest CPU priority. It soaks up cores nobody else uses; any other cluster's work,
  the gateway and the clients come first, on every core, preempted by the OS within milliseconds.
- **interactive work** (alone or beside batch work): its own CPUs plus those of the batch-only
  clusters, at normal priority, so an interactive burst uses more than its own cores, ahead of
  batch work.
- **idle**: its own CPUs, at normal priority.

Clusters never share a CPU at the same priority: interactive clusters keep to their own sets
among themselves, and batch-only clusters share at the lowest priority with each other. When
sharing is off (a plain-proxy baseline, or no permission to raise a priority back), every cluster
keeps its own CPUs at normal priority.

No I/O, no clock: the live fleet and the simulator call the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sparkfleet.fleet.model import ClusterState, ClusterView, Profile

NORMAL_NICE = 0
_RUNNING = frozenset({ClusterState.READY, ClusterState.DRAINING})  # their JVMs run queries


@dataclass(frozen=True, slots=True)
class CpuShareSettings:
    enabled: bool = True
    # The nice value of batch-only clusters: 19 gives them ~1.5% of a core contested by normal work.
    batch_nice: int = 19
    # A cluster whose batch work ended this recently still counts as batch-only while idle: a
    # pipeline sends its next query at once, and flipping priorities for that gap helps nobody.
    batch_linger_s: float = 10.0


@dataclass(frozen=True, slots=True)
class CpuShare:
    cpus: tuple[int, ...]
    nice: int
    reason: str


def plan_cpu_shares(
    clusters: Iterable[ClusterView], now: float, settings: CpuShareSettings = CpuShareSettings()
) -> dict[str, CpuShare]:
    """The CPU set and nice value each ready cluster (with a CPU set) should have now."""
    live = sorted((c for c in clusters if c.cpus and c.state in _RUNNING), key=lambda c: c.id)
    if not settings.enabled:
        return {c.id: CpuShare(c.cpus, NORMAL_NICE, "its own CPUs (CPU sharing is off)") for c in live}
    roles = {c.id: _role(c, now, settings) for c in live}
    every_cpu = _union(c.cpus for c in live)
    batch_cpus = _union(c.cpus for c in live if roles[c.id] == "batch")
    shares: dict[str, CpuShare] = {}
    for cluster in live:
        role = roles[cluster.id]
        if role == "batch":
            shares[cluster.id] = CpuShare(
                every_cpu, settings.batch_nice,
                f"runs only batch work: every pool CPU at nice {settings.batch_nice}, after all other work")
        elif role == "interactive" and not set(batch_cpus) <= set(cluster.cpus):
            shares[cluster.id] = CpuShare(
                _union((cluster.cpus, batch_cpus)), NORMAL_NICE,
                "runs interactive work: its own CPUs and the batch clusters', ahead of their batch work")
        else:
            shares[cluster.id] = CpuShare(cluster.cpus, NORMAL_NICE, f"{role}: its own CPUs")
    return shares


def _role(cluster: ClusterView, now: float, settings: CpuShareSettings) -> str:
    profiles = {w.profile for w in cluster.work}
    if Profile.INTERACTIVE in profiles:
        return "interactive"
    if Profile.BATCH in profiles:
        return "batch"
    lingering = cluster.batch_ended_within(now, settings.batch_linger_s)
    return "batch" if lingering else "idle"


def _union(cpu_sets: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(sorted({cpu for cpus in cpu_sets for cpu in cpus}))
