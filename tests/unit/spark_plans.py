"""Plans exactly as the stock PySpark client encodes them, built without a server.

A Spark Connect ``SparkSession`` opens no connection until it sends an RPC, and building a
DataFrame's plan sends none (its client is even closed here): ``df._plan.to_proto(client)`` is what the client itself calls before
ExecutePlan. The two RPCs plan building could make are avoided: the plan-compression settings a
client asks the server for once are given up front, and commands (writes, SQL, views) are built by
the client's own plan classes rather than executed.
"""

from __future__ import annotations

import uuid

from pyspark.sql.connect import plan as connect_plan
from pyspark.sql.connect.dataframe import DataFrame
from pyspark.sql.connect.proto import base_pb2, commands_pb2
from pyspark.sql.connect.session import SparkSession

# Nothing listens here; nothing is ever sent.
_NOWHERE = "sc://127.0.0.1:1"


def offline_session(compress: bool = False) -> SparkSession:
    """A stock Spark Connect session whose plans are built locally (zstd-compressed if asked)."""
    spark = SparkSession(_NOWHERE)
    client = spark.client
    # What the client would otherwise ask the server (spark.connect.session.planCompression.*).
    client._plan_compression_threshold = 0 if compress else -1
    client._plan_compression_algorithm = "ZSTD" if compress else "NONE"
    # Building a plan needs no channel. Closed now, anything that does try to reach a server (a
    # DataFrame's repr asks for configs) fails at once, and no gRPC channel is left for the
    # session's finaliser to close during interpreter shutdown (where that close deadlocks).
    client.close()
    return spark


def plan_of(df: DataFrame) -> bytes:
    """The encoded ``Plan`` the client sends to run ``df`` (collect, show, count...)."""
    return df._plan.to_proto(df._session.client).SerializeToString()


def command_plan(spark: SparkSession, command: commands_pb2.Command) -> bytes:
    """The encoded ``Plan`` the client sends for a command (compressed like the client would)."""
    plan = base_pb2.Plan()
    spark.client._set_command_in_plan(plan, command)
    return plan.SerializeToString()


def sql_df(spark: SparkSession, query: str) -> DataFrame:
    """A DataFrame over SQL text, as ``spark.sql`` builds it (without running the command)."""
    return DataFrame(connect_plan.SQL(query), spark)


def sql_command_plan(spark: SparkSession, query: str) -> bytes:
    """The plan ``spark.sql(query)`` sends: a SqlCommand carrying the SQL relation."""
    return command_plan(spark, connect_plan.SQL(query).command(spark.client))


def save_plan(df: DataFrame, path: str, fmt: str = "parquet", mode: str = "overwrite") -> bytes:
    """The plan ``df.write.format(fmt).mode(mode).save(path)`` sends."""
    writer = df.write.format(fmt).mode(mode)
    writer._write.path = path  # what DataFrameWriter.save sets before sending its command
    return command_plan(df._session, writer._write.command(df._session.client))


def save_as_table_plan(df: DataFrame, table: str) -> bytes:
    """The plan ``df.write.saveAsTable(table)`` sends."""
    writer = df.write.mode("overwrite")
    writer._write.table_name = table
    writer._write.table_save_method = "save_as_table"
    return command_plan(df._session, writer._write.command(df._session.client))


def write_to_plan(df: DataFrame, table: str) -> bytes:
    """The plan ``df.writeTo(table).createOrReplace()`` sends (WriteOperationV2)."""
    operation = connect_plan.WriteOperationV2(df._plan, table)
    operation.mode = "create_or_replace"
    return command_plan(df._session, operation.command(df._session.client))


def temp_view_plan(df: DataFrame, name: str) -> bytes:
    """The plan ``df.createOrReplaceTempView(name)`` sends."""
    view = connect_plan.CreateView(df._plan, name, is_global=False, replace=True)
    return command_plan(df._session, view.command(df._session.client))


def cached_local_df(spark: SparkSession, hashes: list[str]) -> DataFrame:
    """A DataFrame over local data the client uploaded as artifacts (large createDataFrame)."""
    return DataFrame(connect_plan.ChunkedCachedLocalRelation(hashes, "schemahash"), spark)


def execute_request(df: DataFrame) -> bytes:
    """The ExecutePlanRequest the client sends to run ``df``: its session, a fresh operation id."""
    client = df._session.client
    request = client._execute_plan_request_with_metadata()
    request.operation_id = str(uuid.uuid4())
    request.plan.CopyFrom(df._plan.to_proto(client))
    return request.SerializeToString()
