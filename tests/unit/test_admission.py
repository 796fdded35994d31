"""gateway/admission.py: the queue in front of placement, over an in-memory fleet and a virtual clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import NoCapacity, QueryCancelled
from sparkfleet.fleet.model import ClusterState, Profile, SizeClass
from sparkfleet.fleet.runtimes import Runtime
from sparkfleet.gateway.admission import Admission, QueryTraits
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.placement import PlacementRequest
from sparkfleet.testing.fleet import InMemoryFleet

S = SizeClass("S", 1, 1024)
RUNTIME = Runtime("4.3.0", Path("."), "4.3.0")
BATCH = QueryTraits("etl", Profile.BATCH, "test", Estimate(100.0, 0, 0, "static", "test"))
INTERACTIVE = QueryTraits("look", Profile.INTERACTIVE, "test", Estimate(0.1, 0, 0, "static", "test"))


def _request(traits: QueryTraits):  # type: ignore[no-untyped-def]
    return lambda: PlacementRequest("s", None, profile=traits.profile, estimate=traits.estimate)


def _fleet(*ids: str) -> InMemoryFleet:
    return InMemoryFleet([InMemoryFleet.cluster(i, S, RUNTIME) for i in ids])


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_batch_waits_while_interactive_is_placed_and_a_release_places_it_at_once(clock: VirtualClock) -> None:
    async def scenario() -> None:
        fleet = _fleet("a", "b")
        admission = Admission(fleet, clock)  # type: ignore[arg-type]
        waits: list[float] = []
        admission.on_queue_wait(waits.append)
        first = await admission.admit("etl-1", _request(BATCH), BATCH)
        assert admission.oldest_wait_s() == 0.0 and waits == []  # placed at once: never queued
        second = asyncio.create_task(admission.admit("etl-2", _request(BATCH), BATCH))
        await _settle()
        assert not second.done()
        clock.advance(7.0)
        assert admission.oldest_wait_s() == pytest.approx(7.0)
        [(query, position, reason)] = admission.waiting()
        assert (query, position) == ("etl-2", 1) and "kept for interactive work" in reason
        assert admission.position("etl-2") == (1, reason)
        # Interactive work is not stuck behind the waiting batch query.
        look = await admission.admit("look-1", _request(INTERACTIVE), INTERACTIVE)
        assert look.cluster_id != first.cluster_id
        # The reservation is visible on the cluster, and its release re-evaluates the queue.
        assert set(fleet.get(first.cluster_id).work) == {"etl-1"}  # type: ignore[union-attr]
        admission.release(first.cluster_id, "etl-1")
        await _settle()
        assert second.done() and admission.waiting() == []
        assert waits == [pytest.approx(7.0)] and admission.oldest_wait_s() == 0.0
        placed = second.result()
        assert "etl-2" in fleet.get(placed.cluster_id).work  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_interactive_waiters_go_before_batch_ones(clock: VirtualClock) -> None:
    async def scenario() -> None:
        fleet = _fleet()
        admission = Admission(fleet, clock)  # type: ignore[arg-type]
        batch = asyncio.create_task(admission.admit("etl", _request(BATCH), BATCH))
        look = asyncio.create_task(admission.admit("look", _request(INTERACTIVE), INTERACTIVE))
        await _settle()
        assert [q for q, _, _ in admission.waiting()] == ["look", "etl"]
        assert all("no cluster is ready" in reason for _, _, reason in admission.waiting())
        fleet.add(InMemoryFleet.cluster("a", S, RUNTIME))  # a cluster comes up: both are placed
        await _settle()
        assert look.done() and batch.done()

    asyncio.run(scenario())


def test_the_queue_is_bounded_and_says_so(clock: VirtualClock) -> None:
    async def scenario() -> None:
        admission = Admission(_fleet(), clock, max_queued=1)  # type: ignore[arg-type]
        waiting = asyncio.create_task(admission.admit("q1", _request(INTERACTIVE), INTERACTIVE))
        await _settle()
        with pytest.raises(NoCapacity, match="1 queries are already waiting") as raised:
            await admission.admit("q2", _request(INTERACTIVE), INTERACTIVE)
        assert raised.value.retry_delay_s is not None
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert admission.waiting() == []

    asyncio.run(scenario())


def test_cancel_and_timeouts_end_the_wait_with_clear_errors(clock: VirtualClock) -> None:
    async def scenario() -> None:
        admission = Admission(_fleet(), clock, capacity_wait_s=30)  # type: ignore[arg-type]
        cancelled = asyncio.create_task(admission.admit("q1", _request(INTERACTIVE), INTERACTIVE))
        timed_out = asyncio.create_task(admission.admit("q2", _request(INTERACTIVE), INTERACTIVE))
        await _settle()
        assert admission.cancel("q1", "interrupted by the client")
        assert not admission.cancel("nope", "unknown")
        with pytest.raises(QueryCancelled, match="cancelled while queued: interrupted by the client"):
            await cancelled
        clock.advance(31)
        admission.changed()
        with pytest.raises(NoCapacity, match="no cluster is ready; waited 30s"):
            await asyncio.wait_for(timed_out, 5)

    asyncio.run(scenario())


def test_a_lost_cluster_does_not_keep_reservations_that_block_others(clock: VirtualClock) -> None:
    async def scenario() -> None:
        fleet = _fleet("a")
        admission = Admission(fleet, clock)  # type: ignore[arg-type]
        await admission.admit("etl-1", _request(BATCH), BATCH)
        fleet.set_state(fleet.get("a"), ClusterState.LOST)  # type: ignore[arg-type]
        fleet.add(InMemoryFleet.cluster("b", S, RUNTIME))
        placed = await asyncio.wait_for(admission.admit("etl-2", _request(BATCH), BATCH), 5)
        assert placed.cluster_id == "b"

    asyncio.run(scenario())
