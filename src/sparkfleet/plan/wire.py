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


def read_varint(buf: memoryview | bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos`` (ending before ``end``); return (value, next position)."""
    result = 0
    shift = 0
    n = len(buf) if end is None else end
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


def _scan(buf: memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(number, wire_type, value, start, end)`` for each top-level field, in wire order.

    ``value`` is the integer of a varint or fixed field and the payload's offset for a
    length-delimited one. This is the per-message hot path: it builds no :class:`Field` (callers
    build one only for the fields they want) and reads one-byte varints, which almost every tag
    and short length is, without calling :func:`read_varint`. Errors are those of
    :func:`read_varint` and the checks below, whichever path a byte takes.

    Groups (deprecated, unused by Spark Connect) are rejected rather than skipped: a message that
    uses them is not one of ours.
    """
    pos = 0
    n = len(buf)
    while pos < n:
        start = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos)
        number = key >> 3
        wire_type = key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == LENGTH_DELIMITED:
            if pos < n and buf[pos] < 0x80:
                length = buf[pos]
                pos += 1
            else:
                length, pos = read_varint(buf, pos)
            end = pos + length
            if end > n:
                raise MalformedMessage("length-delimited field runs past the end of the message")
            yield number, wire_type, pos, start, end
            pos = end
        elif wire_type == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire_type, value, start, pos
        elif wire_type == FIXED64:
            if pos + 8 > n:
                raise MalformedMessage("truncated fixed64")
            yield number, wire_type, int.from_bytes(buf[pos : pos + 8], "little"), start, pos + 8
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > n:
                raise MalformedMessage("truncated fixed32")
            yield number, wire_type, int.from_bytes(buf[pos : pos + 4], "little"), start, pos + 4
            pos += 4
        else:
            raise MalformedMessage(f"unsupported wire type {wire_type}")


def _field(buf: memoryview, number: int, wire_type: int, value: int, start: int, end: int) -> Field:
    if wire_type == LENGTH_DELIMITED:
        return Field(number, wire_type, buf[value:end], start, end)
    return Field(number, wire_type, value, start, end)


def iter_fields(message: bytes | memoryview) -> Iterator[Field]:
    """Yield the top-level fields of an encoded message in wire order."""
    buf = memoryview(message)
    for scanned in _scan(buf):
        yield _field(buf, *scanned)


def read_fields(message: bytes | memoryview, wanted: frozenset[int]) -> dict[int, Field]:
    """Return the last occurrence of each wanted top-level field (protobuf's last-one-wins rule)."""
    buf = memoryview(message)
    found: dict[int, Field] = {}
    for scanned in _scan(buf):
        if scanned[0] in wanted:
            found[scanned[0]] = _field(buf, *scanned)
    return found


def read_repeated(message: bytes | memoryview, number: int) -> list[Field]:
    """Return every occurrence of a (repeated) top-level field."""
    buf = memoryview(message)
    return [_field(buf, *scanned) for scanned in _scan(buf) if scanned[0] == number]


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


def as_int(field: Field | None) -> int:
    """A varint field (enum, bool, integer); absent fields read as 0, as in protobuf."""
    if field is None:
        return 0
    if field.wire_type != VARINT or not isinstance(field.value, int):
        raise MalformedMessage(f"field {field.number} has wire type {field.wire_type}, not a varint")
    return field.value


def as_message(field: Field, name: str) -> memoryview:
    """The bytes of an embedded message field, or MalformedMessage if it is not length-delimited."""
    if not isinstance(field.value, memoryview):
        raise MalformedMessage(f"{name} (field {field.number}) is not a message")
    return field.value


def encode_string_field(number: int, value: str) -> bytes:
    """Encode one length-delimited string field (tag, length, bytes)."""
    data = value.encode("utf-8")
    return encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(len(data)) + data


def replace_bytes_field(message: bytes, number: int, value: bytes) -> bytes:
    """Return ``message`` with length-delimited field ``number`` (bytes or an embedded message)
    set to ``value``; it moves to the end, which protobuf parsers accept."""
    return remove_field(message, number) + encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(len(value)) + value


def remove_field(message: bytes, number: int) -> bytes:
    """Return ``message`` without any occurrence of top-level field ``number``."""
    view = memoryview(message)
    spans = [(start, end) for found, _, _, start, end in _scan(view) if found == number]
    if not spans:
        return message
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
    view = memoryview(message)
    found: dict[int, Field] = {}
    spans: list[tuple[int, int]] = []
    for scanned in _scan(view):
        if scanned[0] == number:
            spans.append((scanned[3], scanned[4]))
        if scanned[0] in wanted:
            found[scanned[0]] = _field(view, *scanned)
    new = encode_string_field(number, value)
    if not spans:
        return message + new, found
    pieces: list[bytes | memoryview] = []
    pos = 0
    for start, end in spans:
        pieces.append(view[pos:start])
        pos = end
    pieces.append(new)
    pieces.append(view[pos:])
    return b"".join(pieces), found
