"""policy/placement.py over synthetic fleets: profile, estimate, isolation, admission and staleness."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from sparkfleet.fleet.model import ClusterState, ClusterView, FleetSnapshot, LoadReading, Profile, RunningWork, SizeClass
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.placement import PlacementRequest, PlacementSettings, Queue, RunOn, WaitForCapacity, place_query

MB = 1024 * 1024
SIZES = (SizeClass("S", 1, 1024), SizeClass("M", 2, 2048), SizeClass("L", 4, 4096))
NOW = 1000.0
DEFAULTS = PlacementSettings()


def work(profile: Profile, core_s: float = 1.0, memory_mb: int = 0, n: int = 0) -> RunningWork:
    return RunningWork(f"q-{profile.value}-{n}", profile, core_s, memory_mb * MB, NOW - 1)


def view(cid: str, *items: RunningWork, size: int = 0, load: LoadReading | None = None,
         state: ClusterState = ClusterState.READY) -> ClusterView:
    return ClusterView(cid, SIZES[size], "4.3.0", state, len(items), 0, tuple(items), load)


def estimate(core_s: float, memory_mb: int = 0) -> Estimate:
    return Estimate(core_s, memory_mb * MB, 0, "static", "test")


def request(profile: Profile, est: Estimate | None = None, home: str | None = None) -> PlacementRequest:
    return PlacementRequest("s-1", home, profile=profile, estimate=est)


@st.composite
def running_work(draw: st.DrawFn) -> RunningWork:
    return RunningWork(
        f"q-{draw(st.integers(0, 10**6))}",
        draw(st.sampled_from(Profile)),
        draw(st.floats(0.01, 500)),
        draw(st.integers(0, 3000)) * MB,
        NOW - draw(st.floats(0, 100)),
    )


@st.composite
def loaded_fleets(draw: st.DrawFn) -> FleetSnapshot:
    ids = draw(st.lists(st.integers(0, 999), unique=True, min_size=0, max_size=6))
    clusters = []
    for n in ids:
        size = draw(st.sampled_from(SIZES))
        load = draw(st.one_of(st.none(), st.builds(
            LoadReading,
            observed_at=st.floats(NOW - 30, NOW),
            active_tasks=st.integers(0, 8),
            task_slots=st.just(size.cores),
        )))
        items = tuple(draw(st.lists(running_work(), max_size=5)))
        state = draw(st.sampled_from([ClusterState.READY] * 4 + list(ClusterState)))
        clusters.append(ClusterView(f"c-{n:03d}", size, "4.3.0", state, len(items), 0, items, load))
    return FleetSnapshot(tuple(clusters))


@st.composite
def requests(draw: st.DrawFn) -> PlacementRequest:
    est = draw(st.one_of(st.none(), st.builds(
        Estimate, core_seconds=st.floats(0, 1000), memory_bytes=st.integers(0, 4000).map(lambda m: m * MB),
        scan_bytes=st.just(0), source=st.just("static"), reason=st.just("test"),
    )))
    home = draw(st.one_of(st.none(), st.sampled_from([f"c-{n:03d}" for n in range(0, 999, 97)])))
    return PlacementRequest("s-1", home, profile=draw(st.sampled_from(Profile)), estimate=est, pack=draw(st.booleans()))


def _batch(c: ClusterView) -> int:
    return sum(1 for w in c.work if w.profile is Profile.BATCH)


def _admits_memory(c: ClusterView, req: PlacementRequest) -> bool:
    need = req.estimate.memory_bytes if req.estimate else 0
    budget = c.size.memory_mb * MB * DEFAULTS.memory_fraction
    # A query that needs no execution memory is never refused for memory.
    return not need or not c.work or sum(w.memory_bytes for w in c.work) + need <= budget


@settings(max_examples=300)
@given(requests(), loaded_fleets())
def test_every_decision_respects_isolation_and_admission(req: PlacementRequest, fleet: FleetSnapshot) -> None:
    decision = place_query(req, fleet, NOW)
    ready = fleet.ready()
    assert decision.reason.strip()
    if not ready:
        assert isinstance(decision, WaitForCapacity)
        return
    if isinstance(decision, Queue):
        # Queued only when truly nothing admits it, and the reason names every cluster.
        assert all(c.id in decision.reason for c in ready)
        return
    assert isinstance(decision, RunOn)
    chosen = next(c for c in ready if c.id == decision.cluster_id)
    assert _admits_memory(chosen, req)
    assert req.profile.value in decision.reason and chosen.id in decision.reason
    if req.profile is Profile.BATCH:
        assert _batch(chosen) < DEFAULTS.batch_per_cluster
        reserve = min(DEFAULTS.interactive_reserve_clusters, len(ready) - 1)
        free_after = [c for c in ready if c.id != chosen.id and not _batch(c)]
        assert len(free_after) >= reserve
    else:
        # Interactive work shares a cluster with batch work only when no batch-free cluster admits it.
        if _batch(chosen):
            for other in ready:
                if not _batch(other) and _admits_memory(other, req):
                    limit = other.size.cores * DEFAULTS.interactive_per_core
                    assert len(other.work) >= limit


@given(requests(), loaded_fleets(), st.randoms(use_true_random=False))
def test_decisions_are_deterministic_and_ignore_snapshot_order(req, fleet, rng) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(fleet.clusters)
    rng.shuffle(shuffled)
    first = place_query(req, fleet, NOW)
    assert place_query(req, FleetSnapshot(tuple(shuffled)), NOW) == first


def test_interactive_query_avoids_the_cluster_running_etl() -> None:
    fleet = FleetSnapshot((view("a", work(Profile.BATCH, 300)), view("b")))
    decision = place_query(request(Profile.INTERACTIVE, estimate(0.2), home="a"), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "b"
    assert decision.reason.startswith("interactive, est tiny")


def test_batch_query_keeps_one_cluster_free_for_interactive_work() -> None:
    fleet = FleetSnapshot((view("a", work(Profile.BATCH, 300)), view("b")))
    decision = place_query(request(Profile.BATCH, estimate(200)), fleet, NOW)
    assert isinstance(decision, Queue)
    assert "a runs 1 batch query already" in decision.reason and "b is kept for interactive work" in decision.reason
    # With a third cluster, the second batch query runs on b or c, and the other stays free.
    bigger = FleetSnapshot((*fleet.clusters, view("c")))
    decision = place_query(request(Profile.BATCH, estimate(200)), bigger, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id in {"b", "c"}


def test_a_lone_cluster_takes_batch_work() -> None:
    decision = place_query(request(Profile.BATCH, estimate(200)), FleetSnapshot((view("a"),)), NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "a"


def test_memory_budget_queues_a_query_that_would_not_fit_next_to_others() -> None:
    # S has 1024 MB; 60% is the budget. 400 MB is in use; another 400 MB does not fit.
    fleet = FleetSnapshot((view("a", work(Profile.INTERACTIVE, 1, memory_mb=400)),))
    decision = place_query(request(Profile.INTERACTIVE, estimate(1, memory_mb=400)), fleet, NOW)
    assert isinstance(decision, Queue) and "memory budget" in decision.reason
    # Alone on a cluster, even an oversized query runs (a larger size is the autoscaler's job).
    alone = place_query(request(Profile.INTERACTIVE, estimate(1, memory_mb=4000)), FleetSnapshot((view("a"),)), NOW)
    assert isinstance(alone, RunOn)


def test_a_stale_reading_is_unknown_while_anything_runs_but_an_idle_one_stays_true() -> None:
    fresh_idle = LoadReading(NOW - 1, active_tasks=0, task_slots=1)
    stale_idle = LoadReading(NOW - 60, active_tasks=0, task_slots=1)
    stale_busy = LoadReading(NOW - 60, active_tasks=5, task_slots=1)
    fresh_busy = LoadReading(NOW - 1, active_tasks=1, task_slots=1)
    # A cluster read idle with nothing placed on it since is idle, however old the reading (the
    # poller does not read idle clusters again): it beats a busy one.
    fleet = FleetSnapshot((view("b", load=fresh_busy), view("z", load=stale_idle)))
    decision = place_query(request(Profile.INTERACTIVE), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "z" and "1 of 1 task slot(s) free" in decision.reason
    # With work placed there, a stale reading is unknown, and a fresh idle one wins over it.
    running = work(Profile.INTERACTIVE, 1)
    fleet = FleetSnapshot((view("b", running, load=stale_idle), view("z", running, load=fresh_idle)))
    decision = place_query(request(Profile.INTERACTIVE), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "z"
    # A stale busy reading is not trusted either way; a fresh busy one is avoided.
    fleet = FleetSnapshot((view("b", load=fresh_busy), view("z", load=stale_busy)))
    decision = place_query(request(Profile.INTERACTIVE), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "z" and "load reading unknown" in decision.reason


def test_home_cluster_wins_among_equals_but_not_over_a_busier_one() -> None:
    fleet = FleetSnapshot((view("a"), view("b")))
    assert place_query(request(Profile.INTERACTIVE, home="b"), fleet, NOW).cluster_id == "b"  # type: ignore[union-attr]
    busy_home = FleetSnapshot((view("a"), view("b", work(Profile.INTERACTIVE, n=1))))
    assert place_query(request(Profile.INTERACTIVE, home="b"), busy_home, NOW).cluster_id == "a"  # type: ignore[union-attr]


def test_interactive_limit_per_core_queues_when_every_cluster_is_full() -> None:
    full = [work(Profile.INTERACTIVE, n=n) for n in range(DEFAULTS.interactive_per_core)]
    fleet = FleetSnapshot((view("a", *full),))
    decision = place_query(request(Profile.INTERACTIVE), fleet, NOW)
    assert isinstance(decision, Queue) and "interactive queries on 1 core(s)" in decision.reason


def test_batch_prefers_the_bigger_cluster() -> None:
    fleet = FleetSnapshot((view("a", size=0), view("b", size=2), view("c", size=0)))
    decision = place_query(request(Profile.BATCH, estimate(100)), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "b"


def test_metadata_calls_stay_home_and_never_queue() -> None:
    full = [work(Profile.INTERACTIVE, n=n) for n in range(DEFAULTS.interactive_per_core)]
    fleet = FleetSnapshot((view("a", *full, work(Profile.BATCH, 500, memory_mb=900)), view("b")))
    home = PlacementRequest("s", "a", metadata_only=True)
    assert place_query(home, fleet, NOW) == RunOn("a", "session's home cluster a is ready")
    elsewhere = place_query(PlacementRequest("s", None, metadata_only=True), fleet, NOW)
    assert isinstance(elsewhere, RunOn) and elsewhere.cluster_id == "b"


def test_session_affinity_keeps_sessions_home_and_spreads_new_ones() -> None:
    busy = ClusterView("a", SIZES[0], "4.3.0", ClusterState.READY, 1, 2, (work(Profile.BATCH, 500),))
    fleet = FleetSnapshot((busy, ClusterView("b", SIZES[0], "4.3.0", ClusterState.READY, 0, 1)))
    home = PlacementRequest("s", "a", strategy="session-affinity")
    # Unlike workload placement, it never moves a session off its busy cluster...
    assert place_query(home, fleet, NOW) == RunOn("a", "session affinity: the session's cluster a")
    # ...and a new session goes where the fewest sessions are, whatever runs there.
    decision = place_query(PlacementRequest("t", None, strategy="session-affinity"), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "b"


def test_a_nearly_full_heap_is_avoided_when_another_cluster_can_take_the_query() -> None:
    pressed = LoadReading(NOW - 1, active_tasks=0, task_slots=1, heap_used_bytes=950 * MB, heap_max_bytes=1000 * MB)
    relaxed = LoadReading(NOW - 1, active_tasks=0, task_slots=1, heap_used_bytes=100 * MB, heap_max_bytes=1000 * MB)
    fleet = FleetSnapshot((view("a", load=pressed), view("b", load=relaxed)))
    for profile in Profile:
        decision = place_query(request(profile, estimate(1), home="a"), fleet, NOW)
        assert isinstance(decision, RunOn) and decision.cluster_id == "b" and "heap 10% used" in decision.reason


def test_interactive_work_keeps_off_a_cluster_whose_pipeline_just_finished_a_query() -> None:
    import dataclasses

    # ETL on "a" is between two queries (0.1 s gap); "b" already runs one interactive query.
    just_ended = dataclasses.replace(view("a"), batch_ended_at=NOW - 0.1)
    fleet = FleetSnapshot((just_ended, view("b", work(Profile.INTERACTIVE))))
    decision = place_query(request(Profile.INTERACTIVE, estimate(0.1)), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "b"
    # Long after the pipeline stopped, "a" is an ordinary idle cluster again.
    long_ago = FleetSnapshot((dataclasses.replace(just_ended, batch_ended_at=NOW - 60), view("b", work(Profile.INTERACTIVE))))
    assert place_query(request(Profile.INTERACTIVE, estimate(0.1)), long_ago, NOW).cluster_id == "a"  # type: ignore[union-attr]


def test_batch_work_prefers_a_cluster_without_interactive_work() -> None:
    fleet = FleetSnapshot((view("a", work(Profile.INTERACTIVE, 0.01)), view("b"), view("c")))
    decision = place_query(request(Profile.BATCH, estimate(50), home="a"), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id in {"b", "c"}


def test_a_pipelines_next_query_stays_home_though_the_last_reading_still_shows_its_tasks() -> None:
    import dataclasses

    # The reading of "a" was taken while the previous ETL query still ran; it ended after it.
    before_the_end = LoadReading(NOW - 1, active_tasks=1, task_slots=1)
    home = dataclasses.replace(view("a", load=before_the_end), batch_ended_at=NOW - 0.2, work_ended_at=NOW - 0.2)
    busy_with_interactive = view("b", work(Profile.INTERACTIVE, 0.1), load=LoadReading(NOW - 1, 0, 1))
    decision = place_query(request(Profile.BATCH, estimate(50), home="a"), FleetSnapshot((home, busy_with_interactive)), NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "a"
    assert "load reading unknown" in decision.reason
    # A reading taken after the end is trusted again.
    after_the_end = dataclasses.replace(home, load=LoadReading(NOW - 0.1, active_tasks=0, task_slots=1))
    decision = place_query(request(Profile.BATCH, estimate(50), home="a"), FleetSnapshot((after_the_end, busy_with_interactive)), NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "a" and "1 of 1 task slot(s) free" in decision.reason


def test_memory_spark_reports_in_use_counts_when_it_exceeds_the_estimates() -> None:
    # "a" runs a query estimated at 100 MB, but Spark says its tasks hold 550 MB (budget: 614 MB).
    holding = LoadReading(NOW - 1, active_tasks=1, task_slots=2, memory_in_use_bytes=550 * MB)
    a = view("a", work(Profile.INTERACTIVE, 1.0, 100), load=holding)
    b = view("b", work(Profile.INTERACTIVE, 1.0, 100, n=1))
    decision = place_query(request(Profile.INTERACTIVE, estimate(0.5, 200)), FleetSnapshot((a, b)), NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "b"
    # Only "a" left: the query waits, and the reason gives the memory Spark reported.
    decision = place_query(request(Profile.INTERACTIVE, estimate(0.5, 200)), FleetSnapshot((a,)), NOW)
    assert isinstance(decision, Queue) and "64 MB of its 614 MB memory budget free" in decision.reason
    # A stale reading is not trusted: the estimates alone decide.
    stale = view("a", work(Profile.INTERACTIVE, 1.0, 100), load=dataclasses.replace(holding, observed_at=NOW - 60))
    assert isinstance(place_query(request(Profile.INTERACTIVE, estimate(0.5, 200)), FleetSnapshot((stale,)), NOW), RunOn)


def test_packed_interactive_work_fills_the_busy_cluster_and_leaves_the_idle_one_idle() -> None:
    one_query = view("b", work(Profile.INTERACTIVE, n=1), size=1)  # 2 cores: one is free
    fleet = FleetSnapshot((view("a", size=1), one_query))
    packed = dataclasses.replace(request(Profile.INTERACTIVE), pack=True)
    assert place_query(packed, fleet, NOW).cluster_id == "b"  # type: ignore[union-attr]
    # Spread (Performance mode, or a fixed pool), the idle cluster takes it.
    assert place_query(request(Profile.INTERACTIVE), fleet, NOW).cluster_id == "a"  # type: ignore[union-attr]
    # Packing never puts a second query on a core while another cluster has one free.
    full = FleetSnapshot((view("a", size=1), view("b", *(work(Profile.INTERACTIVE, n=n) for n in range(2)), size=1)))
    assert place_query(packed, full, NOW).cluster_id == "a"  # type: ignore[union-attr]


def test_packed_work_goes_to_the_most_recently_used_idle_cluster() -> None:
    recent = dataclasses.replace(view("a"), work_ended_at=NOW - 2)
    long_idle = dataclasses.replace(view("b"), work_ended_at=NOW - 300)
    fleet = FleetSnapshot((long_idle, recent, view("c")))
    packed = dataclasses.replace(request(Profile.INTERACTIVE), pack=True)
    assert place_query(packed, fleet, NOW).cluster_id == "a"  # type: ignore[union-attr]
