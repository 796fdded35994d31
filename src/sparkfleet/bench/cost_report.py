"""The report of ``sparkfleet bench cost``: compute used and latency per fleet, and the goals."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.cost_results import ArmRun, summarize, share_of

STANDARD_SHARE_GOAL = 0.40
FIRST_RESULT_GOAL_S = 0.5


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(out: Console, runs: Sequence[ArmRun]) -> None:
    summaries = {run.arm: summarize(run) for run in runs}
    static = summaries.get("static")
    table = Table(title="one bursty trace per fleet (seconds unless noted)")
    for column in ("fleet", "core-s", "vs static", "avg cores", "cold starts", "warm starts",
                   "1st after idle (median / max)", "interactive", "p50", "p95", "batch", "batch mean", "errors"):
        table.add_column(column, justify="left" if column == "fleet" else "right")
    for run in runs:
        s = summaries[run.arm]
        share = share_of(s, static)
        table.add_row(
            run.arm, f"{s.core_seconds:.0f}", "-" if share is None else f"{share:.0%}", f"{s.average_cores:.2f}",
            str(s.cold_starts), str(s.warm_starts),
            f"{_s(s.first_after_idle_median_s)} / {_s(s.first_after_idle_max_s)}",
            str(s.interactive), _s(s.interactive_p50_s), _s(s.interactive_p95_s),
            str(s.batch), _s(s.batch_mean_s), str(s.errors),
        )
    out.print(table)

    for run in runs:
        errors = Counter(t.error for t in run.timings if not t.ok)
        for error, count in errors.most_common(5):
            out.print(f"[red]{run.arm}: {count} x {error}[/red]")

    standard, performance = summaries.get("standard"), summaries.get("performance")
    if standard is not None and static is not None:
        share = share_of(standard, static)
        verdict = "met" if share is not None and share <= STANDARD_SHARE_GOAL else "missed"
        out.print(f"Standard used {_pct(share)} of the static fleet's core-seconds "
                  f"(goal <= {STANDARD_SHARE_GOAL:.0%}: {verdict})")
    if performance is not None:
        first = performance.first_after_idle_max_s
        verdict = "met" if first is not None and first <= FIRST_RESULT_GOAL_S else "missed"
        out.print(f"Performance-optimized: first result after idle {_s(performance.first_after_idle_median_s)}s "
                  f"median, {_s(first)}s worst (goal <= {FIRST_RESULT_GOAL_S}s: {verdict})")
        if static is not None:
            out.print(f"Performance-optimized used {_pct(share_of(performance, static))} of the static fleet's "
                      "core-seconds")


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"
