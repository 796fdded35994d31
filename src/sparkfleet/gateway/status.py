"""gRPC edge of the error tree: our errors as Spark-shaped statuses, and backend statuses read.

A Spark client turns ``google.rpc.Status`` + ``ErrorInfo`` trailers into typed exceptions with an
error class, so sparkfleet's own errors are shaped the same way and read like any Spark error.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from sparkfleet.errors import InvalidHandle, SparkfleetError

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_SPARK_DOMAIN = "org.apache.spark"
MAX_MESSAGE_BYTES = 2048  # Spark cuts its own messages at 2048 characters


def status_for(error: SparkfleetError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(code, details, trailing metadata) that make the client raise a typed Spark error."""
    message = error.message
    if len(message.encode()) > MAX_MESSAGE_BYTES:
        # A message quoting a huge client value would not fit gRPC's 16 KiB of trailers (it is sent
        # twice, as details and inside the status): the client would hear only "metadata too large".
        cut = message.encode()[:MAX_MESSAGE_BYTES].decode(errors="ignore")
        message = f"{cut}... (message cut at {MAX_MESSAGE_BYTES} of {len(message.encode())} bytes)"
    if isinstance(error, InvalidHandle):
        classes = [error.spark_exception_class]
        # Spark prefixes the message with its error class; clients and users expect that shape.
        message = f"[{error.error_class}] {message}"
    else:
        classes = [f"sparkfleet.{type(error).__name__}"]
    info = error_details_pb2.ErrorInfo(
        reason=classes[0],
        domain=_SPARK_DOMAIN,
        metadata={
            "classes": json.dumps(classes),
            "errorClass": error.error_class,
            "sqlState": error.sql_state,
            "messageParameters": "{}",
        },
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    retry_delay_s = getattr(error, "retry_delay_s", None)
    if retry_delay_s is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_delay_s * 1e9))  # a rate limit's delay is often under a second
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(code=error.grpc_code.value[0], message=message, details=details)
    return error.grpc_code, message, ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def error_info_of(
    trailing_metadata: tuple[tuple[str, str | bytes], ...] | None,
) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a Spark server put in an error's status trailer, if any."""
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
        except Exception:  # a malformed trailer is the backend's problem; callers fall back
            return None
    return None
