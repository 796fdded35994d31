"""Pure tenancy policy: what each tenant may use, the fair order of waiting queries, a token bucket.

A tenant's limits come from its own ``[tenants.NAME]`` table, else ``[tenants.default]``, else none.
What a tenant uses is read off the fleet snapshot: the work the gateway reserved on each cluster
carries its tenant, so the queries it runs and the cores of the distinct clusters running them
need no bookkeeping of their own. Every refusal names the quota (``tenants.NAME.KEY``) and its
value, so whoever reads it knows which line of the config holds them back.

Fairness: waiting queries are ordered so that the tenant with the fewest queries running (and
ahead of it in the order) per share goes first, ties to the tenant served least recently; within a
tenant, interactive queries first, then first come first served. A flooding tenant therefore gets
its turn after every other tenant's next query, however many it sends.

No I/O, no clock: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from sparkfleet.fleet.model import ClusterView, FleetSnapshot, SizeClass

DEFAULT_TABLE = "default"


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One tenant's quotas (None: no limit) and the config table they come from."""

    max_concurrent_queries: int | None = None
    max_queued: int | None = None
    max_size: SizeClass | None = None
    max_cores: int | None = None
    requests_per_s: float | None = None
    burst: int | None = None
    # "analytics" for [tenants.analytics], "default" for [tenants.default], "" when unlimited.
    table: str = ""

    def quota(self, key: str) -> str:
        """The config key of one of these quotas, e.g. ``tenants.analytics.max_queued``."""
        return f"tenants.{self.table or DEFAULT_TABLE}.{key}"


UNLIMITED = TenantLimits()


def limits_for(tenant: str, tables: Mapping[str, TenantLimits]) -> TenantLimits:
    """The tenant's own table, else the ``default`` table, else no limits."""
    return tables.get(tenant) or tables.get(DEFAULT_TABLE) or UNLIMITED


# ---- what a tenant uses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantUsage:
    running: int  # its queries holding a reservation on a cluster
    clusters: Mapping[str, int]  # id -> cores of each cluster running at least one of them

    @property
    def cores(self) -> int:
        return sum(self.clusters.values())


def usage_of(tenant: str, fleet: FleetSnapshot) -> TenantUsage:
    running, clusters = 0, {}
    for cluster in fleet.clusters:
        mine = sum(1 for w in cluster.work if w.tenant == tenant)
        if mine:
            running += mine
            clusters[cluster.id] = cluster.size.cores
    return TenantUsage(running, clusters)


def running_by_tenant(fleet: FleetSnapshot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cluster in fleet.clusters:
        for work in cluster.work:
            counts[work.tenant] = counts.get(work.tenant, 0) + 1
    return counts


# ---- may it start another query, and where --------------------------------------------------------


def concurrency_refusal(tenant: str, limits: TenantLimits, usage: TenantUsage) -> str | None:
    """Why the tenant may not start another query anywhere now, or None."""
    limit = limits.max_concurrent_queries
    if limit is not None and usage.running >= limit:
        return (f"tenant {tenant} is at its max_concurrent_queries ({limit}, {limits.quota('max_concurrent_queries')}): "
                "it starts when one of its queries ends")
    return None


def cores_refusal(tenant: str, limits: TenantLimits, usage: TenantUsage, cluster: ClusterView) -> str | None:
    """Why running the query on ``cluster`` would take the tenant past its max_cores, or None. A
    cluster already running one of its queries adds no cores."""
    limit = limits.max_cores
    if limit is None or cluster.id in usage.clusters:
        return None
    total = usage.cores + cluster.size.cores
    if total > limit:
        return (f"would bring tenant {tenant} to {total} cores in use, over its max_cores "
                f"({limit}, {limits.quota('max_cores')})")
    return None


def _above(size: SizeClass, cap: SizeClass | None) -> bool:
    return cap is not None and (size.memory_mb > cap.memory_mb or size.cores > cap.cores)


def size_within(limits: TenantLimits, size: SizeClass) -> bool:
    """Whether the tenant may use clusters of ``size``: no more memory nor cores than its
    max_size_class, and no more cores than its max_cores."""
    if _above(size, limits.max_size):
        return False
    return limits.max_cores is None or size.cores <= limits.max_cores


def size_refusal(tenant: str, limits: TenantLimits, cluster: ClusterView) -> str | None:
    """Why the tenant may not use ``cluster`` at all (it is larger than its max_size_class), or None."""
    cap = limits.max_size
    if cap is None or not _above(cluster.size, cap):
        return None
    return (f"is larger ({cluster.size.name}) than tenant {tenant} may use "
            f"({cap.name}, {limits.quota('max_size_class')})")


def allowed_sizes(limits: TenantLimits, sizes: Iterable[SizeClass]) -> tuple[SizeClass, ...]:
    return tuple(s for s in sizes if size_within(limits, s))


def quota_blocks_new_capacity(limits: TenantLimits, usage: TenantUsage) -> bool:
    """Whether another cluster would not help the tenant's waiting query: it is at its
    max_concurrent_queries, or its clusters already hold all of its max_cores."""
    if limits.max_concurrent_queries is not None and usage.running >= limits.max_concurrent_queries:
        return True
    return limits.max_cores is not None and usage.cores >= limits.max_cores


def larger_size_refusal(tenant: str, limits: TenantLimits, larger: SizeClass) -> tuple[str, str] | None:
    """(quota key, why) when an out-of-memory query of the tenant may not move up to ``larger``;
    None when it may."""
    if size_within(limits, larger):
        return None
    cap = limits.max_size
    if cap is not None and _above(larger, cap):
        return "max_size_class", (f"tenant {tenant} may use size classes up to {cap.name} "
                                  f"({limits.quota('max_size_class')}), not {larger.name}")
    return "max_cores", (f"a {larger.name} cluster has {larger.cores} cores, more than tenant {tenant}'s "
                         f"max_cores ({limits.max_cores}, {limits.quota('max_cores')})")


def queue_refusal(tenant: str, limits: TenantLimits, queued: int) -> str | None:
    """Why one more waiting query of the tenant is refused (``queued`` counts it), or None."""
    limit = limits.max_queued
    if limit is None or queued <= limit:
        return None
    return (f"tenant {tenant} already has {queued - 1} quer{'y' if queued - 1 == 1 else 'ies'} waiting, its "
            f"max_queued ({limit}, {limits.quota('max_queued')}), so this one was not queued; run it again once "
            "some of the tenant's queries have finished, or ask an administrator to raise the quota")


# ---- fair order ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitingQuery:
    query_id: str
    tenant: str
    interactive: bool
    seq: int  # arrival order
    # False for calls that run no Spark job: they take no slot, so they go first.
    runs_job: bool = True

    @property
    def priority(self) -> tuple[int, int]:
        return (0 if self.interactive else 1, self.seq)


def fair_order(
    waiting: Sequence[WaitingQuery],
    running: Mapping[str, int],
    last_served: Mapping[str, int] | None = None,
    shares: Mapping[str, float] | None = None,
) -> list[WaitingQuery]:
    """The order to offer waiting queries to placement.

    Calls that run no job first (arrival order). Then, one query at a time, the next query (by
    priority) of the tenant with the fewest queries running plus already ordered, divided by its
    share (1 unless given). Ties go to the tenant served least recently (``last_served``: a number
    that grows with each placement; a tenant never served goes first), then to the higher-priority
    query: a tenant whose queue holds older queries does not win every tie.
    """
    shares = shares or {}
    served = dict(last_served or {})
    first = sorted((w for w in waiting if not w.runs_job), key=lambda w: w.seq)
    queues: dict[str, list[WaitingQuery]] = {}
    for w in sorted((w for w in waiting if w.runs_job), key=lambda w: w.priority, reverse=True):
        queues.setdefault(w.tenant, []).append(w)  # highest priority last: pop() takes it
    taken = {tenant: running.get(tenant, 0) for tenant in queues}
    ordered = list(first)
    turn = max(served.values(), default=0)
    while queues:
        tenant = min(queues, key=lambda t: (taken[t] / max(shares.get(t, 1.0), 1e-9), served.get(t, -1),
                                            queues[t][-1].priority))
        ordered.append(queues[tenant].pop())
        taken[tenant] += 1
        turn += 1
        served[tenant] = turn
        if not queues[tenant]:
            del queues[tenant]
    return ordered


# ---- request rate -------------------------------------------------------------------------------


# A request over its tenant's rate waits this long at most for its token before it is refused:
# the stock client backs off 4x on each consecutive refusal of a call (50 ms ... 51 s), so refusing
# every request that finds the bucket empty starves the losers of a race for it for up to a minute.
RATE_DELAY_S = 1.0


def default_burst(rate: float) -> float:
    """Without a configured burst, a bucket holds one second's worth of requests (at least one)."""
    return max(1.0, rate)


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; a request takes one."""

    rate: float
    burst: float
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, rate: float, burst: float | None, now: float) -> "TokenBucket":
        """A full bucket; ``burst`` defaults to one second's worth (at least one request)."""
        size = float(burst) if burst is not None else default_burst(rate)
        return cls(rate, size, size, now)

    def reserve(self, now: float, max_delay_s: float) -> tuple["TokenBucket", float, float]:
        """A token for a request that may wait up to ``max_delay_s`` for it: (the bucket after,
        seconds until its token, 0.0), the token reserved (the bucket may go into debt); or, when
        its token is further off, (the bucket refilled to now, 0.0, seconds until a request could
        reserve one)."""
        elapsed = max(0.0, now - self.updated_at)
        tokens = min(self.burst, self.tokens + elapsed * self.rate)
        updated_at = max(now, self.updated_at)
        wait = max(0.0, (1.0 - tokens) / self.rate)
        if wait <= max_delay_s:
            return TokenBucket(self.rate, self.burst, tokens - 1.0, updated_at), wait, 0.0
        return TokenBucket(self.rate, self.burst, tokens, updated_at), 0.0, wait - max_delay_s


def rate_refusal(tenant: str, limits: TenantLimits, wait_s: float) -> str:
    rate = limits.requests_per_s or 0.0
    burst = limits.burst if limits.burst is not None else default_burst(rate)
    return (f"tenant {tenant} is over its request rate ({rate:g}/s with bursts of {burst:g}, "
            f"{limits.quota('requests_per_s')}); the next request is accepted in {wait_s:.2f}s "
            "(the client retries on its own)")
