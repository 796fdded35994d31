"""Hostile input refused before it is served: malformed or too-deep requests, bad ids, unsafe artifact names.

Every request is checked whole (``plan/validate.py``) before the gateway acts on it, so bytes Spark's
parser would refuse never create a session, an operation record or a journal entry here, and the
client hears what is wrong instead of Spark's bare ``Application error processing RPC``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import grpc
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import InvalidArgument, InvalidHandle
from sparkfleet.plan.validate import validate_message

if TYPE_CHECKING:
    from sparkfleet.gateway.routing import Routed, Router, RpcShape

REQUEST_TYPES = {
    "ExecutePlan": base_pb2.ExecutePlanRequest,
    "ReattachExecute": base_pb2.ReattachExecuteRequest,
    "AnalyzePlan": base_pb2.AnalyzePlanRequest,
    "Config": base_pb2.ConfigRequest,
    "AddArtifacts": base_pb2.AddArtifactsRequest,
    "ArtifactStatus": base_pb2.ArtifactStatusesRequest,
    "Interrupt": base_pb2.InterruptRequest,
    "ReleaseExecute": base_pb2.ReleaseExecuteRequest,
    "ReleaseSession": base_pb2.ReleaseSessionRequest,
    "FetchErrorDetails": base_pb2.FetchErrorDetailsRequest,
    "CloneSession": base_pb2.CloneSessionRequest,
    "GetStatus": base_pb2.GetStatusRequest,
}
# Requests up to this size are checked on the event loop (~1 us per message inside them); larger
# ones in a thread, so one big plan does not hold up other sessions' requests.
_INLINE_BYTES = 256 * 1024
# How much of a client's value an error message repeats.
_SHOWN_CHARS = 64
_UUID_FORMAT = "00112233-4455-6677-8899-aabbccddeeff"

# Where Spark puts an artifact, by the first part of its name (ArtifactManager): jars, Python files,
# archives, files, cached local data, Scala REPL classes; forward_to_fs/ is copyFromLocalToFs.
ARTIFACT_PREFIXES = ("jars/", "pyfiles/", "archives/", "files/", "cache/", "classes/", "forward_to_fs/")
MAX_ARTIFACT_NAME_BYTES = 4096


def shown(value: str) -> str:
    """A client's value as an error message repeats it: quoted, at most ``_SHOWN_CHARS`` characters."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def check_request(rpc: str, request: bytes) -> None:
    """MalformedMessage or MessageTooDeep if Spark's parser would refuse ``request``."""
    validate_message(request, REQUEST_TYPES[rpc].DESCRIPTOR)


async def resolve_checked(
    router: "Router",
    shape: "RpcShape",
    request: bytes,
    context: grpc.aio.ServicerContext,
    extra: frozenset[int] = frozenset(),
) -> "Routed":
    """``router.resolve`` of a request that was checked whole first; it returns once the request's
    tenant has a request token for it."""
    if len(request) <= _INLINE_BYTES:
        check_request(shape.name, request)
    else:
        if router.auth.enabled:  # a stranger's big request is not read at all
            router.auth.authenticate(context.invocation_metadata())
        await asyncio.to_thread(check_request, shape.name, request)
    routed = router.resolve(shape, request, context, extra)
    if routed.rate_delay_s > 0:
        await asyncio.sleep(routed.rate_delay_s)
    return routed


def check_operation_id(operation_id: str) -> None:
    """Spark's INVALID_HANDLE.FORMAT for an operation id that is not a UUID (Spark requires one)."""
    try:
        valid = str(uuid.UUID(operation_id)) == operation_id.lower()
    except ValueError:
        valid = False
    if not valid:
        raise InvalidHandle(
            f"The handle {shown(operation_id)} is invalid. Handle must be an UUID string of the format "
            f"'{_UUID_FORMAT}'.",
            "INVALID_HANDLE.FORMAT",
        )


def check_artifact_name(name: str) -> None:
    """InvalidArgument unless ``name`` is a relative path Spark stores under one of its artifact
    directories: no absolute path, no ``..``/``.``/empty part, no backslash or control character."""
    problem = _artifact_name_problem(name)
    if problem:
        raise InvalidArgument(
            f"artifact {shown(name)} was refused: {problem}. Artifact names are relative paths under "
            f"{', '.join(ARTIFACT_PREFIXES)} (what addArtifacts and the client's own uploads send)"
        )


def _artifact_name_problem(name: str) -> str:
    if not name:
        return "the name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ARTIFACT_NAME_BYTES:
        return f"the name is longer than {MAX_ARTIFACT_NAME_BYTES} bytes"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "the name contains a control character (NUL, newline...)"
    if "\\" in name:
        return "the name contains a backslash, which Spark reads as a directory separator"
    if name.startswith("/"):
        return "the name is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "the name has an empty, '.' or '..' part"
    if not name.startswith(ARTIFACT_PREFIXES):
        return "the name is not under a directory Spark keeps artifacts in"
    return ""
