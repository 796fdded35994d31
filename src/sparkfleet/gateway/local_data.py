"""Cached local data: which ``cache/<hash>`` uploads Spark could not read, and the plans that read them.

``createDataFrame`` of data larger than ``spark.sql.session.localRelationCacheThreshold`` goes up
as AddArtifacts ``cache/<sha256>`` artifacts, which a plan names by hash (``CachedLocalRelation``,
``ChunkedCachedLocalRelation``). Spark reads a data artifact as an Arrow IPC stream when a plan
uses it, allocating each message at the length the stream claims: garbage claiming a gigabyte runs
the driver out of heap, for every session on that cluster (the same hole ``plan/validate.py``
closes for data carried in the plan). An upload cannot be judged alone, because the schema of the
data goes up beside it as a ``cache/`` artifact of plain text. So each cache artifact's verdict is
kept with its upload (``StoredUpload.unreadable``, in the session's journal, across restarts), and
a request that reads an unreadable one as data (``CachedLocalRelation.hash``,
``ChunkedCachedLocalRelation.dataHashes``; not ``schemaHash``) is refused before it reaches a cluster.
"""

from __future__ import annotations

import mmap
import tempfile
from typing import IO

from google.protobuf.descriptor import Descriptor
from pyspark.sql.connect.proto import base_pb2, relations_pb2

from sparkfleet.errors import InvalidArgument, PlanTooLarge
from sparkfleet.gateway.artifacts import stored_uploads
from sparkfleet.gateway.request_checks import shown
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.tree import number_of, walk
from sparkfleet.plan.validate import arrow_stream_problem
from sparkfleet.plan.wire import as_message, as_str, read_fields, read_repeated

CACHE_PREFIX = "cache/"
_REQUESTS = {"ExecutePlan": base_pb2.ExecutePlanRequest.DESCRIPTOR, "AnalyzePlan": base_pb2.AnalyzePlanRequest.DESCRIPTOR}
_CACHED_LOCAL = relations_pb2.CachedLocalRelation.DESCRIPTOR.full_name
_CACHED_HASH = number_of(relations_pb2.CachedLocalRelation.DESCRIPTOR, "hash")
_CHUNKED_LOCAL = relations_pb2.ChunkedCachedLocalRelation.DESCRIPTOR.full_name
_CHUNK_DATA_HASHES = number_of(relations_pb2.ChunkedCachedLocalRelation.DESCRIPTOR, "dataHashes")
# AddArtifactsRequest: batch{artifacts{name, data{data}}}, begin_chunk{name, initial_chunk{data}}, chunk{data}
_BATCH, _BEGIN_CHUNK, _CHUNK = 3, 4, 5
_BATCH_ARTIFACTS = 1
_NAME, _SINGLE_DATA, _INITIAL_CHUNK = 1, 2, 4
_CHUNK_DATA = 1


class CachedDataCheck:
    """Judges the ``cache/`` artifacts of one AddArtifacts stream as its messages pass.

    A single-chunk artifact is judged in its message; a chunked one is spooled to an unnamed
    temporary file (gone with the process) and judged when it ends. ``close`` when done."""

    def __init__(self) -> None:
        self.unreadable: dict[str, str] = {}  # artifact name -> why Spark could not read it
        self._spool: IO[bytes] | None = None
        self._spooled_name = ""

    def feed(self, request: bytes | memoryview) -> None:
        fields = read_fields(request, frozenset({_BATCH, _BEGIN_CHUNK, _CHUNK}))
        if _CHUNK in fields:
            if self._spool is not None:
                self._spool.write(_chunk_data(as_message(fields[_CHUNK], "chunk")))
            return
        self._judge_spooled()
        if _BEGIN_CHUNK in fields:
            begin = read_fields(as_message(fields[_BEGIN_CHUNK], "begin_chunk"), frozenset({_NAME, _INITIAL_CHUNK}))
            name = as_str(begin.get(_NAME))
            if name.startswith(CACHE_PREFIX):
                self._spool, self._spooled_name = tempfile.TemporaryFile(prefix="sparkfleet-cache-"), name
                if _INITIAL_CHUNK in begin:
                    self._spool.write(_chunk_data(as_message(begin[_INITIAL_CHUNK], "initial_chunk")))
        if _BATCH in fields:
            for artifact in read_repeated(as_message(fields[_BATCH], "batch"), _BATCH_ARTIFACTS):
                body = read_fields(as_message(artifact, "artifacts"), frozenset({_NAME, _SINGLE_DATA}))
                name = as_str(body.get(_NAME))
                if name.startswith(CACHE_PREFIX):
                    data = _chunk_data(as_message(body[_SINGLE_DATA], "data")) if _SINGLE_DATA in body else b""
                    self._record(name, arrow_stream_problem(data))

    def finish(self) -> dict[str, str]:
        """The verdicts of the whole stream (call once it has ended)."""
        self._judge_spooled()
        return dict(self.unreadable)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _judge_spooled(self) -> None:
        spool, name = self._spool, self._spooled_name
        if spool is None:
            return
        self._spool = None
        with spool:
            spool.flush()
            if spool.tell() == 0:
                self._record(name, arrow_stream_problem(b""))
                return
            with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                self._record(name, arrow_stream_problem(memoryview(mapped)))

    def _record(self, name: str, problem: str) -> None:
        if problem:
            self.unreadable[name] = problem
        else:
            self.unreadable.pop(name, None)  # re-sent whole within the stream


def _chunk_data(chunk: bytes | memoryview) -> bytes | memoryview:
    """The data of an ArtifactChunk (its crc is the cluster's to check)."""
    data = read_fields(chunk, frozenset({_CHUNK_DATA})).get(_CHUNK_DATA)
    return b"" if data is None else as_message(data, "data")


def unreadable_cached_data(session: VirtualSession) -> dict[str, str]:
    """The session's ``cache/`` artifacts Spark could not read, from its journal (remembered
    until the session's next upload is recorded)."""
    if session.unreadable_cached_data is None:
        found: dict[str, str] = {}
        if session.journal is not None:
            for upload in stored_uploads(session.journal.entries):
                found.update(upload.unreadable)
        session.unreadable_cached_data = found
    return session.unreadable_cached_data


def refuse_unreadable_cached_data(session: VirtualSession, rpc: str, request: bytes | memoryview) -> None:
    """InvalidArgument if the ExecutePlan or AnalyzePlan ``request`` reads, as data, cached local
    data of the session that Spark could not read. A schema artifact named as the schema is fine."""
    unreadable = unreadable_cached_data(session)
    if not unreadable:
        return
    raw = bytes(request)
    named = {name: why for name, why in unreadable.items() if name[len(CACHE_PREFIX):].encode() in raw}
    if not named:
        return
    try:
        read_as_data = {CACHE_PREFIX + digest for digest in _data_hashes(raw, _REQUESTS[rpc])}
    except PlanTooLarge:
        read_as_data = set(named)  # too big to look through: any mention counts
    refused = sorted(read_as_data & named.keys())
    if refused:
        name = refused[0]
        raise InvalidArgument(
            f"the request reads cached local data (hash {shown(name[len(CACHE_PREFIX):])}) that this session "
            f"uploaded, which is not an Arrow IPC stream Spark can read ({named[name]}); it was not forwarded. "
            "Create the DataFrame again from its source data"
        )


def _data_hashes(request: bytes, descriptor: Descriptor) -> set[str]:
    """The hashes of cached local data that ``request`` reads as Arrow, wherever its plans nest."""
    found: set[str] = set()
    for node in walk(request, descriptor):
        name = node.descriptor.full_name
        if name == _CACHED_LOCAL:
            found.add(as_str(read_fields(node.data, frozenset({_CACHED_HASH})).get(_CACHED_HASH)))
        elif name == _CHUNKED_LOCAL:
            found.update(as_str(digest) for digest in read_repeated(node.data, _CHUNK_DATA_HASHES))
    return found
