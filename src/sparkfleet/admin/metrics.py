"""Prometheus metrics of one sparkfleet instance (its own registry, no process-global state)."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sparkfleet.fleet.model import ClusterState

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _FleetCollector(Collector):
    """Reads cluster counts at scrape time, so the numbers are never stale."""

    def __init__(
        self, clusters: Callable[[], Iterable[tuple[str, str]]], core_seconds: Callable[[], dict[str, float]]
    ) -> None:
        self._clusters = clusters
        self._core_seconds = core_seconds

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(
            "sparkfleet_clusters", "Clusters by size class and state", labels=["size", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        for size, state in self._clusters():
            counts[(size, state)] = counts.get((size, state), 0) + 1
        for size in sorted({s for s, _ in counts} or {""}):
            for state in ClusterState:
                if size:
                    family.add_metric([size, state.value], counts.get((size, state.value), 0))
        yield family
        used = CounterMetricFamily(
            "sparkfleet_cluster_core_seconds", "Cores held by clusters times the seconds they held them, from "
            "JVM start to stop, by size class (the compute the fleet cost)", labels=["size"],
        )
        for size, seconds in sorted(self._core_seconds().items()):
            used.add_metric([size], seconds)
        yield used


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpcs = Counter(
            "sparkfleet_rpc", "Spark Connect RPCs served, by method and gRPC status code",
            ["method", "code"], registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "sparkfleet_rpc_duration_seconds", "Time to serve an RPC (streams: until the last message)",
            ["method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.active_streams = Gauge(
            "sparkfleet_active_streams", "Response streams being forwarded now", ["method"],
            registry=self.registry,
        )
        self.queries = Counter(
            "sparkfleet_queries", "ExecutePlan operations finished, by outcome", ["outcome"],
            registry=self.registry,
        )
        self.response_bytes = Counter(
            "sparkfleet_response_bytes", "Bytes of responses forwarded to clients", registry=self.registry,
        )
        self.sessions = Gauge("sparkfleet_sessions", "Open client sessions", registry=self.registry)
        self.queued = Gauge(
            "sparkfleet_queued_queries", "Queries waiting for a cluster that admits them", registry=self.registry
        )
        self.queue_wait = Histogram(
            "sparkfleet_queue_wait_seconds", "Seconds queued queries waited for a cluster that admits them",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=self.registry,
        )
        self.oldest_queued = Gauge(
            "sparkfleet_queue_oldest_wait_seconds", "How long the longest-waiting queued query has waited",
            registry=self.registry,
        )
        self.placements = Counter(
            "sparkfleet_placements", "ExecutePlan operations placed on a cluster, by latency profile and "
            "estimated cost class", ["profile", "cost_class"], registry=self.registry,
        )
        self.watchdog_actions = Counter(
            "sparkfleet_watchdog_actions", "Runaway queries acted on, by action", ["action"], registry=self.registry,
        )
        self.scaling_actions = Counter(
            "sparkfleet_scaling_actions", "Autoscaler actions carried out, by action (start, drain, stop) and "
            "size class", ["action", "size"], registry=self.registry,
        )
        self.auth_failures = Counter(
            "sparkfleet_auth_failures", "Calls refused because their credentials were missing or did not verify, "
            "by reason (missing, malformed, unknown, expired, signature, audience, issuer, claims, ...) and "
            "endpoint (grpc, admin)", ["reason", "endpoint"], registry=self.registry,
        )
        self.quota_refusals = Counter(
            "sparkfleet_quota_refusals", "Requests refused by a tenant's or a user's quota, by tenant and quota",
            ["tenant", "quota"], registry=self.registry,
        )
        self.orphan_jobs = Counter(
            "sparkfleet_orphan_jobs_cancelled", "Spark jobs cancelled because the query that started them had "
            "ended (interrupted or failed) while they ran on", registry=self.registry,
        )

    def watch_fleet(
        self, clusters: Callable[[], Iterable[tuple[str, str]]], core_seconds: Callable[[], dict[str, float]]
    ) -> None:
        self.registry.register(_FleetCollector(clusters, core_seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
