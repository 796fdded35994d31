"""gateway/refresh.py: which requests are a REFRESH TABLE, and where DESCRIBE says the table lives."""

from __future__ import annotations

import zstandard
from pyspark.sql.connect.proto import base_pb2, commands_pb2, relations_pb2

from sparkfleet.gateway.refresh import location_of, refreshed_table


def _execute(body: commands_pb2.Command | relations_pb2.Relation, compressed: bool = False) -> bytes:
    request = base_pb2.ExecutePlanRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
    is_command = isinstance(body, commands_pb2.Command)
    if compressed:
        operation = base_pb2.Plan.CompressedOperation
        request.plan.compressed_operation.data = zstandard.compress(body.SerializeToString())
        request.plan.compressed_operation.op_type = operation.OP_TYPE_COMMAND if is_command else operation.OP_TYPE_RELATION
        request.plan.compressed_operation.compression_codec = base_pb2.COMPRESSION_CODEC_ZSTD
    elif is_command:
        request.plan.command.CopyFrom(body)
    else:
        request.plan.root.CopyFrom(body)
    return request.SerializeToString()


def _sql_command(sql: str) -> commands_pb2.Command:
    command = commands_pb2.Command()
    command.sql_command.input.sql.query = sql
    return command


def test_sql_refresh_table_names_its_table():
    assert refreshed_table(_execute(_sql_command("REFRESH TABLE tbl1"))) == "tbl1"
    assert refreshed_table(_execute(_sql_command("-- c\n refresh  table `db`.`t x` ;"))) == "`db`.`t x`"
    assert refreshed_table(_execute(_sql_command("REFRESH TABLE db.t"), compressed=True)) == "db.t"


def test_catalog_refresh_table_names_its_table():
    relation = relations_pb2.Relation()
    relation.catalog.refresh_table.table_name = "spark_catalog.default.tbl1"
    assert refreshed_table(_execute(relation)) == "spark_catalog.default.tbl1"


def test_other_requests_refresh_no_table():
    by_path = relations_pb2.Relation()
    by_path.catalog.refresh_by_path.path = "/tmp/x"
    query = relations_pb2.Relation()
    query.range.end = 3
    for request in (
        _execute(_sql_command("REFRESH '/tmp/x'")),
        _execute(_sql_command("REFRESH FUNCTION f")),
        _execute(_sql_command("select 'REFRESH TABLE t'")),
        _execute(by_path),
        _execute(query),
        _execute(query, compressed=True),
    ):
        assert refreshed_table(request) is None


def test_location_is_read_from_describe_extended_rows():
    rows = [
        {"col_name": "col", "data_type": "string", "comment": None},
        {"col_name": "", "data_type": "", "comment": ""},
        {"col_name": "# Detailed Table Information", "data_type": "", "comment": ""},
        {"col_name": "Location", "data_type": "file:/tmp/refreshTable1", "comment": ""},
    ]
    assert location_of(rows) == "file:/tmp/refreshTable1"
    assert location_of(rows[:3]) is None
