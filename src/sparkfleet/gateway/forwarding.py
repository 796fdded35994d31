"""Forwarding raw bytes to clusters: channels, metadata, and what a backend failure means.

Backend statuses are passed to the client unchanged (code, message and trailers, which carry
Spark's ErrorInfo). The one exception is a cluster that died: the client then gets a clear
``SPARKFLEET.CLUSTER_LOST`` error naming the cluster, never UNAVAILABLE, which the stock client
would silently retry for minutes against a server that is gone.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import grpc

from sparkfleet.errors import ClusterLost, NoCapacity
from sparkfleet.fleet.controller import Cluster, FleetController
from sparkfleet.fleet.model import ClusterState

SERVICE = "spark.connect.SparkConnectService"
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
BACKEND_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Each cluster gets its own TCP connection even when two share an address over time.
    ("grpc.use_local_subchannel_pool", 1),
)
# Client metadata that belongs to the client<->gateway hop and must not reach a cluster.
_HOP_METADATA = frozenset({"authorization", "user-agent", "content-type", "te", "host"})
# How long to wait for a dying JVM to be seen exiting before blaming the network instead.
_DEATH_CONFIRM_S = 3.0

Metadata = tuple[tuple[str, str | bytes], ...]


def forwarded_metadata(invocation_metadata: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
    return tuple(
        (k, v)
        for k, v in (invocation_metadata or ())
        if k not in _HOP_METADATA and not k.startswith(":") and not k.startswith("grpc-")
    )


class Backends:
    """One gRPC channel per cluster, opened on first use, closed when the cluster ends."""

    def __init__(self, fleet: FleetController) -> None:
        self._fleet = fleet
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._auth: dict[str, Metadata] = {}
        fleet.on_state_change(self._cluster_changed)

    def channel(self, cluster: Cluster) -> grpc.aio.Channel:
        channel = self._channels.get(cluster.id)
        if channel is None:
            if cluster.address is None or cluster.state is not ClusterState.READY:
                raise NoCapacity(f"{cluster.describe()} is {cluster.state.value}, not ready")
            channel = grpc.aio.insecure_channel(cluster.address, options=BACKEND_CHANNEL_OPTIONS)
            self._channels[cluster.id] = channel
            self._auth[cluster.id] = (("authorization", f"Bearer {cluster.token}"),)
        return channel

    def metadata(self, cluster: Cluster, client_metadata: Metadata) -> Metadata:
        self.channel(cluster)
        return self._auth[cluster.id] + client_metadata

    def unary_unary(self, cluster: Cluster, method: str):  # type: ignore[no-untyped-def]
        return self.channel(cluster).unary_unary(f"/{SERVICE}/{method}")

    def unary_stream(self, cluster: Cluster, method: str):  # type: ignore[no-untyped-def]
        return self.channel(cluster).unary_stream(f"/{SERVICE}/{method}")

    def stream_unary(self, cluster: Cluster, method: str):  # type: ignore[no-untyped-def]
        return self.channel(cluster).stream_unary(f"/{SERVICE}/{method}")

    def _cluster_changed(self, cluster: Cluster) -> None:
        if cluster.state in (ClusterState.LOST, ClusterState.STOPPED, ClusterState.FAILED):
            channel = self._channels.pop(cluster.id, None)
            self._auth.pop(cluster.id, None)
            if channel is not None:
                asyncio.get_running_loop().create_task(channel.close())

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


def _looks_like_lost_cluster(error: grpc.aio.AioRpcError) -> bool:
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    details = error.details() or ""
    # In local mode a task OOM stops the SparkContext and then the JVM.
    return code == grpc.StatusCode.INTERNAL and "stopped SparkContext" in details


async def lost_cluster_error(
    cluster: Cluster, error: grpc.aio.AioRpcError, what: str
) -> ClusterLost | None:
    """If ``error`` came from the cluster dying, the error to give the client; else None."""
    if not _looks_like_lost_cluster(error):
        return None
    handle = cluster.handle
    context_stopped = "stopped SparkContext" in (error.details() or "")
    if handle is not None and handle.process.returncode is None:
        try:
            await asyncio.wait_for(asyncio.shield(handle.process.wait()), _DEATH_CONFIRM_S)
        except asyncio.TimeoutError:
            if not context_stopped:
                return None  # alive and answering again soon: a transient fault the client retries
    if handle is not None and handle.process.returncode is None:
        why = "its SparkContext stopped"
    else:
        code = handle.process.returncode if handle else None
        why = cluster.lost_reason or f"its JVM exited with status {code}"
    return ClusterLost(
        f"{cluster.describe()} was lost while running {what}: {why}.",
        cluster.id,
        reached_cluster=not _never_connected(error),
    )


def _never_connected(error: grpc.aio.AioRpcError) -> bool:
    """Whether gRPC failed to open a connection at all (so the request was never sent)."""
    details = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
    )
