"""plan/fingerprint.py: one workload, one fingerprint; another shape, another fingerprint."""

from __future__ import annotations

import sys
from typing import Callable

import pytest
from google.protobuf import message
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql.connect import functions as F
from pyspark.sql.connect.dataframe import DataFrame
from pyspark.sql.connect.proto import base_pb2
from pyspark.sql.connect.window import Window

from sparkfleet.plan.fingerprint import fingerprint, normalize_sql
from sparkfleet.plan.wire import as_message, read_fields

from .spark_plans import (
    execute_request, offline_session, plan_of, save_plan, sql_command_plan, sql_df,
)

spark = offline_session()
spark_zstd = offline_session(compress=True)
COLUMNS = ["a", "b", "c", "d", "e"]
scalars = st.one_of(
    st.integers(-(2**62), 2**62), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.booleans(),
)


def fp(df: DataFrame) -> str:
    return fingerprint(plan_of(df))


def report(session, threshold, columns: list[str]) -> DataFrame:  # type: ignore[no-untyped-def]
    """A typical parameterised query: filter by a value, project some columns, aggregate."""
    return (
        session.read.parquet("/data/sales")
        .filter(F.col("amount") > F.lit(threshold))
        .select(*columns)
        .groupBy("a")
        .agg(F.sum("b").alias("total"))
    )


def test_a_fingerprint_is_short_hex() -> None:
    value = fp(spark.range(3))
    assert len(value) == 16 and int(value, 16) >= 0


def test_plan_ids_differ_between_runs_but_not_the_fingerprint() -> None:
    first, second = plan_of(report(spark, 5, COLUMNS)), plan_of(report(spark, 5, COLUMNS))
    assert first != second  # fresh plan ids every time the DataFrame is built
    assert fingerprint(first) == fingerprint(second)


def test_requests_with_other_operation_ids_run_the_same_workload() -> None:
    requests = [execute_request(report(spark, 5, COLUMNS)) for _ in range(2)]
    plans = [as_message(read_fields(r, frozenset({3}))[3], "plan") for r in requests]
    ids = {base_pb2.ExecutePlanRequest.FromString(r).operation_id for r in requests}
    assert len(ids) == 2
    assert fingerprint(plans[0]) == fingerprint(plans[1])


@settings(max_examples=40)
@given(first=scalars, second=scalars)
def test_literal_values_do_not_change_the_fingerprint(first: object, second: object) -> None:
    def build(value: object) -> DataFrame:
        return report(spark, value, COLUMNS).withColumn("tag", F.lit(value)).filter(F.col("a").isin(value, 7))

    assert fp(build(first)) == fp(build(second))


@settings(max_examples=40)
@given(order=st.permutations(COLUMNS))
def test_the_order_of_projected_columns_does_not_matter(order: list[str]) -> None:
    assert fp(report(spark, 1, order)) == fp(report(spark, 1, COLUMNS))


@settings(max_examples=25)
@given(values=st.lists(st.integers(0, 10**6), min_size=1, max_size=30))
def test_isin_lists_of_any_length_are_one_workload(values: list[int]) -> None:
    assert fp(spark.table("t").filter(F.col("a").isin(*values))) == fp(spark.table("t").filter(F.col("a").isin(1, 2)))


def test_a_compressed_plan_has_the_fingerprint_of_the_plain_one() -> None:
    def build(session):  # type: ignore[no-untyped-def]
        df = session.table("t")
        for i in range(40):
            df = df.withColumn(f"c{i}", F.col("a") + i)
        return df

    compressed = plan_of(build(spark_zstd))
    assert base_pb2.Plan.FromString(compressed).WhichOneof("op_type") == "compressed_operation"
    assert fingerprint(compressed) == fp(build(spark))


# Each operator a user could add to a query: adding any of them is another workload.
OPERATORS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "filter": lambda df: df.filter(F.col("a") > 1),
    "join": lambda df: df.join(spark.table("other"), "a"),
    "groupBy": lambda df: df.groupBy("a").count(),
    "orderBy": lambda df: df.orderBy("a"),
    "distinct": lambda df: df.distinct(),
    "repartition": lambda df: df.repartition(4),
    "explode": lambda df: df.withColumn("x", F.explode("arr")),
    "window": lambda df: df.withColumn("r", F.row_number().over(Window.partitionBy("b").orderBy("a"))),
    "union": lambda df: df.union(spark.table("other")),
    "limit": lambda df: df.limit(10),
    "drop": lambda df: df.drop("b"),
}


@settings(max_examples=30)
@given(base=st.lists(st.sampled_from(sorted(OPERATORS)), max_size=4), added=st.sampled_from(sorted(OPERATORS)))
def test_adding_an_operator_changes_the_fingerprint(base: list[str], added: str) -> None:
    df = spark.read.parquet("/data/t")
    for name in base:
        df = OPERATORS[name](df)
    assert fp(OPERATORS[added](df)) != fp(df)


@pytest.mark.parametrize(
    "one, other",
    [
        (lambda: spark.table("sales.a"), lambda: spark.table("sales.b")),
        (lambda: spark.read.parquet("/data/x"), lambda: spark.read.parquet("/data/y")),
        (lambda: spark.read.parquet("/data/x"), lambda: spark.read.orc("/data/x")),
        (lambda: spark.table("t").select("a"), lambda: spark.table("t").select("b")),
        (lambda: spark.table("t").select(F.sum("a")), lambda: spark.table("t").select(F.max("a"))),
        (lambda: spark.table("t").join(spark.table("u"), "k"), lambda: spark.table("t").join(spark.table("u"), "k", "left")),
        (lambda: spark.table("t").groupBy("a").count(), lambda: spark.table("t").groupBy("a", "b").count()),
        (lambda: spark.table("t").filter("a > 1"), lambda: spark.table("t").filter("a < 1")),
        (lambda: spark.range(10), lambda: spark.range(10**9)),  # how many rows is shape, not a literal
        (lambda: spark.table("t").limit(10), lambda: spark.table("t").limit(10**6)),
    ],
)
def test_another_shape_is_another_workload(one, other) -> None:  # type: ignore[no-untyped-def]
    assert fp(one()) != fp(other())


def test_sql_expressions_in_strings_are_parameterised() -> None:
    assert fp(spark.table("t").filter("a > 3")) == fp(spark.table("t").filter("a >  99"))
    assert fp(spark.table("t").selectExpr("a * 2", "b")) == fp(spark.table("t").selectExpr("a * 5", "b"))


@settings(max_examples=40)
@given(number=st.integers(-(10**9), 10**9), word=st.text(alphabet="abcxyz' ", max_size=10), order=st.permutations(["a", "b", "sum(c)"]))
def test_sql_literals_and_select_order_do_not_change_the_fingerprint(number: int, word: str, order: list[str]) -> None:
    quoted = "'" + word.replace("'", "\\'") + "'"
    text = f"SELECT {', '.join(order)} FROM t WHERE x > {number} AND y = {quoted} GROUP BY a, b"
    reference = "select a, b, sum(c) from T where x > 0 and y = 'q' group by a, b"
    assert fingerprint(sql_command_plan(spark, text)) == fingerprint(sql_command_plan(spark, reference))
    assert fp(sql_df(spark, text)) == fp(sql_df(spark, reference))


def test_sql_of_another_shape_is_another_workload() -> None:
    base = "SELECT a, count(*) FROM t GROUP BY a"
    for other in (
        "SELECT a, count(*) FROM u GROUP BY a",
        "SELECT b, count(*) FROM t GROUP BY b",
        "SELECT a, count(*) FROM t GROUP BY a ORDER BY a",
        "SELECT a, count(*) FROM t GROUP BY a LIMIT 10",
        "SELECT a, count(*) FROM t JOIN u USING (a) GROUP BY a",
    ):
        assert fp(sql_df(spark, other)) != fp(sql_df(spark, base)), other


def test_sql_normalisation_keeps_limits_and_ordinals() -> None:
    assert normalize_sql("select a from t order by 1 limit 5") != normalize_sql("select a from t order by 1 limit 6")
    assert normalize_sql("select a, b from t group by 1") != normalize_sql("select a, b from t group by 2")
    assert "?" in normalize_sql("select * from t where a = 42")


def test_unreadable_sql_still_has_a_stable_fingerprint() -> None:
    assert fingerprint(sql_command_plan(spark, "SELEC  x FROM")) == fingerprint(sql_command_plan(spark, "selec x from"))
    assert fingerprint(sql_command_plan(spark, "SELEC x FROM")) != fingerprint(sql_command_plan(spark, "SELEC y FROM"))


def test_a_query_and_a_write_of_it_differ() -> None:
    df = spark.read.parquet("/data/in")
    assert fingerprint(save_plan(df, "/data/out")) != fp(df)
    assert fingerprint(save_plan(df, "/data/out")) != fingerprint(save_plan(df, "/data/other"))


def test_a_thousand_levels_deep_plan_is_fingerprinted() -> None:
    def chain(offset: int) -> bytes:
        df = spark.read.parquet("/data/t")
        for i in range(500):
            df = df.withColumn(f"c{i % 7}", F.col("a") + (i + offset)).filter(F.col("a") > i * offset)
        return plan_of(df)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # the stock client builds plans recursively
    try:
        one, other = chain(1), chain(3)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(message.DecodeError):
        base_pb2.Plan.FromString(one)
    assert fingerprint(one) == fingerprint(other)
