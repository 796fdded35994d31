"""Admission: queries wait here until the placement policy finds them a cluster.

Every waiting query is re-evaluated, in order, whenever conditions change: a query is placed or
finishes, a cluster changes state, a cluster's load reading changes. The order is fair across
tenants (``policy/tenancy.py``: the tenant with the fewest queries running goes first), and
within a tenant interactive first, then first come first served. A placed query's expected work
is reserved on its cluster, under its tenant, at once, so the next decision in the same pass
already sees it. The queue is bounded, overall and per tenant (``max_queued``); its order and each
query's reason for waiting are visible (``/api/queue``, ``/api/queries`` and GetStatus).
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
from sparkfleet.gateway.tenants import Tenants
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.placement import PlacementRequest, PlacementSettings, Queue, RunOn, place_query
from sparkfleet.policy.scaling import Demand, parse_mode
from sparkfleet.policy.tenancy import WaitingQuery, allowed_sizes, fair_order, queue_refusal, running_by_tenant

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
    tenant: str = ""
    # Only its tenant's quota holds it: no new cluster would help it.
    quota_bound: bool = False

    @property
    def runs_job(self) -> bool:
        return self.traits is not None and self.traits.runs_job

    def as_waiting(self) -> WaitingQuery:
        traits = self.traits
        interactive = traits is None or not traits.runs_job or traits.profile is Profile.INTERACTIVE
        return WaitingQuery(self.query_id, self.tenant, interactive, self.seq, self.runs_job)


@dataclass
class Admission:
    fleet: FleetController
    clock: Clock
    settings: PlacementSettings = field(default_factory=PlacementSettings)
    max_queued: int = 1000
    capacity_wait_s: float = 120.0  # no cluster ready at all
    queue_wait_s: float = 3600.0  # clusters exist but none admits the query
    tenants: Tenants = field(default_factory=Tenants)
    _waiters: list[_Waiter] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]
    # Per tenant, the turn of its latest placement: ties in the fair order go to the tenant served
    # least recently. One entry per tenant that ever ran a query.
    _served: dict[str, int] = field(default_factory=dict)
    _turns: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]
    _wait_listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    _work_listeners: list[Callable[[], None]] = field(default_factory=list)
    _queue_wait_listeners: list[Callable[[float], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fleet.on_state_change(lambda _cluster: self.changed())

    # ---- what waits ------------------------------------------------------------------------------

    def waiting(self) -> list[tuple[str, int, str]]:
        """(query id, position from 1, reason) of every waiting query, in admission order."""
        return [(w.query_id, n, w.reason) for n, w in enumerate(self._ordered(), 1)]

    def _ordered(self) -> list[_Waiter]:
        """Waiting queries in the order placement is offered them: fair across tenants."""
        by_id = {w.query_id: w for w in self._waiters}
        running = running_by_tenant(self.fleet.snapshot())
        order = fair_order([w.as_waiting() for w in self._waiters], running, self._served)
        return [by_id[q.query_id] for q in order]

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
        be ready: none is), as the autoscaler sees it; not those only their tenant's quota holds
        back. Each asks only for size classes its tenant may use."""
        now = self.clock.monotonic()
        found = []
        sizes = None
        for w in self._waiters:
            if w.future.done() or w.quota_bound:
                continue
            memory = w.traits.estimate.memory_bytes if w.traits is not None and w.traits.estimate else 0
            mode = w.traits.mode if w.traits is not None else ""
            request = w.make_request()
            allowed: frozenset[str] = frozenset()
            if request.tenant_limits.max_size is not None or request.tenant_limits.max_cores is not None:
                if sizes is None:
                    sizes = [self.fleet.size_class(name) for name in self.fleet.size_names()]
                allowed = frozenset(s.name for s in allowed_sizes(request.tenant_limits, sizes))
                if not allowed:
                    continue  # no size class its tenant may use: no cluster started would take it
            found.append(Demand(w.query_id, memory, now - w.enqueued_at, request.min_memory_mb,
                                parse_mode(mode) if mode else None, request.runtime, allowed))
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
        self, query_id: str, make_request: Callable[[], PlacementRequest], traits: QueryTraits | None,
        tenant: str = "",
    ) -> RunOn:
        """Wait until placement runs the query somewhere; its work is then reserved there, under
        ``tenant``.

        Raises NoCapacity when the queue is full or the wait ran out, QuotaExceeded when the
        tenant has its max_queued queries waiting already, QueryCancelled when cancelled with
        :meth:`cancel`.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(query_id, make_request, traits, loop.create_future(), next(self._seq), self.clock.monotonic(),
                         tenant=tenant)
        self._waiters.append(waiter)
        self.changed()
        if not waiter.future.done() and len(self._waiters) > self.max_queued:
            self._waiters.remove(waiter)
            raise NoCapacity(
                f"{self.max_queued} queries are already waiting for a cluster (gateway.max_queued); "
                f"this one was not queued: {waiter.reason}. The client retries on its own.",
                retry_delay_s=RETRY_DELAY_S,
            )
        if not waiter.future.done() and waiter.runs_job:
            mine = sum(1 for w in self._waiters if w.tenant == tenant and w.runs_job and not w.future.done())
            refusal = queue_refusal(tenant, self.tenants.limits(tenant), mine)
            if refusal is not None:
                self._waiters.remove(waiter)
                raise self.tenants.refuse(tenant, "max_queued", f"{refusal}. It could not start at once: {waiter.reason}")
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
        for waiter in self._ordered():
            if waiter.future.done():
                continue
            now = self.clock.monotonic()
            decision = place_query(waiter.make_request(), self.fleet.snapshot(), now, self.settings)
            if isinstance(decision, RunOn):
                cluster = self.fleet.get(decision.cluster_id)
                assert cluster is not None
                self._reserve(cluster, waiter, now)
                if waiter.runs_job:
                    self._served[waiter.tenant] = next(self._turns)
                if waiter.queued:
                    for placed_listener in self._queue_wait_listeners:
                        placed_listener(now - waiter.enqueued_at)
                waiter.future.set_result(decision)
            else:
                waiter.quota_bound = isinstance(decision, Queue) and decision.quota_bound
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
            waiter.tenant,
        )
        for listener in self._work_listeners:
            listener()
