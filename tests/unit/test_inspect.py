"""plan/inspect.py classifies plans as a Spark client builds them, compressed or not."""

from __future__ import annotations

import pytest
import zstandard
from google.protobuf import message
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2, commands_pb2, relations_pb2

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.inspect import COMMAND_NAMES, PlanShape, decompress, inspect_plan, plan_body
from sparkfleet.plan.wire import LENGTH_DELIMITED, VARINT, encode_varint

CompressedOperation = base_pb2.Plan.CompressedOperation
OP_RELATION = CompressedOperation.OpType.OP_TYPE_RELATION
OP_COMMAND = CompressedOperation.OpType.OP_TYPE_COMMAND
ZSTD = base_pb2.CompressionCodec.COMPRESSION_CODEC_ZSTD
COMMAND_FIELDS = commands_pb2.Command.DESCRIPTOR.oneofs_by_name["command_type"].fields


def compressed_plan(body: message.Message, op_type: int, codec: int = ZSTD) -> bytes:
    """What pyspark's ``_try_compress_and_set_plan`` sends for a plan above the threshold."""
    plan = base_pb2.Plan()
    plan.compressed_operation.CopyFrom(
        CompressedOperation(
            data=zstandard.compress(body.SerializeToString()), op_type=op_type, compression_codec=codec
        )
    )
    return plan.SerializeToString()


def sql_command(sql: str) -> commands_pb2.Command:
    command = commands_pb2.Command()
    command.sql_command.sql = sql
    return command


def range_relation(end: int) -> relations_pb2.Relation:
    relation = relations_pb2.Relation()
    relation.range.end = end
    return relation


def test_command_names_match_the_spark_connect_schema() -> None:
    assert COMMAND_NAMES == {f.number: f.name for f in COMMAND_FIELDS}


@pytest.mark.parametrize("field", COMMAND_FIELDS, ids=lambda f: f.name)
def test_every_command_type_is_named(field) -> None:  # type: ignore[no-untyped-def]
    command = commands_pb2.Command()
    getattr(command, field.name).SetInParent()
    plain = base_pb2.Plan(command=command).SerializeToString()
    assert inspect_plan(plain) == PlanShape("command", field.name, compressed=False)
    assert inspect_plan(compressed_plan(command, OP_COMMAND)) == PlanShape("command", field.name, True)


@given(st.text(max_size=300), st.booleans())
def test_sql_commands_are_recognised_and_their_body_is_the_command(sql: str, compress: bool) -> None:
    command = sql_command(sql)
    plan = (
        compressed_plan(command, OP_COMMAND)
        if compress
        else base_pb2.Plan(command=command).SerializeToString()
    )
    shape = inspect_plan(plan)
    assert shape == PlanShape("command", "sql_command", compress)
    assert shape.label == ("sql_command+zstd" if compress else "sql_command")
    assert commands_pb2.Command.FromString(bytes(plan_body(plan))) == command


@given(st.integers(-(2**63), 2**63 - 1), st.booleans())
def test_relations_are_recognised_and_their_body_is_the_relation(end: int, compress: bool) -> None:
    relation = range_relation(end)
    plan = (
        compressed_plan(relation, OP_RELATION)
        if compress
        else base_pb2.Plan(root=relation).SerializeToString()
    )
    shape = inspect_plan(plan)
    assert shape == PlanShape("relation", None, compress)
    assert shape.label == ("relation+zstd" if compress else "relation")
    assert relations_pb2.Relation.FromString(bytes(plan_body(plan))) == relation


def test_a_large_compressed_plan_decompresses_whole() -> None:
    sql = "SELECT " + ", ".join(f"col_{i} * 2 AS doubled_{i}" for i in range(20_000))
    plan = compressed_plan(sql_command(sql), OP_COMMAND)
    assert len(plan) < len(sql) // 5  # it really was compressed
    assert commands_pb2.Command.FromString(bytes(plan_body(plan))).sql_command.sql == sql
    assert inspect_plan(plan).command == "sql_command"


def test_the_command_inside_an_execute_plan_request_is_found() -> None:
    request = base_pb2.ExecutePlanRequest(session_id="s")
    request.plan.command.create_dataframe_view.name = "v"
    request.plan.command.create_dataframe_view.input.range.end = 3
    plan = request.plan.SerializeToString()
    assert inspect_plan(plan).label == "create_dataframe_view"


def test_an_unknown_command_number_is_named_by_number() -> None:
    unknown = encode_varint((4242 << 3) | LENGTH_DELIMITED) + b"\x00"
    plan = encode_varint((2 << 3) | LENGTH_DELIMITED) + encode_varint(len(unknown)) + unknown
    assert inspect_plan(plan) == PlanShape("command", "command_4242", False)


def test_an_empty_command_is_reported_as_such() -> None:
    plan = base_pb2.Plan(command=commands_pb2.Command()).SerializeToString()
    assert inspect_plan(plan) == PlanShape("command", "empty_command", False)


def test_deep_relations_are_classified_without_parsing_them() -> None:
    plan = base_pb2.Plan()
    relation = plan.root
    for level in range(400):
        relation = relation.project.input if level % 2 else relation.with_columns.input
    relation.range.end = 1
    encoded = plan.SerializeToString()
    with pytest.raises(message.DecodeError):
        base_pb2.Plan.FromString(encoded)
    assert inspect_plan(encoded) == PlanShape("relation", None, False)
    assert bytes(plan_body(encoded)) == plan.root.SerializeToString()


def test_decompress_reads_at_most_the_limit() -> None:
    data = zstandard.compress(bytes(range(256)) * 100)
    assert decompress(data, ZSTD, limit=16) == bytes(range(16))
    assert decompress(data, ZSTD) == bytes(range(256)) * 100


# ---- malformed plans ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", [base_pb2.CompressionCodec.COMPRESSION_CODEC_UNSPECIFIED, 7])
def test_unknown_codecs_are_malformed(codec: int) -> None:
    plan = compressed_plan(sql_command("SELECT 1"), OP_COMMAND, codec=codec)
    with pytest.raises(MalformedMessage, match="codec"):
        inspect_plan(plan)
    with pytest.raises(MalformedMessage, match="codec"):
        plan_body(plan)


def _with_data(op_type: int, data: bytes) -> bytes:
    plan = base_pb2.Plan()
    plan.compressed_operation.CopyFrom(CompressedOperation(data=data, op_type=op_type, compression_codec=ZSTD))
    return plan.SerializeToString()


VALID_FRAME = zstandard.compress(sql_command("SELECT * FROM range(10) WHERE id > 3").SerializeToString())


@pytest.mark.parametrize(
    "data",
    [
        b"not zstd at all, just text",
        b"",  # no frame
        VALID_FRAME[:3],  # cut inside the frame header
        VALID_FRAME[:-4],  # cut inside the last block
        b"\x28\xb5\x2f\xfd" + b"\xff" * 20,  # zstd magic, garbage after it
    ],
    ids=["garbage", "empty", "cut-header", "cut-block", "bad-frame"],
)
def test_invalid_or_truncated_zstd_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage, match="zstd"):
        plan_body(_with_data(OP_COMMAND, data))
    with pytest.raises(MalformedMessage, match="zstd"):
        plan_body(_with_data(OP_RELATION, data))
    if data != VALID_FRAME[:-4]:  # inspect_plan needs only the command's first bytes; see below
        with pytest.raises(MalformedMessage, match="zstd"):
            inspect_plan(_with_data(OP_COMMAND, data))


def test_inspect_reads_the_command_type_from_the_first_bytes_only() -> None:
    # Classifying a plan costs a few bytes of zstd, whatever its size: a frame cut near its end
    # still names its command. The whole frame is checked when the body is needed (above).
    assert inspect_plan(_with_data(OP_COMMAND, VALID_FRAME[:-4])).command == "sql_command"


@given(st.integers(0, len(VALID_FRAME) - 1))
def test_any_cut_of_a_compressed_plan_is_malformed(cut: int) -> None:
    with pytest.raises(MalformedMessage):
        plan_body(_with_data(OP_COMMAND, VALID_FRAME[:cut]))


def test_unknown_op_type_is_malformed() -> None:
    plan = compressed_plan(sql_command("SELECT 1"), CompressedOperation.OpType.OP_TYPE_UNSPECIFIED)
    with pytest.raises(MalformedMessage, match="op_type"):
        inspect_plan(plan)


def test_a_plan_with_nothing_in_it_is_malformed() -> None:
    for call in (inspect_plan, plan_body):
        with pytest.raises(MalformedMessage, match="neither"):
            call(b"")
        with pytest.raises(MalformedMessage, match="neither"):
            call(base_pb2.Plan().SerializeToString())


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return encode_varint((number << 3) | wire_type) + payload


def _message(number: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _field(number, LENGTH_DELIMITED, encode_varint(len(body)) + body)


_OP_TYPE_COMMAND = _field(2, VARINT, encode_varint(OP_COMMAND))
_CODEC_ZSTD = _field(3, VARINT, encode_varint(ZSTD))


@pytest.mark.parametrize(
    "plan",
    [
        _field(1, VARINT, encode_varint(5)),  # root as an integer
        _field(2, VARINT, encode_varint(5)),  # command as an integer
        _field(3, VARINT, encode_varint(5)),  # compressed_operation as an integer
        # data given as the integer 10**8: must not become 100 MB of zeros to decompress
        _message(3, _field(1, VARINT, encode_varint(10**8)), _OP_TYPE_COMMAND, _CODEC_ZSTD),
        # op_type and codec given as strings
        _message(3, _message(1, VALID_FRAME), _message(2, b"\x02"), _CODEC_ZSTD),
        _message(3, _message(1, VALID_FRAME), _OP_TYPE_COMMAND, _message(3, b"\x01")),
    ],
    ids=["root-varint", "command-varint", "compressed-varint", "data-varint", "op-type-string", "codec-string"],
)
def test_fields_of_the_wrong_wire_type_are_malformed(plan: bytes) -> None:
    # The well-formed twin of the last cases is a valid compressed command.
    good = _message(3, _message(1, VALID_FRAME), _OP_TYPE_COMMAND, _CODEC_ZSTD)
    assert inspect_plan(good) == PlanShape("command", "sql_command", True)
    for call in (inspect_plan, plan_body):
        with pytest.raises(MalformedMessage, match="wire type"):
            call(plan)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_malformed_message(data: bytes) -> None:
    for call in (inspect_plan, plan_body):
        try:
            result = call(data)
        except MalformedMessage:
            continue
        assert isinstance(result, (PlanShape, bytes, memoryview))


@given(st.binary(max_size=100), st.integers(0, 3), st.integers(0, 3))
def test_arbitrary_compressed_operations_raise_only_malformed_message(
    data: bytes, op_type: int, codec: int
) -> None:
    plan = base_pb2.Plan()
    plan.compressed_operation.CopyFrom(CompressedOperation(data=data, op_type=op_type, compression_codec=codec))
    encoded = plan.SerializeToString()
    try:
        shape = inspect_plan(encoded)
    except MalformedMessage:
        pass
    else:
        assert shape.compressed and shape.kind == {1: "relation", 2: "command"}[op_type]
    try:
        body = plan_body(encoded)
    except MalformedMessage:
        pass
    else:  # only a complete zstd frame gets here
        assert codec == ZSTD and bytes(body) == zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _plan_like(depth: int) -> st.SearchStrategy[bytes]:
    """Top-level fields 1-3 of any wire type, with payloads that may themselves be plan-like."""
    payload = st.binary(max_size=12) if depth == 0 else st.one_of(st.binary(max_size=12), _plan_like(depth - 1))
    field = st.one_of(
        st.tuples(st.integers(1, 3), st.integers(0, 2**70)).map(
            lambda t: _field(t[0], VARINT, encode_varint(t[1]))
        ),
        st.tuples(st.integers(1, 3), st.binary(min_size=8, max_size=8)).map(lambda t: _field(t[0], 1, t[1])),
        st.tuples(st.integers(1, 3), st.binary(min_size=4, max_size=4)).map(lambda t: _field(t[0], 5, t[1])),
        st.tuples(st.integers(1, 3), payload).map(lambda t: _message(t[0], t[1])),
        st.just(_message(1, VALID_FRAME)),
    )
    return st.lists(field, max_size=4).map(b"".join)


@given(_plan_like(depth=2))
def test_plan_like_bytes_of_any_wire_types_raise_only_malformed_message(data: bytes) -> None:
    for call in (inspect_plan, plan_body):
        try:
            result = call(data)
        except MalformedMessage:
            continue
        assert isinstance(result, (PlanShape, bytes, memoryview))
