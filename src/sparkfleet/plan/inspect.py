"""What a plan is, read shallowly: relation or command, which command, compressed or not.

Only the top levels of ``Plan`` are walked; the relation tree below is never parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import zstandard

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.wire import LENGTH_DELIMITED, Field, as_int, read_fields, read_varint

# spark.connect.Plan
_PLAN_ROOT, _PLAN_COMMAND, _PLAN_COMPRESSED = 1, 2, 3
# spark.connect.Plan.CompressedOperation
_CO_DATA, _CO_OP_TYPE, _CO_CODEC = 1, 2, 3
_OP_TYPE_RELATION, _OP_TYPE_COMMAND = 1, 2
_CODEC_ZSTD = 1
# spark.connect.Command oneof numbers -> names (the ones that matter to routing and records).
COMMAND_NAMES = {
    1: "register_function", 2: "write_operation", 3: "create_dataframe_view",
    4: "write_operation_v2", 5: "sql_command", 6: "write_stream_operation_start",
    7: "streaming_query_command", 8: "get_resources_command", 9: "streaming_query_manager_command",
    10: "register_table_function", 11: "streaming_query_listener_bus_command",
    12: "register_data_source", 13: "create_resource_profile_command", 14: "checkpoint_command",
    15: "remove_cached_remote_relation_command", 16: "merge_into_table_command", 17: "ml_command",
    18: "execute_external_command", 19: "pipeline_command", 999: "extension",
}
# Decompressed plans are bounded like Spark bounds them (spark.connect.maxPlanSize default).
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PlanShape:
    """``kind`` is 'relation' or 'command'; ``command`` names the command type when it is one."""

    kind: str
    command: str | None
    compressed: bool

    @property
    def label(self) -> str:
        """What query records show, e.g. 'relation', 'sql_command', 'relation+zstd'."""
        return (self.command or self.kind) + ("+zstd" if self.compressed else "")


def decompress(data: bytes | memoryview, codec: int, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a CompressedOperation payload, reading at most ``limit`` bytes of output."""
    if codec != _CODEC_ZSTD:
        raise MalformedMessage(f"unsupported plan compression codec {codec}")
    try:
        with zstandard.ZstdDecompressor().stream_reader(bytes(data)) as reader:
            out = reader.read(limit + 1)
        if len(out) <= limit:
            # The reader returns a truncated frame's output without complaint; a frame that ends
            # is what tells a whole plan from part of one. Its output is ``out``, so this is bounded.
            ending = zstandard.ZstdDecompressor().decompressobj()
            ending.decompress(bytes(data))
            if not ending.eof:
                raise MalformedMessage("compressed plan is truncated: its zstd frame does not end")
    except zstandard.ZstdError as exc:
        raise MalformedMessage(f"compressed plan is not valid zstd: {exc}") from exc
    if len(out) > limit and limit == MAX_DECOMPRESSED_BYTES:
        raise MalformedMessage(f"compressed plan expands beyond {MAX_DECOMPRESSED_BYTES} bytes")
    return out[:limit]


def _message(field: Field) -> memoryview:
    """A message or bytes field's payload; another wire type means these bytes are not a Plan."""
    if field.wire_type != LENGTH_DELIMITED or not isinstance(field.value, memoryview):
        raise MalformedMessage(f"plan field {field.number} has wire type {field.wire_type}, not a message")
    return field.value


def _compressed_parts(plan_fields: dict) -> tuple[int, int, memoryview]:  # type: ignore[type-arg]
    co = read_fields(_message(plan_fields[_PLAN_COMPRESSED]), frozenset({_CO_DATA, _CO_OP_TYPE, _CO_CODEC}))
    op_type = as_int(co.get(_CO_OP_TYPE))
    codec = as_int(co.get(_CO_CODEC))
    data = _message(co[_CO_DATA]) if _CO_DATA in co else memoryview(b"")
    return op_type, codec, data


_PLAN_FIELDS = frozenset({_PLAN_ROOT, _PLAN_COMMAND, _PLAN_COMPRESSED})


def inspect_plan(plan: bytes | memoryview) -> PlanShape:
    """Classify an encoded ``spark.connect.Plan`` (a compressed one costs a few bytes of zstd)."""
    fields = read_fields(plan, _PLAN_FIELDS)
    if _PLAN_COMPRESSED in fields:
        op_type, codec, data = _compressed_parts(fields)
        if op_type == _OP_TYPE_RELATION:
            return PlanShape("relation", None, True)
        if op_type == _OP_TYPE_COMMAND:
            # The command's type is its first tag: a few decompressed bytes tell it.
            return PlanShape("command", _command_name(decompress(data, codec, limit=16)), True)
        raise MalformedMessage(f"compressed plan has unknown op_type {op_type}")
    if _PLAN_ROOT in fields:
        _message(fields[_PLAN_ROOT])
        return PlanShape("relation", None, False)
    if _PLAN_COMMAND in fields:
        return PlanShape("command", _command_name(_message(fields[_PLAN_COMMAND])), False)
    raise MalformedMessage("plan has neither a relation, a command nor a compressed operation")


def plan_body(plan: bytes | memoryview) -> bytes | memoryview:
    """The Relation or Command message a plan carries, decompressed if need be."""
    fields = read_fields(plan, _PLAN_FIELDS)
    if _PLAN_COMPRESSED in fields:
        _, codec, data = _compressed_parts(fields)
        return decompress(data, codec)
    for number in (_PLAN_ROOT, _PLAN_COMMAND):
        if number in fields:
            return _message(fields[number])
    raise MalformedMessage("plan has neither a relation, a command nor a compressed operation")


def _command_name(command: bytes | memoryview) -> str:
    """A Command's type is the number of its first (only) top-level field."""
    if not len(command):
        return "empty_command"
    key, _ = read_varint(command, 0)
    return COMMAND_NAMES.get(key >> 3, f"command_{key >> 3}")
