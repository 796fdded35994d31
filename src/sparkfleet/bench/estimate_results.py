"""What ``sparkfleet bench estimate`` observed and its summaries: plain data and pure functions.

A query's *estimate* is read back from the text the gateway stores on its query record
(``Estimate.describe()``: ``"medium (~25.2 core-s, static: scans 1.2 GB parquet, 2 joins)"``); its
*observed* cost is the task time Spark measured (``workload_runs.task_ms``), classed with the same
limits (``cost_class_of``). A query matches when both land in the same class.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from sparkfleet.plan.cost import CostClass, cost_class_of

STATIC = "static"
HISTORY = "history"

# "medium (~25.2 core-s, static: ...)", "tiny (~0.142 core-s, history: ... (plan alone: ~0.435 core-s))"
_ESTIMATE = re.compile(
    r"^\s*(?P<cls>tiny|small|medium|large) \(~(?P<core_s>[0-9.eE+-]+) core-s, (?P<source>\w+): (?P<reason>.*)\)\s*$",
    re.DOTALL,
)
_PLAN_ALONE = re.compile(r"\(plan alone: ~([0-9.eE+-]+) core-s\)")


@dataclass(frozen=True, slots=True)
class ParsedEstimate:
    """An estimate as the gateway described it on the query record."""

    cost_class: CostClass
    core_seconds: float
    source: str  # "static" or "history"
    reason: str
    static_core_seconds: float | None  # what the plan alone said (a history estimate names it too)


def parse_estimate(text: str | None) -> ParsedEstimate | None:
    """The estimate in a query record's ``estimate`` text; None if there is none or it is unreadable."""
    if not text:
        return None
    match = _ESTIMATE.match(text)
    if match is None:
        return None
    try:
        core_s = float(match["core_s"])
    except ValueError:
        return None
    reason = match["reason"]
    static_s: float | None = core_s if match["source"] == STATIC else None
    plan_alone = _PLAN_ALONE.search(reason)
    if plan_alone is not None:
        try:
            static_s = float(plan_alone.group(1))
        except ValueError:
            pass
    return ParsedEstimate(CostClass(match["cls"]), core_s, match["source"], reason, static_s)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One run of one TPC-H query through the gateway."""

    scale_factor: float
    query: str  # "q01"
    run: int  # 1: no history yet, 2: the first run is in the history
    estimate: ParsedEstimate | None
    task_ms: float | None  # None: the run's cost was never recorded (Spark UI unreadable, or failed)
    duration_ms: float | None = None  # wall time the gateway recorded
    error: str = ""  # set when the query failed
    # Who measured task_ms: "gateway" (its workload history) or "bench" (read from the Spark UI by
    # the benchmark because the gateway recorded the run without a cost).
    measured_by: str = "gateway"

    @property
    def observed_class(self) -> CostClass | None:
        return None if self.task_ms is None else cost_class_of(self.task_ms / 1000.0)

    @property
    def matched(self) -> bool | None:
        """Estimated class == observed class; None when either side is missing."""
        if self.estimate is None or self.observed_class is None:
            return None
        return self.estimate.cost_class is self.observed_class

    @property
    def off_by(self) -> int | None:
        """Classes between estimate and observation: >0 overestimated, <0 underestimated."""
        if self.estimate is None or self.observed_class is None:
            return None
        return self.estimate.cost_class.rank - self.observed_class.rank


@dataclass(frozen=True, slots=True)
class MatchSummary:
    source: str
    matched: int
    compared: int  # runs with both an estimate of this source and an observation
    over: int  # estimated a higher class than observed
    under: int

    @property
    def fraction(self) -> float:
        return self.matched / self.compared if self.compared else float("nan")

    def describe(self) -> str:
        if not self.compared:
            return f"{self.source}: no comparable runs"
        return (f"{self.source}: {self.matched}/{self.compared} = {self.fraction:.0%} matched "
                f"({self.over} over, {self.under} under)")


def match_summary(results: Iterable[QueryResult], source: str) -> MatchSummary:
    """How often estimates of ``source`` ("static" or "history") hit the observed class."""
    compared = [r for r in results if r.estimate is not None and r.estimate.source == source and r.matched is not None]
    return MatchSummary(
        source=source,
        matched=sum(1 for r in compared if r.matched),
        compared=len(compared),
        over=sum(1 for r in compared if (r.off_by or 0) > 0),
        under=sum(1 for r in compared if (r.off_by or 0) < 0),
    )


def by_scale_factor(results: Iterable[QueryResult]) -> dict[float, list[QueryResult]]:
    grouped: dict[float, list[QueryResult]] = {}
    for result in results:
        grouped.setdefault(result.scale_factor, []).append(result)
    return grouped


@dataclass(frozen=True, slots=True)
class QueryRow:
    """One line of the per-scale-factor table: a query's runs side by side, in run order."""

    query: str
    runs: tuple[QueryResult, ...]

    def run(self, number: int) -> QueryResult | None:
        return next((r for r in self.runs if r.run == number), None)


def query_rows(results: Sequence[QueryResult]) -> list[QueryRow]:
    """Per query (in name order), its runs in order."""
    return [
        QueryRow(name, tuple(sorted((r for r in results if r.query == name), key=lambda r: r.run)))
        for name in sorted({r.query for r in results})
    ]


def static_estimate_stability(results: Sequence[QueryResult]) -> float:
    """Largest ratio between the plan-alone figures of one query's runs (1.0: the same every time).

    Both runs see the same plan and the same files, so anything but 1 means the sizer saw other
    inputs (e.g. a table still being written) or the estimate is not a pure function of the plan.
    """
    worst = 1.0
    for name in {r.query for r in results}:
        figures = [r.estimate.static_core_seconds for r in results
                   if r.query == name and r.estimate is not None and r.estimate.static_core_seconds]
        if len(figures) > 1:
            worst = max(worst, max(figures) / min(figures))
    return worst


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and maximum of a set of timings (milliseconds)."""

    count: int
    median_ms: float
    p90_ms: float
    max_ms: float

    def describe(self) -> str:
        if not self.count:
            return "not measured"
        return f"median {self.median_ms:.3g} ms, p90 {self.p90_ms:.3g} ms, max {self.max_ms:.3g} ms (n={self.count})"


def spread_ms(values: Iterable[float]) -> Spread:
    ordered = sorted(values)
    if not ordered:
        return Spread(0, float("nan"), float("nan"), float("nan"))
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return Spread(len(ordered), statistics.median(ordered), p90, ordered[-1])


def missed_by_gateway(results: Iterable[QueryResult]) -> int:
    """Runs whose cost the gateway failed to record (so the next run had no history to use)."""
    return sum(1 for r in results if r.measured_by != "gateway")


def exit_code(results: Sequence[QueryResult]) -> int:
    """0 when every run succeeded and was measured; 1 otherwise (the report says which)."""
    if not results:
        return 1
    return 0 if all(not r.error and r.task_ms is not None and r.estimate is not None for r in results) else 1
