"""Hostile input through the stock client and raw gRPC: each case gets its own clear error and the gateway serves on.

Deep plans, truncated and corrupt frames, invalid UTF-8 in every kind of identifier, unsafe
artifact names, broken upload streams, non-UUID operation ids and floods of made-up ids. The
cases the fuzzer (test_fuzz_gateway.py) finds at random are pinned down here one by one.
"""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from pyspark.sql.connect.proto import base_pb2
from pyspark.sql.functions import col, lit

from sparkfleet.testing.fuzz import SERVICE
from sparkfleet.testing.fuzz_inputs import RPC_KINDS, deep_analyze_plan, deep_execute_plan, seed_requests
from sparkfleet.testing.process import spark_session

USER = "hostile"


@pytest.fixture(scope="module")
def channel(fleet):
    big = 200 * 1024 * 1024
    with grpc.insecure_channel(f"localhost:{fleet.port}", options=[
        ("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big),
    ]) as ch:
        yield ch


def call(channel, rpc: str, *messages: bytes, timeout: float = 120):  # type: ignore[no-untyped-def]
    kind = RPC_KINDS[rpc]
    stub = getattr(channel, kind)(SERVICE + rpc)
    if kind == "unary_stream":
        return list(stub(messages[0], timeout=timeout))
    if kind == "stream_unary":
        return stub(iter(messages), timeout=timeout)
    return stub(messages[0], timeout=timeout)


def refused(channel, rpc: str, *messages: bytes) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(channel, rpc, *messages)
    return info.value


def still_serves(fleet) -> None:  # type: ignore[no-untyped-def]
    assert fleet.api("/api/health")["status"] == "ok"
    with spark_session(fleet.url) as spark:
        assert spark.range(5).count() == 5


def seeds() -> dict[str, list[bytes]]:
    return seed_requests(str(uuid.uuid4()), USER)


# ---- deep plans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [511, 5_000, 100_000])
def test_plans_deeper_than_spark_accepts_are_refused_naming_the_limit(fleet, channel, levels):
    session_id = str(uuid.uuid4())
    for rpc, request in (("ExecutePlan", deep_execute_plan(session_id, USER, levels)),
                         ("AnalyzePlan", deep_analyze_plan(session_id, USER, levels))):
        error = refused(channel, rpc, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "nests messages more than 1024 levels deep" in error.details()
        assert "spark.connect.grpc.marshallerRecursionLimit" in error.details()
    assert fleet.api(f"/api/queries?session_id={session_id}") == []  # nothing was recorded or run
    still_serves(fleet)


def test_plans_as_deep_as_spark_accepts_run(channel):
    # 510 Projects: the range sits at message level 1023, the deepest Spark's parser takes. With
    # the JVM's default thread stacks Spark's analysis overflowed here and answered a bare UNKNOWN.
    session_id = str(uuid.uuid4())
    responses = call(channel, "ExecutePlan", deep_execute_plan(session_id, USER, 510))
    assert any(base_pb2.ExecutePlanResponse.FromString(r).HasField("arrow_batch") for r in responses)
    schema = base_pb2.AnalyzePlanResponse.FromString(call(channel, "AnalyzePlan", deep_analyze_plan(session_id, USER, 510)))
    assert schema.schema.schema.HasField("struct")  # an empty projection's (empty) schema


def test_a_stock_client_plan_thousands_deep_gets_the_limit(fleet):
    """5,000 chained selects from the stock client (which needs a deep Python stack to build them)."""
    outcome: dict[str, object] = {}

    def build_and_run() -> None:
        with spark_session(fleet.url) as spark:
            df = spark.range(3)
            for _ in range(5_000):
                df = df.select((col("id") + lit(1)).alias("id"))
            try:
                outcome["count"] = df.count()
            except Exception as exc:  # noqa: BLE001 - the error is what the test looks at
                outcome["error"] = str(exc)
            outcome["after"] = spark.range(5).count()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200_000)
    threading.stack_size(512 * 1024 * 1024)
    try:
        worker = threading.Thread(target=build_and_run)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(0)
        sys.setrecursionlimit(limit)
    assert "count" not in outcome
    assert "MessageTooDeep" in str(outcome["error"]) and "more than 1024 levels" in str(outcome["error"])
    assert outcome["after"] == 5  # the same session goes on


# ---- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "complaint"),
    [
        (lambda r: r[:-3], "runs 3 bytes past the end"),  # cut inside the plan
        (lambda r: r + b"\x1a\xff\xff\xff\xff\xff\x1f", "past the end"),  # a length of 2^40
        (lambda r: r + b"\x30" + b"\xff" * 11, "longer than 10 bytes"),  # an 11-byte varint
        (lambda r: r + b"\x30\x80", "truncated varint"),
        (lambda r: r + b"\x03", "invalid field number 0"),
    ],
)
def test_truncated_and_corrupt_frames_are_malformed(fleet, channel, mangle, complaint):
    error = refused(channel, "ExecutePlan", mangle(seeds()["ExecutePlan"][0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExecutePlanRequest is not a valid protobuf message" in error.details()
    assert complaint in error.details() or "past the end" in error.details(), error.details()


def test_local_data_that_is_not_arrow_never_reaches_the_cluster(fleet, channel):
    # A one-bit flip the fuzzer found: `sql` (field 10) became `local_relation` (field 11), whose
    # data Spark read as Arrow claiming 1.1 GB of metadata, and ran its driver out of heap.
    request = base_pb2.ExecutePlanRequest.FromString(seeds()["ExecutePlan"][1])
    raw = request.SerializeToString()
    flipped = raw.replace(b"\x52\x11\x0a\x0fSELECT 1 AS one", b"\x5a\x11\x0a\x0fSELECT 1 AS one")
    assert flipped != raw
    error = refused(channel, "ExecutePlan", flipped)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "plan.root.local_relation.data is not an Arrow IPC stream Spark can read" in error.details()
    with spark_session(fleet.url) as spark:  # real local data still goes through
        assert spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string").count() == 2


def test_cached_local_data_that_is_not_arrow_is_never_read_by_the_cluster(fleet):
    """Large createDataFrame data goes up as cache/<hash> artifacts; a plan that reads garbage
    uploaded that way is refused, while the same session's real cached data still runs."""
    import numpy as np
    import pandas as pd
    from pyspark.sql.connect.dataframe import DataFrame
    from pyspark.sql.connect.plan import ChunkedCachedLocalRelation

    claims_a_gigabyte = b"\xff\xff\xff\xff" + (1 << 30).to_bytes(4, "little") + uuid.uuid4().bytes
    with spark_session(fleet.url) as spark:
        schema_hash, bogus_hash = spark._client.cache_artifacts([b"id long", claims_a_gigabyte])
        bogus = DataFrame(ChunkedCachedLocalRelation([bogus_hash], schema_hash), spark)
        for read in (bogus.collect, lambda: bogus.schema):  # ExecutePlan, AnalyzePlan
            with pytest.raises(Exception, match="not an Arrow IPC stream Spark can read") as info:
                read()
            assert bogus_hash in str(info.value)
        # The schema artifact is text: a plan that reads it as data is refused too.
        with pytest.raises(Exception, match="not an Arrow IPC stream"):
            DataFrame(ChunkedCachedLocalRelation([schema_hash], schema_hash), spark).count()

        spark.conf.set("spark.sql.session.localRelationCacheThreshold", str(1 << 20))
        rows = 200_000
        frame = pd.DataFrame({"id": np.arange(rows, dtype="int64"), "twice": np.arange(rows, dtype="int64") * 2})
        real = spark.createDataFrame(frame)
        plan = real._plan
        while not isinstance(plan, ChunkedCachedLocalRelation) and getattr(plan, "_child", None) is not None:
            plan = plan._child
        assert isinstance(plan, ChunkedCachedLocalRelation)  # went up as cache/<sha256>
        assert real.selectExpr("sum(twice)").first()[0] == rows * (rows - 1)
    still_serves(fleet)


# ---- invalid UTF-8 ------------------------------------------------------------------------------


def _marked(message, *path_and_value) -> bytes:  # type: ignore[no-untyped-def]
    """``message`` serialized with the 8-character marker replaced by 8 bytes of invalid UTF-8."""
    return message.SerializeToString().replace(b"MARKMARK", b"\xff\xfe\xfd\xfc\xc3(\xed\xa0")


def _utf8_cases() -> list[tuple[str, str, bytes]]:
    sid = str(uuid.uuid4())

    def user(message):  # type: ignore[no-untyped-def]
        message.session_id = sid
        message.user_context.user_id = USER
        return message

    execute = user(base_pb2.ExecutePlanRequest(operation_id="MARKMARK"))
    execute.plan.root.range.end = 3
    tagged = user(base_pb2.ExecutePlanRequest(tags=["ok", "MARKMARK"]))
    tagged.plan.root.range.end = 3
    who = base_pb2.ConfigRequest(session_id=sid)
    who.user_context.user_id = "MARKMARK"
    who.operation.get_all.SetInParent()
    conf = user(base_pb2.ConfigRequest())
    conf.operation.set.pairs.add(key="spark.MARKMARK", value="1")
    artifact = user(base_pb2.AddArtifactsRequest())
    artifact.batch.artifacts.add(name="files/MARKMARK").data.data = b"x"
    return [
        ("ExecutePlan", "ExecutePlanRequest.operation_id", _marked(execute)),
        ("ExecutePlan", "ExecutePlanRequest.tags", _marked(tagged)),
        ("Config", "ConfigRequest.user_context.user_id", _marked(who)),
        ("Config", "ConfigRequest.operation.set.pairs.key", _marked(conf)),
        ("FetchErrorDetails", "FetchErrorDetailsRequest.error_id",
         _marked(user(base_pb2.FetchErrorDetailsRequest(error_id="MARKMARK")))),
        ("ReattachExecute", "ReattachExecuteRequest.operation_id",
         _marked(user(base_pb2.ReattachExecuteRequest(operation_id="MARKMARK")))),
        ("Interrupt", "InterruptRequest.operation_tag", _marked(user(base_pb2.InterruptRequest(operation_tag="MARKMARK")))),
        ("AddArtifacts", "AddArtifactsRequest.batch.artifacts.name", _marked(artifact)),
        ("ArtifactStatus", "ArtifactStatusesRequest.names", _marked(user(base_pb2.ArtifactStatusesRequest(names=["MARKMARK"])))),
    ]


@pytest.mark.parametrize(("rpc", "field", "request_bytes"), _utf8_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_utf8_in_identifiers_is_refused_naming_the_field(fleet, channel, rpc, field, request_bytes):
    error = refused(channel, rpc, request_bytes)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} is not valid UTF-8" in error.details()
    still_serves(fleet)


# ---- artifacts ----------------------------------------------------------------------------------


def _artifact(session_id: str, name: str) -> bytes:
    request = base_pb2.AddArtifactsRequest(session_id=session_id)
    request.user_context.user_id = USER
    request.batch.artifacts.add(name=name).data.data = b"payload"
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.txt", "'..' part"), ("files/../../evil.txt", "'..' part"), ("/etc/evil", "absolute path"),
        ("files/a\\..\\..\\b", "backslash"), ("files/a\x00b", "control character"),
        ("unknown/x.txt", "not under a directory"), ("files/", "empty"),
    ],
)
def test_unsafe_artifact_names_are_refused_before_forwarding(fleet, channel, name, why):
    session_id = str(uuid.uuid4())
    call(channel, "AddArtifacts", _artifact(session_id, "files/fine.txt"))  # the session is real
    error = refused(channel, "AddArtifacts", _artifact(session_id, "files/also-fine.txt"), _artifact(session_id, name))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"artifact {name!r} was refused: " in error.details() and why in error.details()
    # Only the first upload was kept for replay: the refused stream left nothing behind.
    kept = [p for p in (fleet.data_dir / "artifacts").rglob("*.bin*")]
    assert all(b"also-fine" not in p.read_bytes() for p in kept)
    still_serves(fleet)


def test_the_stock_client_cannot_upload_outside_the_artifact_directories(fleet, tmp_path: Path):
    odd = tmp_path / "a\\..\\b.txt"  # a legal Linux file name that Spark would read as a path
    odd.write_text("x")
    fine = tmp_path / "fine.txt"
    fine.write_text("y")
    with spark_session(fleet.url) as spark:
        with pytest.raises(Exception, match="backslash"):
            spark.addArtifacts(str(odd), file=True)
        with pytest.raises(Exception, match=r"'\.\.' part"):
            spark.copyFromLocalToFs(str(fine), "/tmp/../etc/sparkfleet-test")
        spark.addArtifacts(str(fine), file=True)
        assert spark.range(5).count() == 5


def test_a_broken_message_inside_an_upload_ends_the_call(channel):
    session_id = str(uuid.uuid4())
    error = refused(channel, "AddArtifacts", _artifact(session_id, "files/one.txt"), b"\xff\xff\xff")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # was: no answer until the deadline
    assert "AddArtifactsRequest is not a valid protobuf message" in error.details()


def test_a_huge_declared_artifact_size_is_refused_up_front(channel):
    begin = base_pb2.AddArtifactsRequest(session_id=str(uuid.uuid4()))
    begin.user_context.user_id = USER
    begin.begin_chunk.name, begin.begin_chunk.num_chunks, begin.begin_chunk.total_bytes = "jars/big.jar", 10**9, 2**50
    begin.begin_chunk.initial_chunk.data = b"PK"
    error = refused(channel, "AddArtifacts", begin.SerializeToString())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "declares 1,125,899,906,842,624 bytes" in error.details()
    assert "gateway.max_artifact_upload_bytes" in error.details()


# ---- ids ----------------------------------------------------------------------------------------


def test_operation_ids_must_be_uuids(fleet, channel):
    request = base_pb2.ExecutePlanRequest.FromString(seeds()["ExecutePlan"][0])
    for bad in ("not-a-uuid", "x" * 1_000_000):
        request.operation_id = bad
        error = refused(channel, "ExecutePlan", request.SerializeToString())
        assert "[INVALID_HANDLE.FORMAT]" in error.details() and len(error.details()) < 500
    assert fleet.api(f"/api/queries?session_id={request.session_id}") == []


def test_floods_of_made_up_ids_stay_bounded(fleet, channel):
    session_id = str(uuid.uuid4())
    call(channel, "Config", seed_requests(session_id, USER)["Config"][1])  # the session exists on its cluster
    status = base_pb2.GetStatusRequest(session_id=session_id)
    status.user_context.user_id = USER
    status.operation_status.operation_ids.extend(str(uuid.uuid4()) for _ in range(20_000))
    answer = base_pb2.GetStatusResponse.FromString(call(channel, "GetStatus", status.SerializeToString()))
    assert answer.session_id == session_id and len(answer.operation_statuses) == 20_000
    assert {status.state for status in answer.operation_statuses} == {base_pb2.GetStatusResponse.OperationStatus.OPERATION_STATE_UNKNOWN}
    for _ in range(300):
        made_up = str(uuid.uuid4())
        release = base_pb2.ReleaseExecuteRequest(session_id=session_id, operation_id=made_up)
        release.user_context.user_id = USER
        release.release_all.SetInParent()
        assert base_pb2.ReleaseExecuteResponse.FromString(
            call(channel, "ReleaseExecute", release.SerializeToString())).operation_id == made_up
        interrupt = base_pb2.InterruptRequest(session_id=session_id, operation_id=made_up, interrupt_type=3)
        interrupt.user_context.user_id = USER
        assert not base_pb2.InterruptResponse.FromString(call(channel, "Interrupt", interrupt.SerializeToString())).interrupted_ids
        reattach = base_pb2.ReattachExecuteRequest(session_id=session_id, operation_id=made_up)
        reattach.user_context.user_id = USER
        assert "[INVALID_HANDLE.OPERATION_NOT_FOUND]" in refused(channel, "ReattachExecute", reattach.SerializeToString()).details()
    still_serves(fleet)
