"""``sparkfleet bench NAME``: speed goals measured side by side (the fleet vs. a plain Spark server, or fleet vs. fleet) in one run.

Benchmarks are registered by name; each lives in its own module with ``run(argv) -> int`` and is
imported only when asked for, so ``sparkfleet bench`` stays cheap to start.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    module: str  # defines ``run(argv: list[str]) -> int``
    summary: str


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark(
            "overhead",
            "sparkfleet.bench.overhead",
            "small-query latency, CPU per query, idle CPU and large-result throughput: the default fleet vs. a plain Spark Connect server",
        ),
        Benchmark(
            "config-rpc",
            "sparkfleet.bench.config_rpc",
            "Config RPC throughput and latency with 32 concurrent clients: the default fleet's gateway vs. a plain server",
        ),
        Benchmark(
            "faults",
            "sparkfleet.bench.faults",
            "concurrent sessions keep reading while clusters are SIGKILLed; failures and recovery",
        ),
        Benchmark(
            "estimate",
            "sparkfleet.bench.estimate",
            "TPC-H at two scale factors: estimated cost class vs observed, and what AnalyzePlan would cost",
        ),
        Benchmark(
            "mixed",
            "sparkfleet.bench.mixed",
            "interactive latency and ETL throughput side by side: workload placement, session affinity, one cluster",
        ),
        Benchmark(
            "oom",
            "sparkfleet.bench.oom",
            "out-of-memory workloads run twice: first-run success, second-run OOMs, recovery latency",
        ),
        Benchmark(
            "cost",
            "sparkfleet.bench.cost",
            "a bursty trace on Standard, Performance-optimized and a static fleet: core-seconds, cold starts, latency",
        ),
        Benchmark(
            "tenants",
            "sparkfleet.bench.tenants",
            "a quiet tenant's interactive p95 alone and beside another tenant's flood, with and without its quotas",
        ),
        Benchmark(
            "upgrade",
            "sparkfleet.bench.upgrade",
            "200+ workloads through a live runtime upgrade with injected regressions: failures, pins, retries",
        ),
        Benchmark(
            "fuzz",
            "sparkfleet.bench.fuzz",
            "hostile input at all twelve RPCs for a while: statuses per RPC, findings, gateway RSS",
        ),
    )
}


def run_benchmark(name: str, argv: list[str]) -> int:
    """Run benchmark ``name`` with its own arguments; unknown names exit 2 with the list."""
    bench = BENCHMARKS.get(name)
    if bench is None:
        known = "\n".join(f"  {b.name:<12} {b.summary}" for b in BENCHMARKS.values())
        print(f"sparkfleet bench: unknown benchmark {name!r}; available:\n{known}", file=sys.stderr)
        return 2
    module = importlib.import_module(bench.module)
    return int(module.run(list(argv)))
