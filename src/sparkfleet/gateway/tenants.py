"""Tenant bookkeeping: each tenant's quotas from ``[tenants.*]``, its request-rate bucket, refusals.

The decisions are ``policy/tenancy.py``'s; this holds the state they need between requests (one
token bucket per rate-limited tenant, on the injected clock) and turns a refusal into
``QuotaExceeded`` naming the quota, counted in ``sparkfleet_quota_refusals``.
"""

from __future__ import annotations

from typing import Callable, Mapping

from sparkfleet.clock import Clock, SystemClock
from sparkfleet.config_security import TenantQuota
from sparkfleet.errors import QuotaExceeded
from sparkfleet.fleet.model import SizeClass
from sparkfleet.policy.tenancy import (
    UNLIMITED,
    TenantLimits,
    RATE_DELAY_S,
    TokenBucket,
    larger_size_refusal,
    limits_for,
    rate_refusal,
)


def tenant_limits(quotas: Mapping[str, TenantQuota], size_class: Callable[[str], SizeClass]) -> dict[str, TenantLimits]:
    """The ``[tenants.*]`` tables as the policy reads them (size class names resolved)."""
    return {
        name: TenantLimits(
            max_concurrent_queries=q.max_concurrent_queries,
            max_queued=q.max_queued,
            max_size=size_class(q.max_size_class) if q.max_size_class else None,
            max_cores=q.max_cores,
            requests_per_s=q.requests_per_s,
            burst=q.burst,
            table=name,
        )
        for name, q in quotas.items()
    }


class Tenants:
    """Every tenant's limits and request-rate state. Without tables nobody is limited."""

    def __init__(
        self,
        tables: Mapping[str, TenantLimits] | None = None,
        clock: Clock | None = None,
        on_refusal: Callable[[str, str], None] = lambda tenant, quota: None,
    ) -> None:
        self._tables = dict(tables or {})
        self._clock = clock or SystemClock()
        self._on_refusal = on_refusal  # (tenant, quota key) of every refusal, for /metrics
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def limited(self) -> bool:
        return bool(self._tables)

    def limits(self, tenant: str) -> TenantLimits:
        return limits_for(tenant, self._tables) if self._tables else UNLIMITED

    def refuse(self, tenant: str, key: str, message: str, retry_delay_s: float | None = None) -> QuotaExceeded:
        """Count a refusal by the tenant's ``key`` quota and return the error to raise."""
        self._on_refusal(tenant, key)
        return QuotaExceeded(message, self.limits(tenant).quota(key), retry_delay_s)

    def take_request(self, tenant: str) -> float:
        """One request of ``tenant``: the seconds it must wait for its token (at most
        RATE_DELAY_S). Raises QuotaExceeded when its token is further off, with the time until one
        could be had as the retry delay (which the stock client honours)."""
        limits = self.limits(tenant)
        if limits.requests_per_s is None:
            return 0.0
        now = self._clock.monotonic()
        bucket = self._buckets.get(tenant) or TokenBucket.full(limits.requests_per_s, limits.burst, now)
        self._buckets[tenant], delay_s, wait_s = bucket.reserve(now, RATE_DELAY_S)
        if wait_s > 0:
            raise self.refuse(tenant, "requests_per_s", rate_refusal(tenant, limits, wait_s), retry_delay_s=wait_s)
        return delay_s

    def larger_size(self, tenant: str, larger: SizeClass | None) -> tuple[SizeClass | None, str]:
        """The larger size class an out-of-memory query of ``tenant`` may move up to (None if
        none), and, when its quota is what stops it, why (the refusal is counted)."""
        if larger is None:
            return None, ""
        refusal = larger_size_refusal(tenant, self.limits(tenant), larger)
        if refusal is None:
            return larger, ""
        key, reason = refusal
        self._on_refusal(tenant, key)
        return None, reason
