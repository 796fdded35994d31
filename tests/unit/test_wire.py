"""plan/wire.py reads and rewrites top-level fields exactly as protobuf would see them."""

from __future__ import annotations

import struct

import pytest
from google.protobuf import descriptor, message
from hypothesis import assume, given
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2 as pb
from pyspark.sql.connect.proto import relations_pb2

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    Field,
    as_str,
    encode_string_field,
    encode_varint,
    iter_fields,
    read_fields,
    read_repeated,
    read_varint,
    remove_field,
    replace_and_read,
    replace_string_field,
)

FD = descriptor.FieldDescriptor
texts = st.text(max_size=40)
ids = st.uuids().map(str) | texts


@st.composite
def execute_plan_requests(draw: st.DrawFn) -> pb.ExecutePlanRequest:
    req = pb.ExecutePlanRequest(
        session_id=draw(ids),
        user_context=pb.UserContext(user_id=draw(texts), user_name=draw(texts)),
    )
    for name in ("operation_id", "client_observed_server_side_session_id", "client_type"):
        if draw(st.booleans()):
            setattr(req, name, draw(ids))
    req.tags.extend(draw(st.lists(texts, max_size=3)))
    if draw(st.booleans()):
        req.plan.command.sql_command.sql = draw(texts)
    else:
        req.plan.root.range.end = draw(st.integers(-(2**63), 2**63 - 1))
    for reattachable in draw(st.lists(st.booleans(), max_size=2)):
        req.request_options.add().reattach_options.reattachable = reattachable
    return req


@st.composite
def config_requests(draw: st.DrawFn) -> pb.ConfigRequest:
    req = pb.ConfigRequest(session_id=draw(ids), user_context=pb.UserContext(user_id=draw(texts)))
    if draw(st.booleans()):
        req.client_observed_server_side_session_id = draw(ids)
    if draw(st.booleans()):
        req.client_type = draw(texts)
    if draw(st.booleans()):
        for key, value in draw(st.lists(st.tuples(texts, texts), max_size=3)):
            req.operation.set.pairs.add(key=key, value=value)
    else:
        req.operation.get.keys.extend(draw(st.lists(texts, max_size=3)))
    return req


@st.composite
def execute_plan_responses(draw: st.DrawFn) -> pb.ExecutePlanResponse:
    resp = pb.ExecutePlanResponse(
        session_id=draw(ids),
        server_side_session_id=draw(ids),
        operation_id=draw(ids),
        response_id=draw(ids),
    )
    kind = draw(st.sampled_from(["arrow", "complete", "sql"]))
    if kind == "arrow":
        resp.arrow_batch.row_count = draw(st.integers(0, 2**40))
        resp.arrow_batch.data = draw(st.binary(max_size=300))
        if draw(st.booleans()):
            resp.arrow_batch.start_offset = draw(st.integers(0, 2**40))
    elif kind == "complete":
        resp.result_complete.SetInParent()
    else:
        resp.sql_command_result.relation.sql.query = draw(texts)
    if draw(st.booleans()):
        resp.schema.string.SetInParent()
    return resp


messages = st.one_of(execute_plan_requests(), config_requests(), execute_plan_responses())


def _singular_strings(msg: message.Message) -> list[str]:
    return [
        f.name for f in msg.DESCRIPTOR.fields if f.type == FD.TYPE_STRING and not f.is_repeated
    ]


def _same_value(fd: descriptor.FieldDescriptor, wire: Field, value: object) -> bool:
    if fd.type == FD.TYPE_STRING:
        return wire.wire_type == LENGTH_DELIMITED and as_str(wire) == value
    if fd.type == FD.TYPE_BYTES:
        return wire.wire_type == LENGTH_DELIMITED and bytes(wire.value) == value  # type: ignore[arg-type]
    if fd.type == FD.TYPE_MESSAGE:
        assert isinstance(wire.value, memoryview)
        return type(value).FromString(bytes(wire.value)) == value  # type: ignore[attr-defined]
    raise AssertionError(f"no top-level field of type {fd.type} in the messages under test")


def assert_reads_like_protobuf(msg: message.Message, encoded: bytes) -> None:
    """Every field protobuf sees at the top level, wire.py sees with the same value, and no other."""
    numbers = frozenset(f.number for f in msg.DESCRIPTOR.fields)
    found = read_fields(encoded, numbers)
    present = {fd.number for fd, _ in msg.ListFields()}
    for fd, value in msg.ListFields():
        if fd.is_repeated:
            occurrences = read_repeated(encoded, fd.number)
            assert len(occurrences) == len(value)  # type: ignore[arg-type]
            assert all(_same_value(fd, w, v) for w, v in zip(occurrences, value))  # type: ignore[call-overload]
        else:
            assert _same_value(fd, found[fd.number], value), fd.name
    # Absent proto3 strings read as "" through as_str, as they do through protobuf.
    for name in _singular_strings(msg):
        number = msg.DESCRIPTOR.fields_by_name[name].number
        assert as_str(found.get(number)) == getattr(msg, name)
    assert set(found) <= present | {
        fd.number for fd in msg.DESCRIPTOR.fields if fd.is_repeated
    }


def assert_tiles(fields: list[Field], length: int) -> None:
    """Fields account for every byte of the message, in order, with no gaps or overlaps."""
    pos = 0
    for field in fields:
        assert field.start == pos
        assert field.end > field.start
        pos = field.end
    assert pos == length


# ---- reading -----------------------------------------------------------------------------


@given(messages)
def test_read_fields_agrees_with_protobuf(msg: message.Message) -> None:
    assert_reads_like_protobuf(msg, msg.SerializeToString())


@given(messages)
def test_fields_tile_the_message_in_wire_order(msg: message.Message) -> None:
    encoded = msg.SerializeToString()
    assert_tiles(list(iter_fields(encoded)), len(encoded))


@given(execute_plan_requests(), execute_plan_requests())
def test_repeated_occurrences_last_one_wins_like_protobuf(
    first: pb.ExecutePlanRequest, second: pb.ExecutePlanRequest
) -> None:
    # Concatenated encodings are a merge: for scalar strings protobuf keeps the last occurrence.
    encoded = first.SerializeToString() + second.SerializeToString()
    merged = pb.ExecutePlanRequest.FromString(encoded)
    numbers = frozenset(merged.DESCRIPTOR.fields_by_name[n].number for n in _singular_strings(merged))
    found = read_fields(encoded, numbers)
    for name in _singular_strings(merged):
        assert as_str(found.get(merged.DESCRIPTOR.fields_by_name[name].number)) == getattr(merged, name)
    assert [as_str(f) for f in read_repeated(encoded, 7)] == list(merged.tags)


def test_read_fields_returns_only_wanted_numbers() -> None:
    req = pb.ExecutePlanRequest(session_id="s", operation_id="op", client_type="c")
    found = read_fields(req.SerializeToString(), frozenset({1, 6, 99}))
    assert set(found) == {1, 6}
    assert (as_str(found[1]), as_str(found[6])) == ("s", "op")


def test_fixed_width_fields_are_read_little_endian() -> None:
    encoded = (
        encode_varint((3 << 3) | FIXED64) + struct.pack("<d", 1.5)
        + encode_varint((4 << 3) | FIXED32) + struct.pack("<I", 0xDEADBEEF)
        + encode_varint((5 << 3) | VARINT) + encode_varint(2**64 - 1)
    )
    found = read_fields(encoded, frozenset({3, 4, 5}))
    assert found[3].value == int.from_bytes(struct.pack("<d", 1.5), "little")
    assert found[4].value == 0xDEADBEEF
    assert found[5].value == 2**64 - 1


def test_as_str_rejects_non_strings_and_bad_utf8() -> None:
    varint = next(iter_fields(encode_varint((1 << 3) | VARINT) + encode_varint(5)))
    with pytest.raises(MalformedMessage, match="not a string"):
        as_str(varint)
    bad_utf8 = next(iter_fields(encode_varint((1 << 3) | LENGTH_DELIMITED) + b"\x02\xc3\x28"))
    with pytest.raises(MalformedMessage, match="UTF-8"):
        as_str(bad_utf8)
    assert as_str(None) == ""


@given(st.integers(0, 2**64 - 1), st.binary(max_size=4))
def test_varint_round_trip(value: int, tail: bytes) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= 10
    assert read_varint(encoded + tail, 0) == (value, len(encoded))


@given(st.integers(1, 2**29 - 1), texts)
def test_encode_string_field_is_what_protobuf_writes(number: int, value: str) -> None:
    # Field 6 of ExecutePlanRequest is the optional operation_id: protobuf's encoding is identical.
    assert encode_string_field(6, value) == pb.ExecutePlanRequest(operation_id=value).SerializeToString()
    [field] = iter_fields(encode_string_field(number, value))
    assert (field.number, field.wire_type, as_str(field)) == (number, LENGTH_DELIMITED, value)


# ---- rewriting ---------------------------------------------------------------------------


@st.composite
def message_and_string_field(draw: st.DrawFn) -> tuple[message.Message, str]:
    msg = draw(messages)
    return msg, draw(st.sampled_from(_singular_strings(msg)))


def _number(msg: message.Message, name: str) -> int:
    return msg.DESCRIPTOR.fields_by_name[name].number  # type: ignore[no-any-return]


@given(message_and_string_field(), ids)
def test_replace_string_field_changes_only_that_field(case: tuple[message.Message, str], new: str) -> None:
    msg, name = case
    out = replace_string_field(msg.SerializeToString(), _number(msg, name), new)
    expected = type(msg)()
    expected.CopyFrom(msg)
    setattr(expected, name, new)
    assert type(msg).FromString(out) == expected


@given(message_and_string_field())
def test_replace_with_none_removes_the_field(case: tuple[message.Message, str]) -> None:
    msg, name = case
    out = replace_string_field(msg.SerializeToString(), _number(msg, name), None)
    expected = type(msg)()
    expected.CopyFrom(msg)
    expected.ClearField(name)
    parsed = type(msg).FromString(out)
    assert parsed == expected
    assert _number(msg, name) not in read_fields(out, frozenset({_number(msg, name)}))


@given(message_and_string_field(), ids)
def test_replace_and_read_returns_new_bytes_and_the_original_fields(
    case: tuple[message.Message, str], new: str
) -> None:
    msg, name = case
    encoded = msg.SerializeToString()
    number = _number(msg, name)
    wanted = frozenset(f.number for f in msg.DESCRIPTOR.fields)
    out, found = replace_and_read(encoded, number, new, wanted)
    expected = type(msg)()
    expected.CopyFrom(msg)
    setattr(expected, name, new)
    assert type(msg).FromString(out) == expected
    # What was read describes the input, including the value that was replaced.
    assert found == read_fields(encoded, wanted)
    assert as_str(found.get(number)) == getattr(msg, name)


@given(execute_plan_requests(), ids)
def test_replacing_a_field_that_occurs_twice_leaves_one(req: pb.ExecutePlanRequest, new: str) -> None:
    encoded = req.SerializeToString() + encode_string_field(8, "stale-1") + encode_string_field(8, "stale-2")
    out = replace_string_field(encoded, 8, new)
    assert [as_str(f) for f in read_repeated(out, 8)] == [new]
    assert pb.ExecutePlanRequest.FromString(out).client_observed_server_side_session_id == new


@given(messages, st.integers(1, 2**29 - 1))
def test_removing_an_absent_field_returns_the_same_bytes(msg: message.Message, number: int) -> None:
    encoded = msg.SerializeToString()
    assume(number not in {f.number for f in iter_fields(encoded)})
    assert remove_field(encoded, number) == encoded


@given(messages)
def test_remove_field_drops_every_occurrence_and_keeps_the_rest(msg: message.Message) -> None:
    encoded = msg.SerializeToString()
    for fd in msg.DESCRIPTOR.fields:
        out = remove_field(encoded, fd.number)
        expected = type(msg)()
        expected.CopyFrom(msg)
        expected.ClearField(fd.name)
        assert type(msg).FromString(out) == expected


# ---- malformed input ---------------------------------------------------------------------


def _exercise(data: bytes) -> None:
    """Every entry point either works or says MalformedMessage (pytest fails on anything else)."""
    for call in (
        lambda: [as_str(f) if f.wire_type == LENGTH_DELIMITED else f.value for f in iter_fields(data)],
        lambda: read_fields(data, frozenset({1, 2, 3, 8, 15})),
        lambda: remove_field(data, 1),
        lambda: replace_string_field(data, 8, "x"),
        lambda: replace_and_read(data, 15, "x", frozenset({1, 14})),
    ):
        try:
            call()
        except MalformedMessage:
            pass


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_malformed_message(data: bytes) -> None:
    _exercise(data)
    try:
        fields = list(iter_fields(data))
    except MalformedMessage:
        return
    assert_tiles(fields, len(data))


@given(messages, st.data())
def test_cutting_a_message_inside_a_field_is_malformed(msg: message.Message, data: st.DataObject) -> None:
    encoded = msg.SerializeToString()
    assume(len(encoded) > 1)
    cut = data.draw(st.integers(1, len(encoded) - 1))
    fields = list(iter_fields(encoded))
    boundaries = {f.end for f in fields}
    truncated = encoded[:cut]
    _exercise(truncated)
    if cut in boundaries:
        assert list(iter_fields(truncated)) == [f for f in fields if f.end <= cut]
    else:
        with pytest.raises(MalformedMessage):
            list(iter_fields(truncated))
        with pytest.raises(message.DecodeError):
            type(msg).FromString(truncated)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x80", "truncated varint"),
        (b"\x08", "truncated varint"),
        (b"\x0a\x05abc", "runs past the end"),
        (b"\x09\x00\x00", "truncated fixed64"),
        (b"\x0d\x00", "truncated fixed32"),
        (b"\x0b", "unsupported wire type 3"),  # start group
        (b"\x0c", "unsupported wire type 4"),  # end group
        (b"\x0e", "unsupported wire type 6"),
        (b"\x0f", "unsupported wire type 7"),
        (b"\x02\x00", "field number 0"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    ],
)
def test_malformed_encodings_are_named(data: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        list(iter_fields(data))


# ---- depth -------------------------------------------------------------------------------


def _deep_request(depth: int) -> pb.ExecutePlanRequest:
    req = pb.ExecutePlanRequest(
        session_id="4f1d7e0c-6a8e-4d0c-9b3e-2b0a6f1b9c11",
        operation_id="op-1",
        client_observed_server_side_session_id="old-server-id",
    )
    relation = req.plan.root
    for level in range(depth):
        relation = relation.project.input if level % 2 else relation.with_columns.input
    relation.range.end = 10
    return req


def test_top_level_reads_survive_nesting_protobuf_refuses() -> None:
    encoded = _deep_request(400).SerializeToString()
    with pytest.raises(message.DecodeError):
        pb.ExecutePlanRequest.FromString(encoded)
    with pytest.raises(message.DecodeError):
        pb.Plan.FromString(bytes(read_fields(encoded, frozenset({3}))[3].value))  # type: ignore[arg-type]

    found = read_fields(encoded, frozenset({1, 6, 8}))
    assert [as_str(found[n]) for n in (1, 6, 8)] == [
        "4f1d7e0c-6a8e-4d0c-9b3e-2b0a6f1b9c11",
        "op-1",
        "old-server-id",
    ]
    out = replace_string_field(encoded, 8, "new-server-id")
    assert as_str(read_fields(out, frozenset({8}))[8]) == "new-server-id"
    # The plan's bytes travel untouched.
    plan_before = bytes(read_fields(encoded, frozenset({3}))[3].value)  # type: ignore[arg-type]
    plan_after = bytes(read_fields(out, frozenset({3}))[3].value)  # type: ignore[arg-type]
    assert plan_after == plan_before


def test_walking_down_one_level_at_a_time_reaches_the_bottom() -> None:
    depth = 400
    encoded = _deep_request(depth).SerializeToString()
    relation = read_fields(read_fields(encoded, frozenset({3}))[3].value, frozenset({1}))[1].value
    project = relations_pb2.Relation.DESCRIPTOR.fields_by_name["project"].number
    with_columns = relations_pb2.Relation.DESCRIPTOR.fields_by_name["with_columns"].number
    range_ = relations_pb2.Relation.DESCRIPTOR.fields_by_name["range"].number
    for level in range(depth):
        wrapper_number = project if level % 2 else with_columns
        wrapper = read_fields(relation, frozenset({wrapper_number}))[wrapper_number].value  # type: ignore[arg-type]
        relation = read_fields(wrapper, frozenset({1}))[1].value  # type: ignore[arg-type]  # .input
    bottom = read_fields(relation, frozenset({range_}))[range_].value  # type: ignore[arg-type]
    assert relations_pb2.Range.FromString(bytes(bottom)).end == 10  # type: ignore[arg-type]


def test_hand_built_nesting_far_past_the_recursion_limit_reads_at_the_top() -> None:
    # 5000 levels of field 1 nested in itself: recursion of any kind would fail here.
    nested = b""
    for _ in range(5000):
        nested = encode_varint((1 << 3) | LENGTH_DELIMITED) + encode_varint(len(nested)) + nested
    encoded = nested + encode_string_field(2, "top")
    found = read_fields(encoded, frozenset({1, 2}))
    assert as_str(found[2]) == "top"
    assert found[1].end == len(nested)
    assert replace_string_field(encoded, 2, "new") == nested + encode_string_field(2, "new")
