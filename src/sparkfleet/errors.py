"""The one exception tree of sparkfleet; edges translate it to gRPC, HTTP and exit codes.

Every error names what happened, why, and what the user can do. ``error_class`` follows Spark's
naming (``FAMILY.DETAIL``) so clients show it through ``getCondition()`` like any Spark error.
"""

from __future__ import annotations

import grpc


class SparkfleetError(Exception):
    """Base of every error sparkfleet raises on purpose."""

    error_class = "SPARKFLEET.INTERNAL"
    sql_state = "XX000"
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SparkfleetError):
    """The configuration file, a flag or an environment variable is invalid."""

    error_class = "SPARKFLEET.CONFIG"


class EnvironmentProblem(SparkfleetError):
    """The machine lacks something sparkfleet needs (Java, pyspark, a free port)."""

    error_class = "SPARKFLEET.ENVIRONMENT"


class StoreError(SparkfleetError):
    """The embedded store could not be opened, migrated or written."""

    error_class = "SPARKFLEET.STORE"


class ClusterError(SparkfleetError):
    """A cluster could not be started or stopped, or was lost."""

    error_class = "SPARKFLEET.CLUSTER"


class ClusterStartFailed(ClusterError):
    error_class = "SPARKFLEET.CLUSTER_START_FAILED"


class ClusterLost(ClusterError):
    """The cluster that owned a request died or became unreachable while serving it."""

    error_class = "SPARKFLEET.CLUSTER_LOST"
    sql_state = "08006"

    def __init__(self, message: str, cluster_id: str, reached_cluster: bool = True) -> None:
        super().__init__(message)
        self.cluster_id = cluster_id
        # False only when the request provably never reached the cluster (the connection was
        # refused): then nothing it asked for can have happened.
        self.reached_cluster = reached_cluster


class RanOutOfMemory(ClusterLost):
    """A query failed because it ran its cluster out of memory, and the cluster says so in the
    error (the cluster may live on). Recovered like a query lost with its cluster: retried on a
    larger size class when that is safe, else surfaced with the reason."""

    error_class = "SPARKFLEET.OUT_OF_MEMORY"
    sql_state = "53200"

    def __init__(self, message: str, cluster_id: str, evidence: str) -> None:
        super().__init__(message, cluster_id)
        self.evidence = evidence  # what in the error gave it away


class ReplayFailed(ClusterError):
    """A session's journal could not be replayed onto a cluster."""

    error_class = "SPARKFLEET.REPLAY_FAILED"


class InvalidTransition(SparkfleetError):
    """A lifecycle table refused a state change; always a bug in sparkfleet."""

    error_class = "SPARKFLEET.INVALID_TRANSITION"


class NoCapacity(SparkfleetError):
    """No cluster can take the request now and none can be started."""

    error_class = "SPARKFLEET.NO_CAPACITY"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    sql_state = "53000"

    def __init__(self, message: str, retry_delay_s: float | None = None) -> None:
        super().__init__(message)
        # When set, the client is told (RetryInfo) to try again after this long; the stock
        # client then retries on its own.
        self.retry_delay_s = retry_delay_s


class RequestError(SparkfleetError):
    """The client sent something the gateway cannot serve."""

    error_class = "SPARKFLEET.INVALID_REQUEST"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    sql_state = "22023"


class MalformedMessage(RequestError):
    """Bytes that are not a valid encoding of the expected protobuf message."""

    error_class = "SPARKFLEET.MALFORMED_REQUEST"


class InvalidHandle(RequestError):
    """Spark's own INVALID_HANDLE family, shaped exactly as a Spark server reports it."""

    grpc_code = grpc.StatusCode.INTERNAL
    sql_state = "HY000"
    spark_exception_class = "org.apache.spark.SparkSQLException"

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class InvalidArgument(RequestError):
    """A value the user gave (e.g. a ``sparkfleet.*`` conf) is not one sparkfleet accepts."""

    error_class = "SPARKFLEET.INVALID_ARGUMENT"


class QueryCancelled(SparkfleetError):
    """The gateway stopped a query: interrupted while queued, or over the session's time limit."""

    error_class = "SPARKFLEET.QUERY_CANCELLED"
    grpc_code = grpc.StatusCode.INTERNAL
    sql_state = "57014"  # query canceled (SQL standard)


class Unauthenticated(SparkfleetError):
    """The caller gave no credentials, or ones the gateway cannot verify. The message says what
    is wrong (missing, malformed, expired, unknown) and never echoes the credential."""

    error_class = "SPARKFLEET.UNAUTHENTICATED"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    sql_state = "28000"  # invalid authorization specification

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # a short label for metrics: missing, malformed, unknown, expired, ...


class PermissionDenied(SparkfleetError):
    """The caller is known but may not do this (another identity's session, an admin action)."""

    error_class = "SPARKFLEET.PERMISSION_DENIED"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    sql_state = "42501"  # insufficient privilege


class QuotaExceeded(NoCapacity):
    """A tenant's quota refuses the request now; the message names the quota and its value."""

    error_class = "SPARKFLEET.QUOTA_EXCEEDED"

    def __init__(self, message: str, quota: str, retry_delay_s: float | None = None) -> None:
        super().__init__(message, retry_delay_s)
        self.quota = quota


class MessageTooDeep(MalformedMessage):
    """A request nests messages deeper than Spark's parser accepts (a plan thousands of levels deep)."""

    error_class = "SPARKFLEET.MESSAGE_TOO_DEEP"

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class PlanTooLarge(SparkfleetError):
    """A plan holds more messages than the gateway reads to estimate it; it runs, of unknown cost."""

    error_class = "SPARKFLEET.PLAN_TOO_LARGE"
