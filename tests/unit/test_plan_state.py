"""plan/state.py: which session state a request changes, from real Spark Connect messages."""

from __future__ import annotations

import pytest
import zstandard
from pyspark.sql.connect.proto import base_pb2, commands_pb2

from sparkfleet.plan.state import Effect, Pin, execute_plan_effects, sql_effects


def _execute(command: commands_pb2.Command | None = None, compressed: bool = False) -> bytes:
    request = base_pb2.ExecutePlanRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
    if command is None:
        request.plan.root.range.end = 10
    elif compressed:
        request.plan.compressed_operation.data = zstandard.compress(command.SerializeToString())
        request.plan.compressed_operation.op_type = base_pb2.Plan.CompressedOperation.OP_TYPE_COMMAND
        request.plan.compressed_operation.compression_codec = base_pb2.COMPRESSION_CODEC_ZSTD
    else:
        request.plan.command.CopyFrom(command)
    return request.SerializeToString()


def _sql_command(sql: str) -> commands_pb2.Command:
    command = commands_pb2.Command()
    command.sql_command.input.sql.query = sql  # the shape pyspark 4 sends for spark.sql()
    return command


def test_queries_change_no_state():
    assert execute_plan_effects(_execute()) == []
    assert execute_plan_effects(_execute(_sql_command("select 1"))) == []


@pytest.mark.parametrize("compressed", [False, True])
def test_temp_view_from_dataframe(compressed):
    command = commands_pb2.Command()
    command.create_dataframe_view.name = "Sales"
    command.create_dataframe_view.replace = True
    command.create_dataframe_view.input.range.end = 3
    assert execute_plan_effects(_execute(command, compressed)) == [Effect("view:sales")]


def test_global_temp_view_pins():
    command = commands_pb2.Command()
    command.create_dataframe_view.name = "g"
    command.create_dataframe_view.is_global = True
    command.create_dataframe_view.input.range.end = 3
    (change,) = execute_plan_effects(_execute(command))
    assert isinstance(change, Pin) and "global temp view" in change.reason


def test_registered_functions_and_data_sources():
    udf = commands_pb2.Command()
    udf.register_function.function_name = "plus_one"
    udtf = commands_pb2.Command()
    udtf.register_table_function.function_name = "Squares"
    source = commands_pb2.Command()
    source.register_data_source.name = "my_source"
    assert execute_plan_effects(_execute(udf)) == [Effect("function:plus_one")]
    assert execute_plan_effects(_execute(udtf)) == [Effect("function:squares")]
    assert execute_plan_effects(_execute(source)) == [Effect("data_source:my_source")]


def test_sql_command_in_both_encodings():
    modern = _sql_command("SET spark.sql.shuffle.partitions = 4")
    legacy = commands_pb2.Command()
    legacy.sql_command.sql = "set spark.sql.shuffle.partitions=4"
    expected = [Effect("conf:spark.sql.shuffle.partitions")]
    assert execute_plan_effects(_execute(modern)) == expected
    assert execute_plan_effects(_execute(legacy)) == expected


def test_checkpoint_pins():
    command = commands_pb2.Command()
    command.checkpoint_command.relation.range.end = 5
    (change,) = execute_plan_effects(_execute(command))
    assert isinstance(change, Pin) and "checkpoint" in change.reason


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", [Effect("view:v")]),
        ("create temporary view if not exists `My View` as select 1", [Effect("view:my view")]),
        ("DROP VIEW IF EXISTS v", [Effect("view:v", removes=True)]),
        ("USE db1", [Effect("current:namespace")]),
        ("USE CATALOG spark_catalog", [Effect("current:catalog")]),
        ("RESET", [Effect("conf:*", removes=True)]),
        ("reset spark.sql.ansi.enabled", [Effect("conf:spark.sql.ansi.enabled", removes=True)]),
        ("/* why */ -- note\n  set a=b", [Effect("conf:a")]),
        ("SET", []),
        ("select * from t", []),
        ("DECLARE VARIABLE x INT DEFAULT 1", [Effect("variable:x")]),
        ("SET VAR x = 2", [Effect("variable-value:x")]),
        (
            "DECLARE OR REPLACE VARIABLE x INT",
            [Effect("variable-value:x", removes=True), Effect("variable:x")],
        ),
        (
            "DROP TEMPORARY VARIABLE IF EXISTS x",
            [Effect("variable-value:x", removes=True), Effect("variable:x", removes=True)],
        ),
        ("CREATE TEMPORARY FUNCTION f AS 'com.example.F'", [Effect("function:f")]),
    ],
)
def test_sql_statements(sql, expected):
    assert sql_effects(sql) == expected


@pytest.mark.parametrize("sql", ["CACHE TABLE t", "cache lazy table t", "CREATE GLOBAL TEMP VIEW g AS SELECT 1",
                                 "ADD JAR /tmp/x.jar"])
def test_non_replayable_sql_pins(sql):
    (change,) = sql_effects(sql)
    assert isinstance(change, Pin) and change.reason
