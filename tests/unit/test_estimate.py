"""plan/estimate.py: expected cost from a plan summary and input sizes, and from history."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.connect import functions as F
from pyspark.sql.connect import plan as connect_plan
from pyspark.sql.connect.dataframe import DataFrame

from sparkfleet.plan.cost import CostClass, ObservedCost
from sparkfleet.plan.estimate import (
    BLOCKING, GIB, OVERHEAD_CORE_S, UNKNOWN_INPUT_BYTES, best_estimate, estimate_from_history, estimate_static,
)
from sparkfleet.plan.relations import PlanSummary, Scan, summarize_plan

from .spark_plans import cached_local_df, offline_session, plan_of, sql_command_plan

spark = offline_session()
ORDERS = Scan("path", "/data/orders", "parquet")
CUSTOMERS = Scan("table", "sales.customers")
EVENTS = Scan("path", "/data/events.csv", "csv")


def summary_of(df: DataFrame) -> PlanSummary:
    return summarize_plan(plan_of(df))


def observed(runs: int = 3, task_ms: float = 42_000.0) -> ObservedCost:
    return ObservedCost(
        runs=runs, duration_ms=25_000, task_ms=task_ms, cpu_ms=30_000, peak_execution_memory=512 * 1024**2,
        spilled_bytes=0, shuffle_bytes=10**8, input_bytes=2 * 10**9,
    )


def test_a_tiny_query_costs_its_overhead() -> None:
    estimate = estimate_static(summary_of(spark.range(10).filter("id > 3")), {})
    assert estimate.cost_class is CostClass.TINY
    assert OVERHEAD_CORE_S <= estimate.core_seconds < 0.2
    assert estimate.known and estimate.source == "static" and estimate.memory_bytes == 0
    assert estimate.reason == "range of 10 rows"


def test_the_reason_names_the_scan_and_operators() -> None:
    df = spark.read.parquet("/data/orders").join(spark.table("sales.customers"), "id").join(
        spark.read.parquet("/data/orders").select("id"), "id"
    ).groupBy("region").count()
    summary = summary_of(df)
    estimate = estimate_static(summary, {ORDERS: 1_000_000_000, CUSTOMERS: 200_000_000})
    assert estimate.reason == "scans 1.2 GB parquet, 2 joins, 1 aggregate"
    assert estimate.scan_bytes == 1_200_000_000 and estimate.known
    assert estimate.memory_bytes > 1_200_000_000  # decoded parquet held by the joins' hash tables
    assert estimate.cost_class in (CostClass.MEDIUM, CostClass.LARGE)
    plain = estimate_static(summary_of(spark.read.parquet("/data/orders")), {ORDERS: 1_000_000_000})
    assert plain.core_seconds < estimate.core_seconds and plain.memory_bytes == 0


def test_text_formats_cost_more_than_parquet_per_byte() -> None:
    parquet = estimate_static(summary_of(spark.read.parquet("/data/orders")), {ORDERS: 10**9})
    csv = estimate_static(summary_of(spark.read.csv("/data/events.csv")), {EVENTS: 10**9})
    assert csv.core_seconds > 2 * parquet.core_seconds
    assert "1 GB csv" in csv.reason


def test_an_unknown_input_is_a_stated_guess() -> None:
    summary = summary_of(spark.table("sales.customers").groupBy("a").count())
    estimate = estimate_static(summary, {CUSTOMERS: None})
    assert not estimate.known and estimate.scan_bytes == 0
    assert "1 input of unknown size (guessed 1.07 GB each)" in estimate.reason
    assert estimate == estimate_static(summary, {})  # absent from the mapping is unknown too
    sized = estimate_static(summary, {CUSTOMERS: UNKNOWN_INPUT_BYTES})
    assert sized.core_seconds == pytest.approx(estimate.core_seconds) and sized.known


def test_a_limit_over_a_plain_scan_caps_the_work_but_not_over_an_aggregate() -> None:
    big = {ORDERS: 50 * GIB}
    scan = spark.read.parquet("/data/orders")
    capped = estimate_static(summary_of(scan.filter("a > 1").limit(10)), big)
    full = estimate_static(summary_of(scan.groupBy("a").count().limit(10)), big)
    assert capped.cost_class is CostClass.TINY and "limit 10 stops the scan early" in capped.reason
    assert full.cost_class is CostClass.LARGE
    ranged = estimate_static(summary_of(spark.range(10**12).limit(5)), {})
    assert ranged.cost_class is CostClass.TINY


def test_a_huge_range_is_large() -> None:
    estimate = estimate_static(summary_of(spark.range(10**11).groupBy("id").count()), {})
    assert estimate.cost_class is CostClass.LARGE and estimate.known


def test_cached_local_data_is_unknown_until_sized() -> None:
    summary = summary_of(cached_local_df(spark, ["h1", "h2"]))
    guessed = estimate_static(summary, {})
    assert not guessed.known and "2 cached local relation chunk(s) of unknown size" in guessed.reason
    sized = estimate_static(summary, {}, local_bytes_known=10**6)
    assert sized.known and sized.scan_bytes == 10**6


def test_unreadable_sql_is_a_guess() -> None:
    estimate = estimate_static(summarize_plan(sql_command_plan(spark, "SELECT FROM WHERE (")), {})
    assert not estimate.known and "unreadable SQL" in estimate.reason


def test_catalog_calls_cost_nothing_but_overhead() -> None:
    estimate = estimate_static(summary_of(DataFrame(connect_plan.ListTables(), spark)), {})
    assert estimate.known and estimate.cost_class is CostClass.TINY


def base_summary() -> PlanSummary:
    return summary_of(spark.read.parquet("/data/orders").select("a", F.col("b")))


@given(smaller=st.integers(0, 10**12), extra=st.integers(1, 10**12))
def test_more_input_never_costs_less(smaller: int, extra: int) -> None:
    summary = base_summary()
    assert estimate_static(summary, {ORDERS: smaller + extra}).core_seconds > estimate_static(summary, {ORDERS: smaller}).core_seconds


@given(
    operator=st.sampled_from(["joins", "aggregates", "sorts", "windows", "shuffles", "generators", "distincts", "set_operations", "writes"]),
    size=st.integers(0, 10**12),
)
def test_another_operator_never_costs_less(operator: str, size: int) -> None:
    summary = base_summary()
    more = dataclasses.replace(summary, **{operator: getattr(summary, operator) + 1})
    with_operator = estimate_static(more, {ORDERS: size}).core_seconds
    without = estimate_static(summary, {ORDERS: size}).core_seconds
    assert with_operator >= without
    assert with_operator > without or (size == 0 and operator not in BLOCKING)


def test_history_is_the_estimate_when_the_workload_ran_before() -> None:
    history = estimate_from_history(observed())
    assert (history.core_seconds, history.memory_bytes, history.scan_bytes) == (42.0, 512 * 1024**2, 2 * 10**9)
    assert history.source == "history" and history.known
    assert history.reason == "median of 3 runs: 42 core-s, read 2 GB, peak memory 537 MB"
    static = estimate_static(summary_of(spark.range(10)), {})
    best = best_estimate(static, observed())
    assert best.source == "history" and best.core_seconds == 42.0 and best.cost_class is CostClass.MEDIUM
    assert "plan alone" in best.reason


def test_without_history_the_plan_decides() -> None:
    static = estimate_static(summary_of(spark.range(10)), {})
    assert best_estimate(static, None) is static
    assert best_estimate(static, observed(runs=0)) is static
