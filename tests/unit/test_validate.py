"""plan/validate.py: a whole request is checked as Spark's parser checks it, at any depth, without recursion."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import MalformedMessage, MessageTooDeep
from sparkfleet.gateway.request_checks import REQUEST_TYPES, check_request
from sparkfleet.plan.validate import MAX_NESTING, validate_message
from sparkfleet.testing.fuzz_inputs import RPCS, deep_analyze_plan, deep_execute_plan, mutated_request, seed_requests

SID = "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
EXECUTE = base_pb2.ExecutePlanRequest.DESCRIPTOR


def test_every_valid_seed_request_passes() -> None:
    for rpc, requests in seed_requests(SID, "alice").items():
        for request in requests:
            check_request(rpc, request)


@pytest.mark.parametrize("levels", [1, 200, 510])
def test_plans_as_deep_as_spark_accepts_pass(levels: int) -> None:
    # 510 Projects put the range at message level 1023: the deepest Spark's parser takes.
    check_request("ExecutePlan", deep_execute_plan(SID, "alice", levels))
    check_request("AnalyzePlan", deep_analyze_plan(SID, "alice", levels))


@pytest.mark.parametrize("levels", [511, 5_000, 100_000])
def test_deeper_plans_are_refused_naming_the_limit(levels: int) -> None:
    with pytest.raises(MessageTooDeep) as info:
        check_request("ExecutePlan", deep_execute_plan(SID, "alice", levels))
    assert info.value.limit == MAX_NESTING == 1024
    assert "more than 1024 levels" in info.value.message
    assert "spark.connect.grpc.marshallerRecursionLimit" in info.value.message
    assert "ExecutePlanRequest.plan.root.project.input" in info.value.message
    assert info.value.grpc_code.name == "INVALID_ARGUMENT"
    with pytest.raises(MessageTooDeep):
        check_request("AnalyzePlan", deep_analyze_plan(SID, "alice", levels))


def test_invalid_utf8_is_refused_naming_the_field() -> None:
    request = base_pb2.ExecutePlanRequest(session_id=SID)
    request.plan.root.sql.query = "SELECT 'MARK'"
    raw = request.SerializeToString().replace(b"MARK", b"\xff\xfe\xc3(")
    with pytest.raises(MalformedMessage, match=r"ExecutePlanRequest\.plan\.root\.sql\.query is not valid UTF-8"):
        validate_message(raw, EXECUTE)


@pytest.mark.parametrize("rpc", RPCS)
def test_invalid_utf8_in_ids_is_refused(rpc: str) -> None:
    raw = b"\x0a\x04\xff\xfe\xfd\xfc"  # field 1 is session_id in every request
    with pytest.raises(MalformedMessage, match="session_id is not valid UTF-8"):
        check_request(rpc, raw)


def test_unknown_fields_and_wrong_wire_types_are_skipped_as_java_does() -> None:
    valid = seed_requests(SID, "alice")["Config"][0]
    check_request("Config", valid + b"\xf8\x3e\x01")  # field 999, a varint: unknown
    check_request("Config", valid + b"\x10\x05")  # user_context as a varint: Java keeps it as unknown


@pytest.mark.parametrize(
    ("tail", "complaint"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", "past the end"),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
        (b"\x08\x80", "truncated varint"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0b", "wire type 3"),
        (b"\x0d\x01", "truncated fixed-size"),
    ],
)
def test_broken_frames_are_malformed(tail: bytes, complaint: str) -> None:
    with pytest.raises(MalformedMessage, match=complaint):
        validate_message(seed_requests(SID, "alice")["ExecutePlan"][0] + tail, EXECUTE)


def test_truncation_at_every_offset_is_refused_or_whole() -> None:
    request = seed_requests(SID, "alice")["ExecutePlan"][0]
    for cut in range(len(request)):
        try:
            validate_message(request[:cut], EXECUTE)
        except MalformedMessage:
            continue


def _upb_accepts(rpc: str, raw: bytes) -> bool:
    try:
        REQUEST_TYPES[rpc].FromString(raw)
        return True
    except DecodeError:
        return False


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_what_passes_parses(data: st.DataObject) -> None:
    """Nothing the validator lets through is refused by protobuf's own parser (upb, whose depth
    limit of 100 is the only rule it has that the validator does not share)."""
    rpc = data.draw(st.sampled_from(RPCS))
    seed = data.draw(st.sampled_from(seed_requests(str(uuid.uuid4()), "alice")[rpc]))
    what, raw = data.draw(mutated_request(seed, rpc))
    assume(not what.startswith("deep"))
    try:
        check_request(rpc, raw)
    except MalformedMessage:
        return
    assert _upb_accepts(rpc, raw), what


@given(st.binary(max_size=256))
def test_any_bytes_are_either_valid_or_malformed(raw: bytes) -> None:
    try:
        validate_message(raw, EXECUTE)
    except MalformedMessage:
        pass


def _local_relation(data: bytes) -> bytes:
    request = base_pb2.ExecutePlanRequest(session_id=SID)
    request.plan.root.local_relation.data = data
    return request.SerializeToString()


def _arrow_stream(rows: int) -> bytes:
    import io

    import pyarrow as pa

    table = pa.table({"id": list(range(rows)), "name": ["x"] * rows})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_local_data_that_is_not_an_arrow_stream_is_refused() -> None:
    # What a one-bit flip of a SQL relation becomes: its text read as Arrow claims 1.1 GB of
    # metadata, which Spark's reader allocated and ran its driver out of heap.
    with pytest.raises(MalformedMessage, match=r"plan\.root\.local_relation\.data is not an Arrow IPC stream"):
        validate_message(_local_relation(b"\n\x0fSELECT 1 AS one"), EXECUTE)
    whole = _arrow_stream(1000)
    with pytest.raises(MalformedMessage, match="message body"):
        validate_message(_local_relation(whole[:-20]), EXECUTE)
    claims = bytearray(whole)
    claims[4:8] = (2**31 - 1).to_bytes(4, "little")
    with pytest.raises(MalformedMessage, match="Expected to read 2147483647 metadata bytes"):
        validate_message(_local_relation(bytes(claims)), EXECUTE)


def test_real_local_data_passes() -> None:
    validate_message(_local_relation(_arrow_stream(1000)), EXECUTE)
    validate_message(_local_relation(b""), EXECUTE)  # a schema-only local relation
