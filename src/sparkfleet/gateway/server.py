"""The gRPC front door: a grpc.aio server that serves SparkConnectService over raw bytes.

Handlers receive and return undecoded bytes (no deserializer), so plans of any depth pass
through. Keepalive settings accept the stock client's pings (every 60 s, even idle) and message
limits match Spark's 128 MiB. Errors are translated here, at the edge, and only here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from sparkfleet.admin.metrics import Metrics
from sparkfleet.errors import EnvironmentProblem, SparkfleetError
from sparkfleet.gateway.forwarding import MAX_MESSAGE_BYTES, SERVICE
from sparkfleet.gateway.service import SparkConnectService
from sparkfleet.gateway.status import status_for
from sparkfleet.tls import TlsPair

log = logging.getLogger(__name__)

SERVER_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # The client pings every 60 s even without calls; accept that and anything down to 10 s.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Our own pings find dead clients of long streams.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.so_reuseport", 0),
)


class _Edge:
    """Wraps handlers: metrics, and every failure turned into the status a client expects."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, error: BaseException) -> None:
        if isinstance(error, grpc.aio.AioRpcError):
            # A backend's own status: code, message and trailers (Spark's ErrorInfo) unchanged.
            await context.abort(error.code(), error.details() or "", tuple(error.trailing_metadata() or ()))
        if not isinstance(error, SparkfleetError):
            log.exception("internal error serving %s", method, exc_info=error)
            error = SparkfleetError(
                f"internal gateway error while serving {method}: {type(error).__name__}: {error}"
            )
        await context.abort(*status_for(error))

    def unary(self, method: str, fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[bytes]]):  # type: ignore[no-untyped-def]
        latency = self._metrics.rpc_latency.labels(method)

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            start = time.perf_counter()
            code = "OK"
            try:
                return await fn(request, context)
            except Exception as error:  # ours, a backend status, or a bug: all become a status
                code = _code_of(error)
                await self._fail(context, method, error)
                raise  # unreachable: abort raises
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                latency.observe(time.perf_counter() - start)
                self._metrics.rpcs.labels(method, code).inc()

        return handler

    def stream(self, method: str, fn: Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[bytes]]):  # type: ignore[no-untyped-def]
        latency = self._metrics.rpc_latency.labels(method)
        active = self._metrics.active_streams.labels(method)
        sent_bytes = self._metrics.response_bytes

        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            start = time.perf_counter()
            code = "OK"
            active.inc()
            try:
                async for message in fn(request, context):
                    sent_bytes.inc(len(message))
                    yield message
            except Exception as error:  # ours, a backend status, or a bug: all become a status
                code = _code_of(error)
                await self._fail(context, method, error)
            except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream
                code = "CANCELLED"
                raise
            finally:
                active.dec()
                latency.observe(time.perf_counter() - start)
                self._metrics.rpcs.labels(method, code).inc()

        return handler


def _code_of(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    if isinstance(error, SparkfleetError):
        return error.grpc_code.name
    return "INTERNAL"


def build_handler(service: SparkConnectService, metrics: Metrics) -> grpc.GenericRpcHandler:
    edge = _Edge(metrics)
    s = service
    handlers = {
        "ExecutePlan": grpc.unary_stream_rpc_method_handler(edge.stream("ExecutePlan", s.execute_plan)),
        "ReattachExecute": grpc.unary_stream_rpc_method_handler(edge.stream("ReattachExecute", s.reattach_execute)),
        "AnalyzePlan": grpc.unary_unary_rpc_method_handler(edge.unary("AnalyzePlan", s.analyze_plan)),
        "Config": grpc.unary_unary_rpc_method_handler(edge.unary("Config", s.config)),
        "AddArtifacts": grpc.stream_unary_rpc_method_handler(edge.unary("AddArtifacts", s.add_artifacts)),
        "ArtifactStatus": grpc.unary_unary_rpc_method_handler(edge.unary("ArtifactStatus", s.artifact_status)),
        "Interrupt": grpc.unary_unary_rpc_method_handler(edge.unary("Interrupt", s.interrupt)),
        "ReleaseExecute": grpc.unary_unary_rpc_method_handler(edge.unary("ReleaseExecute", s.release_execute)),
        "ReleaseSession": grpc.unary_unary_rpc_method_handler(edge.unary("ReleaseSession", s.release_session)),
        "FetchErrorDetails": grpc.unary_unary_rpc_method_handler(
            edge.unary("FetchErrorDetails", s.fetch_error_details)
        ),
        "CloneSession": grpc.unary_unary_rpc_method_handler(edge.unary("CloneSession", s.clone_session)),
        "GetStatus": grpc.unary_unary_rpc_method_handler(edge.unary("GetStatus", s.get_status)),
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def listen_addresses(host: str) -> list[str]:
    """Every address ``host`` resolves to that this machine can bind (IPv6 only where usable)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EnvironmentProblem(f"cannot resolve gateway host {host!r}: {exc}") from exc
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip in addresses:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((ip, 0))
            except OSError:
                continue  # e.g. ::1 on a machine without IPv6 loopback
        addresses.append(ip)
    if not addresses:
        raise EnvironmentProblem(f"gateway host {host!r} resolves to no address this machine can listen on")
    return addresses


def bind_grpc_server(handler: grpc.GenericRpcHandler, host: str, port: int,
                     tls: TlsPair | None = None, max_concurrent_rpcs: int | None = None) -> tuple[grpc.aio.Server, int]:
    """Bind every address of ``host`` (serving starts with ``await server.start()``), with TLS
    when ``tls`` is given (then only TLS clients get through).

    Each address is bound on its own and each bind must succeed: grpc accepts a partial bind of
    a name (e.g. ``[::1]`` free but ``127.0.0.1`` taken by another program), which would send
    some clients to that other program.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=max_concurrent_rpcs)
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]) if tls is not None else None
    for ip in listen_addresses(host):
        target = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        try:
            if credentials is None:
                bound = server.add_insecure_port(target)
            else:
                bound = server.add_secure_port(target, credentials)
        except RuntimeError:  # grpc's way of saying the bind failed
            bound = 0
        if bound == 0:
            raise EnvironmentProblem(
                f"the gateway cannot listen on {target}: the port is in use or not available; "
                "choose another with --port (0 picks a free one)"
            )
        port = bound
    return server, port
