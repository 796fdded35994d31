"""policy/placement.py: basic guarantees of the pure placement function (see test_placement_isolation.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.fleet.model import ClusterState, ClusterView, FleetSnapshot, SizeClass
from sparkfleet.policy.placement import PlacementRequest, RunOn, WaitForCapacity, place_query

SIZES = (SizeClass("S", 1, 1024), SizeClass("M", 2, 2048), SizeClass("L", 4, 4096), SizeClass("XL", 8, 8192))


def cluster(
    cid: str, state: ClusterState = ClusterState.READY, running: int = 0, sessions: int = 0, size: int = 1
) -> ClusterView:
    return ClusterView(cid, SIZES[size], "spark-4.1", state, running, sessions)


@st.composite
def fleets(draw: st.DrawFn) -> FleetSnapshot:
    ids = [f"c-{n:x}" for n in draw(st.lists(st.integers(0, 0xFFFF), unique=True, max_size=8))]
    return FleetSnapshot(
        tuple(
            ClusterView(
                id=cid,
                size=draw(st.sampled_from(SIZES)),
                runtime=draw(st.sampled_from(["spark-4.1", "spark-4.0"])),
                state=draw(st.sampled_from(ClusterState)),
                running_queries=draw(st.integers(0, 40)),
                sessions=draw(st.integers(0, 40)),
            )
            for cid in ids
        )
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[PlacementRequest, FleetSnapshot]:
    fleet = draw(fleets())
    home = draw(st.one_of(st.none(), st.just("c-gone"), st.sampled_from([c.id for c in fleet.clusters] or [None])))
    return PlacementRequest(session_id="s-1", home_cluster_id=home), fleet


@given(cases())
def test_runs_on_a_ready_cluster_whenever_one_exists(case: tuple[PlacementRequest, FleetSnapshot]) -> None:
    request, fleet = case
    decision = place_query(request, fleet)
    ready = {c.id for c in fleet.clusters if c.state is ClusterState.READY}
    if ready:
        assert isinstance(decision, RunOn)
        assert decision.cluster_id in ready
        assert decision.cluster_id in decision.reason
    else:
        assert isinstance(decision, WaitForCapacity)
    assert isinstance(decision.reason, str) and decision.reason.strip()


def test_an_empty_fleet_waits() -> None:
    assert place_query(PlacementRequest("s", None), FleetSnapshot()) == WaitForCapacity("no cluster is ready")


def test_only_non_ready_clusters_means_waiting_even_for_the_home_cluster() -> None:
    fleet = FleetSnapshot(tuple(cluster(f"c-{s.value}", s) for s in ClusterState if s is not ClusterState.READY))
    decision = place_query(PlacementRequest("s", "c-draining"), fleet)
    assert isinstance(decision, WaitForCapacity)


def test_alternate_strategy_moves_round_robin_over_ready_clusters():
    from sparkfleet.fleet.model import ClusterState, ClusterView, FleetSnapshot, SizeClass
    from sparkfleet.policy.placement import PlacementRequest, RunOn, place_query

    size = SizeClass("S", 1, 1024)
    fleet = FleetSnapshot(
        tuple(
            ClusterView(cid, size, "4.3.0", state, 0, 0)
            for cid, state in [("a", ClusterState.READY), ("b", ClusterState.STARTING), ("c", ClusterState.READY)]
        )
    )
    visited = []
    home = None
    for _ in range(4):
        decision = place_query(PlacementRequest("s", home, "alternate"), fleet)
        assert isinstance(decision, RunOn) and "alternate" in decision.reason
        visited.append(decision.cluster_id)
        home = decision.cluster_id
    assert visited == ["a", "c", "a", "c"]


@given(cases(), st.data())
def test_a_cluster_the_caller_saw_die_is_never_chosen(case: tuple[PlacementRequest, FleetSnapshot], data) -> None:
    request, fleet = case
    ids = [c.id for c in fleet.clusters]
    avoid = frozenset(data.draw(st.lists(st.sampled_from(ids), unique=True)) if ids else [])
    for strategy in ("workload", "session-affinity", "alternate"):
        pinned = next(iter(avoid), None)
        asked = PlacementRequest("s-1", request.home_cluster_id, strategy, pinned, "a checkpoint", avoid)
        decision = place_query(asked, fleet)
        usable = {c.id for c in fleet.clusters if c.state is ClusterState.READY} - avoid
        if usable:
            assert isinstance(decision, RunOn) and decision.cluster_id in usable
        else:
            assert isinstance(decision, WaitForCapacity)
