"""Depth-safe protobuf wire reading: top-level fields only, no schema, no recursion.

Spark Connect plans may nest up to 1024 levels while Python protobuf (upb) refuses more than 100,
and the gateway must not pay for a full parse on the hot path. This module walks the *top level*
of an encoded message, reads the few scalar fields the gateway needs and rewrites single fields by
splicing bytes. Nested messages are returned as memoryview slices that callers may walk the same
way, one level at a time, on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from sparkfleet.errors import MalformedMessage

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5


@dataclass(frozen=True, slots=True)
class Field:
    """One top-level field occurrence: its number, wire type, value and byte span in the message."""

    number: int
    wire_type: int
    value: int | memoryview  # int for varint/fixed, memoryview for length-delimited
    start: int  # offset of the tag
    end: int  # offset just past the value


def read_varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, next position)."""
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise MalformedMessage("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedMessage("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer as a base-128 varint."""
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def iter_fields(message: bytes | memoryview) -> Iterator[Field]:
    """Yield the top-level fields of an encoded message in wire order.

    Groups (deprecated, unused by Spark Connect) are rejected rather than skipped: a message that
    uses them is not one of ours.
    """
    buf = memoryview(message)
    pos = 0
    n = len(buf)
    while pos < n:
        start = pos
        key, pos = read_varint(buf, pos)
        number = key >> 3
        wire_type = key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
            yield Field(number, wire_type, value, start, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            end = pos + length
            if end > n:
                raise MalformedMessage("length-delimited field runs past the end of the message")
            yield Field(number, wire_type, buf[pos:end], start, end)
            pos = end
        elif wire_type == FIXED64:
            if pos + 8 > n:
                raise MalformedMessage("truncated fixed64")
            yield Field(number, wire_type, int.from_bytes(buf[pos : pos + 8], "little"), start, pos + 8)
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > n:
                raise MalformedMessage("truncated fixed32")
            yield Field(number, wire_type, int.from_bytes(buf[pos : pos + 4], "little"), start, pos + 4)
            pos += 4
        else:
            raise MalformedMessage(f"unsupported wire type {wire_type}")


def read_fields(message: bytes | memoryview, wanted: frozenset[int]) -> dict[int, Field]:
    """Return the last occurrence of each wanted top-level field (protobuf's last-one-wins rule)."""
    found: dict[int, Field] = {}
    for field in iter_fields(message):
        if field.number in wanted:
            found[field.number] = field
    return found


def read_repeated(message: bytes | memoryview, number: int) -> list[Field]:
    """Return every occurrence of a (repeated) top-level field."""
    return [f for f in iter_fields(message) if f.number == number]


def as_str(field: Field | None) -> str:
    """Decode a string field; absent fields read as the empty string, as in protobuf."""
    if field is None:
        return ""
    if not isinstance(field.value, memoryview):
        raise MalformedMessage(f"field {field.number} is not a string")
    try:
        return bytes(field.value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"field {field.number} is not valid UTF-8") from exc


def as_message(field: Field, name: str) -> memoryview:
    """The bytes of an embedded message field, or MalformedMessage if it is not length-delimited."""
    if not isinstance(field.value, memoryview):
        raise MalformedMessage(f"{name} (field {field.number}) is not a message")
    return field.value


def encode_string_field(number: int, value: str) -> bytes:
    """Encode one length-delimited string field (tag, length, bytes)."""
    data = value.encode("utf-8")
    return encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(len(data)) + data


def remove_field(message: bytes, number: int) -> bytes:
    """Return ``message`` without any occurrence of top-level field ``number``."""
    spans = [(f.start, f.end) for f in iter_fields(message) if f.number == number]
    if not spans:
        return message
    view = memoryview(message)
    pieces: list[bytes | memoryview] = []
    pos = 0
    for start, end in spans:
        pieces.append(view[pos:start])
        pos = end
    pieces.append(view[pos:])
    return b"".join(pieces)


def replace_string_field(message: bytes, number: int, value: str | None) -> bytes:
    """Return ``message`` with field ``number`` set to ``value`` (``None`` removes it)."""
    if value is None:
        return remove_field(message, number)
    return replace_and_read(message, number, value, frozenset())[0]


def replace_and_read(
    message: bytes, number: int, value: str, wanted: frozenset[int]
) -> tuple[bytes, dict[int, Field]]:
    """One pass over ``message``: replace string field ``number`` and read the ``wanted`` fields.

    The returned fields (including the *original* value of ``number`` when wanted) refer to the
    input message. This is the per-response hot path of the gateway.
    """
    found: dict[int, Field] = {}
    spans: list[tuple[int, int]] = []
    for field in iter_fields(message):
        if field.number == number:
            spans.append((field.start, field.end))
        if field.number in wanted:
            found[field.number] = field
    new = encode_string_field(number, value)
    if not spans:
        return message + new, found
    view = memoryview(message)
    pieces: list[bytes | memoryview] = []
    pos = 0
    for start, end in spans:
        pieces.append(view[pos:start])
        pos = end
    pieces.append(new)
    pieces.append(view[pos:])
    return b"".join(pieces), found
