"""gateway/local_data.py: cache/ uploads Spark could not read as Arrow, and the requests that name them."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import InvalidArgument
from sparkfleet.gateway.artifacts import StoredUpload, artifact_key
from sparkfleet.gateway.local_data import CachedDataCheck, refuse_unreadable_cached_data, unreadable_cached_data
from sparkfleet.gateway.sessions import SessionRegistry
from sparkfleet.plan.state import Effect
from sparkfleet.store import Database

SID = "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
# An Arrow stream whose first message claims a gigabyte of metadata: what ran a driver out of heap.
CLAIMS_A_GIGABYTE = b"\xff\xff\xff\xff" + (1 << 30).to_bytes(4, "little") + b"\x00" * 24
SCHEMA_TEXT = b'{"type":"struct","fields":[{"name":"id","type":"long","nullable":true,"metadata":{}}]}'


def _arrow_stream(rows: int) -> bytes:
    table = pa.table({"id": pa.array(range(rows), pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, rows // 3))
    return sink.getvalue().to_pybytes()


def _name(data: bytes) -> str:
    return "cache/" + hashlib.sha256(data).hexdigest()


def _batch(*blobs: bytes) -> bytes:
    request = base_pb2.AddArtifactsRequest(session_id=SID)
    for blob in blobs:
        request.batch.artifacts.add(name=_name(blob), data=base_pb2.AddArtifactsRequest.ArtifactChunk(data=blob))
    return request.SerializeToString()


def _chunked(blob: bytes, name: str, pieces: int) -> list[bytes]:
    size = -(-len(blob) // pieces)
    parts = [blob[i:i + size] for i in range(0, len(blob), size)]
    first = base_pb2.AddArtifactsRequest(session_id=SID)
    first.begin_chunk.name = name
    first.begin_chunk.total_bytes = len(blob)
    first.begin_chunk.num_chunks = len(parts)
    first.begin_chunk.initial_chunk.data = parts[0]
    rest = [base_pb2.AddArtifactsRequest(session_id=SID, chunk=base_pb2.AddArtifactsRequest.ArtifactChunk(data=p))
            for p in parts[1:]]
    return [first.SerializeToString(), *(r.SerializeToString() for r in rest)]


def _judge(requests: list[bytes]) -> dict[str, str]:
    check = CachedDataCheck()
    try:
        for request in requests:
            check.feed(request)
        return check.finish()
    finally:
        check.close()


def test_data_and_schema_of_a_large_create_dataframe_pass_and_garbage_does_not():
    data = _arrow_stream(1000)
    verdicts = _judge([_batch(SCHEMA_TEXT, data, CLAIMS_A_GIGABYTE)])
    # The schema text is not Arrow either: it is listed, and only a plan reading it as data is refused.
    assert set(verdicts) == {_name(SCHEMA_TEXT), _name(CLAIMS_A_GIGABYTE)}
    assert _name(data) not in verdicts
    assert all(verdicts.values())


def test_a_chunked_artifact_is_judged_whole_across_its_chunks():
    data = _arrow_stream(50_000)
    assert _judge(_chunked(data, _name(data), 7)) == {}
    truncated = data[: len(data) // 2]
    assert _name(data) in _judge(_chunked(truncated, _name(data), 3))  # ends inside a message
    garbage = CLAIMS_A_GIGABYTE * 1000
    assert set(_judge(_chunked(garbage, _name(garbage), 4) + [_batch(data)])) == {_name(garbage)}


def test_files_that_are_not_cached_data_are_not_judged():
    request = base_pb2.AddArtifactsRequest(session_id=SID)
    request.batch.artifacts.add(name="files/notes.txt", data=base_pb2.AddArtifactsRequest.ArtifactChunk(data=b"\xff" * 9))
    assert _judge([request.SerializeToString(), *_chunked(CLAIMS_A_GIGABYTE, "pyfiles/x.zip", 2)]) == {}


def test_the_verdict_is_kept_with_the_upload_and_read_back():
    stored = StoredUpload("0" * 32 + ".bin", ("cache/ab",), 2, 100, {"cache/ab": "Invalid IPC message"})
    assert StoredUpload.decode(stored.encode()) == stored
    plain = StoredUpload("1" * 32 + ".bin", ("files/x",), 1, 10)
    assert b"unreadable" not in plain.encode() and StoredUpload.decode(plain.encode()) == plain


def _reading(data_hashes: list[str], schema_hash: str = "") -> tuple[bytes, bytes]:
    """An ExecutePlan and an AnalyzePlan (schema) of a DataFrame over cached local data."""
    execute = base_pb2.ExecutePlanRequest(session_id=SID)
    relation = execute.plan.root.project.input.chunked_cached_local_relation  # nested, as plans are
    relation.dataHashes.extend(data_hashes)
    if schema_hash:
        relation.schemaHash = schema_hash
    analyze = base_pb2.AnalyzePlanRequest(session_id=SID)
    analyze.schema.plan.CopyFrom(execute.plan)
    return execute.SerializeToString(), analyze.SerializeToString()


def test_a_request_reading_unreadable_cached_data_is_refused_also_after_a_restart(tmp_path):
    clock = VirtualClock()
    db = Database(tmp_path / "store.db").open()
    try:
        session = SessionRegistry(db, clock).resolve("alice", SID, "", "")
        assert session.journal is not None
        good, bad = _arrow_stream(10), CLAIMS_A_GIGABYTE
        unreadable = _judge([_batch(SCHEMA_TEXT, good, bad)])
        stored = StoredUpload("2" * 32 + ".bin", (_name(SCHEMA_TEXT), _name(good), _name(bad)), 1, 99, unreadable)
        session.journal.record(Effect(artifact_key(stored.names)), "AddArtifacts", stored.encode())
        digest = {blob: _name(blob)[len("cache/"):] for blob in (SCHEMA_TEXT, good, bad)}

        # Good data with its text schema named as the schema: both requests pass.
        for rpc, request in zip(("ExecutePlan", "AnalyzePlan"), _reading([digest[good]], digest[SCHEMA_TEXT])):
            refuse_unreadable_cached_data(session, rpc, request)
        # Garbage, or the schema text, read as data: refused, naming the hash.
        for data in (bad, SCHEMA_TEXT):
            for rpc, request in zip(("ExecutePlan", "AnalyzePlan"), _reading([digest[good], digest[data]])):
                with pytest.raises(InvalidArgument, match="not an Arrow IPC stream Spark can read") as refused:
                    refuse_unreadable_cached_data(session, rpc, request)
                assert digest[data] in refused.value.message

        restarted = SessionRegistry(db, clock).resolve("alice", SID, "", session.server_side_session_id)
        assert restarted is not session and restarted.unreadable_cached_data is None
        assert unreadable_cached_data(restarted) == unreadable
        with pytest.raises(InvalidArgument):
            refuse_unreadable_cached_data(restarted, "ExecutePlan", _reading([digest[bad]])[0])
    finally:
        db.close()
