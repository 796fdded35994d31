"""What ``sparkfleet bench overhead`` measured, summarised (pure: no Spark, no clock, no /proc)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from sparkfleet.bench.harness import median, percentile

PLAIN = "plain"
FLEET = "fleet"
CLUSTER_DIRECT = "cluster-direct"

# CPU parts (bench/harness.py Contenders.cpu_parts): what serves which side.
FLEET_PARTS = ("gateway", "clusters", "metastore")  # serve the fleet and cluster-direct sides
PLAIN_PARTS = ("plain",)  # serves the plain side only
CLIENT = "client"  # serves both sides of every pair

LATENCY_RATIO_GOAL = 1.1  # fleet median / plain median, each workload
GATEWAY_CPU_GOAL_MS = 2.0  # gateway CPU per small query
CLUSTER_CPU_RATIO_GOAL = 1.1  # fleet cluster CPU per query / plain server CPU per query
IDLE_GOAL_PERCENT = 2.0  # gateway + fleet JVMs while idle, % of one core
THROUGHPUT_GOAL = 0.97  # large result MB/s, fleet / plain

T = TypeVar("T")


def rotation(sides: Sequence[T], iteration: int) -> tuple[T, ...]:
    """The order of the sides in ``iteration``: rotated by one each time, so none is always first."""
    shift = iteration % len(sides)
    return (*sides[shift:], *sides[:shift])


@dataclass(frozen=True, slots=True)
class WorkloadBlock:
    """One workload's measured iterations in one pass, the plain side alternating with another.

    Index i of ``plain`` and ``other`` is one pair (the same iteration); ``cpu`` is CPU seconds
    per part over the whole block, whose ``len(plain)`` queries per side it served.
    """

    workload: str
    small: bool
    plain: tuple[float, ...]  # seconds per query
    other: tuple[float, ...]
    cpu: Mapping[str, float]
    wall_s: float

    @property
    def queries(self) -> int:
        """Queries of each side."""
        return len(self.plain)

    def paired_added_ms(self) -> list[float]:
        """Per iteration: the other side's time minus plain's, in ms."""
        return [(o - p) * 1000.0 for p, o in zip(self.plain, self.other)]


@dataclass(frozen=True, slots=True)
class Pass:
    """Every workload once, plain alternating with ``side`` (FLEET or CLUSTER_DIRECT)."""

    side: str
    blocks: tuple[WorkloadBlock, ...]
    queries_per_cluster: Mapping[str, int]  # fleet clusters that ran this pass's queries of ``side``


@dataclass(frozen=True, slots=True)
class Latency:
    plain_p50_ms: float
    plain_p95_ms: float
    other_p50_ms: float
    other_p95_ms: float
    ratio: float  # other median / plain median
    added_p50_ms: float  # median of the paired differences (not a difference of medians)
    added_p95_ms: float


def latency(block: WorkloadBlock) -> Latency:
    plain = [s * 1000.0 for s in block.plain]
    other = [s * 1000.0 for s in block.other]
    added = block.paired_added_ms()
    return Latency(
        plain_p50_ms=median(plain), plain_p95_ms=percentile(plain, 95),
        other_p50_ms=median(other), other_p95_ms=percentile(other, 95),
        ratio=_ratio(median(other), median(plain)),
        added_p50_ms=median(added), added_p95_ms=percentile(added, 95),
    )


def gateway_added_ms(fleet_block: WorkloadBlock, direct_block: WorkloadBlock) -> float:
    """What the gateway adds, estimated across the two passes: (fleet - plain) - (cluster-direct - plain),
    each a paired median; plain is the common reference that makes the two passes comparable."""
    return latency(fleet_block).added_p50_ms - latency(direct_block).added_p50_ms


@dataclass(frozen=True, slots=True)
class CpuPerQuery:
    """CPU ms per query of the side each part serves, over some workload blocks of one pass."""

    label: str
    queries: int  # per side
    ms: Mapping[str, float]  # part -> ms per query; CLIENT per query of either side

    @property
    def clusters_to_plain(self) -> float:
        return _ratio(self.ms.get("clusters", 0.0), self.ms.get("plain", 0.0))


def cpu_per_query(blocks: Iterable[WorkloadBlock], label: str) -> CpuPerQuery:
    blocks = list(blocks)
    queries = sum(b.queries for b in blocks)
    parts = {part for b in blocks for part in b.cpu}
    seconds = {part: sum(b.cpu.get(part, 0.0) for b in blocks) for part in parts}
    ms = {part: s * 1000.0 / (2 * queries if part == CLIENT else queries) if queries else math.nan
          for part, s in seconds.items()}
    return CpuPerQuery(label, queries, ms)


def cpu_rows(p: Pass) -> list[CpuPerQuery]:
    """One row per workload, then the small workloads together, then all of them."""
    rows = [cpu_per_query([b], b.workload) for b in p.blocks]
    rows.append(cpu_per_query((b for b in p.blocks if b.small), "small workloads"))
    rows.append(cpu_per_query(p.blocks, "all workloads"))
    return rows


def total_cpu(p: Pass) -> tuple[dict[str, float], float]:
    """CPU seconds per part and wall seconds of the whole pass."""
    used: dict[str, float] = {}
    for b in p.blocks:
        for part, seconds in b.cpu.items():
            used[part] = used.get(part, 0.0) + seconds
    return used, sum(b.wall_s for b in p.blocks)


@dataclass(frozen=True, slots=True)
class Idle:
    seconds: float
    cpu: Mapping[str, float]  # CPU seconds per part while nobody sent anything

    def percent_of_core(self, *parts: str) -> float:
        return sum(self.cpu.get(p, 0.0) for p in parts) * 100.0 / self.seconds if self.seconds else math.nan


@dataclass(frozen=True, slots=True)
class LargeResult:
    nbytes: int  # Arrow bytes of one result
    rates: Mapping[str, tuple[float, ...]]  # side -> MB/s per measured run; index i is one pair
    cpu: Mapping[str, float]
    wall_s: float
    fleet_runs: int  # warm-up included, as the CPU is
    queries_per_cluster: Mapping[str, int]

    def paired_ratios(self) -> list[float]:
        return [_ratio(f, p) for f, p in zip(self.rates[FLEET], self.rates[PLAIN])]

    @property
    def ratio(self) -> float:
        return median(self.paired_ratios())

    def gateway_ms_per_mb(self) -> float:
        relayed_mb = self.fleet_runs * self.nbytes / 1e6
        return self.cpu.get("gateway", 0.0) * 1000.0 / relayed_mb if relayed_mb else math.nan


@dataclass(frozen=True, slots=True)
class Results:
    passes: Mapping[str, Pass]  # FLEET, CLUSTER_DIRECT
    cluster_direct: str  # id of the fleet cluster the cluster-direct side talked to
    idle: Idle
    large: LargeResult
    notes: tuple[str, ...] = ()  # processes that began or ended while measured, client warnings


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    measured: str
    target: str
    met: bool


def goals(r: Results) -> list[Goal]:
    fleet = r.passes[FLEET]
    worst = max(fleet.blocks, key=lambda b: latency(b).ratio)
    worst_ratio = latency(worst).ratio
    small = cpu_per_query((b for b in fleet.blocks if b.small), "small")
    every = cpu_per_query(fleet.blocks, "all")
    gateway_ms = small.ms.get("gateway", math.nan)
    idle_percent = r.idle.percent_of_core(*FLEET_PARTS)
    return [
        Goal("fleet/plain median latency, worst workload", f"{worst_ratio:.3f} ({worst.workload})",
             f"<= {LATENCY_RATIO_GOAL:g}", worst_ratio <= LATENCY_RATIO_GOAL),
        Goal("gateway CPU per small query", f"{gateway_ms:.2f} ms", f"<= {GATEWAY_CPU_GOAL_MS:g} ms",
             gateway_ms <= GATEWAY_CPU_GOAL_MS),
        Goal("fleet cluster CPU per query / plain's", f"{every.clusters_to_plain:.2f}x",
             f"<= {CLUSTER_CPU_RATIO_GOAL:g}x", every.clusters_to_plain <= CLUSTER_CPU_RATIO_GOAL),
        Goal("idle: gateway + fleet JVMs", f"{idle_percent:.2f}% of a core", f"<= {IDLE_GOAL_PERCENT:g}%",
             idle_percent <= IDLE_GOAL_PERCENT),
        Goal("large result MB/s, fleet/plain (paired)", f"{r.large.ratio:.3f}", f">= {THROUGHPUT_GOAL:g}",
             r.large.ratio >= THROUGHPUT_GOAL),
    ]


def queries_per_cluster(rows: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many of the gateway's query records (``/api/queries`` rows) each cluster ran."""
    return Counter(row["cluster_id"] for row in rows if row.get("cluster_id"))


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan
