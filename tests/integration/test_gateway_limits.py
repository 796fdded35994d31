"""Per-identity limits through the stock client: sessions, operations in flight, artifact bytes per upload and per session.

A sparkfleet of its own with small limits (one S cluster, no metastore JVM), stopped after the module.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from pyspark.sql import SparkSession

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, run_in_thread, spark_session, wait_until

LIMITS_TOML = """
[gateway]
max_sessions_per_user = 3
max_operations_per_user = 2
max_artifact_upload_bytes = 65536
max_artifact_session_bytes = 120000
max_concurrent_rpcs = 8

[pool]
clusters = ["S"]
catalog = "per-cluster"
""" + FIXED_FLEET


@pytest.fixture(scope="module")
def limited():
    with SparkfleetProcess(LIMITS_TOML, name="sparkfleet-limits") as proc:
        yield proc


@contextlib.contextmanager
def session_of(proc: SparkfleetProcess, user: str) -> Iterator[Any]:
    spark = SparkSession.builder.remote(f"{proc.url}/;user_id={user}").create()
    try:
        yield spark
    finally:
        spark.stop()


def test_sessions_per_user_are_limited(limited):
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            assert stack.enter_context(session_of(limited, "many")).range(2).count() == 2
        with pytest.raises(Exception, match="gateway.max_sessions_per_user") as info:
            with session_of(limited, "many") as fourth:
                fourth.range(2).count()
        assert "already has 3 open sessions" in str(info.value)
        with session_of(limited, "someone-else") as other:  # another user is not held back
            assert other.range(2).count() == 2
    with session_of(limited, "many") as again:  # the three were stopped: room again
        assert again.range(2).count() == 2


def test_operations_in_flight_per_user_are_limited(limited):
    endless = lambda spark: spark.range(0, 10**13, 1, 1).selectExpr("max(id * 2)").collect()  # noqa: E731
    with session_of(limited, "busy") as one, session_of(limited, "busy") as two:
        runs = [run_in_thread(lambda s=s: endless(s)) for s in (one, two)]

        def both_in_flight() -> bool:  # one runs; the other runs too or waits (both are batch work)
            queries = [q for s in (one, two) for q in limited.api(f"/api/queries?session_id={s.session_id}")]
            return sum(q["state"] in ("running", "queued") for q in queries) == 2

        wait_until(both_in_flight, 120, what="two queries of user busy in flight")
        with session_of(limited, "busy") as third:
            with pytest.raises(Exception, match="gateway.max_operations_per_user") as info:
                third.range(3).count()
            assert "already has 2 operations queued, running or not yet released" in str(info.value)
            with spark_session(limited.url) as other:
                assert other.range(3).count() == 3
            one.interruptAll()
            two.interruptAll()
            for thread, box in runs:
                thread.join(60)
                assert "error" in box  # interrupted
            wait_until(lambda: _settled(limited, one, two), 60, what="the interrupted queries to settle")
            assert third.range(3).count() == 3


def _settled(proc: SparkfleetProcess, *sessions: Any) -> bool:
    queries = [q for s in sessions for q in proc.api(f"/api/queries?session_id={s.session_id}")]
    return all(q["state"] not in ("running", "queued") for q in queries)


def _file(tmp_path: Path, size: int) -> str:
    path = tmp_path / f"blob-{uuid.uuid4().hex[:8]}.bin"
    path.write_bytes(b"x" * size)
    return str(path)


def test_artifact_bytes_are_limited_per_upload_and_per_session(limited, tmp_path: Path):
    with session_of(limited, "uploader") as spark:
        with pytest.raises(Exception, match="gateway.max_artifact_upload_bytes") as info:
            spark.addArtifacts(_file(tmp_path, 100_000), file=True)
        assert "declares 100,000 bytes" in str(info.value)
        spark.addArtifacts(_file(tmp_path, 50_000), file=True)
        spark.addArtifacts(_file(tmp_path, 50_000), file=True)
        with pytest.raises(Exception, match="gateway.max_artifact_session_bytes") as info:
            spark.addArtifacts(_file(tmp_path, 50_000), file=True)
        assert "already stored" in str(info.value)
        assert spark.range(5).count() == 5  # the session itself goes on
    assert limited.api("/api/health")["status"] == "ok"


def _sleeping_query(user: str, seconds: int) -> bytes:
    from pyspark.sql.connect.proto import base_pb2

    request = base_pb2.ExecutePlanRequest(session_id=str(uuid.uuid4()), operation_id=str(uuid.uuid4()))
    request.user_context.user_id = user
    request.plan.root.sql.query = f"select reflect('java.lang.Thread', 'sleep', {seconds * 1000}L) as slept"
    return request.SerializeToString()


def test_rpcs_in_flight_are_capped(limited):
    """Past gateway.max_concurrent_rpcs (8 here), gRPC refuses more calls until some end."""
    import grpc
    from pyspark.sql.connect.proto import base_pb2

    config = base_pb2.ConfigRequest(session_id=str(uuid.uuid4()))
    config.user_context.user_id = "late"
    config.operation.get_all.SetInParent()
    with grpc.insecure_channel(f"localhost:{limited.port}") as channel:
        execute = channel.unary_stream("/spark.connect.SparkConnectService/ExecutePlan")
        ask_config = channel.unary_unary("/spark.connect.SparkConnectService/Config")
        # Twelve queries that sleep two minutes (two per user: gateway.max_operations_per_user).
        calls = [execute(_sleeping_query(f"sleeper-{n // 2}", 120), timeout=300) for n in range(12)]
        try:
            def refused() -> list[Any]:
                return [c for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]

            wait_until(lambda: len(refused()) >= 4, 60, what="calls past the limit to be refused")
            assert all("concurrent rpc limit" in (c.details() or "").lower() for c in refused())
            in_flight = [c for c in calls if not c.done()]
            assert 0 < len(in_flight) <= 8
            with pytest.raises(grpc.RpcError) as late:
                ask_config(config.SerializeToString(), timeout=10)
            assert late.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for call in calls:
                call.cancel()

        def served() -> bool:
            try:
                return ask_config(config.SerializeToString(), timeout=10) is not None
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                return False

        wait_until(served, 60, what="calls to be served again once the others ended")
