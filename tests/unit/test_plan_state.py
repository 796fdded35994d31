"""plan/state.py: which session state a request changes, from real Spark Connect messages."""

from __future__ import annotations

import pytest
import zstandard
from pyspark.sql.connect.proto import base_pb2, commands_pb2, relations_pb2

from sparkfleet.plan.state import Effect, Pin, execute_plan_effects, sql_effects


def _execute(body: commands_pb2.Command | relations_pb2.Relation | None = None, compressed: bool = False) -> bytes:
    request = base_pb2.ExecutePlanRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
    if body is None:
        request.plan.root.range.end = 10
    elif compressed:
        is_command = isinstance(body, commands_pb2.Command)
        operation = base_pb2.Plan.CompressedOperation
        request.plan.compressed_operation.data = zstandard.compress(body.SerializeToString())
        request.plan.compressed_operation.op_type = operation.OP_TYPE_COMMAND if is_command else operation.OP_TYPE_RELATION
        request.plan.compressed_operation.compression_codec = base_pb2.COMPRESSION_CODEC_ZSTD
    elif isinstance(body, commands_pb2.Command):
        request.plan.command.CopyFrom(body)
    else:
        request.plan.root.CopyFrom(body)
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


def _catalog_request(call: str, compressed: bool = False, **fields) -> bytes:
    relation = relations_pb2.Relation()
    relation.common.plan_id = 3
    getattr(relation.catalog, call).SetInParent()
    for name, value in fields.items():
        setattr(getattr(relation.catalog, call), name, value)
    return _execute(relation, compressed)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    ("call", "fields", "effects"),
    [
        ("set_current_database", {"db_name": "sales"}, [Effect("current:namespace")]),
        ("set_current_catalog", {"catalog_name": "spark_catalog"}, [Effect("current:catalog")]),
        ("drop_temp_view", {"view_name": "Recent"}, [Effect("view:recent", removes=True)]),
        ("drop_view", {"view_name": "v", "if_exists": True}, [Effect("view:v", removes=True)]),
        ("list_tables", {}, []),
        ("refresh_table", {"table_name": "t"}, []),
    ],
)
def test_catalog_calls_change_session_state_like_their_sql(call, fields, effects, compressed):
    assert execute_plan_effects(_catalog_request(call, compressed, **fields)) == effects


@pytest.mark.parametrize("call", ["cache_table", "uncache_table", "clear_cache"])
def test_catalog_cache_calls_pin_the_session(call):
    fields = {} if call == "clear_cache" else {"table_name": "t"}
    [change] = execute_plan_effects(_catalog_request(call, **fields))
    assert isinstance(change, Pin) and change.scope == "session" and "cached table" in change.reason


def test_sql_relation_that_spark_runs_eagerly_changes_state():
    request = base_pb2.ExecutePlanRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
    request.plan.root.sql.query = "SET spark.sql.shuffle.partitions=7"
    assert execute_plan_effects(request.SerializeToString()) == [Effect("conf:spark.sql.shuffle.partitions")]
