"""Pure placement policy: (query, fleet snapshot, now) -> run on a cluster, queue, or wait, with a reason.

Three signals decide: the query's expected cost (``Estimate``), its latency profile (interactive or
batch) and what each cluster is doing (the work the gateway placed there, and Spark's own reading
of itself when it is fresh). Rules, in order:

0. A tenant at its max_concurrent_queries waits, whatever the fleet (``policy/tenancy.py``).
1. A pin wins: state the query needs lives on one cluster only.
2. Tenant quotas: no cluster larger than the tenant's max_size_class, none that would take it
   past its max_cores. Isolation: batch work never takes the clusters reserved for interactive
   work (by default one cluster stays free of batch work whenever the pool has two or more), and
   each cluster admits work only within its memory budget and its concurrency limits.
3. Among clusters that admit the query, interactive work goes where no batch work runs and the
   fewest interactive queries share a core, avoiding clusters whose every core runs another
   tenant's query; batch work goes where no interactive work runs and the least work runs. The
   session's home cluster wins ties (its state is there already). Packed (Standard mode: least compute),
   interactive work goes to the busiest cluster that still has a free core, and to the most
   recently used of idle ones, so the others go idle and are stopped.
4. Nothing admits it: queue (re-evaluated whenever the fleet changes). No ready cluster at all:
   wait for capacity.

No I/O, no clock, no global state: the live gateway and the simulator call the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkfleet.fleet.model import ClusterView, FleetSnapshot, Profile, RunningWork
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.tenancy import (
    UNLIMITED,
    TenantLimits,
    TenantUsage,
    concurrency_refusal,
    cores_refusal,
    quota_blocks_new_capacity,
    size_refusal,
    usage_of,
)

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    # Ready clusters kept free of batch work while the pool has more clusters than this.
    interactive_reserve_clusters: int = 1
    # Concurrent batch queries per cluster: one keeps every core busy; a second only time-shares.
    batch_per_cluster: int = 1
    # Concurrent interactive queries per core before a cluster counts as full.
    interactive_per_core: int = 4
    # Share of a cluster's heap its queries' estimated execution memory may add up to.
    memory_fraction: float = 0.6
    # A load reading older than this is unknown, not idle.
    stale_after_s: float = 5.0
    # Seconds after batch work ended on a cluster during which interactive work still avoids it: a
    # pipeline sends its next query at once, and would land beside the interactive work.
    batch_linger_s: float = 10.0
    # A cluster whose fresh reading shows this share of its heap in use is avoided when others can
    # take the query (heap in use includes garbage not yet collected: a preference, not a refusal).
    heap_pressure_fraction: float = 0.85


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    session_id: str
    # The cluster the session already lives on, if any: staying there avoids rebuilding its state.
    home_cluster_id: str | None
    # "workload" (default) decides by estimate, profile and load; "session-affinity" keeps each
    # session on one cluster, new sessions going to the cluster with the fewest (a plain proxy's
    # round robin, for comparison); "alternate" (tests) moves every request on, round robin, to
    # prove any query of a session can run on any cluster.
    strategy: str = "workload"
    # A cluster holding state this request needs that cannot be replayed elsewhere (a checkpointed
    # DataFrame, cached data, a streaming query, a global temp view), and what that state is.
    pinned_cluster_id: str | None = None
    pin_reason: str = ""
    # Clusters the caller saw die that the fleet may not have marked lost yet (a retry after a
    # cluster loss races the controller's own watch): never chosen.
    avoid: frozenset[str] = frozenset()
    profile: Profile = Profile.INTERACTIVE
    profile_reason: str = ""
    # None: nothing known about the query's cost (treated as small interactive work).
    estimate: Estimate | None = None
    # Config, AnalyzePlan, ArtifactStatus: no job runs, so no admission limit applies, and the
    # session's home cluster (where its state is) answers while it is ready.
    metadata_only: bool = False
    # Only clusters with more memory than this: the query ran a cluster this size out of memory.
    min_memory_mb: int = 0
    # Fill busy clusters before idle ones (Standard mode), instead of spreading work out.
    pack: bool = False
    # Only clusters of this runtime (policy/versions.py); "": any.
    runtime: str = ""
    # Who sent it and what that tenant may use (policy/tenancy.py): its queries running at once,
    # the cores of the clusters running them, the largest size class. Pins and calls that run no
    # job are not limited.
    tenant: str = ""
    tenant_limits: TenantLimits = UNLIMITED


@dataclass(frozen=True, slots=True)
class RunOn:
    cluster_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Queue:
    """Ready clusters exist but none admits the query now; it waits for the fleet to change."""

    reason: str
    # The tenant's quota alone holds it back: another cluster would not help (the autoscaler
    # leaves it out of its demand).
    quota_bound: bool = False


@dataclass(frozen=True, slots=True)
class WaitForCapacity:
    """No cluster is ready at all (starting up, or every cluster lost)."""

    reason: str


PlacementDecision = RunOn | Queue | WaitForCapacity


def place_query(
    request: PlacementRequest, fleet: FleetSnapshot, now: float = 0.0, settings: PlacementSettings = PlacementSettings()
) -> PlacementDecision:
    """Where ``request`` runs now, or why it waits. ``now`` is monotonic seconds, as in the snapshot.

    A pin whose cluster is not ready is not honoured here: the caller decides whether the pinned
    state was essential (then it reports the loss) or only an optimisation.
    """
    usage = None
    if not request.metadata_only and request.tenant_limits != UNLIMITED:
        usage = usage_of(request.tenant, fleet)
        held = concurrency_refusal(request.tenant, request.tenant_limits, usage)
        if held is not None:
            return Queue(f"{_describe_query(request)}; queued: {held}", quota_bound=True)
    ready = sorted((c for c in fleet.ready() if c.id not in request.avoid), key=lambda c: c.id)
    if request.pinned_cluster_id is not None:
        for cluster in ready:
            if cluster.id == request.pinned_cluster_id:
                return RunOn(cluster.id, f"pinned to {cluster.id}: it holds {request.pin_reason}")
    if request.runtime:  # the workload's runtime (policy/versions.py); only its clusters will do
        ready = [c for c in ready if c.runtime == request.runtime]
        if not ready:
            return WaitForCapacity(f"no cluster of runtime {request.runtime} is ready")
    if request.strategy == "alternate" and ready:
        ids = [c.id for c in ready]
        after = (ids.index(request.home_cluster_id) + 1) % len(ids) if request.home_cluster_id in ids else 0
        chosen = ready[after]
        return RunOn(chosen.id, f"alternate placement (test setting): {chosen.id} follows {request.home_cluster_id}")
    if not ready:
        return WaitForCapacity("no cluster is ready")
    if request.strategy == "session-affinity":
        for cluster in ready:
            if cluster.id == request.home_cluster_id:
                return RunOn(cluster.id, f"session affinity: the session's cluster {cluster.id}")
        best = min(ready, key=lambda c: (c.sessions, c.id))
        return RunOn(best.id, f"session affinity: new session to {best.id}, which has the fewest sessions")
    if request.metadata_only:
        for cluster in ready:
            if cluster.id == request.home_cluster_id:
                return RunOn(cluster.id, f"session's home cluster {cluster.id} is ready")
        best = min(ready, key=lambda c: _interactive_key(c, request, now, settings))
        return RunOn(best.id, f"no call runs a job; {_describe_choice(best, request, now, settings)}")
    what = _describe_query(request)
    admitted: list[ClusterView] = []
    refusals: list[str] = []
    for cluster in ready:
        refusal = _tenant_refusal(request, usage, cluster) or _refusal(request, cluster, ready, now, settings)
        if refusal is None:
            admitted.append(cluster)
        else:
            refusals.append(f"{cluster.id} {refusal}")
    if not admitted:
        bound = usage is not None and quota_blocks_new_capacity(request.tenant_limits, usage)
        return Queue(f"{what}; queued: " + "; ".join(refusals), quota_bound=bound)
    key = _interactive_key if request.profile is Profile.INTERACTIVE else _batch_key
    best = min(admitted, key=lambda c: key(c, request, now, settings))
    return RunOn(best.id, f"{what}; {_describe_choice(best, request, now, settings)}")


# ---- admission ----------------------------------------------------------------------------------


def _memory_of(request: PlacementRequest) -> int:
    return request.estimate.memory_bytes if request.estimate is not None else 0


def _budget(cluster: ClusterView, settings: PlacementSettings) -> int:
    return int(cluster.size.memory_mb * _MB * settings.memory_fraction)


def _batch_work(cluster: ClusterView) -> list[RunningWork]:
    return [w for w in cluster.work if w.profile is Profile.BATCH]


def _interactive_count(cluster: ClusterView) -> int:
    return sum(1 for w in cluster.work if w.profile is Profile.INTERACTIVE)


def _memory_in_use(cluster: ClusterView, now: float, settings: PlacementSettings) -> int:
    """What the work placed there is expected to hold, or what Spark says it holds, if more."""
    expected = sum(w.memory_bytes for w in cluster.work)
    load = _fresh_load(cluster, now, settings)
    if cluster.work and load is not None and load.memory_in_use_bytes is not None:
        return max(expected, load.memory_in_use_bytes)
    return expected


def _tenant_refusal(request: PlacementRequest, usage: TenantUsage | None, cluster: ClusterView) -> str | None:
    """Why the tenant's quotas keep the query off ``cluster`` (too large, too many cores), or None."""
    if usage is None:
        return None
    limits = request.tenant_limits
    return size_refusal(request.tenant, limits, cluster) or cores_refusal(request.tenant, limits, usage, cluster)


def _refusal(
    request: PlacementRequest, cluster: ClusterView, ready: list[ClusterView], now: float, settings: PlacementSettings
) -> str | None:
    """Why ``cluster`` cannot take the query now, or None if it can."""
    if request.min_memory_mb and cluster.size.memory_mb <= request.min_memory_mb:
        return (f"is too small ({cluster.size.name}, {cluster.size.memory_mb} MB): the query ran a "
                f"{request.min_memory_mb} MB cluster out of memory")
    memory = _memory_of(request)
    in_use = _memory_in_use(cluster, now, settings)
    budget = _budget(cluster, settings)
    # A query bigger than the whole budget still runs on an otherwise empty cluster: refusing it
    # everywhere would queue it forever (a larger size class is the autoscaler's business).
    if memory and in_use + memory > budget and cluster.work:
        if in_use >= budget:
            return f"has no memory budget left (~{_mb(in_use)} in use, budget {_mb(budget)})"
        return f"has {_mb(budget - in_use)} of its {_mb(budget)} memory budget free, the query needs ~{_mb(memory)}"
    if request.profile is Profile.BATCH:
        batch = _batch_work(cluster)
        if len(batch) >= settings.batch_per_cluster:
            return f"runs {len(batch)} batch quer{'y' if len(batch) == 1 else 'ies'} already"
        reserve = min(settings.interactive_reserve_clusters, len(ready) - 1)
        free_of_batch = [c for c in ready if c.id != cluster.id and not _batch_work(c)]
        if not batch and len(free_of_batch) < reserve:
            return "is kept for interactive work"
        return None
    if _interactive_count(cluster) >= cluster.size.cores * settings.interactive_per_core:
        return f"runs {_interactive_count(cluster)} interactive queries on {cluster.size.cores} core(s)"
    return None


# ---- preference ---------------------------------------------------------------------------------


def _fresh_load(cluster: ClusterView, now: float, settings: PlacementSettings):  # type: ignore[no-untyped-def]
    """The cluster's load reading if it still says what runs there: not taken before work last
    ended there (it would count the tasks of a query that is over, and a pipeline sends its next
    query well within one polling interval), and not stale while anything runs there. An idle
    reading of a cluster with no work placed and none ended since stays true however old (idle
    clusters are not read again until something changes there)."""
    load = cluster.load
    if load is None:
        return None
    if cluster.work_ended_at is not None and load.observed_at < cluster.work_ended_at:
        return None
    if (cluster.work or load.active_tasks) and now - load.observed_at > settings.stale_after_s:
        return None
    return load


def _busy_slots(cluster: ClusterView, now: float, settings: PlacementSettings) -> tuple[int, int]:
    """(0 known idle | 1 unknown | 2 known busy, active tasks) from a fresh reading only."""
    load = _fresh_load(cluster, now, settings)
    if load is None:
        return 1, 0
    return (2 if load.active_tasks >= load.task_slots else 0), load.active_tasks


def _heap_pressed(cluster: ClusterView, now: float, settings: PlacementSettings) -> bool:
    """A fresh reading shows the JVM heap nearly full: new work there risks GC stalls or OOM."""
    load = _fresh_load(cluster, now, settings)
    if load is None or not load.heap_used_bytes or not load.heap_max_bytes:
        return False
    return load.heap_used_bytes / load.heap_max_bytes >= settings.heap_pressure_fraction


def _interactive_key(cluster: ClusterView, request: PlacementRequest, now: float, settings: PlacementSettings):  # type: ignore[no-untyped-def]
    busy, active = _busy_slots(cluster, now, settings)
    lingering = cluster.batch_ended_within(now, settings.batch_linger_s)
    if request.pack:
        # Least compute: the busiest cluster with a free core, then the most recently used.
        return (
            len(_batch_work(cluster)) > 0 or lingering,
            _heap_pressed(cluster, now, settings),
            _others_per_core(cluster, request) >= 1,
            busy == 2,
            _interactive_count(cluster) / cluster.size.cores >= 1,
            _others_per_core(cluster, request),
            -_interactive_count(cluster),
            -_last_used(cluster, now),
            cluster.id != request.home_cluster_id,
            cluster.id,
        )
    return (
        len(_batch_work(cluster)) > 0 or lingering,  # never share cores with batch work when avoidable
        _heap_pressed(cluster, now, settings),
        # Every core runs another tenant's query: its load is not this tenant's to share, even
        # when this tenant's own cluster reads busy (a reading there may be stale or unknown).
        _others_per_core(cluster, request) >= 1,
        busy == 2,
        _interactive_count(cluster) / cluster.size.cores >= 1,  # every core already has a query
        _others_per_core(cluster, request),  # another tenant's flood is not this tenant's neighbour
        cluster.id != request.home_cluster_id,
        _interactive_count(cluster) / cluster.size.cores,
        busy,
        active,
        cluster.id,
    )


def _others_per_core(cluster: ClusterView, request: PlacementRequest) -> float:
    """Queries of other tenants per core: a tenant's work keeps to its own clusters when it can."""
    return sum(1 for w in cluster.work if w.tenant != request.tenant) / cluster.size.cores


def _last_used(cluster: ClusterView, now: float) -> float:
    if cluster.work:
        return now
    return cluster.work_ended_at if cluster.work_ended_at is not None else float("-inf")


def _batch_key(cluster: ClusterView, request: PlacementRequest, now: float, settings: PlacementSettings):  # type: ignore[no-untyped-def]
    busy, active = _busy_slots(cluster, now, settings)
    work = sum(w.core_seconds for w in cluster.work) / cluster.size.cores
    return (len(_batch_work(cluster)), _heap_pressed(cluster, now, settings), _interactive_count(cluster) > 0,
            busy == 2, -cluster.size.cores, work, cluster.id != request.home_cluster_id, busy, active, cluster.id)


# ---- reasons ------------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / _MB:,.0f} MB"


def _describe_query(request: PlacementRequest) -> str:
    profile = request.profile.value
    if request.profile_reason:
        profile += f" ({request.profile_reason})"
    if request.estimate is None:
        return f"{profile}, no estimate"
    return f"{profile}, est {request.estimate.describe()}"


def _describe_choice(cluster: ClusterView, request: PlacementRequest, now: float, settings: PlacementSettings) -> str:
    parts = []
    load = _fresh_load(cluster, now, settings)
    if load is not None:
        free = max(load.task_slots - load.active_tasks, 0)
        parts.append(f"{free} of {load.task_slots} task slot(s) free")
        if load.heap_used_bytes and load.heap_max_bytes:
            parts.append(f"heap {load.heap_used_bytes / load.heap_max_bytes:.0%} used")
    else:
        parts.append("load reading unknown")
    batch = len(_batch_work(cluster))
    parts.append(f"{batch} batch and {_interactive_count(cluster)} interactive quer{'y' if len(cluster.work) == 1 else 'ies'} running")
    home = " (session's home)" if cluster.id == request.home_cluster_id else ""
    return f"cluster {cluster.id}{home}: " + ", ".join(parts)
