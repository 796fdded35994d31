"""Pure CPU-sharing policy: how each local cluster competes for the machine's CPUs.

Every cluster may run on every CPU of the pool; what differs is how it competes when CPUs are
contested (carried out by the kernel's control groups, ``fleet/cgroups.py``):

- **interactive work, or idle**: a weight of its cores (``cpu.shares`` 1024 per core). Under
  contention each cluster gets its cores' share of the machine; idle CPUs go to whoever wants
  them, so a 1-core cluster's JIT, GC and second task run on a core nobody else uses, as on a
  plain Spark server.
- **batch only** (batch work running, or its pipeline between two queries): the idle class
  (``cpu.idle``). It soaks up every CPU nobody else uses; any other cluster's work, the gateway
  and the clients come first, preempted by the kernel within its wakeup granularity.

When sharing is off (the session-affinity baseline) every cluster keeps the weight of its cores.
No I/O, no clock: the live fleet and the simulator call the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sparkfleet.fleet.model import ClusterState, ClusterView, Profile

SHARES_PER_CORE = 1024
_RUNNING = frozenset({ClusterState.READY, ClusterState.DRAINING})  # their JVMs run queries


@dataclass(frozen=True, slots=True)
class CpuShareSettings:
    enabled: bool = True
    # A cluster whose batch work ended this recently still counts as batch-only while idle: a
    # pipeline sends its next query at once, and flipping classes for that gap helps nobody.
    batch_linger_s: float = 10.0


@dataclass(frozen=True, slots=True)
class CpuShare:
    shares: int  # weight under contention, 1024 per core
    idle: bool  # runs only on CPU time nothing else wants
    reason: str


def plan_cpu_shares(
    clusters: Iterable[ClusterView], now: float, settings: CpuShareSettings = CpuShareSettings()
) -> dict[str, CpuShare]:
    """How each running cluster should compete for CPU time now."""
    shares: dict[str, CpuShare] = {}
    for cluster in clusters:
        if cluster.state not in _RUNNING:
            continue
        weight = cluster.size.cores * SHARES_PER_CORE
        own = f"the weight of its {cluster.size.cores} core(s)"
        if not settings.enabled:
            shares[cluster.id] = CpuShare(weight, False, f"{own} (CPU sharing is off)")
            continue
        role = _role(cluster, now, settings)
        if role == "batch":
            shares[cluster.id] = CpuShare(weight, True, "runs only batch work: every CPU nobody else wants")
        else:
            shares[cluster.id] = CpuShare(weight, False, f"{role}: {own}, idle CPUs of the pool besides")
    return shares


def _role(cluster: ClusterView, now: float, settings: CpuShareSettings) -> str:
    profiles = {w.profile for w in cluster.work}
    if Profile.INTERACTIVE in profiles:
        return "interactive"
    if Profile.BATCH in profiles:
        return "batch"
    lingering = cluster.batch_ended_within(now, settings.batch_linger_s)
    return "batch" if lingering else "idle"
