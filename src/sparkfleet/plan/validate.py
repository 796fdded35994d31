"""Whole-request validation before forwarding: wire format, UTF-8 strings and nesting depth, as Spark's parser checks them.

Spark refuses a request that its protobuf parser rejects with a bare ``UNKNOWN: Application error
processing RPC`` and a stack trace in its own log. The gateway reads requests shallowly, so the
same bytes would pass it and fail there. This walk checks, in one pass over the bytes with an
explicit stack (no recursion, memory in proportion to the depth), what protobuf-java checks when
Spark parses them: every known message field is well formed, every string is UTF-8, and messages
nest no deeper than Spark's limit. Unknown fields are skipped, as Java skips them. Local data
(Arrow IPC in ``LocalRelation.data``) is checked to be framed as its JVM reader expects.
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from sparkfleet.errors import MalformedMessage, MessageTooDeep
from sparkfleet.plan.wire import read_varint

# spark.connect.grpc.marshallerRecursionLimit, Spark's default: a request message is level 0 and
# each message inside a message one level more.
MAX_NESTING = 1024
_MAX_FIELD_NUMBER = (1 << 29) - 1
_MESSAGE, _STRING, _ARROW = 1, 2, 3
# Bytes fields Spark's JVM reads as an Arrow IPC stream. Its reader allocates each message's
# metadata at the length the stream claims before reading it: `createDataFrame` data of a few bytes
# claiming a gigabyte ran a 1 GiB driver out of heap ("Java heap space") for every session on it.
_ARROW_FIELDS = frozenset({("spark.connect.LocalRelation", "data")})
# Field path shown in errors: this many names from each end of a deep path.
_PATH_ENDS = 4


@cache
def _layout(descriptor: Descriptor) -> dict[int, tuple[int, Descriptor | None, str]]:
    """Per field number of ``descriptor``: whether it is a message or a string, its type, its name."""
    layout: dict[int, tuple[int, Descriptor | None, str]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            layout[field.number] = (_MESSAGE, field.message_type, field.name)
        elif field.type == FieldDescriptor.TYPE_STRING:
            layout[field.number] = (_STRING, None, field.name)
        elif (descriptor.full_name, field.name) in _ARROW_FIELDS:
            layout[field.number] = (_ARROW, None, field.name)
    return layout


def arrow_stream_problem(data: bytes | memoryview) -> str:
    """Why ``data`` is not an Arrow IPC stream whose every message fits in it ("" if it is).
    Messages are framed, not decoded: nothing is copied or decompressed."""
    if not len(data):
        return ""
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
        while True:
            reader.read_next_message()
    except StopIteration:
        return ""
    except (pa.ArrowException, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    try:
        return read_varint(buf, pos, end)
    except MalformedMessage as exc:
        raise ValueError(f"a {exc.message}") from None


def _where(root: str, path: list[str]) -> str:
    if len(path) > 2 * _PATH_ENDS:
        skipped = len(path) - 2 * _PATH_ENDS
        path = path[:_PATH_ENDS] + [f"...({skipped} more levels)..."] + path[-_PATH_ENDS:]
    return ".".join([root, *path])


def validate_message(message: bytes | memoryview, descriptor: Descriptor, max_nesting: int = MAX_NESTING) -> None:
    """Raise MalformedMessage (or MessageTooDeep) if Spark's parser would refuse ``message``.

    ``descriptor`` is the message type the bytes claim to be (e.g. ``ExecutePlanRequest``).
    """
    buf = message if isinstance(message, bytes) else memoryview(message).cast("B")
    root = descriptor.name
    layout = _layout(descriptor)
    pos, end = 0, len(buf)
    # Enclosing messages: (their end, their layout); ``path`` holds the field names down to here.
    stack: list[tuple[int, dict[int, tuple[int, Descriptor | None, str]]]] = []
    path: list[str] = []
    try:
        while True:
            if pos >= end:
                if not stack:
                    return
                end, layout = stack.pop()
                path.pop()
                continue
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(buf, pos, end)
            number, wire_type = key >> 3, key & 7
            if number == 0 or number > _MAX_FIELD_NUMBER:
                raise ValueError(f"an invalid field number {number}")
            if wire_type == 2:
                if pos < end and buf[pos] < 0x80:
                    length = buf[pos]
                    pos += 1
                else:
                    length, pos = _varint(buf, pos, end)
                field_end = pos + length
                if field_end > end:
                    raise ValueError(f"field {number} running {field_end - end} bytes past the end of its message")
                known = layout.get(number)
                if known is None:
                    pos = field_end
                elif known[0] == _MESSAGE:
                    if len(stack) >= max_nesting:
                        path.append(known[2])
                        raise MessageTooDeep(
                            f"{root} nests messages more than {max_nesting} levels deep (at "
                            f"{_where(root, path)}); Spark Connect accepts at most {max_nesting} "
                            "(spark.connect.grpc.marshallerRecursionLimit). Build the query in steps: "
                            "checkpoint() or write intermediate results, or combine chained calls "
                            "(one select or withColumns instead of many).",
                            max_nesting,
                        )
                    stack.append((end, layout))
                    path.append(known[2])
                    end = field_end
                    layout = _layout(known[1])  # type: ignore[arg-type]
                elif known[0] == _ARROW:
                    problem = arrow_stream_problem(buf[pos:field_end])
                    if problem:
                        path.append(known[2])
                        raise MalformedMessage(
                            f"{_where(root, path)} is not an Arrow IPC stream Spark can read ({problem}); "
                            "the request was not forwarded"
                        )
                    pos = field_end
                else:
                    try:
                        str(buf[pos:field_end], "utf-8")
                    except UnicodeDecodeError as exc:
                        path.append(known[2])
                        raise MalformedMessage(
                            f"{_where(root, path)} is not valid UTF-8 (byte {exc.start} of the string); "
                            "Spark Connect strings must be UTF-8"
                        ) from None
                    pos = field_end
            elif wire_type == 0:
                _, pos = _varint(buf, pos, end)
            elif wire_type == 1 or wire_type == 5:
                pos += 8 if wire_type == 1 else 4
                if pos > end:
                    raise ValueError(f"a truncated fixed-size field {number}")
            else:
                raise ValueError(f"field {number} with wire type {wire_type}, which Spark Connect never uses")
    except ValueError as exc:
        raise MalformedMessage(
            f"{root} is not a valid protobuf message: {exc} in {_where(root, path)} (at byte {pos}); "
            "the request was not forwarded"
        ) from None
