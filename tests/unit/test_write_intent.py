"""plan/writes.py and plan/sql_intent.py: what re-running a request would do, from real Spark Connect messages."""

from __future__ import annotations

import pytest
import zstandard
from google.protobuf import message
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2, commands_pb2, relations_pb2

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.wire import LENGTH_DELIMITED, encode_varint
from sparkfleet.plan.intent import (
    APPLIES_TWICE,
    DUPLICATES_DATA,
    FAILS_IF_CREATED,
    FAILS_IF_DROPPED,
    READ,
    QueryIntent,
)
from sparkfleet.plan.sql_intent import classify_sql
from sparkfleet.plan.writes import classify_execute_plan

CompressedOperation = base_pb2.Plan.CompressedOperation
SaveMode = commands_pb2.WriteOperation.SaveMode
SaveMethod = commands_pb2.WriteOperation.SaveTable.TableSaveMethod
V2Mode = commands_pb2.WriteOperationV2.Mode
SESSION = "00112233-4455-6677-8899-aabbccddeeff"


def execute(body: commands_pb2.Command | relations_pb2.Relation, compressed: bool = False) -> bytes:
    """An ExecutePlanRequest as pyspark sends it, with the plan zstd-compressed if asked."""
    request = base_pb2.ExecutePlanRequest(session_id=SESSION)
    is_command = isinstance(body, commands_pb2.Command)
    if compressed:
        request.plan.compressed_operation.data = zstandard.compress(body.SerializeToString())
        request.plan.compressed_operation.op_type = (
            CompressedOperation.OP_TYPE_COMMAND if is_command else CompressedOperation.OP_TYPE_RELATION
        )
        request.plan.compressed_operation.compression_codec = base_pb2.COMPRESSION_CODEC_ZSTD
    elif is_command:
        request.plan.command.CopyFrom(body)
    else:
        request.plan.root.CopyFrom(body)
    return request.SerializeToString()


def sql_command(sql: str, legacy: bool = False) -> commands_pb2.Command:
    command = commands_pb2.Command()
    if legacy:
        command.sql_command.sql = sql
    else:
        command.sql_command.input.sql.query = sql  # the shape pyspark 4 sends for spark.sql()
    return command


def summary(intent: QueryIntent) -> tuple[str, bool, bool, str, str]:
    return intent.kind, intent.idempotent, intent.needs_absent_target, intent.target, intent.target_kind


# ---- relations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_a_query_is_a_read(compressed: bool) -> None:
    relation = relations_pb2.Relation()
    relation.limit.limit = 5
    relation.limit.input.range.end = 10
    assert classify_execute_plan(execute(relation, compressed)) == READ


def test_a_plan_deeper_than_protobuf_can_parse_is_classified() -> None:
    relation = relations_pb2.Relation()
    leaf = relation
    for level in range(400):
        leaf = leaf.project.input if level % 2 else leaf.with_columns.input
    leaf.range.end = 1
    request = execute(relation)
    with pytest.raises(message.DecodeError):
        base_pb2.ExecutePlanRequest.FromString(request)
    assert classify_execute_plan(request) == READ


@pytest.mark.parametrize("compressed", [False, True])
def test_sql_text_as_the_top_relation_is_classified_because_spark_runs_commands_eagerly(compressed: bool) -> None:
    query, insert = relations_pb2.Relation(), relations_pb2.Relation()
    query.sql.query = "SELECT * FROM t"
    insert.common.plan_id = 7
    insert.sql.query = "INSERT INTO t VALUES (1)"
    assert classify_execute_plan(execute(query, compressed)) == READ
    assert summary(classify_execute_plan(execute(insert, compressed))) == ("write", False, False, "t", "table")


def big_query() -> relations_pb2.Relation:
    relation = relations_pb2.Relation()
    relation.common.plan_id = 42
    relation.common.origin.python_origin.fragment = "select"
    relation.common.origin.python_origin.call_site = "job.py:12"
    relation.project.input.range.end = 10
    for i in range(20_000):  # several zstd blocks, so a cut at the end spares the head
        relation.project.expressions.add().unresolved_attribute.unparsed_identifier = f"column_{i}"
    return relation


def test_a_compressed_query_is_told_from_the_head_of_its_frame() -> None:
    # Only the first bytes are inflated when they show a relation type: a frame cut before its
    # end still classifies (plan_body, which inflates everything, would reject it).
    request = base_pb2.ExecutePlanRequest.FromString(execute(big_query(), compressed=True))
    data = request.plan.compressed_operation.data
    whole = classify_execute_plan(request.SerializeToString())
    request.plan.compressed_operation.data = data[: len(data) - 8]
    assert classify_execute_plan(request.SerializeToString()) == whole == READ


def test_a_compressed_plan_whose_head_shows_no_type_is_read_whole() -> None:
    relation = big_query()
    relation.common.origin.python_origin.call_site = "x" * 100_000  # longer than the head read
    assert classify_execute_plan(execute(relation, compressed=True)) == READ
    relation.ClearField("project")
    relation.sql.query = "INSERT INTO t VALUES (1)"
    assert classify_execute_plan(execute(relation, compressed=True)).kind == "write"


# ---- DataFrameWriter (WriteOperation) -------------------------------------------------------------


def write_to_path(mode: int, path: str = "/data/out", source: str = "parquet") -> commands_pb2.Command:
    command = commands_pb2.Command()
    command.write_operation.input.range.end = 3
    command.write_operation.source = source
    command.write_operation.path = path
    command.write_operation.mode = mode
    return command


def write_to_table(mode: int, method: int, table: str = "db.t") -> commands_pb2.Command:
    command = commands_pb2.Command()
    command.write_operation.input.range.end = 3
    command.write_operation.table.table_name = table
    command.write_operation.table.save_method = method
    command.write_operation.mode = mode
    return command


@pytest.mark.parametrize(
    "mode, description, idempotent, needs_absent",
    [
        (SaveMode.SAVE_MODE_APPEND, "append write (parquet) to path /data/out", False, False),
        (SaveMode.SAVE_MODE_OVERWRITE, "overwrite write (parquet) to path /data/out", True, False),
        (SaveMode.SAVE_MODE_IGNORE, "ignore write (parquet) to path /data/out", False, True),
        (SaveMode.SAVE_MODE_ERROR_IF_EXISTS, "errorifexists write (parquet) to path /data/out", False, True),
        # pyspark leaves the mode unset unless the user names one; Spark then uses errorifexists.
        (SaveMode.SAVE_MODE_UNSPECIFIED, "errorifexists write (parquet) to path /data/out", False, True),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_save_to_a_path(mode: int, description: str, idempotent: bool, needs_absent: bool, compressed: bool) -> None:
    intent = classify_execute_plan(execute(write_to_path(mode), compressed))
    assert intent.description == description
    assert summary(intent) == ("write", idempotent, needs_absent, "/data/out", "path")


@pytest.mark.parametrize(
    "mode, description, idempotent, needs_absent",
    [
        (SaveMode.SAVE_MODE_APPEND, "append write to table db.t", False, False),
        (SaveMode.SAVE_MODE_OVERWRITE, "overwrite write to table db.t", True, False),
        (SaveMode.SAVE_MODE_IGNORE, "ignore write to table db.t", False, True),
        (SaveMode.SAVE_MODE_ERROR_IF_EXISTS, "errorifexists write to table db.t", False, True),
        (SaveMode.SAVE_MODE_UNSPECIFIED, "errorifexists write to table db.t", False, True),
    ],
)
def test_save_as_table(mode: int, description: str, idempotent: bool, needs_absent: bool) -> None:
    intent = classify_execute_plan(execute(write_to_table(mode, SaveMethod.TABLE_SAVE_METHOD_SAVE_AS_TABLE)))
    assert intent.description == description
    assert summary(intent) == ("write", idempotent, needs_absent, "db.t", "table")


@pytest.mark.parametrize(
    "mode, idempotent",
    [
        (SaveMode.SAVE_MODE_OVERWRITE, True),
        # insertInto appends in every mode but overwrite, errorifexists and ignore included.
        (SaveMode.SAVE_MODE_APPEND, False),
        (SaveMode.SAVE_MODE_UNSPECIFIED, False),
        (SaveMode.SAVE_MODE_ERROR_IF_EXISTS, False),
        (SaveMode.SAVE_MODE_IGNORE, False),
    ],
)
def test_insert_into(mode: int, idempotent: bool) -> None:
    intent = classify_execute_plan(execute(write_to_table(mode, SaveMethod.TABLE_SAVE_METHOD_INSERT_INTO)))
    assert summary(intent) == ("write", idempotent, False, "db.t", "table")
    word = "overwrite" if idempotent else "append"
    assert intent.description == f"{word} write (insertInto) to table db.t"
    assert intent.rerun_risk == ("" if idempotent else DUPLICATES_DATA)


def test_a_table_write_with_no_save_method_is_taken_as_insert_into() -> None:
    # The server rejects it; if it ever ran, insertInto is the reading that forbids more retries.
    intent = classify_execute_plan(execute(write_to_table(SaveMode.SAVE_MODE_IGNORE, 0)))
    assert summary(intent) == ("write", False, False, "db.t", "table")


def test_save_without_an_argument_writes_to_the_path_option() -> None:
    command = write_to_path(SaveMode.SAVE_MODE_APPEND)
    command.write_operation.ClearField("path")
    command.write_operation.options["Path"] = "/data/by-option"
    command.write_operation.options["compression"] = "zstd"
    assert summary(classify_execute_plan(execute(command))) == ("write", False, False, "/data/by-option", "path")


def test_a_write_without_a_path_or_table_has_an_unknown_target() -> None:
    command = write_to_path(SaveMode.SAVE_MODE_ERROR_IF_EXISTS, source="jdbc")
    command.write_operation.ClearField("path")
    command.write_operation.options["dbtable"] = "public.t"
    intent = classify_execute_plan(execute(command))
    assert summary(intent) == ("write", False, True, "", "")
    assert intent.description == "errorifexists write (jdbc) to an unnamed target"


def test_an_unknown_save_mode_is_not_idempotent() -> None:
    intent = classify_execute_plan(execute(write_to_path(9)))
    assert summary(intent) == ("write", False, False, "/data/out", "path")


# ---- DataFrameWriterV2 (WriteOperationV2) ---------------------------------------------------------


@pytest.mark.parametrize(
    "mode, words, idempotent, needs_absent, risk",
    [
        (V2Mode.MODE_CREATE, "create", False, True, FAILS_IF_CREATED),
        (V2Mode.MODE_OVERWRITE, "overwrite", True, False, ""),
        (V2Mode.MODE_OVERWRITE_PARTITIONS, "overwrite-partitions", True, False, ""),
        (V2Mode.MODE_APPEND, "append", False, False, DUPLICATES_DATA),
        (V2Mode.MODE_REPLACE, "replace", True, False, ""),
        (V2Mode.MODE_CREATE_OR_REPLACE, "create-or-replace", True, False, ""),
    ],
)
def test_write_to(mode: int, words: str, idempotent: bool, needs_absent: bool, risk: str) -> None:
    command = commands_pb2.Command()
    command.write_operation_v2.input.range.end = 3
    command.write_operation_v2.table_name = "cat.db.t"
    command.write_operation_v2.mode = mode
    intent = classify_execute_plan(execute(command))
    assert summary(intent) == ("write", idempotent, needs_absent, "cat.db.t", "table")
    assert intent.description == f"{words} write to table cat.db.t"
    assert intent.rerun_risk == risk


def test_write_to_without_a_mode_is_not_idempotent() -> None:
    command = commands_pb2.Command()
    command.write_operation_v2.table_name = "t"
    assert summary(classify_execute_plan(execute(command))) == ("write", False, False, "t", "table")


def test_merge_into_from_the_dataframe_api_is_not_idempotent() -> None:
    command = commands_pb2.Command()
    command.merge_into_table_command.target_table_name = "db.target"
    command.merge_into_table_command.source_table_plan.range.end = 3
    intent = classify_execute_plan(execute(command))
    assert summary(intent) == ("write", False, False, "db.target", "table")
    assert intent.rerun_risk == APPLIES_TWICE


# ---- SQL ------------------------------------------------------------------------------------------

SQL_CASES = [
    # reads
    ("SELECT * FROM t", ("read", True, False, "", "")),
    ("(select 1)", ("read", True, False, "", "")),
    ("WITH a AS (SELECT 1) SELECT * FROM a", ("read", True, False, "", "")),
    ("SHOW TABLES", ("read", True, False, "", "")),
    ("describe table extended t", ("read", True, False, "", "")),
    ("EXPLAIN INSERT INTO t VALUES (1)", ("read", True, False, "", "")),  # explained, not run
    ("VALUES (1), (2)", ("read", True, False, "", "")),
    ("TABLE t", ("read", True, False, "", "")),
    ("FROM t SELECT a", ("read", True, False, "", "")),
    ("SELECT 'a;b' AS x;", ("read", True, False, "", "")),
    # session state
    ("SET spark.sql.shuffle.partitions = 4", ("session_state", True, False, "", "")),
    ("SET TIME ZONE 'UTC'", ("session_state", True, False, "", "")),
    ("USE db", ("session_state", True, False, "", "")),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", ("session_state", True, False, "", "")),
    ("CREATE TEMPORARY FUNCTION f AS 'com.example.F'", ("session_state", True, False, "", "")),
    ("DROP TEMPORARY FUNCTION IF EXISTS f", ("session_state", True, False, "", "")),
    ("DECLARE VARIABLE x INT DEFAULT 1", ("session_state", True, False, "", "")),
    ("CACHE TABLE t", ("session_state", True, False, "", "")),
    # inserts
    ("INSERT INTO db.t VALUES (1)", ("write", False, False, "db.t", "table")),
    ("insert into table `db`.`t` select * from s", ("write", False, False, "`db`.`t`", "table")),
    ("INSERT OVERWRITE TABLE db.t SELECT * FROM s", ("write", True, False, "db.t", "table")),
    ("INSERT OVERWRITE db.t PARTITION (p = 1) SELECT 1", ("write", True, False, "db.t", "table")),
    ("INSERT INTO t REPLACE WHERE d = '2024-01-01' SELECT * FROM s", ("write", True, False, "t", "table")),
    ("INSERT OVERWRITE DIRECTORY '/tmp/out' USING parquet SELECT 1", ("write", True, False, "/tmp/out", "path")),
    ("WITH s AS (SELECT ')' AS x) INSERT INTO t SELECT * FROM s", ("write", False, False, "t", "table")),
    ("WITH a (x) AS (SELECT 1), b AS (SELECT 2) INSERT OVERWRITE t SELECT 1", ("write", True, False, "t", "table")),
    # create
    ("CREATE TABLE db.t (a INT) USING parquet", ("write", False, True, "db.t", "table")),
    ("CREATE TABLE IF NOT EXISTS db.t (a INT)", ("write", True, False, "db.t", "table")),
    ("CREATE TABLE db.t AS SELECT 1 AS a", ("write", False, True, "db.t", "table")),
    ("CREATE OR REPLACE TABLE db.t AS SELECT 1 AS a", ("write", True, False, "db.t", "table")),
    ("REPLACE TABLE db.t AS SELECT 1 AS a", ("write", True, False, "db.t", "table")),
    ("CREATE EXTERNAL TABLE t (a INT) LOCATION '/x'", ("write", False, True, "t", "table")),
    ("CREATE VIEW v AS SELECT 1", ("write", False, True, "v", "table")),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", ("write", True, False, "v", "table")),
    ("CREATE SCHEMA IF NOT EXISTS s", ("write", True, False, "s", "schema")),
    ("CREATE DATABASE s", ("write", False, True, "s", "schema")),
    ("CREATE FUNCTION f AS 'com.example.F'", ("write", False, True, "f", "function")),
    # drop
    ("DROP TABLE db.t", ("write", False, False, "db.t", "table")),
    ("DROP TABLE IF EXISTS db.t PURGE", ("write", True, False, "db.t", "table")),
    ("DROP VIEW v", ("write", False, False, "v", "table")),  # may be a permanent view
    ("DROP VIEW IF EXISTS v", ("write", True, False, "v", "table")),
    ("DROP SCHEMA IF EXISTS s CASCADE", ("write", True, False, "s", "schema")),
    ("DROP DATABASE s", ("write", False, False, "s", "schema")),
    ("DROP FUNCTION IF EXISTS f", ("write", True, False, "f", "function")),
    ("DROP FUNCTION f", ("write", False, False, "f", "function")),
    # changes in place
    ("TRUNCATE TABLE db.t", ("write", True, False, "db.t", "table")),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", ("write", False, False, "t", "table")),
    ("MERGE WITH SCHEMA EVOLUTION INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
     ("write", False, False, "t", "table")),
    ("UPDATE t SET a = 1", ("write", False, False, "t", "table")),
    ("DELETE FROM t WHERE a = 1", ("write", False, False, "t", "table")),
    # anything else is a command
    ("ALTER TABLE t ADD COLUMNS (b INT)", ("command", False, False, "", "")),
    ("MSCK REPAIR TABLE t", ("command", True, False, "", "")),  # maintenance: brings metadata in line
    ("CALL cat.system.do_something()", ("command", False, False, "", "")),
    ("FROM s INSERT INTO t SELECT a", ("command", False, False, "", "")),
    ("SELECT 1; INSERT INTO t VALUES (1)", ("command", False, False, "", "")),
    ("WITH broken AS (SELECT 1 INSERT INTO t VALUES (1)", ("command", False, False, "", "")),
    ("", ("command", False, False, "", "")),
]


@pytest.mark.parametrize("sql, expected", SQL_CASES, ids=[case[0][:40] or "empty" for case in SQL_CASES])
def test_sql_statements(sql: str, expected: tuple[str, bool, bool, str, str]) -> None:
    assert summary(classify_sql(sql)) == expected


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_sql_commands_in_every_encoding(legacy: bool, compressed: bool) -> None:
    request = execute(sql_command("INSERT INTO db.t SELECT * FROM s", legacy), compressed)
    intent = classify_execute_plan(request)
    assert summary(intent) == ("write", False, False, "db.t", "table")
    assert intent.description == "INSERT INTO db.t"
    assert intent.rerun_risk == DUPLICATES_DATA


def test_sql_with_dataframe_arguments_is_read_through_with_relations() -> None:
    # spark.sql("INSERT INTO t SELECT * FROM {df}", df=df) wraps the SQL relation in with_relations.
    command = commands_pb2.Command()
    wrapper = command.sql_command.input.with_relations
    wrapper.root.sql.query = "INSERT INTO t SELECT * FROM {df}"
    wrapper.references.add().range.end = 3
    assert summary(classify_execute_plan(execute(command))) == ("write", False, False, "t", "table")
    relation = relations_pb2.Relation()
    relation.with_relations.root.sql.query = "SELECT * FROM {df}"
    relation.with_relations.references.add().range.end = 3
    assert classify_execute_plan(execute(relation)) == READ


def test_leading_comments_and_hints_are_skipped() -> None:
    sql = "/* nightly /* nested */ load */ -- owner: data team\n  insert /*+ COALESCE(1) */ into db.t select 1"
    assert summary(classify_sql(sql)) == ("write", False, False, "db.t", "table")
    assert classify_sql("-- only a comment ; INSERT INTO t VALUES (1)\nSELECT 1") == READ


def test_a_semicolon_in_a_string_or_comment_does_not_split_a_statement() -> None:
    assert classify_sql("SELECT ';' AS a -- ; insert into t\n") == READ
    assert summary(classify_sql("INSERT INTO t VALUES ('a;b')")) == ("write", False, False, "t", "table")


def test_descriptions_read_as_the_statement_does() -> None:
    assert classify_sql("create table if not exists db.t (a int)").description == "CREATE TABLE IF NOT EXISTS db.t"
    assert classify_sql("create table db.t as select 1").description == "CREATE TABLE db.t AS SELECT"
    assert classify_sql("drop view v").description == "DROP VIEW v"
    assert classify_sql("drop view v").rerun_risk == FAILS_IF_DROPPED
    assert classify_sql("create table t (a int)").rerun_risk == FAILS_IF_CREATED


def test_a_set_description_names_the_key_not_the_value() -> None:
    intent = classify_sql("SET spark.hadoop.fs.s3a.secret.key = hunter2")
    assert "spark.hadoop.fs.s3a.secret.key" in intent.description
    assert "hunter2" not in intent.description


# ---- other commands -------------------------------------------------------------------------------


def test_session_state_commands() -> None:
    view, global_view = commands_pb2.Command(), commands_pb2.Command()
    view.create_dataframe_view.name = "sales"
    view.create_dataframe_view.input.range.end = 3
    global_view.create_dataframe_view.name = "g"
    global_view.create_dataframe_view.is_global = True
    udf, udtf, source = commands_pb2.Command(), commands_pb2.Command(), commands_pb2.Command()
    udf.register_function.function_name = "plus_one"
    udtf.register_table_function.function_name = "squares"
    source.register_data_source.name = "my_source"
    expected = {
        "create temp view sales": view,
        "create global temp view g": global_view,
        "register function plus_one": udf,
        "register table function squares": udtf,
        "register data source my_source": source,
    }
    for description, command in expected.items():
        for compressed in (False, True):
            assert classify_execute_plan(execute(command, compressed)) == QueryIntent(
                "session_state", f"session state change: {description}", idempotent=True
            )


HANDLED = {
    "write_operation", "write_operation_v2", "sql_command", "merge_into_table_command",
    "create_dataframe_view", "register_function", "register_table_function", "register_data_source",
}
OTHER_COMMANDS = [
    field for field in commands_pb2.Command.DESCRIPTOR.oneofs_by_name["command_type"].fields
    if field.name not in HANDLED
]


@pytest.mark.parametrize("field", OTHER_COMMANDS, ids=lambda field: field.name)
def test_every_other_command_is_a_non_idempotent_command(field) -> None:  # type: ignore[no-untyped-def]
    command = commands_pb2.Command()
    getattr(command, field.name).SetInParent()
    intent = classify_execute_plan(execute(command))
    assert (intent.kind, intent.idempotent, intent.needs_absent_target) == ("command", False, False)
    assert field.name in intent.description


def test_empty_and_unknown_commands_are_commands() -> None:
    unknown = encode_varint((4242 << 3) | LENGTH_DELIMITED) + b"\x00"
    plan = encode_varint((2 << 3) | LENGTH_DELIMITED) + encode_varint(len(unknown)) + unknown
    request = encode_varint((3 << 3) | LENGTH_DELIMITED) + encode_varint(len(plan)) + plan
    assert classify_execute_plan(request).description == "command_4242 command"
    assert classify_execute_plan(execute(commands_pb2.Command())).kind == "command"


def test_a_request_without_a_plan_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="no plan"):
        classify_execute_plan(base_pb2.ExecutePlanRequest(session_id=SESSION).SerializeToString())


# ---- properties -----------------------------------------------------------------------------------

noise = st.lists(
    st.sampled_from([" ", "\n", "\t", "-- note ; insert into x\n", "/* c */", "/* a /* nested */ b */"]), max_size=5
).map("".join)
known_statements = st.sampled_from([sql for sql, _ in SQL_CASES if sql and ";" not in sql])


@given(noise, known_statements, noise)
def test_comments_and_whitespace_around_a_statement_do_not_change_it(before: str, sql: str, after: str) -> None:
    assert classify_sql(before + sql + after) == classify_sql(sql)


@given(known_statements, st.booleans())
def test_keyword_case_does_not_matter(sql: str, upper: bool) -> None:
    changed = classify_sql(sql.upper() if upper else sql.lower())
    original = classify_sql(sql)
    assert (changed.kind, changed.idempotent, changed.needs_absent_target) == (
        original.kind, original.idempotent, original.needs_absent_target
    )


@given(known_statements, st.sampled_from(["INSERT INTO t VALUES (1)", "DELETE FROM t", "DROP TABLE t"]))
def test_a_second_statement_makes_any_text_a_command(sql: str, second: str) -> None:
    assert classify_sql(f"{sql}; {second}").kind == "command"


@given(st.text(max_size=200))
def test_any_text_classifies_without_error(sql: str) -> None:
    intent = classify_sql(sql)
    assert intent.kind in ("read", "session_state", "write", "command")
    assert intent.description
    assert intent.idempotent or intent.rerun_risk  # an unsafe re-run always says why


def test_pathological_nesting_is_classified_without_recursion() -> None:
    assert classify_sql("WITH a AS (SELECT 1) " * 5000 + "INSERT INTO t VALUES (1)").kind == "write"
    assert classify_sql("(" * 5000 + "SELECT 1" + ")" * 5000) == READ


def catalog(call: str, **fields) -> relations_pb2.Relation:
    """A Relation{catalog} as pyspark sends it for ``spark.catalog.<call>``."""
    relation = relations_pb2.Relation()
    relation.common.plan_id = 7
    getattr(relation.catalog, call).SetInParent()
    for name, value in fields.items():
        setattr(getattr(relation.catalog, call), name, value)
    return relation


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    ("call", "fields", "expected", "risk"),
    [
        ("drop_table", {"table_name": "db.t", "if_exists": True}, ("write", True, False, "db.t", "table"), ""),
        ("drop_table", {"table_name": "t"}, ("write", False, False, "t", "table"), FAILS_IF_DROPPED),
        ("drop_view", {"view_name": "v", "if_exists": True}, ("write", True, False, "v", "table"), ""),
        ("create_table", {"table_name": "t", "path": "/data/t"}, ("write", False, True, "t", "table"),
         FAILS_IF_CREATED),
        ("create_external_table", {"table_name": "t"}, ("write", False, True, "t", "table"), FAILS_IF_CREATED),
        ("create_database", {"db_name": "d", "if_not_exists": True}, ("write", True, False, "d", "schema"), ""),
        ("create_database", {"db_name": "d"}, ("write", False, True, "d", "schema"), FAILS_IF_CREATED),
        ("drop_database", {"db_name": "d", "if_exists": True}, ("write", True, False, "d", "schema"), ""),
        ("truncate_table", {"table_name": "t"}, ("write", True, False, "t", "table"), ""),
        ("refresh_table", {"table_name": "t"}, ("command", True, False, "", ""), ""),
        ("refresh_by_path", {"path": "/data/it's"}, ("command", True, False, "", ""), ""),
        ("recover_partitions", {"table_name": "t"}, ("command", True, False, "", ""), ""),
        ("analyze_table", {"table_name": "t", "no_scan": True}, ("command", True, False, "", ""), ""),
        ("set_current_database", {"db_name": "d"}, ("session_state", True, False, "", ""), ""),
        ("set_current_catalog", {"catalog_name": "spark_catalog"}, ("session_state", True, False, "", ""), ""),
        ("drop_temp_view", {"view_name": "v"}, ("write", True, False, "v", "table"), ""),
        ("cache_table", {"table_name": "t"}, ("session_state", True, False, "", ""), ""),
        ("clear_cache", {}, ("session_state", True, False, "", ""), ""),
    ],
)
def test_catalog_calls_that_change_something(call, fields, expected, risk, compressed):
    intent = classify_execute_plan(execute(catalog(call, **fields), compressed=compressed))
    assert summary(intent) == expected
    assert intent.rerun_risk == risk
    # Described as the user called it, with the statement it equals.
    camel = "".join(word if i == 0 else word.title() for i, word in enumerate(call.split("_")))
    assert f"spark.catalog.{camel}" in intent.description


@pytest.mark.parametrize("call", ["list_tables", "table_exists", "current_database", "is_cached", "list_catalogs",
                                  "get_table", "list_databases", "get_create_table_string"])
@pytest.mark.parametrize("compressed", [False, True])
def test_catalog_lookups_are_reads(call, compressed):
    assert classify_execute_plan(execute(catalog(call), compressed=compressed)) == READ


@pytest.mark.parametrize(
    "sql", ["REFRESH TABLE db.t", "refresh '/data/x'", "REFRESH FUNCTION f", "ANALYZE TABLE t COMPUTE STATISTICS",
            "analyze tables in db compute statistics noscan", "MSCK REPAIR TABLE t", "ALTER TABLE t RECOVER PARTITIONS"],
)
def test_catalog_maintenance_is_an_idempotent_command(sql):
    intent = classify_sql(sql)
    assert (intent.kind, intent.idempotent, intent.rerun_risk) == ("command", True, "")


def test_other_alter_table_is_still_never_rerun():
    intent = classify_sql("ALTER TABLE t ADD COLUMNS (c INT)")
    assert (intent.kind, intent.idempotent) == ("command", False)
