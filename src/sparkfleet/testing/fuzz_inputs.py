"""Hostile Spark Connect requests for fuzzing: valid seeds of the twelve RPCs and hypothesis strategies that break them.

Random bytes alone rarely get past the first field, so most inputs are structured mutations of a
valid request: one field at any depth replaced, truncated, re-typed, repeated or given invalid
UTF-8; frames cut short or claiming more bytes than they have; plans nested far deeper than
Spark accepts; unknown field numbers and wire types.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2, relations_pb2

from sparkfleet.plan.wire import encode_varint, iter_fields

RPC_KINDS = {
    "ExecutePlan": "unary_stream",
    "ReattachExecute": "unary_stream",
    "AnalyzePlan": "unary_unary",
    "Config": "unary_unary",
    "AddArtifacts": "stream_unary",
    "ArtifactStatus": "unary_unary",
    "Interrupt": "unary_unary",
    "ReleaseExecute": "unary_unary",
    "ReleaseSession": "unary_unary",
    "FetchErrorDetails": "unary_unary",
    "CloneSession": "unary_unary",
    "GetStatus": "unary_unary",
}
RPCS = tuple(RPC_KINDS)
# Requests the fuzzer builds stay below this, so that thousands fit in a short run.
MAX_INPUT_BYTES = 4 * 1024 * 1024
_INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"a\x80b")


def _tag(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def _field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + encode_varint(len(payload)) + payload


def deep_relation(levels: int, leaf: bytes | None = None) -> bytes:
    """An encoded Relation ``levels`` Projects deep (``Relation{project{input: Relation{...}}}``)
    around ``leaf`` (default: range(3)); each level is two messages. Built without recursion."""
    inner = leaf if leaf is not None else relations_pb2.Relation(
        range=relations_pb2.Range(start=0, end=3, step=1)
    ).SerializeToString()
    heads = []
    size = len(inner)
    for _ in range(levels):
        project_head = _tag(1, 2) + encode_varint(size)  # Project.input
        relation_head = _tag(3, 2) + encode_varint(len(project_head) + size)  # Relation.project
        size += len(project_head) + len(relation_head)
        heads.append(relation_head + project_head)
    return b"".join(reversed(heads)) + inner


def deep_execute_plan(session_id: str, user_id: str, levels: int) -> bytes:
    """An ExecutePlanRequest whose plan is ``levels`` Projects deep."""
    user = base_pb2.UserContext(user_id=user_id).SerializeToString()
    plan = _field(1, deep_relation(levels))  # Plan.root
    return _field(1, session_id.encode()) + _field(2, user) + _field(3, plan)


def deep_analyze_plan(session_id: str, user_id: str, levels: int) -> bytes:
    """An AnalyzePlanRequest (schema) whose plan is ``levels`` Projects deep."""
    user = base_pb2.UserContext(user_id=user_id).SerializeToString()
    schema = _field(1, _field(1, deep_relation(levels)))  # Schema.plan.root
    return _field(1, session_id.encode()) + _field(2, user) + _field(4, schema)


def _with_user(message: Any, session_id: str, user_id: str) -> Any:
    message.session_id = session_id
    message.user_context.user_id = user_id
    return message


def seed_requests(session_id: str, user_id: str) -> dict[str, list[bytes]]:
    """Valid requests of each RPC in one session (AddArtifacts: the messages of one stream)."""
    def make(message: Any) -> bytes:
        return _with_user(message, session_id, user_id).SerializeToString()

    execute = base_pb2.ExecutePlanRequest(operation_id=str(uuid.uuid4()), tags=["fuzz"])
    execute.plan.root.range.CopyFrom(relations_pb2.Range(start=0, end=3, step=1))
    sql = base_pb2.ExecutePlanRequest()
    sql.plan.root.sql.query = "SELECT 1 AS one"
    analyze = base_pb2.AnalyzePlanRequest()
    analyze.schema.plan.root.range.CopyFrom(relations_pb2.Range(start=0, end=3, step=1))
    config = base_pb2.ConfigRequest()
    config.operation.set.pairs.add(key="spark.sql.shuffle.partitions", value="4")
    config_get = base_pb2.ConfigRequest()
    config_get.operation.get_with_default.pairs.add(key="spark.sql.ansi.enabled", value="true")
    single = base_pb2.AddArtifactsRequest()
    single.batch.artifacts.add(name="files/fuzz.txt").data.data = b"fuzz"
    begin = base_pb2.AddArtifactsRequest()
    begin.begin_chunk.name = "files/fuzz-chunked.txt"
    begin.begin_chunk.total_bytes, begin.begin_chunk.num_chunks = 8, 2
    begin.begin_chunk.initial_chunk.data = b"fuzz"
    chunk = base_pb2.AddArtifactsRequest()
    chunk.chunk.data = b"zzuf"
    status = base_pb2.ArtifactStatusesRequest(names=["files/fuzz.txt", "cache/" + "0" * 64])
    interrupt = base_pb2.InterruptRequest(
        interrupt_type=base_pb2.InterruptRequest.INTERRUPT_TYPE_OPERATION_ID, operation_id=str(uuid.uuid4())
    )
    get_status = base_pb2.GetStatusRequest()
    get_status.operation_status.operation_ids.extend([str(uuid.uuid4()), str(uuid.uuid4())])
    release = base_pb2.ReleaseExecuteRequest(operation_id=str(uuid.uuid4()))
    release.release_until.response_id = str(uuid.uuid4())
    return {
        "ExecutePlan": [make(execute), make(sql)],
        "ReattachExecute": [make(base_pb2.ReattachExecuteRequest(operation_id=str(uuid.uuid4())))],
        "AnalyzePlan": [make(analyze)],
        "Config": [make(config), make(config_get)],
        "AddArtifacts": [make(single), make(begin), make(chunk)],
        "ArtifactStatus": [make(status)],
        "Interrupt": [make(interrupt)],
        "ReleaseExecute": [make(release)],
        "ReleaseSession": [make(base_pb2.ReleaseSessionRequest())],
        "FetchErrorDetails": [make(base_pb2.FetchErrorDetailsRequest(error_id=str(uuid.uuid4())))],
        "CloneSession": [make(base_pb2.CloneSessionRequest())],
        "GetStatus": [make(get_status)],
    }


# ---- mutations over the wire format --------------------------------------------------------------

Fields = list[tuple[int, int, Any]]  # (number, wire type, int or bytes)


def _decode(message: bytes) -> Fields | None:
    """The top-level fields of ``message``, or None if it does not read as a message."""
    try:
        return [(f.number, f.wire_type, bytes(f.value) if f.wire_type == 2 else f.value) for f in iter_fields(message)]
    except Exception:  # noqa: BLE001 - not a message: the caller treats it as bytes
        return None


def _encode(fields: Fields) -> bytes:
    out = bytearray()
    for number, wire_type, value in fields:
        out += _tag(number, wire_type)
        if wire_type == 2:
            out += encode_varint(len(value)) + value
        elif wire_type == 0:
            out += encode_varint(value)
        else:
            out += int(value).to_bytes(8 if wire_type == 1 else 4, "little")
    return bytes(out)


@st.composite
def _nested_edit(draw: st.DrawFn, message: bytes, depth: int = 0) -> bytes:
    """``message`` with one field somewhere inside it (a random path down) changed."""
    fields = _decode(message)
    if not fields:
        return draw(_payload_edit(message))
    index = draw(st.integers(0, len(fields) - 1))
    number, wire_type, value = fields[index]
    action = draw(st.sampled_from(["descend", "descend", "replace", "drop", "duplicate", "retype"]))
    if action == "descend" and wire_type == 2 and depth < 8:
        fields[index] = (number, 2, draw(_nested_edit(value, depth + 1)))
    elif action == "drop":
        del fields[index]
    elif action == "duplicate":
        copies = draw(st.sampled_from([2, 10, 1000, 20_000]))
        if wire_type != 2 or len(value) * copies < MAX_INPUT_BYTES:
            fields[index + 1:index + 1] = [fields[index]] * (copies - 1)
    elif action == "retype":
        new_type = draw(st.sampled_from([0, 1, 2, 5]))
        fields[index] = (number, new_type, draw(st.binary(max_size=16)) if new_type == 2 else draw(st.integers(0, 2**32 - 1)))
    else:
        payload = value if wire_type == 2 else b""
        fields[index] = (number, 2, draw(_payload_edit(payload)))
    return _encode(fields)


@st.composite
def _payload_edit(draw: st.DrawFn, payload: bytes) -> bytes:
    """New bytes for one string or bytes field."""
    kind = draw(st.sampled_from(["utf8", "utf8", "empty", "random", "long", "not-uuid", "control"]))
    if kind == "utf8":
        cut = draw(st.integers(0, len(payload)))
        return payload[:cut] + draw(st.sampled_from(_INVALID_UTF8)) + payload[cut:]
    if kind == "empty":
        return b""
    if kind == "long":
        return draw(st.sampled_from([b"x", b"../", b"\x00", "é".encode()])) * draw(st.sampled_from([256, 70_000, 1_000_000]))
    if kind == "not-uuid":
        return draw(st.sampled_from([b"not-a-uuid", b"../../etc/passwd", b"/abs/path", b"files/../x", b"jars\\x.jar"]))
    if kind == "control":
        return payload + b"\x00\n\r\x7f"
    return draw(st.binary(max_size=64))


@st.composite
def mutated_request(draw: st.DrawFn, seed: bytes, rpc: str) -> tuple[str, bytes]:
    """(what was done, the request) for one mutation of ``seed`` (a valid request of ``rpc``)."""
    kind = draw(st.sampled_from([
        "nested", "nested", "nested", "truncate", "flip", "insert", "add-field", "length-lie",
        "overlong-varint", "deep", "random", "stack",
    ]))
    if kind == "nested":
        return kind, draw(_nested_edit(seed))
    if kind == "truncate":
        cut = draw(st.integers(0, max(0, len(seed) - 1)))
        return f"{kind}@{cut}", seed[:cut]
    if kind == "flip":
        at = draw(st.integers(0, len(seed) - 1))
        bit = draw(st.integers(0, 7))
        return f"{kind}@{at}.{bit}", seed[:at] + bytes([seed[at] ^ (1 << bit)]) + seed[at + 1:]
    if kind == "insert":
        at = draw(st.integers(0, len(seed)))
        return f"{kind}@{at}", seed[:at] + draw(st.binary(min_size=1, max_size=16)) + seed[at:]
    if kind == "add-field":
        number = draw(st.one_of(st.integers(0, 40), st.integers(0, 2**29 + 8), st.just(999)))
        wire_type = draw(st.integers(0, 7))
        body = draw(st.binary(max_size=24))
        extra = _tag(number, wire_type) + (encode_varint(len(body)) + body if wire_type == 2 else body)
        return f"{kind} {number}/{wire_type}", seed + extra
    if kind == "length-lie":
        claimed = draw(st.sampled_from([1, 100, 2**20, 2**31, 2**40, 2**63]))
        return f"{kind} {claimed}", seed + _tag(draw(st.integers(1, 20)), 2) + encode_varint(claimed) + b"short"
    if kind == "overlong-varint":
        return kind, seed + _tag(draw(st.integers(1, 20)), 0) + b"\xff" * draw(st.integers(10, 20))
    if kind == "deep":
        levels = draw(st.sampled_from([200, 400, 510, 511, 1000, 5000, 20_000, 100_000]))
        session, user = "", ""
        for number, wire_type, value in _decode(seed) or []:
            if number == 1 and wire_type == 2:
                session = value.decode(errors="replace")
            elif number == 2 and wire_type == 2:
                user = next((v.decode(errors="replace") for n, t, v in _decode(value) or [] if n == 1 and t == 2), "")
        maker = deep_analyze_plan if rpc == "AnalyzePlan" else deep_execute_plan
        return f"{kind} {levels}", maker(session or str(uuid.uuid4()), user or "fuzz", levels)
    if kind == "stack":
        once = draw(_nested_edit(seed))
        return kind, draw(_nested_edit(once))
    return kind, draw(st.binary(max_size=512))


@st.composite
def artifact_stream(draw: st.DrawFn, seeds: list[bytes]) -> tuple[str, list[bytes]]:
    """(what was done, the messages of one AddArtifacts stream) built from the valid ``seeds``."""
    single, begin, chunk = seeds
    kind = draw(st.sampled_from(["one", "chunked", "many-chunks", "huge-declared"]))
    if kind == "one":
        what, message = draw(mutated_request(single, "AddArtifacts"))
        return what, [message]
    if kind == "chunked":
        what, message = draw(mutated_request(draw(st.sampled_from([begin, chunk])), "AddArtifacts"))
        return f"chunked {what}", [begin, message] if draw(st.booleans()) else [message, chunk]
    if kind == "many-chunks":
        count = draw(st.sampled_from([10, 1000, 5000]))
        return f"{kind} {count}", [begin] + [chunk] * count
    declared = draw(st.sampled_from([2**31, 2**40, 2**63 - 1, 2**64 - 1]))
    fields = [f for f in _decode(begin) or [] if f[0] != 4]
    body = _decode(dict((n, v) for n, _, v in _decode(begin) or [])[4]) or []
    body = [(n, t, declared if n == 2 else v) for n, t, v in body]
    return f"{kind} {declared}", [_encode(fields + [(4, 2, _encode(body))]), chunk]
