"""What ``sparkfleet bench mixed`` observed and its summaries: plain data and pure functions.

Times are seconds of one monotonic clock shared by every client thread of a phase. A phase's
measurement starts when every client finished its warm-up; the figures cover only what ran after.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sparkfleet.bench.harness import median, percentile

# The goals of issue 4.
INTERACTIVE_P95_GOAL = 1.3  # interactive p95 under ETL at most this many times its p95 on an idle fleet
ETL_THROUGHPUT_GOAL = 0.9  # ETL work rate at least this share of one shared cluster of the same size

ETL_CLIENT = "etl"


@dataclass(frozen=True, slots=True)
class Timing:
    """One query a client ran during the measurement."""

    client: str  # "etl", "interactive-1", ...
    query: str  # the TPC-H query name, or the interactive query's kind
    started: float
    ended: float
    error_class: str | None = None
    message: str = ""
    warm_up: bool = False  # run before the measurement (kept only when it failed)

    @property
    def ok(self) -> bool:
        return self.error_class is None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class Phase:
    """One fleet and workload run side by side with the others."""

    key: str  # "a", "b", "c", "d"
    title: str  # "workload placement, 2 x 1 core"
    with_etl: bool


@dataclass
class PhaseRun:
    phase: Phase
    measured_from: float  # when every client was warm and the measurement began
    deadline: float  # no ETL query starts after this; interactive clients run until the ETL ends
    ended: float  # when the last client stopped
    timings: list[Timing] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # the gateway's, of every client
    sessions: dict[str, str] = field(default_factory=dict)  # Spark session id -> client
    clusters: list[dict[str, Any]] = field(default_factory=list)  # /api/clusters at the end

    def interactive(self) -> list[Timing]:
        """Measured interactive queries (warm-up excluded)."""
        return [t for t in self.timings if t.client != ETL_CLIENT and not t.warm_up]

    def etl(self) -> list[Timing]:
        """Measured ETL queries (warm-up excluded)."""
        return [t for t in self.timings if t.client == ETL_CLIENT and not t.warm_up]


# ---- interactive latency -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int  # successful queries
    errors: int
    p50_s: float  # NaN when none succeeded
    p95_s: float
    max_s: float


def summarize_latency(timings: Sequence[Timing]) -> LatencySummary:
    times = [t.seconds for t in timings if t.ok]
    return LatencySummary(
        len(times), sum(1 for t in timings if not t.ok),
        percentile(times, 50.0), percentile(times, 95.0), max(times, default=math.nan),
    )


def latency_by_query(timings: Sequence[Timing]) -> dict[str, LatencySummary]:
    """Per interactive query kind, in the order first seen."""
    kinds = list(dict.fromkeys(t.query for t in timings))
    return {kind: summarize_latency([t for t in timings if t.query == kind]) for kind in kinds}


# ---- ETL throughput ----------------------------------------------------------------------------


def reference_seconds(timings: Iterable[Timing]) -> dict[str, float]:
    """Each ETL query's median time over every successful run of the invocation (all phases).

    Weighting completed queries by it turns "queries per minute" into a work rate that does not
    depend on which queries of the rotation happened to fall inside a phase.
    """
    by_query: dict[str, list[float]] = {}
    for t in timings:
        if t.ok:
            by_query.setdefault(t.query, []).append(t.seconds)
    return {name: median(times) for name, times in by_query.items()}


@dataclass(frozen=True, slots=True)
class Throughput:
    completed: int
    errors: int
    seconds: float  # from the start of the measurement to the end of the ETL's last query
    per_min: float  # completed queries per minute; NaN when the ETL did not run
    work_rate: float  # reference seconds of completed work per elapsed second; NaN likewise


def etl_throughput(timings: Sequence[Timing], measured_from: float, weights: Mapping[str, float]) -> Throughput:
    """The ETL client runs queries back to back and lets the one running at the deadline finish, so
    its window ends with its last query and no query is cut in two."""
    if not timings:
        return Throughput(0, 0, 0.0, math.nan, math.nan)
    done = [t for t in timings if t.ok]
    seconds = max(t.ended for t in timings) - measured_from
    if seconds <= 0:
        return Throughput(len(done), len(timings) - len(done), 0.0, math.nan, math.nan)
    work = sum(weights.get(t.query, math.nan) for t in done)
    return Throughput(len(done), len(timings) - len(done), seconds, 60.0 * len(done) / seconds, work / seconds)


# ---- where the gateway ran each client's queries -----------------------------------------------


def clusters_by_client(records: Sequence[Mapping[str, Any]], sessions: Mapping[str, str]) -> dict[str, Counter[str]]:
    """For each client, how many of its queries ran on each cluster (relations only, as below:
    they are the queries that run jobs; warm-up included)."""
    return _count_by_client(records, sessions, "cluster_id")


def profiles_by_client(records: Sequence[Mapping[str, Any]], sessions: Mapping[str, str]) -> dict[str, Counter[str]]:
    """For each client, the latency profiles the gateway gave its queries (relations only: the
    SQL text itself is sent first as a command that Spark only analyses)."""
    return _count_by_client(records, sessions, "profile")


def _count_by_client(records: Sequence[Mapping[str, Any]], sessions: Mapping[str, str],
                     field: str) -> dict[str, Counter[str]]:
    """For each client, how many of its relation records have each value of ``field``."""
    counts: dict[str, Counter[str]] = {client: Counter() for client in sessions.values()}
    for record in records:
        client = sessions.get(record.get("session_id", ""))
        if client is not None and record.get("kind") == "relation" and record.get(field):
            counts[client][record[field]] += 1
    return counts


def sharing_etl_cluster(placed: Mapping[str, Counter[str]]) -> list[str]:
    """Interactive clients with at least one query on a cluster the ETL client used."""
    etl_clusters = set(placed.get(ETL_CLIENT, Counter()))
    return sorted(client for client, where in placed.items()
                  if client != ETL_CLIENT and etl_clusters & set(where))


# ---- ratios and verdict ------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is not positive."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Ratio:
    label: str
    value: float
    goal: str = ""  # "<= 1.3", ">= 0.9" or "" for a ratio shown for comparison only
    met: bool | None = None  # None without a goal, or when the ratio could not be computed


def _judge(value: float, at_most: float | None = None, at_least: float | None = None) -> bool | None:
    if math.isnan(value):
        return None
    if at_most is not None:
        return value <= at_most
    assert at_least is not None
    return value >= at_least


@dataclass(frozen=True, slots=True)
class Comparison:
    ratios: list[Ratio]
    goals: list[Ratio]  # the two goal lines of issue 4


def compare(latency: Mapping[str, LatencySummary], throughput: Mapping[str, Throughput],
            interactive_per_s: Mapping[str, float] | None = None) -> Comparison:
    """Ratios between phases keyed "a" (workload placement), "b" (session affinity), "c" (one
    shared cluster) and "d" (idle fleet); missing phases give NaN. ``interactive_per_s``: the
    interactive queries each phase completed per second, the other half of the machine's work
    (ETL done on a shared cluster is partly bought by starving the interactive clients)."""
    nan_latency = LatencySummary(0, 0, math.nan, math.nan, math.nan)
    nan_throughput = Throughput(0, 0, 0.0, math.nan, math.nan)
    p95 = {k: latency.get(k, nan_latency).p95_s for k in "abcd"}
    p50 = {k: latency.get(k, nan_latency).p50_s for k in "abcd"}
    work = {k: throughput.get(k, nan_throughput).work_rate for k in "abc"}
    per_min = {k: throughput.get(k, nan_throughput).per_min for k in "abc"}
    ratios = [
        Ratio("interactive p95  (a) workload / (d) idle", ratio(p95["a"], p95["d"])),
        Ratio("interactive p95  (b) affinity / (d) idle", ratio(p95["b"], p95["d"])),
        Ratio("interactive p95  (c) shared   / (d) idle", ratio(p95["c"], p95["d"])),
        Ratio("interactive p50  (a) workload / (d) idle", ratio(p50["a"], p50["d"])),
        Ratio("interactive p50  (b) affinity / (d) idle", ratio(p50["b"], p50["d"])),
        Ratio("interactive p50  (c) shared   / (d) idle", ratio(p50["c"], p50["d"])),
        Ratio("ETL work rate    (a) workload / (c) shared", ratio(work["a"], work["c"])),
        Ratio("ETL work rate    (b) affinity / (c) shared", ratio(work["b"], work["c"])),
        Ratio("ETL queries/min  (a) workload / (c) shared", ratio(per_min["a"], per_min["c"])),
        Ratio("ETL queries/min  (b) affinity / (c) shared", ratio(per_min["b"], per_min["c"])),
    ]
    if interactive_per_s is not None:
        done = {k: interactive_per_s.get(k, math.nan) for k in "abcd"}
        ratios += [
            Ratio("interactive done (a) workload / (c) shared", ratio(done["a"], done["c"])),
            Ratio("interactive done (b) affinity / (c) shared", ratio(done["b"], done["c"])),
        ]
    p95_ratio = ratio(p95["a"], p95["d"])
    work_ratio = ratio(work["a"], work["c"])
    goals = [
        Ratio("interactive p95 under ETL (a) vs. idle fleet (d)", p95_ratio, f"<= {INTERACTIVE_P95_GOAL:g}",
              _judge(p95_ratio, at_most=INTERACTIVE_P95_GOAL)),
        Ratio("ETL work rate (a) vs. one shared cluster (c)", work_ratio, f">= {ETL_THROUGHPUT_GOAL:g}",
              _judge(work_ratio, at_least=ETL_THROUGHPUT_GOAL)),
    ]
    return Comparison(ratios, goals)


def verdict_line(goal: Ratio) -> str:
    """``interactive p95 ... = 1.12x (goal <= 1.3): met``."""
    shown = "n/a" if math.isnan(goal.value) else f"{goal.value:.2f}x"
    outcome = {True: "met", False: "missed", None: "not measured"}[goal.met]
    return f"{goal.label} = {shown} (goal {goal.goal}): {outcome}"


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    client: str
    query: str  # "(warm-up)" appended when it failed before the measurement
    error_class: str
    count: int
    example: str  # the first message


def group_errors(timings: Sequence[Timing]) -> list[ErrorGroup]:
    """Failed queries grouped by (client, query, error class), most frequent first."""
    counts: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], str] = {}
    for t in timings:
        if t.ok:
            continue
        key = (t.client, t.query + (" (warm-up)" if t.warm_up else ""), t.error_class or "")
        counts[key] += 1
        examples.setdefault(key, t.message)
    return [ErrorGroup(*key, n, examples[key]) for key, n in counts.most_common()]


def exit_code(runs: Sequence[PhaseRun]) -> int:
    """1 if any client saw an error, else 0 (goals are reported, not enforced)."""
    return 1 if any(not t.ok for run in runs for t in run.timings) else 0
