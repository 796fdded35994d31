"""gateway/status.py: our errors leave as Spark-shaped gRPC statuses; backend statuses are read back."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st
from pyspark.errors import PySparkException
from pyspark.errors.exceptions.connect import SparkConnectGrpcException, convert_exception

from sparkfleet.errors import (
    ClusterLost,
    ConfigError,
    InvalidHandle,
    MalformedMessage,
    NoCapacity,
    SparkfleetError,
    StoreError,
)
from sparkfleet.gateway.status import STATUS_DETAILS_KEY, error_info_of, status_for

ERRORS = [
    SparkfleetError("something broke"),
    ConfigError("bad config"),
    StoreError("disk full"),
    NoCapacity("no cluster can take this request now"),
    MalformedMessage("plan field 1 has wire type 0"),
    ClusterLost("cluster c-1 died", "c-1"),
]


def _status(trailer: tuple[tuple[str, bytes], ...]) -> status_pb2.Status:
    [(key, value)] = trailer
    assert key == STATUS_DETAILS_KEY == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_our_errors_carry_their_class_and_sql_state(error: SparkfleetError) -> None:
    code, details, trailer = status_for(error)
    status = _status(trailer)
    assert code is error.grpc_code
    assert (status.code, status.message) == (code.value[0], details)
    assert details == error.message
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == "org.apache.spark"
    assert info.reason == f"sparkfleet.{type(error).__name__}"
    assert json.loads(info.metadata["classes"]) == [info.reason]
    assert info.metadata["errorClass"] == error.error_class
    assert info.metadata["sqlState"] == error.sql_state
    assert json.loads(info.metadata["messageParameters"]) == {}


def test_codes_follow_the_error() -> None:
    assert status_for(NoCapacity("x"))[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(MalformedMessage("x"))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(ConfigError("x"))[0] is grpc.StatusCode.INTERNAL
    info = error_info_of(status_for(ClusterLost("x", "c-1"))[2])
    assert info is not None and info.metadata["sqlState"] == "08006"


def test_invalid_handle_looks_exactly_like_sparks_own() -> None:
    error = InvalidHandle("The handle x is invalid. Session was closed.", "INVALID_HANDLE.SESSION_CLOSED")
    code, details, trailer = status_for(error)
    assert code is grpc.StatusCode.INTERNAL
    assert details == "[INVALID_HANDLE.SESSION_CLOSED] The handle x is invalid. Session was closed."
    info = error_info_of(trailer)
    assert info is not None
    assert info.reason == "org.apache.spark.SparkSQLException"
    assert json.loads(info.metadata["classes"]) == ["org.apache.spark.SparkSQLException"]
    assert (info.metadata["errorClass"], info.metadata["sqlState"]) == ("INVALID_HANDLE.SESSION_CLOSED", "HY000")


@pytest.mark.parametrize(
    "error",
    [*ERRORS, InvalidHandle("The handle x is invalid.", "INVALID_HANDLE.FORMAT")],
    ids=lambda e: type(e).__name__,
)
def test_the_pyspark_client_turns_the_trailer_into_a_typed_error(error: SparkfleetError) -> None:
    # The same conversion the stock client applies to a failed RPC's status.
    code, details, trailer = status_for(error)
    info = error_info_of(trailer)
    assert info is not None
    raised = convert_exception(info, details, None, grpc_status_code=code)
    assert isinstance(raised, PySparkException) and isinstance(raised, SparkConnectGrpcException)
    assert raised.getCondition() == error.error_class
    assert raised.getSqlState() == error.sql_state
    # Users see which class raised it and what happened, as with any Spark error.
    assert str(raised).startswith(f"({info.reason}) ")
    assert error.message in str(raised)


@given(st.text(max_size=80), st.from_regex(r"[A-Z_]{1,12}\.[A-Z_]{1,12}", fullmatch=True))
def test_any_message_and_class_survive_the_round_trip(message: str, error_class: str) -> None:
    error = InvalidHandle(message, error_class)
    code, details, trailer = status_for(error)
    assert details == f"[{error_class}] {message}"
    assert _status(trailer).message == details
    info = error_info_of(trailer)
    assert info is not None and info.metadata["errorClass"] == error_class


def _trailer(*details: any_pb2.Any) -> tuple[tuple[str, bytes], ...]:
    return ((STATUS_DETAILS_KEY, status_pb2.Status(code=13, message="m", details=list(details)).SerializeToString()),)


def _packed(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def test_the_first_error_info_among_details_is_read() -> None:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.seconds = 1
    info = error_details_pb2.ErrorInfo(reason="org.apache.spark.SparkException", metadata={"errorId": "e-1"})
    later = error_details_pb2.ErrorInfo(reason="later")
    found = error_info_of((("other-key", b"x"), *_trailer(_packed(retry), _packed(info), _packed(later))))
    assert found == info


@pytest.mark.parametrize(
    "trailer",
    [
        None,
        (),
        (("some-other-key", b"..."),),
        ((STATUS_DETAILS_KEY, "a str, not bytes"),),
        ((STATUS_DETAILS_KEY, b"\xff\xff\xff\xff"),),  # not a Status
        _trailer(),  # a Status without details
        _trailer(_packed(error_details_pb2.RetryInfo())),  # details, but no ErrorInfo
        # an Any that claims to be an ErrorInfo but holds garbage
        _trailer(any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff\xff")),
    ],
    ids=["none", "empty", "other-key", "str", "garbage", "no-details", "no-error-info", "bad-error-info"],
)
def test_trailers_without_a_readable_error_info_read_as_none(trailer) -> None:  # type: ignore[no-untyped-def]
    assert error_info_of(trailer) is None


@given(st.binary(max_size=200))
def test_arbitrary_trailer_bytes_never_raise(value: bytes) -> None:
    found = error_info_of(((STATUS_DETAILS_KEY, value),))
    assert found is None or isinstance(found, error_details_pb2.ErrorInfo)
