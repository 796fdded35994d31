"""Raw gRPC against the gateway: all twelve RPCs, hostile input, limits, keepalive, disconnects."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from pyspark.sql.connect.proto import base_pb2, relations_pb2

from sparkfleet.testing.fuzz import SERVICE
from sparkfleet.testing.fuzz_inputs import RPC_KINDS as KINDS
from sparkfleet.testing.process import wait_until

BIG = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def channel(fleet):
    with grpc.insecure_channel(
        f"localhost:{fleet.port}",
        options=[("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)],
    ) as ch:
        yield ch


def call(channel, method: str, payload: bytes, timeout: float = 60):
    kind = KINDS.get(method, "unary_unary")
    stub = getattr(channel, kind)(SERVICE + method)
    if kind == "unary_stream":
        return list(stub(payload, timeout=timeout))
    if kind == "stream_unary":
        return stub(iter([payload]), timeout=timeout)
    return stub(payload, timeout=timeout)


def rpc_error(channel, method: str, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, payload)
    return info.value


def user(message, session_id: str | None = None):
    message.session_id = session_id or str(uuid.uuid4())
    message.user_context.user_id = "edge-tester"
    return message


def range_plan(n: int) -> base_pb2.Plan:
    plan = base_pb2.Plan()
    plan.root.range.CopyFrom(relations_pb2.Range(start=0, end=n, step=1))
    return plan


def minimal_requests(session_id: str | None = None) -> dict[str, bytes]:
    """A valid request for each RPC, in the order a client would send them, in one session."""
    sid = session_id or str(uuid.uuid4())
    execute = user(base_pb2.ExecutePlanRequest(), sid)
    execute.plan.CopyFrom(range_plan(3))
    analyze = user(base_pb2.AnalyzePlanRequest(), sid)
    analyze.spark_version.SetInParent()
    config = user(base_pb2.ConfigRequest(), sid)
    config.operation.get_all.SetInParent()
    artifacts = user(base_pb2.AddArtifactsRequest(), sid)
    artifacts.batch.artifacts.add(name="files/edge.txt").data.data = b"edge"
    status = user(base_pb2.ArtifactStatusesRequest(), sid)
    status.names.append("files/edge.txt")
    interrupt = user(base_pb2.InterruptRequest(), sid)
    interrupt.interrupt_type = base_pb2.InterruptRequest.INTERRUPT_TYPE_ALL
    get_status = user(base_pb2.GetStatusRequest(), sid)
    get_status.operation_status.SetInParent()
    reattach = user(base_pb2.ReattachExecuteRequest(), sid)
    reattach.operation_id = str(uuid.uuid4())
    release = user(base_pb2.ReleaseExecuteRequest(), sid)
    release.operation_id = str(uuid.uuid4())
    release.release_all.SetInParent()
    return {
        "ExecutePlan": execute.SerializeToString(),
        "AnalyzePlan": analyze.SerializeToString(),
        "Config": config.SerializeToString(),
        "AddArtifacts": artifacts.SerializeToString(),
        "ArtifactStatus": status.SerializeToString(),
        "Interrupt": interrupt.SerializeToString(),
        "GetStatus": get_status.SerializeToString(),
        "FetchErrorDetails": user(base_pb2.FetchErrorDetailsRequest(error_id=str(uuid.uuid4())), sid).SerializeToString(),
        "ReattachExecute": reattach.SerializeToString(),
        "ReleaseExecute": release.SerializeToString(),
        "CloneSession": user(base_pb2.CloneSessionRequest(), sid).SerializeToString(),
        "ReleaseSession": user(base_pb2.ReleaseSessionRequest(), sid).SerializeToString(),
    }


def test_all_twelve_rpcs_are_served(channel):
    answered = {}
    for method, payload in minimal_requests().items():
        try:
            call(channel, method, payload)
            answered[method] = "OK"
        except grpc.RpcError as exc:
            answered[method] = exc.code().name
            # Reattaching an operation that never existed is Spark's own OPERATION_NOT_FOUND.
            assert method == "ReattachExecute", (method, exc.details())
            assert "OPERATION_NOT_FOUND" in exc.details()
    assert set(answered) == set(KINDS)
    assert answered["ExecutePlan"] == "OK" and answered["ReattachExecute"] == "INTERNAL"


@pytest.mark.parametrize("method", sorted(KINDS))
def test_garbage_bytes_get_a_clear_error(channel, method):
    error = rpc_error(channel, method, b"\xff\xff\xff\xff\xff\xff")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "varint" in error.details() or "malformed" in error.details().lower()


@pytest.mark.parametrize("method", sorted(KINDS))
def test_valid_protobuf_without_session_is_refused(channel, method):
    error = rpc_error(channel, method, b"\x20\x01")  # field 4 = 1, nothing else
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no session_id" in error.details()


def test_non_uuid_session_id_is_spark_invalid_handle(channel):
    request = base_pb2.ConfigRequest(session_id="not-a-uuid")
    request.operation.get_all.SetInParent()
    error = rpc_error(channel, "Config", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "[INVALID_HANDLE.FORMAT]" in error.details()


def test_invalid_utf8_session_id(channel):
    payload = b"\x0a\x04\xff\xfe\xfd\xfc"  # field 1 (session_id) with invalid UTF-8
    error = rpc_error(channel, "Config", payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in error.details()


def test_unknown_rpc_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(SERVICE + "NoSuchMethod")(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_message_over_128_mib_is_refused(channel):
    request = user(base_pb2.ConfigRequest())
    request.operation.get_all.prefix = "x" * (129 * 1024 * 1024)
    error = rpc_error(channel, "Config", request.SerializeToString())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_just_under_the_limit_is_forwarded(channel):
    # 100 MiB of plan: above gRPC's 4 MiB default, below Spark's 128 MiB.
    request = user(base_pb2.ConfigRequest())
    request.operation.get_option.keys.append("k" * (100 * 1024 * 1024))
    response = base_pb2.ConfigResponse.FromString(call(channel, "Config", request.SerializeToString()))
    assert response.session_id == request.session_id


def test_client_disconnect_mid_stream(fleet, channel):
    request = user(base_pb2.ExecutePlanRequest())
    request.operation_id = str(uuid.uuid4())
    request.plan.CopyFrom(range_plan(50_000_000))
    stream = channel.unary_stream(SERVICE + "ExecutePlan")(request.SerializeToString(), timeout=120)
    first = next(stream)
    assert base_pb2.ExecutePlanResponse.FromString(first).operation_id == request.operation_id
    stream.cancel()

    def settled():
        records = fleet.api(f"/api/queries?session_id={request.session_id}")
        return records and records[0]["state"] == "cancelled"

    wait_until(settled, 30, what="the abandoned query to be recorded as cancelled")
    wait_until(
        lambda: 'sparkfleet_active_streams{method="ExecutePlan"} 0.0' in fleet.text("/metrics"),
        30,
        what="no active streams",
    )
    again = minimal_requests()["ExecutePlan"]
    assert call(channel, "ExecutePlan", again)


def test_observed_server_side_id_mismatch_is_session_changed(channel):
    request = user(base_pb2.ConfigRequest())
    request.operation.get_all.SetInParent()
    first = base_pb2.ConfigResponse.FromString(call(channel, "Config", request.SerializeToString()))
    request.client_observed_server_side_session_id = first.server_side_session_id
    again = base_pb2.ConfigResponse.FromString(call(channel, "Config", request.SerializeToString()))
    assert again.server_side_session_id == first.server_side_session_id
    request.client_observed_server_side_session_id = str(uuid.uuid4())
    error = rpc_error(channel, "Config", request.SerializeToString())
    assert "[INVALID_HANDLE.SESSION_CHANGED]" in error.details()


def test_idle_client_pings_do_not_get_goaway(fleet):
    """The stock client pings every 60 s even when idle; ping ten times faster and stay connected."""
    states: list[str] = []
    with grpc.insecure_channel(
        f"localhost:{fleet.port}",
        options=[
            ("grpc.keepalive_time_ms", 1000),
            ("grpc.keepalive_timeout_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    ) as ch:
        ch.subscribe(lambda state: states.append(state.name))
        config = minimal_requests()["Config"]
        call(ch, "Config", config)
        time.sleep(12)
        call(ch, "Config", config)
    connected = states[states.index("READY"):]
    # A too_many_pings GOAWAY would drop the channel to IDLE and reconnect.
    assert connected == ["READY"], states


def test_gateway_still_healthy_after_abuse(fleet):
    from pyspark.sql import SparkSession

    assert fleet.api("/api/health")["status"] == "ok"
    session = SparkSession.builder.remote(fleet.url).create()
    try:
        assert session.range(5).count() == 5
    finally:
        session.stop()


def test_wrong_typed_fields_are_invalid_argument(channel):
    sid = str(uuid.uuid4()).encode()
    session = b"\x0a" + bytes([len(sid)]) + sid
    error = rpc_error(channel, "Config", session + b"\x10\x05")  # user_context sent as a number
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_context" in error.details()
    error = rpc_error(channel, "ExecutePlan", session + b"\x18\x07")  # plan sent as a number
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "plan" in error.details()
