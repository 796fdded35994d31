"""policy/scaling.py over synthetic fleets: budget, vertical and horizontal scaling, scale-in, modes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.fleet.model import ClusterState, ClusterView, Profile, RunningWork, SizeClass
from sparkfleet.policy.scaling import (
    Budget,
    ClusterFacts,
    Demand,
    DrainCluster,
    Mode,
    ScalingSettings,
    StartCluster,
    StopCluster,
    plan_scaling,
)

MB = 1024 * 1024
SIZES = (SizeClass("S", 1, 1024), SizeClass("M", 2, 2048), SizeClass("L", 4, 4096))
BY_NAME = {s.name: s for s in SIZES}
BUDGET = Budget(cores=8, memory_mb=8192)
NOW = 10_000.0
SETTINGS = ScalingSettings()


def cluster(cid: str, size: str = "S", state: ClusterState = ClusterState.READY, busy: bool = False,
            idle_for: float = 0.0, age: float = 3600.0, holds_state: bool = False,
            runtime: str = "4.3.0") -> ClusterFacts:
    work = (RunningWork(f"q-{cid}", Profile.BATCH, 10.0, 0, NOW - 1),) if busy else ()
    view = ClusterView(cid, BY_NAME[size], runtime, state, len(work), 0, work)
    return ClusterFacts(view, started_at=NOW - age, idle_since=None if busy else NOW - idle_for, holds_state=holds_state)


def waiting(qid: str, memory_mb: int = 0, waited: float = 10.0) -> Demand:
    return Demand(qid, memory_mb * MB, waited)


def plan(clusters, demand=(), mode=Mode.STANDARD, budget=BUDGET):  # type: ignore[no-untyped-def]
    return plan_scaling(clusters, demand, SIZES, budget, mode, NOW, SETTINGS)


# ---- properties --------------------------------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> list[ClusterFacts]:
    result = []
    for n in range(draw(st.integers(0, 5))):
        result.append(cluster(
            f"c{n}", draw(st.sampled_from(list(BY_NAME))),
            draw(st.sampled_from([ClusterState.READY, ClusterState.READY, ClusterState.STARTING,
                                  ClusterState.DRAINING, ClusterState.LOST])),
            busy=draw(st.booleans()), idle_for=draw(st.floats(0, 2000)), age=draw(st.floats(0, 4000)),
            holds_state=draw(st.booleans()),
        ))
    return result


demands = st.lists(st.builds(lambda i, m, w: waiting(f"q{i}", m, w), st.integers(0, 99), st.integers(0, 5000),
                             st.floats(0, 100)), max_size=4)


@given(fleets(), demands, st.sampled_from(Mode))
def test_never_over_budget_never_stops_busy_young_or_stateful_clusters(clusters, demand, mode) -> None:
    live = [c for c in clusters if c.view.state in (ClusterState.STARTING, ClusterState.READY, ClusterState.DRAINING)]
    actions = plan(clusters, demand, mode)
    stopped = {a.cluster_id for a in actions if isinstance(a, StopCluster)}
    started = [BY_NAME[a.size] for a in actions if isinstance(a, StartCluster)]
    after = [c.view.size for c in live if c.view.id not in stopped] + started
    before_cores = sum(c.view.size.cores for c in live)
    before_mb = sum(c.view.size.memory_mb for c in live)
    if started:  # starting never takes the fleet over the budget (it may already be, by config)
        assert sum(s.cores for s in after) <= max(BUDGET.cores, before_cores)
        assert sum(s.memory_mb for s in after) <= max(BUDGET.memory_mb, before_mb)
    by_id = {c.view.id: c for c in clusters}
    for cid in stopped:
        c = by_id[cid]
        assert not c.view.work and not c.holds_state
        if c.view.state is ClusterState.READY and "to make room" not in next(
                a.reason for a in actions if isinstance(a, StopCluster) and a.cluster_id == cid):
            assert NOW - c.started_at >= SETTINGS.min_lifetime_s
    assert len(stopped) == sum(isinstance(a, StopCluster) for a in actions)  # one action per cluster
    assert plan(clusters, demand, mode) == actions  # deterministic
    for a in actions:
        assert a.reason


# ---- examples ---------------------------------------------------------------------------------------


def test_a_query_bigger_than_every_cluster_gets_a_larger_size() -> None:
    actions = plan([cluster("s1", busy=True)], [waiting("big", memory_mb=1500, waited=0.1)])
    assert actions == [StartCluster("L", actions[0].reason, warm_up=False)]  # M holds ~1229 MB, L ~2458 MB
    assert "query big needs ~1,500 MB" in actions[0].reason


def test_waiting_queries_scale_out_after_the_modes_delay_and_not_twice() -> None:
    busy = [cluster("s1", busy=True)]
    assert plan(busy, [waiting("q", waited=1.0)], Mode.STANDARD) == []  # standard waits 5 s
    assert isinstance(plan(busy, [waiting("q", waited=1.0)], Mode.PERFORMANCE)[0], StartCluster)
    [start] = plan(busy, [waiting("q", waited=6.0), waiting("r", waited=5.5)], Mode.STANDARD)
    assert start.size == "S" and "2 queries waiting, the oldest 6.0s" in start.reason
    # With no cluster at all (scaled to zero), the first query does not wait for the delay.
    [cold] = plan([], [waiting("q", waited=0.0)], Mode.STANDARD)
    assert cold.size == "S" and "no cluster is running" in cold.reason
    # One cluster for them all, of the size the neediest requires (not one per query).
    [cold] = plan([], [waiting("q", memory_mb=8, waited=1.0), waiting("big", memory_mb=1500, waited=0.5)])
    assert cold.size == "L" and "2 queries waiting" in cold.reason
    # The last cluster was lost to an out-of-memory query, with a victim: the larger size for both.
    lost = [waiting("victim", waited=2.0), Demand("culprit", 0, waited_s=1.0, floor_mb=1024)]
    [larger] = plan([], lost)
    assert larger.size == "M" and larger.reason.startswith("query culprit ran a 1,024 MB cluster out of memory")
    # A cluster that can take it is already starting: no second one.
    assert plan(busy + [cluster("s2", state=ClusterState.STARTING)], [waiting("q", waited=60)]) == []


def test_standard_scales_to_zero_after_sustained_idleness_only() -> None:
    assert plan([cluster("s1", idle_for=30)]) == []
    [stop] = plan([cluster("s1", idle_for=61)])
    assert stop == StopCluster("s1", stop.reason) and "idle for 61s" in stop.reason
    assert plan([cluster("s1", idle_for=600, age=10)]) == []  # younger than its minimum lifetime


def test_performance_keeps_a_warm_idle_cluster_and_starts_one_when_there_is_none() -> None:
    assert plan([cluster("s1", idle_for=5000)], mode=Mode.PERFORMANCE) == []
    [start] = plan([cluster("s1", busy=True)], mode=Mode.PERFORMANCE)
    assert start.size == "S" and "keeps 1 idle S cluster(s) warm" in start.reason
    # A second idle cluster beyond the warm one goes after the (longer) performance idle time.
    two = [cluster("s1", idle_for=700), cluster("s2", idle_for=650)]
    assert [type(a) for a in plan(two, mode=Mode.PERFORMANCE)] == [StopCluster]


def test_a_cluster_with_session_state_is_drained_then_stopped_when_released() -> None:
    [drain] = plan([cluster("s1", idle_for=120, holds_state=True)])
    assert isinstance(drain, DrainCluster) and "holds session state" in drain.reason
    assert plan([cluster("s1", state=ClusterState.DRAINING, holds_state=True)]) == []
    [stop] = plan([cluster("s1", state=ClusterState.DRAINING)])
    assert isinstance(stop, StopCluster) and "drained" in stop.reason


def test_idle_clusters_make_room_for_a_needed_larger_one_within_the_budget() -> None:
    small_budget = Budget(cores=3, memory_mb=3072)
    fleet = [cluster("s1", busy=True), cluster("s2", idle_for=1, age=100)]
    actions = plan(fleet, [waiting("big", memory_mb=1100, waited=0.1)], budget=small_budget)
    assert [type(a) for a in actions] == [StopCluster, StartCluster]
    assert actions[0].cluster_id == "s2" and actions[1].size == "M"
    # A cluster younger than its minimum lifetime (a warm one just started) gives way too.
    young = [cluster("s1", busy=True), cluster("s2", idle_for=1, age=2)]
    assert [type(a) for a in plan(young, [waiting("big", memory_mb=1100, waited=0.1)], budget=small_budget)] == [
        StopCluster, StartCluster]
    # An idle cluster as large as the one needed is about to take the work: it is not stopped.
    ready_m = [cluster("s1", busy=True), cluster("m1", size="M", idle_for=0, age=1)]
    assert plan(ready_m, [Demand("big", 0, waited_s=60, floor_mb=1024)], budget=small_budget) == []
    # Warm capacity never stops a cluster to make room for itself.
    assert plan([cluster("m1", size="M", busy=True), cluster("m2", size="M", idle_for=5, age=5)],
                mode=Mode.PERFORMANCE, budget=Budget(cores=4, memory_mb=4096)) == []
    # With the idle one busy too there is no room: nothing is started.
    busy = [cluster("s1", busy=True), cluster("s2", busy=True)]
    assert plan(busy, [waiting("big", memory_mb=1100, waited=0.1)], budget=small_budget) == []


def test_a_query_that_ran_a_size_out_of_memory_gets_the_next_larger_one() -> None:
    lost_on_s = Demand("q", 0, waited_s=0.1, floor_mb=1024)
    [start] = plan([cluster("s2")], [lost_on_s])
    assert start == StartCluster("M", "query q ran a 1,024 MB cluster out of memory", warm_up=False)
    # An M on the way is enough; one that failed at M gets an L.
    assert plan([cluster("s2"), cluster("m1", "M", ClusterState.STARTING)], [lost_on_s]) == []
    [start] = plan([cluster("m1", "M")], [Demand("q", 0, waited_s=0.1, floor_mb=2048)])
    assert start.size == "L"


def test_a_sessions_mode_sets_how_soon_its_waiting_query_scales_out() -> None:
    busy = [cluster("s1", busy=True)]
    impatient = Demand("q", 0, waited_s=1.0, mode=Mode.PERFORMANCE)
    [start] = plan(busy, [impatient], Mode.STANDARD)  # the fleet is Standard; the session is not
    assert "performance mode scales out after 0.5s" in start.reason
    patient = Demand("q", 0, waited_s=1.0, mode=Mode.STANDARD)
    assert plan(busy, [patient], Mode.PERFORMANCE) == [StartCluster("S", plan(busy, [], Mode.PERFORMANCE)[0].reason)]


def test_only_capacity_started_ahead_of_demand_is_warmed_up() -> None:
    # A waiting query would wait for the warm-up too (it takes longer than a cold first query
    # costs); a cluster kept warm for bursts has the time.
    [for_the_waiting, warm] = plan([cluster("s1", busy=True)], [waiting("q", waited=1.0)], Mode.PERFORMANCE)
    assert "waiting" in for_the_waiting.reason and not for_the_waiting.warm_up
    assert "warm for bursts" in warm.reason and warm.warm_up
    [from_zero] = plan([], [waiting("q", waited=0.0)], Mode.STANDARD)
    assert not from_zero.warm_up


def test_a_query_that_must_run_on_another_runtime_gets_a_cluster_of_that_runtime() -> None:
    idle_new = [cluster("s1", idle_for=1.0)]
    old_only = Demand("q", 0, waited_s=0.0, runtime="4.2.1")
    # No 4.2.1 cluster at all: one starts at once, whatever idle 4.3.0 capacity there is.
    [start] = plan_scaling(idle_new, [old_only], SIZES, BUDGET, Mode.PERFORMANCE, NOW, SETTINGS, general_runtime="4.3.0")
    assert (start.size, start.runtime, start.warm_up) == ("S", "4.2.1", False)
    assert "no 4.2.1 cluster is running" in start.reason
    # One is on its way: nothing more.
    on_the_way = idle_new + [cluster("s2", state=ClusterState.STARTING, runtime="4.2.1")]
    assert plan_scaling(on_the_way, [old_only], SIZES, BUDGET, Mode.PERFORMANCE, NOW, SETTINGS,
                        general_runtime="4.3.0") == []
    # Warm capacity is of the general runtime: an idle 4.2.1 cluster does not count as warm.
    [warm] = plan_scaling([cluster("s2", runtime="4.2.1", idle_for=1.0)], [], SIZES, BUDGET, Mode.PERFORMANCE, NOW,
                          SETTINGS, general_runtime="4.3.0")
    assert isinstance(warm, StartCluster) and warm.runtime == "" and "warm for bursts" in warm.reason


def test_parse_mode_names_the_allowed_values() -> None:
    import pytest

    from sparkfleet.policy.scaling import parse_mode

    assert parse_mode(" Standard ") is Mode.STANDARD
    with pytest.raises(ValueError, match=r"sparkfleet.mode must be standard\|performance, not 'cheap'"):
        parse_mode("cheap")
