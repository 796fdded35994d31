"""Per-request routing: which session, which cluster, and the id rewriting in both directions.

Requests are read shallowly (top-level fields only). Toward a cluster the client's observed
server-side id is replaced with that cluster's id for the session; toward the client every
response carries the session's one stable id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from sparkfleet.clock import Clock, SystemClock
from sparkfleet.config_security import AuthSettings
from sparkfleet.errors import ClusterLost, MalformedMessage
from sparkfleet.fleet.controller import Cluster, FleetController
from sparkfleet.fleet.model import ClusterState, Profile, SizeClass
from sparkfleet.gateway.admission import Admission, QueryTraits
from sparkfleet.gateway.auth import Authenticator, Identity
from sparkfleet.gateway.forwarding import Backends, Metadata, forwarded_metadata, lost_cluster_error
from sparkfleet.gateway.operations import OperationRegistry
from sparkfleet.gateway.sessions import SessionRegistry, VirtualSession
from sparkfleet.gateway.status import error_info_of
from sparkfleet.gateway.tenants import Tenants
from sparkfleet.plan.wire import (
    Field,
    as_message,
    as_str,
    read_fields,
    replace_and_read,
    replace_bytes_field,
    replace_string_field,
)
from sparkfleet.policy.placement import PlacementRequest, PlacementSettings
from sparkfleet.policy.tenancy import size_within

SESSION_ID = 1
USER_CONTEXT = 2
_USER_ID = 1


@dataclass(frozen=True, slots=True)
class RpcShape:
    """Where one RPC keeps its ids (field numbers differ from message to message)."""

    name: str
    observed_field: int | None  # client_observed_server_side_session_id in the request
    client_type_field: int
    server_side_field: int  # server_side_session_id in the response


RPCS = {
    s.name: s
    for s in (
        RpcShape("ExecutePlan", 8, 4, 15),
        RpcShape("AnalyzePlan", 17, 3, 15),
        RpcShape("Config", 8, 4, 4),
        RpcShape("AddArtifacts", 7, 6, 3),
        RpcShape("ArtifactStatus", 5, 3, 3),
        RpcShape("Interrupt", 7, 3, 3),
        RpcShape("ReattachExecute", 6, 4, 15),
        RpcShape("ReleaseExecute", 7, 4, 3),
        RpcShape("ReleaseSession", None, 3, 2),
        RpcShape("FetchErrorDetails", 5, 4, 3),
        RpcShape("CloneSession", 5, 3, 2),
        RpcShape("GetStatus", 4, 3, 2),
    )
}


@dataclass(slots=True)
class Routed:
    """A request resolved to its session, with the top-level fields the handler asked for."""

    session: VirtualSession
    fields: dict[int, Field]
    metadata: Metadata
    identity: Identity
    # Seconds the request waits for its tenant's next request token before it goes on.
    rate_delay_s: float = 0.0

    def text(self, number: int) -> str:
        return as_str(self.fields.get(number))


class Router:
    def __init__(
        self,
        fleet: FleetController,
        sessions: SessionRegistry,
        operations: OperationRegistry,
        backends: Backends,
        placement_strategy: str = "workload",
        capacity_wait_s: float = 120.0,
        clock: Clock | None = None,
        placement: PlacementSettings | None = None,
        max_queued: int = 1000,
        queue_wait_s: float = 3600.0,
        tenants: Tenants | None = None,
    ) -> None:
        self.placement_strategy = placement_strategy
        # Each tenant's quotas and request rate (gateway/tenants.py); nobody is limited by default.
        self.tenants = tenants or Tenants()
        # The autoscaler's mode ("" while the pool is fixed): Standard packs queries onto fewer
        # clusters so the others can be stopped.
        self.scaling_mode = ""
        # Queries wait here for a cluster: while the pool starts or replaces lost clusters
        # (``capacity_wait_s``), or while every cluster refuses them (``queue_wait_s``).
        self.admission = Admission(
            fleet, clock or SystemClock(), placement or PlacementSettings(), max_queued, capacity_wait_s, queue_wait_s,
            self.tenants,
        )
        self.fleet = fleet
        self.sessions = sessions
        self.operations = operations
        self.backends = backends
        # Who is calling (gateway/auth.py); by default whoever the client says it is.
        self.auth = Authenticator(AuthSettings(), clock or SystemClock())

    def resolve(
        self, shape: RpcShape, request: bytes, context: grpc.aio.ServicerContext, extra: frozenset[int] = frozenset()
    ) -> Routed:
        invocation_metadata = context.invocation_metadata()
        if self.auth.enabled:  # refuse strangers before reading their request
            identity = self.auth.authenticate(invocation_metadata)
        wanted = {SESSION_ID, USER_CONTEXT, shape.client_type_field, *extra}
        if shape.observed_field is not None:
            wanted.add(shape.observed_field)
        fields = read_fields(request, frozenset(wanted))
        session_id = as_str(fields.get(SESSION_ID))
        if not session_id:
            raise MalformedMessage(f"{shape.name} request has no session_id")
        if not self.auth.enabled:
            identity = self.auth.authenticate(invocation_metadata, declared_user_id(fields))
        # Over its tenant's request rate: a short wait, or QuotaExceeded (retry later) before any
        # session is made.
        rate_delay_s = self.tenants.take_request(identity.tenant)
        observed = as_str(fields.get(shape.observed_field)) if shape.observed_field else ""
        session = self.sessions.resolve(
            identity.user, session_id, as_str(fields.get(shape.client_type_field)), observed, identity.tenant
        )
        return Routed(session, fields, forwarded_metadata(invocation_metadata), identity, rate_delay_s)

    # ---- placement ---------------------------------------------------------------------------

    async def place(
        self,
        session: VirtualSession,
        request: bytes | memoryview = b"",
        avoid: frozenset[str] = frozenset(),
        traits: QueryTraits | None = None,
        query_id: str | None = None,
        min_memory_mb: int = 0,
        runtime: str = "",
    ) -> tuple[Cluster, str]:
        """The cluster for the session's next request, waiting (queued) until one admits it.

        ``request`` is scanned for checkpointed DataFrames the session holds: a request that
        reads one must run where it lives. ``avoid``: clusters the caller saw die. ``traits``:
        what is known of an ExecutePlan (None for calls that run no job); its expected work is
        reserved on the chosen cluster under ``query_id`` until :meth:`release`. ``min_memory_mb``:
        only clusters with more memory than this (the query ran one that size out of memory).
        ``runtime``: only clusters of this runtime ("": any).
        """
        pinned, pin_reason = self._pin_for(session, request)
        limits = self.tenants.limits(session.tenant)
        learned = traits.memory_floor_mb if traits is not None else 0
        larger = self.fleet.next_larger_size(learned) if learned > min_memory_mb else None
        if larger is not None and size_within(limits, larger):
            min_memory_mb = learned  # the workload ran a cluster this size out of memory before

        def make_request() -> PlacementRequest:
            return PlacementRequest(
                session.session_id, session.home_cluster_id, self.placement_strategy, pinned, pin_reason, avoid,
                profile=traits.profile if traits else Profile.INTERACTIVE,
                profile_reason=traits.profile_reason if traits else "",
                estimate=traits.estimate if traits else None,
                metadata_only=traits is None or not traits.runs_job,
                min_memory_mb=min_memory_mb,
                pack=self._packs(traits),
                runtime=runtime,
                tenant=session.tenant,
                tenant_limits=limits,
            )

        decision = await self.admission.admit(query_id or f"call-{uuid.uuid4()}", make_request, traits,
                                              session.tenant)
        cluster = self.fleet.get(decision.cluster_id)
        assert cluster is not None
        if session.home_cluster_id != cluster.id:
            if session.home_cluster_id:
                old = self.fleet.get(session.home_cluster_id)
                if old is not None:
                    old.sessions.discard(session.session_id)
            session.home_cluster_id = cluster.id
            cluster.sessions.add(session.session_id)
            self.sessions.persist(session)
        return cluster, decision.reason

    def larger_size_for(self, session: VirtualSession, memory_mb: int) -> tuple[SizeClass | None, str]:
        """The next size class above ``memory_mb`` an out-of-memory query of the session may run
        on, and why not, when its tenant's quota stops it ("" otherwise)."""
        return self.tenants.larger_size(session.tenant, self.fleet.next_larger_size(memory_mb))

    def _packs(self, traits: QueryTraits | None) -> bool:
        """Standard mode (the session's, else the autoscaler's) runs the least compute: pack."""
        if not self.scaling_mode:
            return False
        return ((traits.mode if traits is not None else "") or self.scaling_mode) == "standard"

    def release(self, cluster_id: str, query_id: str) -> None:
        """The query's attempt on ``cluster_id`` is over: its reserved capacity goes to the next."""
        self.admission.release(cluster_id, query_id)

    def _pin_for(self, session: VirtualSession, request: bytes | memoryview) -> tuple[str | None, str]:
        """Where non-replayable state this request needs lives, and what it is."""
        if session.remote_relations and request:
            raw = bytes(request)
            for relation_id, cluster_id in session.remote_relations.items():
                if relation_id.encode() not in raw:
                    continue
                cluster = self.fleet.get(cluster_id)
                if cluster is None or cluster.state is not ClusterState.READY:
                    where = cluster.describe() if cluster is not None else f"cluster {cluster_id}"
                    state = cluster.state.value if cluster is not None else "gone"
                    raise ClusterLost(
                        f"this request reads checkpointed DataFrame {relation_id}, which lived only on "
                        f"{where}; that cluster is {state}, so the checkpoint is gone. "
                        "Build the DataFrame again (and checkpoint it again if needed).",
                        cluster_id,
                    )
                return cluster_id, f"checkpointed DataFrame {relation_id}"
        for cluster_id, reason in list(session.pins.items()):
            cluster = self.fleet.get(cluster_id)
            if cluster is not None and cluster.state is ClusterState.READY:
                return cluster_id, reason
            # The pinned state died with its cluster; nothing holds the session any more.
            del session.pins[cluster_id]
        return None, ""

    async def owner_or_home(self, session: VirtualSession, owner_id: str | None, what: str) -> Cluster:
        """The cluster that owns ``what``; if it is gone, say so; if unknown, the session's home."""
        if owner_id is not None:
            cluster = self.fleet.get(owner_id)
            if cluster is not None and cluster.state is ClusterState.READY:
                return cluster
            if cluster is not None:
                raise self.lost(cluster, what)
        return (await self.place(session))[0]

    @staticmethod
    def lost(cluster: Cluster, what: str) -> ClusterLost:
        return ClusterLost(
            f"{cluster.describe()}, which ran {what}, is {cluster.state.value}"
            f"{': ' + cluster.lost_reason if cluster.lost_reason else ''}. "
            "Its results are gone; run the query again.",
            cluster.id,
        )

    def live_backends(self, session: VirtualSession) -> list[Cluster]:
        """Clusters holding a twin of this session that can still be asked anything."""
        found = []
        for cluster_id in session.backends:
            cluster = self.fleet.get(cluster_id)
            if cluster is not None and cluster.state is ClusterState.READY:
                found.append(cluster)
        return found

    # ---- rewriting ---------------------------------------------------------------------------

    def to_backend(self, shape: RpcShape, request: bytes, session: VirtualSession, cluster: Cluster) -> bytes:
        """The request as the cluster must see it: as the session's user (the authenticated
        identity, whatever the client declared) and with the cluster's own server-side id."""
        request = with_user_id(request, session.user_id)
        if shape.observed_field is None:
            return request
        backend_id = session.backend(cluster.id).server_side_session_id
        return replace_string_field(request, shape.observed_field, backend_id)

    def to_client(
        self,
        shape: RpcShape,
        response: bytes,
        session: VirtualSession,
        cluster: Cluster,
        wanted: frozenset[int] = frozenset(),
    ) -> tuple[bytes, dict[int, Field]]:
        field = shape.server_side_field
        out, found = replace_and_read(response, field, session.server_side_session_id, wanted | {field})
        backend = session.backend(cluster.id)
        if backend.server_side_session_id is None and field in found:
            backend.server_side_session_id = as_str(found[field]) or None
        return out, found

    # ---- failures ----------------------------------------------------------------------------

    async def backend_failed(
        self, error: grpc.aio.AioRpcError, cluster: Cluster, what: str
    ) -> ClusterLost | grpc.aio.AioRpcError:
        """What to surface for a backend error; remembers which cluster owns a Spark error id."""
        lost = await lost_cluster_error(cluster, error, what)
        if lost is not None:
            return lost
        info = error_info_of(tuple(error.trailing_metadata() or ()))
        if info is not None and info.metadata.get("errorId"):
            self.operations.set_error_owner(info.metadata["errorId"], cluster.id)
        return error

    def call_metadata(self, cluster: Cluster, routed: Routed) -> Metadata:
        return self.backends.metadata(cluster, routed.metadata)


def declared_user_id(fields: dict[int, Field]) -> str:
    """The user id the client put in a request's user_context ("" if none)."""
    if USER_CONTEXT not in fields:
        return ""
    user_context = as_message(fields[USER_CONTEXT], "user_context")
    return as_str(read_fields(user_context, frozenset({_USER_ID})).get(_USER_ID))


def with_user_id(request: bytes, user_id: str) -> bytes:
    """``request`` with user_context.user_id set to ``user_id`` (unchanged if it already is)."""
    fields = read_fields(request, frozenset({USER_CONTEXT}))
    if declared_user_id(fields) == user_id:
        return request
    user_context = bytes(as_message(fields[USER_CONTEXT], "user_context")) if USER_CONTEXT in fields else b""
    user_context = replace_string_field(user_context, _USER_ID, user_id)
    return replace_bytes_field(request, USER_CONTEXT, user_context)


def error_class_of(error: Any) -> str | None:
    """The Spark error class of a backend error, or our own error's class."""
    if isinstance(error, grpc.aio.AioRpcError):
        info = error_info_of(tuple(error.trailing_metadata() or ()))
        if info is None:
            return error.code().name
        return info.metadata.get("errorClass") or info.reason or error.code().name
    return getattr(error, "error_class", type(error).__name__)
