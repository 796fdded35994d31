"""Pure placement policy: (request, fleet snapshot) -> a decision with its reason.

No I/O, no clock, no global state: the live gateway and the simulator call the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkfleet.fleet.model import ClusterView, FleetSnapshot


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    session_id: str
    # The cluster the session already lives on, if any: staying there avoids rebuilding its state.
    home_cluster_id: str | None
    # "sticky" (default) keeps a session home; "alternate" (tests) moves every request on, round
    # robin, to prove any query of a session can run on any cluster.
    strategy: str = "sticky"
    # A cluster holding state this request needs that cannot be replayed elsewhere (a checkpointed
    # DataFrame, cached data, a streaming query, a global temp view), and what that state is.
    pinned_cluster_id: str | None = None
    pin_reason: str = ""
    # Clusters the caller saw die that the fleet may not have marked lost yet (a retry after a
    # cluster loss races the controller's own watch): never chosen.
    avoid: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RunOn:
    cluster_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class WaitForCapacity:
    reason: str


PlacementDecision = RunOn | WaitForCapacity


def _load(cluster: ClusterView) -> tuple[float, int, str]:
    # Running queries per core first, then sessions, then id so that ties break deterministically.
    return (cluster.running_queries / cluster.size.cores, cluster.sessions, cluster.id)


def place_query(request: PlacementRequest, fleet: FleetSnapshot) -> PlacementDecision:
    """A pin wins; else keep a session on its home cluster while it takes queries; else least-loaded.

    A pin whose cluster is not ready is not honoured here: the caller decides whether the pinned
    state was essential (then it reports the loss) or only an optimisation.
    """
    ready = [cluster for cluster in fleet.ready() if cluster.id not in request.avoid]
    if request.pinned_cluster_id is not None:
        for cluster in ready:
            if cluster.id == request.pinned_cluster_id:
                return RunOn(cluster.id, f"pinned to {cluster.id}: it holds {request.pin_reason}")
    if request.strategy == "alternate" and ready:
        ordered = sorted(ready, key=lambda c: c.id)
        ids = [c.id for c in ordered]
        after = (ids.index(request.home_cluster_id) + 1) % len(ids) if request.home_cluster_id in ids else 0
        chosen = ordered[after]
        return RunOn(chosen.id, f"alternate placement (test setting): {chosen.id} follows {request.home_cluster_id}")
    for cluster in ready:
        if cluster.id == request.home_cluster_id:
            return RunOn(cluster.id, f"session's home cluster {cluster.id} is ready")
    if not ready:
        return WaitForCapacity("no cluster is ready")
    best = min(ready, key=_load)
    lead = (
        f"home cluster {request.home_cluster_id} is not ready; "
        if request.home_cluster_id
        else ""
    )
    return RunOn(
        best.id,
        f"{lead}least loaded: {best.id} runs {best.running_queries} "
        f"quer{'y' if best.running_queries == 1 else 'ies'} on {best.size.cores} core(s)",
    )
