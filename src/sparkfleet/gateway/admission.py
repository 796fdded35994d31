"""Admission: queries wait here until the placement policy finds them a cluster.

Every waiting query is re-evaluated, in order (interactive first, then first come first served),
whenever conditions change: a query is placed or finishes, a cluster changes state, a cluster's
load reading changes. A placed query's expected work is reserved on its cluster at once, so the
next decision in the same pass already sees it. The queue is bounded; its order and each query's
reason for waiting are visible (``/api/queries`` and GetStatus).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Callable

from sparkfleet.clock import Clock
from sparkfleet.errors import NoCapacity, QueryCancelled
from sparkfleet.fleet.controller import Cluster, FleetController
from sparkfleet.fleet.model import Profile, RunningWork
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.placement import PlacementRequest, PlacementSettings, Queue, RunOn, place_query
from sparkfleet.policy.scaling import Demand, parse_mode

# After waiting in vain, when the client should try again.
RETRY_DELAY_S = 5.0
# Waiting queries are also re-evaluated this often: load readings turn stale without an event.
_RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class QueryTraits:
    """What placement knows about an ExecutePlan before it runs."""

    fingerprint: str
    profile: Profile
    profile_reason: str
    estimate: Estimate | None
    # False for requests Spark only analyses (SET, CREATE TEMP VIEW, UDF registration, the SQL
    # text of spark.sql() of a query): placed like metadata calls, nothing reserved.
    runs_job: bool = True
    # Its workload ran clusters with this much memory (MB) out of memory: only larger ones (0: any).
    memory_floor_mb: int = 0
    # sparkfleet.mode of its session ("": the fleet's).
    mode: str = ""


@dataclass(eq=False)
class _Waiter:
    query_id: str
    make_request: Callable[[], PlacementRequest]
    traits: QueryTraits | None
    future: asyncio.Future[RunOn]
    seq: int
    enqueued_at: float
    queued: bool = False  # False: waiting for any cluster to be ready; True: clusters refuse it
    reason: str = ""

    @property
    def priority(self) -> tuple[int, int]:
        traits = self.traits
        interactive = traits is None or not traits.runs_job or traits.profile is Profile.INTERACTIVE
        return (0 if interactive else 1, self.seq)


@dataclass
class Admission:
    fleet: FleetController
    clock: Clock
    settings: PlacementSettings = field(default_factory=PlacementSettings)
    max_queued: int = 1000
    capacity_wait_s: float = 120.0  # no cluster ready at all
    queue_wait_s: float = 3600.0  # clusters exist but none admits the query
    _waiters: list[_Waiter] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]
    _wait_listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    _work_listeners: list[Callable[[], None]] = field(default_factory=list)
    _queue_wait_listeners: list[Callable[[float], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fleet.on_state_change(lambda _cluster: self.changed())

    # ---- what waits ------------------------------------------------------------------------------

    def waiting(self) -> list[tuple[str, int, str]]:
        """(query id, position from 1, reason) of every waiting query, in admission order."""
        ordered = sorted(self._waiters, key=lambda w: w.priority)
        return [(w.query_id, n, w.reason) for n, w in enumerate(ordered, 1)]

    def position(self, query_id: str) -> tuple[int, str] | None:
        for found, n, reason in self.waiting():
            if found == query_id:
                return n, reason
        return None

    def on_wait(self, listener: Callable[[str, str], None]) -> None:
        """Called with (query id, reason) whenever a waiting query's reason for waiting changes."""
        self._wait_listeners.append(listener)

    def on_queue_wait(self, listener: Callable[[float], None]) -> None:
        """Called with the seconds a queued query waited, when it is placed."""
        self._queue_wait_listeners.append(listener)

    def demand(self) -> list[Demand]:
        """Every query waiting (refused by the clusters there are, or waiting for any cluster to
        be ready: none is), as the autoscaler sees it."""
        now = self.clock.monotonic()
        found = []
        for w in self._waiters:
            if w.future.done():
                continue
            memory = w.traits.estimate.memory_bytes if w.traits is not None and w.traits.estimate else 0
            mode = w.traits.mode if w.traits is not None else ""
            request = w.make_request()
            found.append(Demand(w.query_id, memory, now - w.enqueued_at, request.min_memory_mb,
                                parse_mode(mode) if mode else None, request.runtime))
        return found

    def oldest_wait_s(self) -> float:
        """How long the longest-queued query has waited so far (0 with an empty queue)."""
        now = self.clock.monotonic()
        return max((now - w.enqueued_at for w in self._waiters if w.queued), default=0.0)

    def on_work_change(self, listener: Callable[[], None]) -> None:
        """Called whenever work is reserved on a cluster or released from it."""
        self._work_listeners.append(listener)

    def queued_count(self) -> int:
        return len(self._waiters)

    # ---- entering and leaving --------------------------------------------------------------------

    async def admit(
        self, query_id: str, make_request: Callable[[], PlacementRequest], traits: QueryTraits | None
    ) -> RunOn:
        """Wait until placement runs the query somewhere; its work is then reserved there.

        Raises NoCapacity when the queue is full or the wait ran out, QueryCancelled when
        cancelled with :meth:`cancel`.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(query_id, make_request, traits, loop.create_future(), next(self._seq), self.clock.monotonic())
        self._waiters.append(waiter)
        self.changed()
        if not waiter.future.done() and len(self._waiters) > self.max_queued:
            self._waiters.remove(waiter)
            raise NoCapacity(
                f"{self.max_queued} queries are already waiting for a cluster (gateway.max_queued); "
                f"this one was not queued: {waiter.reason}. The client retries on its own.",
                retry_delay_s=RETRY_DELAY_S,
            )
        try:
            while not waiter.future.done():
                limit = self.queue_wait_s if waiter.queued else self.capacity_wait_s
                remaining = waiter.enqueued_at + limit - self.clock.monotonic()
                if remaining <= 0:
                    raise NoCapacity(
                        f"no cluster can take this request: {waiter.reason}; waited {limit:g}s "
                        "(the client retries on its own)",
                        retry_delay_s=RETRY_DELAY_S,
                    )
                await asyncio.wait({waiter.future}, timeout=min(remaining, _RECHECK_S))
                if not waiter.future.done():
                    self.changed()
            return waiter.future.result()
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                # Placed just as the caller gave up: hand the reservation back.
                self.release(waiter.future.result().cluster_id, query_id)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def cancel(self, query_id: str, reason: str) -> bool:
        """Stop a waiting query (Interrupt); False if it is not waiting."""
        for waiter in self._waiters:
            if waiter.query_id == query_id and not waiter.future.done():
                waiter.future.set_exception(QueryCancelled(f"operation {query_id} was cancelled while queued: {reason}"))
                return True
        return False

    def release(self, cluster_id: str, query_id: str) -> None:
        """The query's attempt on ``cluster_id`` ended: its capacity is free for the next."""
        cluster = self.fleet.get(cluster_id)
        work = cluster.work.pop(query_id, None) if cluster is not None else None
        if work is not None:
            now = self.clock.monotonic()
            cluster.work_ended_at = now  # type: ignore[union-attr]
            if work.profile is Profile.BATCH:
                cluster.batch_ended_at = now  # type: ignore[union-attr]
            for listener in self._work_listeners:
                listener()
            self.changed()

    # ---- the pass ----------------------------------------------------------------------------------

    def changed(self) -> None:
        """Re-evaluate every waiting query, in order, against the fleet as it is now."""
        for waiter in sorted(self._waiters, key=lambda w: w.priority):
            if waiter.future.done():
                continue
            now = self.clock.monotonic()
            decision = place_query(waiter.make_request(), self.fleet.snapshot(), now, self.settings)
            if isinstance(decision, RunOn):
                cluster = self.fleet.get(decision.cluster_id)
                assert cluster is not None
                self._reserve(cluster, waiter, now)
                if waiter.queued:
                    for placed_listener in self._queue_wait_listeners:
                        placed_listener(now - waiter.enqueued_at)
                waiter.future.set_result(decision)
            else:
                if isinstance(decision, Queue) and not waiter.queued:
                    waiter.queued = True
                    waiter.enqueued_at = now  # the queue's own wait starts now
                if decision.reason != waiter.reason:
                    waiter.reason = decision.reason
                    for wait_listener in self._wait_listeners:
                        wait_listener(waiter.query_id, decision.reason)

    def _reserve(self, cluster: Cluster, waiter: _Waiter, now: float) -> None:
        traits = waiter.traits
        if traits is None or not traits.runs_job:
            return  # a metadata call: nothing to reserve
        estimate = traits.estimate
        cluster.work[waiter.query_id] = RunningWork(
            waiter.query_id,
            traits.profile,
            estimate.core_seconds if estimate else 0.0,
            estimate.memory_bytes if estimate else 0,
            now,
        )
        for listener in self._work_listeners:
            listener()
