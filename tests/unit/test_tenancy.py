"""policy/tenancy.py: quota lookup, usage, fair order, token bucket; and placement under quotas."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.fleet.model import ClusterState, ClusterView, FleetSnapshot, LoadReading, Profile, RunningWork, SizeClass
from sparkfleet.policy.placement import PlacementRequest, Queue, RunOn, place_query
from sparkfleet.policy.tenancy import (
    UNLIMITED,
    TenantLimits,
    TokenBucket,
    WaitingQuery,
    allowed_sizes,
    concurrency_refusal,
    cores_refusal,
    fair_order,
    larger_size_refusal,
    limits_for,
    queue_refusal,
    quota_blocks_new_capacity,
    running_by_tenant,
    size_within,
    usage_of,
)

S, M, L = SizeClass("S", 1, 1024), SizeClass("M", 2, 2048), SizeClass("L", 4, 4096)
SIZES = (S, M, L)
TENANTS = ("quiet", "flood", "third")
NOW = 100.0


def _work(n: int, tenant: str, profile: Profile = Profile.INTERACTIVE) -> RunningWork:
    return RunningWork(f"q-{tenant}-{n}", profile, 0.1, 0, NOW - 1, tenant)


def _view(cid: str, size: SizeClass, *work: RunningWork) -> ClusterView:
    return ClusterView(cid, size, "4.3.0", ClusterState.READY, len(work), 0, tuple(work))


# ---- lookup and usage ------------------------------------------------------------------------------


def test_a_tenant_gets_its_own_table_else_the_default_one_else_no_limits() -> None:
    own = TenantLimits(max_concurrent_queries=2, table="analytics")
    default = TenantLimits(max_queued=5, table="default")
    assert limits_for("analytics", {"analytics": own, "default": default}) is own
    assert limits_for("etl", {"analytics": own, "default": default}) is default
    assert limits_for("etl", {"analytics": own}) is UNLIMITED
    assert own.quota("max_queued") == "tenants.analytics.max_queued"
    assert UNLIMITED.quota("max_queued") == "tenants.default.max_queued"


def test_usage_counts_queries_and_the_cores_of_distinct_clusters() -> None:
    fleet = FleetSnapshot((
        _view("a", M, _work(1, "flood"), _work(2, "flood"), _work(3, "quiet")),
        _view("b", S, _work(4, "flood")),
        _view("c", L),
    ))
    flood = usage_of("flood", fleet)
    assert (flood.running, dict(flood.clusters), flood.cores) == (3, {"a": 2, "b": 1}, 3)
    assert usage_of("quiet", fleet).cores == 2
    assert usage_of("nobody", fleet).running == 0
    assert running_by_tenant(fleet) == {"flood": 3, "quiet": 1}


# ---- what a tenant may start ---------------------------------------------------------------------


def test_refusals_name_the_quota_and_its_value() -> None:
    limits = TenantLimits(max_concurrent_queries=2, max_cores=2, max_queued=1, max_size=S, table="analytics")
    fleet = FleetSnapshot((_view("a", S, _work(1, "analytics"), _work(2, "analytics")), _view("b", M)))
    usage = usage_of("analytics", fleet)
    assert concurrency_refusal("analytics", limits, usage) == (
        "tenant analytics is at its max_concurrent_queries (2, tenants.analytics.max_concurrent_queries): "
        "it starts when one of its queries ends")
    refusal = cores_refusal("analytics", limits, usage, fleet.clusters[1])
    assert refusal is not None and "3 cores in use, over its max_cores (2, tenants.analytics.max_cores)" in refusal
    assert cores_refusal("analytics", limits, usage, fleet.clusters[0]) is None  # already counted
    refusal = queue_refusal("analytics", limits, 2)
    assert refusal is not None and "max_queued (1, tenants.analytics.max_queued)" in refusal
    assert queue_refusal("analytics", limits, 1) is None
    assert larger_size_refusal("analytics", limits, M) == (
        "max_size_class", "tenant analytics may use size classes up to S (tenants.analytics.max_size_class), not M")
    assert larger_size_refusal("analytics", TenantLimits(max_cores=1, table="x"), M)[0] == "max_cores"  # type: ignore[index]
    assert larger_size_refusal("analytics", UNLIMITED, L) is None


@given(st.sampled_from(SIZES), st.one_of(st.none(), st.sampled_from(SIZES)), st.one_of(st.none(), st.integers(1, 8)))
def test_a_size_is_allowed_exactly_when_neither_its_memory_nor_its_cores_exceed_the_caps(
    size: SizeClass, cap: SizeClass | None, max_cores: int | None
) -> None:
    limits = TenantLimits(max_size=cap, max_cores=max_cores)
    expected = ((cap is None or (size.memory_mb <= cap.memory_mb and size.cores <= cap.cores))
                and (max_cores is None or size.cores <= max_cores))
    assert size_within(limits, size) is expected
    assert (size in allowed_sizes(limits, SIZES)) is expected


# ---- fair order ---------------------------------------------------------------------------------


@st.composite
def waiting_queries(draw: st.DrawFn) -> list[WaitingQuery]:
    n = draw(st.integers(0, 30))
    return [WaitingQuery(f"w{i}", draw(st.sampled_from(TENANTS)), draw(st.booleans()), i,
                         runs_job=draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else True)
            for i in range(n)]


running_counts = st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 6))


@given(waiting_queries(), running_counts)
def test_fair_order_is_a_permutation_with_calls_first_and_each_tenants_own_priority_kept(
    waiting: list[WaitingQuery], running: dict[str, int]
) -> None:
    ordered = fair_order(waiting, running)
    assert sorted(w.query_id for w in ordered) == sorted(w.query_id for w in waiting)
    calls = [w for w in ordered if not w.runs_job]
    assert ordered[: len(calls)] == calls
    for tenant in TENANTS:
        mine = [w for w in ordered if w.runs_job and w.tenant == tenant]
        assert mine == sorted(mine, key=lambda w: w.priority)  # interactive first, then arrival


@given(waiting_queries(), running_counts)
def test_each_query_goes_to_a_tenant_with_the_fewest_running_or_ahead(
    waiting: list[WaitingQuery], running: dict[str, int]
) -> None:
    jobs = [w for w in fair_order(waiting, running) if w.runs_job]
    left = Counter(w.tenant for w in jobs)
    taken = Counter({t: running.get(t, 0) for t in TENANTS})
    for w in jobs:
        contenders = [t for t in TENANTS if left[t]]
        assert taken[w.tenant] == min(taken[t] for t in contenders)
        taken[w.tenant] += 1
        left[w.tenant] -= 1


@given(st.integers(1, 40), st.integers(0, 10), st.integers(0, 10), st.booleans())
def test_a_flood_does_not_push_another_tenants_query_back(
    flood_size: int, flood_running: int, quiet_running: int, quiet_interactive: bool
) -> None:
    """However many queries a tenant sends, another tenant's query goes as soon as it runs no
    more than the flooding one (one tie may go either way)."""
    flood = [WaitingQuery(f"f{i}", "flood", True, i) for i in range(flood_size)]
    quiet = WaitingQuery("q", "quiet", quiet_interactive, flood_size)
    ordered = fair_order([*flood, quiet], {"flood": flood_running, "quiet": quiet_running})
    assert ordered.index(quiet) <= max(0, quiet_running - flood_running) + 1


def test_shares_weigh_the_order() -> None:
    waiting = [WaitingQuery(f"{t}{i}", t, True, n) for n, (t, i) in enumerate((t, i) for i in range(3) for t in ("a", "b"))]
    ordered = [w.tenant for w in fair_order(waiting, {}, shares={"a": 2.0})]
    assert ordered[:3].count("a") == 2


# ---- token bucket -------------------------------------------------------------------------------


@given(st.floats(0.1, 50), st.one_of(st.none(), st.integers(1, 20)),
       st.lists(st.floats(0, 5), min_size=1, max_size=60))
def test_the_bucket_never_lets_more_through_than_burst_plus_rate_times_time(
    rate: float, burst: int | None, gaps: list[float]
) -> None:
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, accepted = 0.0, 0
    for gap in gaps:
        now += gap
        bucket, _, wait = bucket.reserve(now, 0.0)
        assert 0.0 <= bucket.tokens <= bucket.burst
        if wait == 0.0:
            accepted += 1
        else:
            # Asking again once the wait is over succeeds.
            assert bucket.reserve(now + wait + 1e-9, 0.0)[2] == 0.0
    assert accepted <= bucket.burst + rate * now + 1e-6


@given(st.floats(0.1, 50), st.one_of(st.none(), st.integers(1, 20)), st.floats(0, 3),
       st.lists(st.floats(0, 5), min_size=1, max_size=60))
def test_a_reserved_token_is_never_early_and_never_waited_for_past_the_limit(
    rate: float, burst: int | None, max_delay: float, gaps: list[float]
) -> None:
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, served_at = 0.0, []
    for gap in gaps:
        now += gap
        bucket, delay, wait = bucket.reserve(now, max_delay)
        if wait == 0.0:
            assert 0.0 <= delay <= max_delay + 1e-9
            served_at.append(now + delay)
        else:
            assert delay == 0.0 and wait > 0.0
            # Coming back when told, with nobody else in between, gets a token within the limit.
            assert bucket.reserve(now + wait + 1e-9, max_delay)[2] == 0.0
        # By any moment, no more requests went ahead than the bucket allows.
        for moment in served_at:
            assert sum(t <= moment for t in served_at) <= bucket.burst + rate * moment + 1e-6
    assert bucket.tokens >= -max_delay * rate - 1e-9


def test_an_idle_bucket_fills_up_to_its_burst_only() -> None:
    bucket = TokenBucket.full(2.0, 3, 0.0)
    for _ in range(3):
        bucket, _, wait = bucket.reserve(0.0, 0.0)
        assert wait == 0.0
    bucket, _, wait = bucket.reserve(0.0, 0.0)
    assert wait == pytest.approx(0.5)
    bucket = bucket.reserve(1000.0, 0.0)[0]
    assert bucket.tokens == pytest.approx(2.0)  # refilled to 3, one taken
    assert TokenBucket.full(0.5, None, 0.0).burst == 1.0


# ---- placement under quotas ---------------------------------------------------------------------


@st.composite
def tenant_fleets(draw: st.DrawFn) -> FleetSnapshot:
    clusters = []
    for n in range(draw(st.integers(0, 5))):
        work = tuple(_work(k, draw(st.sampled_from(TENANTS))) for k in range(draw(st.integers(0, 3))))
        clusters.append(ClusterView(f"c{n}", draw(st.sampled_from(SIZES)), "4.3.0", ClusterState.READY,
                                    len(work), 0, tuple(RunningWork(f"c{n}-{w.query_id}", w.profile, w.core_seconds,
                                                                    0, w.started_at, w.tenant) for w in work)))
    return FleetSnapshot(tuple(clusters))


limits_strategy = st.builds(
    TenantLimits,
    max_concurrent_queries=st.one_of(st.none(), st.integers(1, 4)),
    max_size=st.one_of(st.none(), st.sampled_from(SIZES)),
    max_cores=st.one_of(st.none(), st.integers(1, 6)),
    table=st.just("quiet"),
)


@given(tenant_fleets(), limits_strategy, st.sampled_from(Profile))
def test_placement_never_takes_a_tenant_past_its_quotas(
    fleet: FleetSnapshot, limits: TenantLimits, profile: Profile
) -> None:
    request = PlacementRequest("s", None, profile=profile, tenant="quiet", tenant_limits=limits)
    before = usage_of("quiet", fleet)
    decision = place_query(request, fleet, NOW)
    if isinstance(decision, RunOn):
        chosen = next(c for c in fleet.clusters if c.id == decision.cluster_id)
        assert limits.max_concurrent_queries is None or before.running < limits.max_concurrent_queries
        assert size_within(TenantLimits(max_size=limits.max_size), chosen.size)
        if chosen.id not in before.clusters:  # a cluster already running its queries adds no cores
            assert limits.max_cores is None or before.cores + chosen.size.cores <= limits.max_cores
    if isinstance(decision, Queue) and decision.quota_bound:
        assert quota_blocks_new_capacity(limits, before)
        assert "tenants.quiet." in decision.reason


def test_a_tenant_at_its_limit_waits_bound_by_its_quota_while_another_runs() -> None:
    fleet = FleetSnapshot((_view("a", S, _work(1, "flood")), _view("b", S)))
    limits = TenantLimits(max_concurrent_queries=1, table="flood")
    decision = place_query(PlacementRequest("s", None, tenant="flood", tenant_limits=limits), fleet, NOW)
    assert isinstance(decision, Queue) and decision.quota_bound
    assert "tenant flood is at its max_concurrent_queries (1, tenants.flood.max_concurrent_queries)" in decision.reason
    assert isinstance(place_query(PlacementRequest("s", None, tenant="quiet"), fleet, NOW), RunOn)
    # Calls that run no job are not limited.
    metadata = PlacementRequest("s", None, metadata_only=True, tenant="flood", tenant_limits=limits)
    assert isinstance(place_query(metadata, fleet, NOW), RunOn)


def test_a_size_capped_tenant_is_never_placed_on_a_larger_cluster() -> None:
    fleet = FleetSnapshot((_view("big", M),))
    limits = TenantLimits(max_size=S, table="small")
    decision = place_query(PlacementRequest("s", None, tenant="small", tenant_limits=limits), fleet, NOW)
    assert isinstance(decision, Queue) and not decision.quota_bound  # an S cluster would take it
    assert "big is larger (M) than tenant small may use (S, tenants.small.max_size_class)" in decision.reason


def test_ties_go_to_the_tenant_served_least_recently_not_to_the_oldest_queue() -> None:
    """The flooding tenant's queue holds older queries; with both tenants at zero running, the
    quiet one, served longer ago, goes first, so a flood cannot win every tie."""
    waiting = [WaitingQuery(f"f{i}", "flood", True, i) for i in range(5)] + [WaitingQuery("q", "quiet", True, 9)]
    assert fair_order(waiting, {}, {"flood": 7, "quiet": 3})[0].query_id == "q"
    assert fair_order(waiting, {}, {"flood": 7})[0].query_id == "q"  # never served: first
    assert fair_order(waiting, {}, {"flood": 3, "quiet": 7})[0].query_id == "f0"


def test_interactive_work_keeps_away_from_another_tenants_flood_when_it_can() -> None:
    """Both clusters have every core taken; the session's home runs the flood: its query goes to
    the cluster where only its own tenant's work runs."""
    fleet = FleetSnapshot((
        _view("flooded", S, _work(1, "flood"), _work(2, "flood")),
        _view("own", S, _work(3, "quiet")),
    ))
    decision = place_query(PlacementRequest("s", "flooded", tenant="quiet"), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "own"
    # Without tenants (every query "default"), the session's home still wins the tie as before.
    single = FleetSnapshot(tuple(ClusterView(c.id, c.size, c.runtime, c.state, c.running_queries, 0,
                                             tuple(RunningWork(w.query_id, w.profile, w.core_seconds, 0,
                                                               w.started_at, "default") for w in c.work))
                                 for c in fleet.clusters))
    decision = place_query(PlacementRequest("s", "flooded", tenant="default"), single, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "flooded"


def test_a_cluster_whose_every_core_runs_another_tenants_query_is_avoided_even_when_the_own_one_reads_busy() -> None:
    busy = LoadReading(NOW, active_tasks=2, task_slots=2)
    fleet = FleetSnapshot((
        ClusterView("flooded", S, "4.3.0", ClusterState.READY, 2, 0, (_work(1, "flood"), _work(2, "flood"))),
        ClusterView("own", S, "4.3.0", ClusterState.READY, 1, 0, (_work(3, "quiet"),), busy),
    ))
    decision = place_query(PlacementRequest("s", None, tenant="quiet"), fleet, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "own"
    # A cluster with spare cores beside another tenant's query is still fine.
    roomy = FleetSnapshot((_view("shared", L, _work(1, "flood")), fleet.clusters[1]))
    decision = place_query(PlacementRequest("s", None, tenant="quiet"), roomy, NOW)
    assert isinstance(decision, RunOn) and decision.cluster_id == "shared"
