"""bench/estimate_results.py: reading estimates back from query records, and the match summaries."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.bench.estimate import _parse, optimizer_size, pool_toml
from sparkfleet.bench.estimate_results import (
    HISTORY,
    STATIC,
    ParsedEstimate,
    QueryResult,
    exit_code,
    match_summary,
    missed_by_gateway,
    parse_estimate,
    query_rows,
    spread_ms,
    static_estimate_stability,
)
from sparkfleet.config import Settings
from sparkfleet.plan.cost import CostClass, Estimate, cost_class_of


def estimate(cls: str, core_s: float, source: str = STATIC, static_s: float | None = None) -> ParsedEstimate:
    return ParsedEstimate(CostClass(cls), core_s, source, "r", core_s if static_s is None and source == STATIC else static_s)


def result(query: str, run: int, est: ParsedEstimate | None, task_ms: float | None, **kw) -> QueryResult:  # type: ignore[no-untyped-def]
    return QueryResult(scale_factor=1.0, query=query, run=run, estimate=est, task_ms=task_ms, **kw)


def test_a_static_estimate_is_read_back_from_its_description() -> None:
    text = Estimate(25.2, 0, 10**9, "static", "scans 1 GB parquet, 2 joins (guessed), 1 sort").describe()
    parsed = parse_estimate(text)
    assert parsed == ParsedEstimate(CostClass.MEDIUM, 25.2, STATIC, "scans 1 GB parquet, 2 joins (guessed), 1 sort", 25.2)


def test_a_history_estimate_names_what_the_plan_alone_said() -> None:
    text = ("tiny (~0.142 core-s, history: median of 1 run: 0.142 core-s, read 16.4 KB, peak memory 0 B "
            "(plan alone: ~0.435 core-s))")
    parsed = parse_estimate(text)
    assert parsed is not None
    assert (parsed.cost_class, parsed.core_seconds, parsed.source, parsed.static_core_seconds) == (
        CostClass.TINY, 0.142, HISTORY, 0.435)


def test_large_figures_in_exponent_form_and_unreadable_texts() -> None:
    parsed = parse_estimate(Estimate(1234.0, 0, 0, "static", "no input").describe())
    assert parsed is not None and parsed.core_seconds == 1230.0 and parsed.cost_class is CostClass.LARGE
    assert parse_estimate(None) is None and parse_estimate("") is None
    assert parse_estimate("huge (~3 core-s, static: x)") is None


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False), st.sampled_from([STATIC, HISTORY]))
def test_every_description_reads_back_to_its_class(core_s: float, source: str) -> None:
    original = Estimate(core_s, 0, 0, source, "scans 3 MB parquet (a, b)")
    parsed = parse_estimate(original.describe())
    assert parsed is not None and parsed.source == source
    assert math.isclose(parsed.core_seconds, float(f"{core_s:.3g}"))
    # The description rounds to 3 digits, which can only move a figure across a class limit
    # when it sits within rounding of that limit.
    assert parsed.cost_class is original.cost_class or parsed.cost_class is cost_class_of(float(f"{core_s:.3g}"))


def test_the_observed_class_uses_task_time_and_the_shared_limits() -> None:
    r = result("q01", 1, estimate("small", 1.0), 4_999.0)
    assert r.observed_class is CostClass.SMALL and r.matched and r.off_by == 0
    r = result("q01", 1, estimate("small", 1.0), 5_000.0)
    assert r.observed_class is CostClass.MEDIUM and r.matched is False and r.off_by == -1
    assert result("q01", 1, None, 10.0).matched is None
    assert result("q01", 1, estimate("tiny", 0.1), None).matched is None


def test_matches_are_counted_per_source_with_over_and_under_estimates() -> None:
    results = [
        result("q01", 1, estimate("small", 1), 2_000),  # static hit
        result("q02", 1, estimate("large", 99), 2_000),  # static over by two classes
        result("q03", 1, estimate("tiny", 0.1), 2_000),  # static under
        result("q03", 2, estimate("tiny", 0.1), None),  # not measured: not compared
        result("q01", 2, estimate("small", 2, HISTORY), 2_500),  # history hit
        result("q02", 2, None, 2_000),  # no estimate: not compared
    ]
    static = match_summary(results, STATIC)
    assert (static.matched, static.compared, static.over, static.under) == (1, 3, 1, 1)
    assert math.isclose(static.fraction, 1 / 3)
    assert static.describe() == "static: 1/3 = 33% matched (1 over, 1 under)"
    history = match_summary(results, HISTORY)
    assert (history.matched, history.compared) == (1, 1)
    assert match_summary([], HISTORY).describe() == "history: no comparable runs"


def test_rows_put_each_querys_runs_side_by_side_in_name_order() -> None:
    results = [result("q02", 2, None, 1.0), result("q01", 1, None, 1.0), result("q02", 1, None, 1.0)]
    rows = query_rows(results)
    assert [r.query for r in rows] == ["q01", "q02"]
    assert [r.run for r in rows[1].runs] == [1, 2] and rows[0].run(2) is None


def test_a_plan_alone_figure_that_changes_between_runs_is_noticed() -> None:
    same = [result("q01", 1, estimate("small", 2.0), 1.0),
            result("q01", 2, estimate("small", 9.0, HISTORY, static_s=2.0), 1.0)]
    assert static_estimate_stability(same) == 1.0
    moved = [*same, result("q02", 1, estimate("small", 1.0), 1.0),
             result("q02", 2, estimate("small", 3.0, HISTORY, static_s=3.0), 1.0)]
    assert static_estimate_stability(moved) == 3.0


def test_spread_and_exit_code() -> None:
    spread = spread_ms([5.0, 1.0, 3.0, 100.0, 2.0])
    assert (spread.count, spread.median_ms, spread.max_ms) == (5, 3.0, 100.0)
    assert spread_ms([]).describe() == "not measured"
    ok = result("q01", 1, estimate("tiny", 0.1), 10.0)
    assert exit_code([ok]) == 0
    assert exit_code([ok, result("q02", 1, estimate("tiny", 0.1), None)]) == 1
    assert exit_code([ok, result("q02", 1, None, 5.0, error="boom")]) == 1
    assert exit_code([]) == 1
    assert missed_by_gateway([ok, result("q02", 1, None, 5.0, measured_by="bench")]) == 1


def test_optimizer_size_reads_the_root_statistics_of_explain_cost() -> None:
    text = ("== Optimized Logical Plan ==\nSort [a ASC], true, Statistics(sizeInBytes=17.9 MiB)\n"
            "+- Relation [a] parquet, Statistics(sizeInBytes=1.0 GiB)\n")
    assert optimizer_size(text) == 17.9 * 1024**2
    assert optimizer_size("Statistics(sizeInBytes=24.0 B)") == 24.0
    assert optimizer_size("no statistics") is None


def test_arguments_and_pool() -> None:
    args = _parse(["--scale-factors", "0.1, 1", "--queries", "q01,q06"])
    assert args.scale_factors == [0.1, 1.0] and args.queries == ["q01", "q06"] and args.tables == "views"
    import tomllib

    settings = Settings(**tomllib.loads(pool_toml("M")))
    assert settings.pool.clusters == ["M"]
