"""Tenant quotas in the shell: the admission queue's fair order and per-tenant limits, the request
rate of gateway/tenants.py, the autoscaler's demand, and an out-of-memory retry stopped by a quota."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import QuotaExceeded
from sparkfleet.fleet.model import ClusterState, ClusterView, Profile, SizeClass
from sparkfleet.fleet.runtimes import Runtime
from sparkfleet.gateway.admission import Admission, QueryTraits
from sparkfleet.gateway.tenants import Tenants
from sparkfleet.plan.cost import Estimate
from sparkfleet.plan.intent import QueryIntent
from sparkfleet.policy.placement import PlacementRequest, PlacementSettings
from sparkfleet.policy.recovery import FailureFacts, Surface, decide_retry
from sparkfleet.policy.scaling import Budget, ClusterFacts, Demand, Mode, StartCluster, plan_scaling
from sparkfleet.policy.tenancy import TenantLimits
from sparkfleet.testing.fleet import InMemoryFleet

S, M = SizeClass("S", 1, 1024), SizeClass("M", 2, 2048)
RUNTIME = Runtime("4.3.0", Path("."), "4.3.0")
LOOK = QueryTraits("look", Profile.INTERACTIVE, "test", Estimate(0.1, 0, 0, "static", "test"))
# One interactive query per core: a 1-core cluster is full with one.
ONE_PER_CORE = PlacementSettings(interactive_per_core=1)


class _Refusals(list):  # type: ignore[type-arg]
    def __call__(self, tenant: str, quota: str) -> None:
        self.append((tenant, quota))


def _tenants(clock: VirtualClock, refusals: _Refusals, **tables: TenantLimits) -> Tenants:
    return Tenants(tables, clock, on_refusal=refusals)


def _request(tenant: str, tenants: Tenants):  # type: ignore[no-untyped-def]
    return lambda: PlacementRequest("s", None, profile=Profile.INTERACTIVE, estimate=LOOK.estimate,
                                    tenant=tenant, tenant_limits=tenants.limits(tenant))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _admission(clock: VirtualClock, tenants: Tenants, *clusters: str) -> tuple[InMemoryFleet, Admission]:
    fleet = InMemoryFleet([InMemoryFleet.cluster(c, S, RUNTIME) for c in clusters])
    return fleet, Admission(fleet, clock, ONE_PER_CORE, tenants=tenants)  # type: ignore[arg-type]


def test_a_quiet_tenants_query_goes_ahead_of_a_flooding_tenants_queue(clock: VirtualClock) -> None:
    async def scenario() -> None:
        tenants = _tenants(clock, _Refusals())
        fleet, admission = _admission(clock, tenants, "a")
        first = await admission.admit("flood-0", _request("flood", tenants), LOOK, "flood")
        flood = [asyncio.create_task(admission.admit(f"flood-{n}", _request("flood", tenants), LOOK, "flood"))
                 for n in range(1, 6)]
        await _settle()
        quiet = asyncio.create_task(admission.admit("quiet-0", _request("quiet", tenants), LOOK, "quiet"))
        await _settle()
        order = [q for q, _, _ in admission.waiting()]
        assert order[0] == "quiet-0"
        admission.release(first.cluster_id, "flood-0")
        await _settle()
        assert quiet.done() and not any(t.done() for t in flood)
        for task in flood:
            task.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
        assert fleet.get("a").work["quiet-0"].tenant == "quiet"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_max_concurrent_queries_holds_a_query_back_without_asking_for_capacity(clock: VirtualClock) -> None:
    async def scenario() -> None:
        limits = TenantLimits(max_concurrent_queries=1, table="analytics")
        tenants = _tenants(clock, _Refusals(), analytics=limits)
        _, admission = _admission(clock, tenants, "a", "b")
        first = await admission.admit("q1", _request("analytics", tenants), LOOK, "analytics")
        second = asyncio.create_task(admission.admit("q2", _request("analytics", tenants), LOOK, "analytics"))
        await _settle()
        [(query, _, reason)] = admission.waiting()
        assert query == "q2"
        assert "tenant analytics is at its max_concurrent_queries (1, tenants.analytics.max_concurrent_queries)" in reason
        assert admission.demand() == []  # another cluster would not help it
        # Another tenant runs meanwhile: the free cluster is not held for the waiting query.
        other = await admission.admit("o1", _request("other", tenants), LOOK, "other")
        assert other.cluster_id != first.cluster_id
        admission.release(first.cluster_id, "q1")
        await _settle()
        assert second.done() and second.result().cluster_id == first.cluster_id

    asyncio.run(scenario())


def test_max_queued_refuses_naming_the_quota_and_counts_the_refusal(clock: VirtualClock) -> None:
    async def scenario() -> None:
        refusals = _Refusals()
        tenants = _tenants(clock, refusals, default=TenantLimits(max_queued=1, table="default"))
        _, admission = _admission(clock, tenants, "a")
        await admission.admit("q1", _request("etl", tenants), LOOK, "etl")
        waiting = asyncio.create_task(admission.admit("q2", _request("etl", tenants), LOOK, "etl"))
        await _settle()
        with pytest.raises(QuotaExceeded) as raised:
            await admission.admit("q3", _request("etl", tenants), LOOK, "etl")
        error = raised.value
        assert error.quota == "tenants.default.max_queued" and error.retry_delay_s is None
        assert "tenant etl already has 1 query waiting, its max_queued (1, tenants.default.max_queued)" in error.message
        assert "It could not start at once:" in error.message
        assert refusals == [("etl", "max_queued")]
        assert [q for q, _, _ in admission.waiting()] == ["q2"]
        # Calls that run no job are not counted against it.
        metadata = lambda: PlacementRequest("s", None, metadata_only=True, tenant="etl",  # noqa: E731
                                            tenant_limits=tenants.limits("etl"))
        call = asyncio.create_task(admission.admit("c1", metadata, None, "etl"))
        await _settle()
        assert call.done()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)

    asyncio.run(scenario())


def test_the_request_rate_is_a_token_bucket_on_the_injected_clock(clock: VirtualClock) -> None:
    refusals = _Refusals()
    tenants = _tenants(clock, refusals, chatty=TenantLimits(requests_per_s=2.0, burst=2, table="chatty"))
    assert [tenants.take_request("chatty") for _ in range(2)] == [0.0, 0.0]  # the burst
    assert tenants.take_request("quiet") == 0.0  # no table, no default: unlimited
    # Over the rate, a request waits for its token, up to RATE_DELAY_S (1 s) ...
    assert [tenants.take_request("chatty") for _ in range(2)] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert refusals == []
    # ... and beyond that it is refused, told when to come back.
    with pytest.raises(QuotaExceeded) as raised:
        tenants.take_request("chatty")
    assert raised.value.quota == "tenants.chatty.requests_per_s"
    assert raised.value.retry_delay_s == pytest.approx(0.5)
    assert "over its request rate (2/s with bursts of 2, tenants.chatty.requests_per_s)" in raised.value.message
    assert refusals == [("chatty", "requests_per_s")]
    clock.advance(0.5)
    assert tenants.take_request("chatty") == pytest.approx(1.0)


def test_demand_asks_only_for_sizes_the_tenant_may_use() -> None:
    facts = [ClusterFacts(ClusterView("s1", S, "4.3.0", ClusterState.READY, 1, 0), 0.0, None)]
    big = 900 * 1024 * 1024  # more than an S cluster's memory budget
    free = plan_scaling(facts, [Demand("q", big, 10.0)], [S, M], Budget(8, 16_000), Mode.PERFORMANCE, 100.0)
    assert any(isinstance(a, StartCluster) and a.size == "M" for a in free)
    capped = plan_scaling(facts, [Demand("q", big, 10.0, sizes=frozenset({"S"}))], [S, M], Budget(8, 16_000),
                          Mode.PERFORMANCE, 100.0)
    starts = [a.size for a in capped if isinstance(a, StartCluster)]
    assert "M" not in starts and "S" in starts


def test_an_out_of_memory_retry_stops_at_the_tenants_size_with_the_quota_named() -> None:
    intent = QueryIntent("read", "query")
    facts = FailureFacts("s-1", True, 0, 1, None, caused_out_of_memory="driver: heap", lost_size="S",
                         lost_memory_mb=1024, larger_size="",
                         size_quota="tenant small may use size classes up to S (tenants.small.max_size_class), not M")
    decision = decide_retry(intent, facts)
    assert isinstance(decision, Surface)
    assert "ran cluster s-1 out of memory" in decision.reason
    assert "tenants.small.max_size_class" in decision.reason and "ask an administrator" in decision.reason
    refusals = _Refusals()
    tenants = Tenants({"small": TenantLimits(max_size=S, table="small")}, VirtualClock(), refusals)
    assert tenants.larger_size("small", M) == (None, "tenant small may use size classes up to S "
                                                     "(tenants.small.max_size_class), not M")
    assert refusals == [("small", "max_size_class")]
    assert tenants.larger_size("other", M) == (M, "")
