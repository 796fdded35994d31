"""plan/relations.py and plan/sql_shape.py: what a plan asks of a cluster, read from the bytes the stock client sends."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest
from google.protobuf import message
from pyspark.sql.connect import functions as F
from pyspark.sql.connect import plan as connect_plan
from pyspark.sql.connect.dataframe import DataFrame
from pyspark.sql.connect.proto import base_pb2
from pyspark.sql.connect.window import Window

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.relations import PlanSummary, Scan, summarize_plan
from sparkfleet.plan.sql_shape import SqlScan, read_sql

from .spark_plans import (
    cached_local_df, offline_session, plan_of, save_as_table_plan, save_plan, sql_command_plan,
    sql_df, temp_view_plan, write_to_plan,
)

spark = offline_session()
spark_zstd = offline_session(compress=True)


def summary_of(df: DataFrame) -> PlanSummary:
    return summarize_plan(plan_of(df))


def test_operators_of_a_dataframe_query_are_counted() -> None:
    orders = spark.read.parquet("/data/orders")
    customers = spark.table("sales.customers")
    by_customer = Window.partitionBy("customer").orderBy("day")
    df = (
        orders.join(customers, "customer", "left")
        .join(spark.read.csv("/data/regions.csv", header=True), "region")
        .withColumn("rank", F.row_number().over(by_customer))
        .select("customer", "region", F.explode("items").alias("item"))
        .repartition(8, "region")
        .dropDuplicates(["customer"])
        .groupBy("region").agg(F.sum("item"))
        .union(spark.range(5).toDF("region").withColumn("x", F.lit(1)))
        .orderBy("region")
    )
    summary = summary_of(df)
    assert (summary.joins, summary.aggregates, summary.sorts, summary.windows) == (2, 1, 1, 1)
    assert (summary.shuffles, summary.generators, summary.distincts, summary.set_operations) == (1, 1, 1, 1)
    assert summary.scans == (
        Scan("path", "/data/orders", "parquet"),
        Scan("table", "sales.customers"),
        Scan("path", "/data/regions.csv", "csv"),
    )
    assert summary.range_rows == 5
    assert summary.kind == "relation" and summary.command is None and not summary.compressed
    assert dict(summary.relations)["join"] == 2
    assert summary.blocking_operators == 7
    assert summary.limit is None and summary.unweighed == ()


def test_coalesce_is_no_shuffle_but_repartition_is() -> None:
    assert summary_of(spark.range(10).coalesce(1)).shuffles == 0
    assert summary_of(spark.range(10).repartition(4)).shuffles == 1
    assert summary_of(spark.range(10).repartitionByRange(4, "id")).shuffles == 1


@pytest.mark.parametrize(
    "build, generators",
    [
        (lambda df: df.select(F.posexplode("a")), 1),
        (lambda df: df.select(F.inline_outer("a")), 1),
        (lambda df: df.select(F.flatten("a")), 0),  # flattens within a row: no row multiplication
        (lambda df: df.selectExpr("explode(a) AS x", "id"), 1),
        (lambda df: df.unpivot("id", ["a", "b"], "var", "val"), 1),
    ],
)
def test_explode_like_functions_are_generators(build, generators: int) -> None:  # type: ignore[no-untyped-def]
    assert summary_of(build(spark.range(3))).generators == generators


def test_a_window_written_as_sql_expression_counts() -> None:
    df = spark.range(3).selectExpr("sum(id) OVER (PARTITION BY id % 2) AS s")
    assert summary_of(df).windows == 1


def test_sources_by_path_option_and_without_path() -> None:
    df = spark.read.format("json").load("file:///data/events").union(
        spark.read.format("jdbc").option("url", "jdbc:postgresql://db/x").option("dbtable", "t").load()
    )
    assert summary_of(df).scans == (Scan("path", "file:///data/events", "json"), Scan("source", "jdbc", "jdbc"))


def test_range_rows_follow_start_end_and_step() -> None:
    assert summary_of(spark.range(0, 100, 7)).range_rows == 15
    assert summary_of(spark.range(100, 0, -10)).range_rows == 10
    assert summary_of(spark.range(-5, 5)).range_rows == 10
    assert summary_of(spark.range(5, 0)).range_rows == 0


def test_local_data_is_measured_and_cached_chunks_are_listed() -> None:
    local = DataFrame(connect_plan.LocalRelation(pa.table({"a": list(range(1000))})), spark)
    sent = local._plan.plan(spark.client).local_relation.data
    summary = summary_of(local.union(cached_local_df(spark, ["hash-1", "hash-2"])))
    assert summary.local_bytes == len(sent) > 4000
    assert summary.local_artifacts == ("hash-1", "hash-2")


@pytest.mark.parametrize(
    "build, limit, stops",
    [
        (lambda df: df.filter("a > 1").limit(10), 10, True),
        (lambda df: df.limit(10).select("a"), 10, True),  # a projection over the limit keeps it
        (lambda df: df.limit(50).limit(10), 10, True),
        (lambda df: df.groupBy("a").count().limit(10), 10, False),  # the aggregate reads everything
        (lambda df: df.orderBy("a").limit(10), 10, False),  # top-k still reads everything
        (lambda df: df.limit(10).groupBy("a").count(), None, False),  # caps an input, not the result
        (lambda df: DataFrame(connect_plan.Tail(df._plan, 3), spark), 3, False),  # tail reads all
        (lambda df: DataFrame(connect_plan.ShowString(df._plan, 20, 20, False), spark), 20, True),
        (lambda df: df.select("a"), None, False),
    ],
)
def test_the_limit_that_caps_a_result(build, limit: int | None, stops: bool) -> None:  # type: ignore[no-untyped-def]
    summary = summary_of(build(spark.read.parquet("/data/t")))
    assert (summary.limit, summary.limit_stops_scan) == (limit, stops)


def test_write_commands_carry_their_input() -> None:
    source = spark.read.parquet("/data/in").filter("x > 0").limit(100)
    summary = summarize_plan(save_plan(source, "/data/out", fmt="csv"))
    assert (summary.kind, summary.command, summary.writes) == ("command", "write_operation", 1)
    assert summary.scans == (Scan("path", "/data/in", "parquet"),)
    assert (summary.limit, summary.limit_stops_scan) == (100, True)
    table_write = summarize_plan(save_as_table_plan(spark.table("a").join(spark.table("b"), "k"), "c"))
    assert (table_write.joins, table_write.scans) == (1, (Scan("table", "a"), Scan("table", "b")))
    v2 = summarize_plan(write_to_plan(spark.range(10).groupBy("id").count(), "db.t"))
    assert (v2.command, v2.aggregates, v2.range_rows, v2.writes) == ("write_operation_v2", 1, 10, 1)


def test_a_temp_view_command_is_summarised_by_its_input() -> None:
    summary = summarize_plan(temp_view_plan(spark.read.orc("/data/o").distinct(), "v"))
    assert (summary.command, summary.distincts, summary.writes) == ("create_dataframe_view", 1, 0)
    assert summary.scans == (Scan("path", "/data/o", "orc"),)


def test_a_compressed_plan_reads_like_the_plain_one() -> None:
    def build(session):  # type: ignore[no-untyped-def]
        df = session.read.parquet("/data/t")
        for i in range(40):  # repetitive enough that the client's zstd pays off
            df = df.withColumn(f"c{i}", F.col("a") + i)
        return df.join(session.table("u"), "a").groupBy("a").count()

    compressed = plan_of(build(spark_zstd))
    assert base_pb2.Plan.FromString(compressed).WhichOneof("op_type") == "compressed_operation"
    plain, packed = summarize_plan(plan_of(build(spark))), summarize_plan(compressed)
    assert packed.compressed and not plain.compressed
    assert (packed.joins, packed.aggregates, packed.scans, packed.relations) == (
        plain.joins, plain.aggregates, plain.scans, plain.relations
    )


def test_sql_text_is_read_with_its_tables_and_operators() -> None:
    query = """
        WITH recent AS (SELECT * FROM sales.orders WHERE day > '2024-01-01')
        SELECT c.region, count(*), rank() OVER (ORDER BY count(*) DESC)
        FROM recent r JOIN spark_catalog.crm.`Customers` c ON r.customer = c.id
        LEFT JOIN parquet.`/data/regions` g ON g.id = c.region
        GROUP BY c.region ORDER BY 2 LIMIT 20
    """
    summary = summary_of(sql_df(spark, query))
    assert set(summary.scans) == {
        Scan("table", "spark_catalog.crm.Customers"), Scan("path", "/data/regions", "parquet"),
        Scan("table", "sales.orders"),
    }
    assert len(summary.scans) == 3  # the CTE `recent` is not a table
    assert (summary.joins, summary.aggregates, summary.windows, summary.sorts) == (2, 1, 1, 1)
    assert (summary.limit, summary.limit_stops_scan) == (20, False)
    (shape,) = summary.sql
    assert shape.readable and shape.ctes == ("recent",) and shape.text == query


def test_spark_sql_as_a_command() -> None:
    summary = summarize_plan(sql_command_plan(spark, "SELECT * FROM range(1000) LIMIT 5"))
    assert (summary.command, summary.range_rows, summary.limit, summary.limit_stops_scan) == (
        "sql_command", 1000, 5, True
    )
    insert = summarize_plan(sql_command_plan(spark, "INSERT INTO t2 SELECT DISTINCT a FROM t1"))
    assert (insert.writes, insert.distincts, insert.scans) == (1, 1, (Scan("table", "t1"),))


def test_unreadable_sql_is_recorded_not_raised() -> None:
    summary = summarize_plan(sql_command_plan(spark, "SELEC broken FROM"))
    assert summary.unreadable_sql == 1
    assert not summary.sql[0].readable and summary.sql[0].error
    deep = read_sql("SELECT " + "(" * 5000 + "1" + ")" * 5000)
    assert not deep.readable  # too deep for the parser: unreadable, not a crash


def test_sql_scans_leave_out_ctes_and_write_targets() -> None:
    shape = read_sql("CREATE TABLE x AS WITH a AS (SELECT * FROM src) SELECT * FROM a UNION SELECT * FROM b")
    assert set(shape.scans) == {SqlScan("table", "src"), SqlScan("table", "b")}
    assert (shape.writes, shape.set_operations) == (1, 1)
    assert read_sql("DROP TABLE t; DESCRIBE u").scans == ()


def test_catalog_calls_are_counted_not_fatal() -> None:
    summary = summary_of(DataFrame(connect_plan.ListTables(), spark))
    assert summary.unweighed == ("catalog",) and dict(summary.relations) == {"catalog": 1}


def test_a_plan_deeper_than_protobuf_can_parse_is_summarised() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # the stock client builds plans recursively
    try:
        df = spark.read.parquet("/data/t")
        for i in range(500):
            df = df.withColumn(f"c{i % 7}", F.col("a") + i).filter(F.col("a") > i)
        plan = plan_of(df.limit(1))
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(message.DecodeError):
        base_pb2.Plan.FromString(plan)
    summary = summarize_plan(plan)
    assert dict(summary.relations) == {"filter": 500, "with_columns": 500, "read": 1, "limit": 1}
    assert (summary.limit, summary.limit_stops_scan) == (1, True)


def test_bytes_that_are_not_a_plan_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        summarize_plan(b"\x0a\x05ab")
