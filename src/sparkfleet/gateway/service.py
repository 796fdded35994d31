"""The twelve RPCs of ``spark.connect.SparkConnectService``, served over raw bytes.

Execution RPCs go to the cluster placement picks (or that owns the operation); an ExecutePlan
whose cluster is lost is re-run elsewhere, when that is safe, by ``gateway/attempts.py``.
Session-wide RPCs (Interrupt all/tag, GetStatus, ReleaseSession) fan out to every cluster holding
a twin of the session and merge the answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import AsyncIterator

import grpc
from google.protobuf.message import DecodeError
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import ClusterLost, MalformedMessage, QueryCancelled, SparkfleetError
from sparkfleet.fleet.controller import Cluster
from sparkfleet.fleet.model import ClusterState
from sparkfleet.gateway.artifacts import ArtifactStore
from sparkfleet.gateway.assessment import QueryAssessor, query_ended, query_started
from sparkfleet.gateway.local_data import refuse_unreadable_cached_data
from sparkfleet.gateway.options import split_config
from sparkfleet.gateway.queue_status import queued_status, stop_queued
from sparkfleet.gateway.releases import ReleaseCoalescer, release_execute_ack
from sparkfleet.gateway.attempts import AttemptRunner, not_found_for_reattach, out_of_memory_in
from sparkfleet.gateway.versions import BlinkTwice, WorkloadRuntimes
from sparkfleet.gateway.operations import Operation
from sparkfleet.gateway.routing import RPCS, Routed, Router, error_class_of
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.gateway.replay import Replayer
from sparkfleet.gateway.request_checks import check_operation_id, resolve_checked
from sparkfleet.gateway.uploads import add_artifacts
from sparkfleet.gateway.refresh import TableRefresher
from sparkfleet.plan.inspect import inspect_plan
from sparkfleet.plan.state import Effect, Pin, ReleaseRelation, execute_plan_effects
from sparkfleet.plan.writes import classify_execute_plan
from sparkfleet.plan.wire import (
    Field,
    as_message,
    as_str,
    encode_string_field,
    iter_fields,
    read_fields,
    read_repeated,
    replace_string_field,
)

log = logging.getLogger(__name__)

_EXEC = RPCS["ExecutePlan"]
_REATTACH = RPCS["ReattachExecute"]
# ExecutePlanRequest
_PLAN, _REQUEST_OPTIONS, _OPERATION_ID = 3, 5, 6
# ExecutePlanResponse
_RESULT_COMPLETE, _CHECKPOINT_RESULT = 14, 19
# Response fields that carry results. The schema and progress reports that come first are the
# same on any cluster: a re-run elsewhere stays invisible to the client until one of these is sent.
_RESULT_FIELDS = frozenset({2, 5, 6, 8, 9, 10, 11, 16, 17, 19, 20, 21, 22, 23, 999})
_COMPLETE_WANTED = frozenset({_RESULT_COMPLETE}) | _RESULT_FIELDS
# AnalyzePlanRequest.persist: cached data lives on the cluster that computes it.
_ANALYZE_PERSIST = 14
# Plans up to this size are assessed on the event loop (a thread hop would cost more than the read).
_ASSESS_INLINE_BYTES = 4096
# Attempts of a unary request whose cluster is lost (each on another cluster).
_UNARY_ATTEMPTS = 3
# ReattachExecuteRequest / ReleaseExecuteRequest
_REATTACH_OP_ID, _RELEASE_OP_ID, _RELEASE_ALL = 3, 3, 5
# InterruptRequest / InterruptResponse
_INTERRUPT_TYPE, _INTERRUPT_TAG, _INTERRUPT_OP_ID, _INTERRUPTED_IDS = 4, 5, 6, 2
_INTERRUPT_OPERATION = 3
# FetchErrorDetailsRequest, CloneSessionResponse, ReleaseSessionRequest
_ERROR_ID, _CLONE_NEW_SESSION_ID, _CLONE_NEW_SERVER_SIDE_ID, _ALLOW_RECONNECT = 3, 3, 4, 4


_CONFIG_OPERATION, _CONFIG_SET, _CONFIG_UNSET = 3, 1, 6


def _changes_config(request: bytes) -> bool:
    """Whether a ConfigRequest sets or unsets (the only operations worth journaling)."""
    operation = read_fields(request, frozenset({_CONFIG_OPERATION})).get(_CONFIG_OPERATION)
    if operation is None:
        return False
    for field in iter_fields(as_message(operation, "operation")):
        return field.number in (_CONFIG_SET, _CONFIG_UNSET)
    return False


def _is_reattachable(request: bytes) -> bool:
    """True if any RequestOption carries reattach_options{reattachable: true}."""
    for option in read_repeated(request, _REQUEST_OPTIONS):
        reattach = read_fields(as_message(option, "request_options"), frozenset({1})).get(1)
        if reattach is not None:
            flag = read_fields(as_message(reattach, "reattach_options"), frozenset({1})).get(1)
            if flag is not None and flag.value:
                return True
    return False


class SparkConnectService:
    def __init__(
        self,
        router: Router,
        artifacts: ArtifactStore | None = None,
        warehouse: Path | None = None,
        assessor: QueryAssessor | None = None,
        versions: WorkloadRuntimes | None = None,
    ) -> None:
        self.r = router
        # Fingerprint, estimate and latency profile of each ExecutePlan, for placement.
        self.assessor = assessor or QueryAssessor()
        self.replay = Replayer(router, artifacts)
        # REFRESH TABLE completed on clusters without a table relation cache (gateway/refresh.py).
        self.refresher = TableRefresher(router)
        # ExecutePlan attempts, re-run elsewhere after a cluster loss when safe; ``warehouse`` is
        # the pool's shared warehouse, when it has one (see fleet/catalog.py).
        self.runner = AttemptRunner(router, self.replay, self._relay, warehouse, versions)
        # Partial releases (release_until): acknowledged at once, the newest forwarded per operation.
        self.releases = ReleaseCoalescer()

    # ---- execution ---------------------------------------------------------------------------

    async def execute_plan(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        routed = await resolve_checked(self.r, _EXEC, request, context, frozenset({_PLAN, _OPERATION_ID}))
        if _PLAN not in routed.fields:
            raise MalformedMessage("ExecutePlan request has no plan")
        shape = inspect_plan(as_message(routed.fields[_PLAN], "plan"))
        operation_id = routed.text(_OPERATION_ID)
        if not operation_id:
            # The client left the id to the server: choose it here so every hop agrees on it.
            operation_id = str(uuid.uuid4())
            request = request + encode_string_field(_OPERATION_ID, operation_id)
        check_operation_id(operation_id)
        session = routed.session
        refuse_unreadable_cached_data(session, "ExecutePlan", request)
        self.r.operations.check_user_limit(session.user_id)  # before the plan is read
        intent = classify_execute_plan(request)
        plan = as_message(routed.fields[_PLAN], "plan")
        if len(plan) > _ASSESS_INLINE_BYTES:
            # Reading a big plan takes ~20 us per message in it: off the event loop, so that other
            # sessions' requests are not held up meanwhile.
            traits = await asyncio.to_thread(self.assessor.assess, session, bytes(plan), intent, shape.label)
        else:
            traits = self.assessor.assess(session, plan, intent, shape.label)
        op = self.r.operations.started(operation_id, session.key, shape.label, intent.description, traits)
        op.request, op.intent = request, intent
        # Commands, and relations Spark runs eagerly (SQL text, spark.catalog calls), may change state.
        op.changes = execute_plan_effects(request)
        clock = self.r.operations.clock
        query_started(session, clock.monotonic())
        try:
            try:
                cluster, reason = await self.runner.place_first(op, session, request, traits)
            except SparkfleetError as error:
                state = "cancelled" if isinstance(error, QueryCancelled) else "failed"
                self.r.operations.finished(op, state, "", error.error_class, error.message)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                self.r.operations.finished(op, "cancelled", "", reason="client disconnected while queued")
                raise
            self.r.operations.placed(op, cluster.id, cluster.runtime.name, reason)
            async for message in self.runner.run(op, routed, cluster, _is_reattachable(request)):
                yield message
        finally:
            query_ended(session, clock.monotonic(), op.response_bytes)

    async def reattach_execute(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        routed = await resolve_checked(self.r, _REATTACH, request, context, frozenset({_REATTACH_OP_ID}))
        operation_id = routed.text(_REATTACH_OP_ID)
        session = routed.session
        owner_id = self.r.operations.owner(session.key, operation_id)
        op = self.r.operations.active(session.key, operation_id)
        owner = self.r.fleet.get(owner_id) if owner_id is not None else None
        if owner is None:
            # Not an operation of this gateway run (it restarted, or the id is unknown). If it
            # cannot have changed anything, the client may simply start it again.
            raise not_found_for_reattach(self.r.operations, session.key, operation_id)
        if owner.state is not ClusterState.READY:
            if op is None:
                raise self.r.lost(owner, f"operation {operation_id}")
            # The cluster died between the client's streams: carry on elsewhere if that is safe.
            lost = self.r.lost(owner, f"operation {operation_id}")
            async for message in self.runner.retry_after_loss(op, routed, lost, attempt=len(op.attempts) + 1):
                yield message
            return
        call = self.r.backends.unary_stream(owner, "ReattachExecute")(
            self.r.to_backend(_REATTACH, request, session, owner),
            metadata=self.r.call_metadata(owner, routed),
        )
        try:
            async for message in self._relay(call, op, routed, owner, reattachable=True):
                yield message
        except ClusterLost as lost:
            if op is None:
                raise
            async for message in self.runner.retry_after_loss(op, routed, lost, attempt=len(op.attempts) + 1):
                yield message
        except BlinkTwice as blink:
            assert op is not None
            async for message in self.runner.blink(op, routed, owner, blink, attempt=len(op.attempts) + 1):
                yield message

    async def _relay(
        self, call, op: Operation | None, routed: Routed, cluster: Cluster, reattachable: bool  # type: ignore[no-untyped-def]
    ) -> AsyncIterator[bytes]:
        """Forward one response stream; settle the operation's record when it is final.

        A lost cluster is raised as ClusterLost with the operation still open: the caller decides
        whether to retry it. Any other failure settles the operation as failed.
        """
        session = routed.session
        wanted = _COMPLETE_WANTED  # includes checkpoint results, whose relation id is remembered
        complete = False
        try:
            async for message in call:
                out, found = self.r.to_client(_EXEC, message, session, cluster, wanted)
                if op is not None:
                    op.response_bytes += len(message)
                    if _CHECKPOINT_RESULT in found:
                        self._remember_checkpoint(session, cluster, found[_CHECKPOINT_RESULT])
                if _RESULT_COMPLETE in found:
                    complete = True
                    # Settle before the client sees the end: its next request may come at once,
                    # possibly on another cluster, and must find the journal up to date.
                    self._succeeded(op, session, cluster)
                    await self.refresher.after_success(op, routed, cluster)
                if op is not None and not _RESULT_FIELDS.isdisjoint(found):
                    op.responses_forwarded += 1
                yield out
            if not complete and not reattachable:
                self._succeeded(op, session, cluster)
                await self.refresher.after_success(op, routed, cluster)
        except grpc.aio.AioRpcError as error:
            surfaced = await self.r.backend_failed(error, cluster, f"operation {op.id if op else '?'}")
            if isinstance(surfaced, ClusterLost):
                raise surfaced from None
            ran_out = out_of_memory_in(error, cluster) if op is not None and not op.cancel_reason else None
            if ran_out is not None:
                raise ran_out from None
            if op is not None and op.cancel_reason:
                cancelled = QueryCancelled(
                    f"operation {op.id} was cancelled by sparkfleet: {op.cancel_reason}. Unset or raise "
                    "the limit (spark.conf.unset / spark.conf.set) to let it run longer."
                )
                self.r.operations.finished(
                    op, "cancelled", cluster.runtime.name, cancelled.error_class, cancelled.message
                )
                raise cancelled from None
            if op is not None:
                self.runner.after_failure(op, cluster, error, surfaced)  # may run it on the previous runtime
                self.r.operations.finished(op, "failed", cluster.runtime.name, error_class_of(surfaced), error.details())
            raise surfaced from None
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: CancelledError if we were awaiting the cluster, GeneratorExit
            # if grpc closed us while parked at `yield`. A reattachable operation lives on until
            # it is released.
            if op is not None and not reattachable:
                self.r.operations.finished(op, "cancelled", cluster.runtime.name, reason="client disconnected")
            raise
        finally:
            call.cancel()

    def _remember_checkpoint(self, session: VirtualSession, cluster: Cluster, result: Field) -> None:
        relation = read_fields(as_message(result, "checkpoint_command_result"), frozenset({1})).get(1)
        if relation is None:
            return
        relation_id = as_str(read_fields(as_message(relation, "relation"), frozenset({1})).get(1))
        if relation_id:
            session.remote_relations[relation_id] = cluster.id

    def _succeeded(self, op: Operation | None, session: VirtualSession, cluster: Cluster) -> None:
        if op is None:
            return
        effects = [c for c in op.changes if isinstance(c, Effect)]
        if effects:
            self.replay.record(session, cluster, effects, "ExecutePlan", op.request)
        for change in op.changes:
            if isinstance(change, Pin) and change.scope == "session":
                session.pins[cluster.id] = change.reason
            elif isinstance(change, ReleaseRelation):
                session.remote_relations.pop(change.relation_id, None)
        op.changes = []
        self.r.operations.finished(op, "succeeded", cluster.runtime.name)
        if self.runner.versions is not None and op.traits is not None:
            self.runner.versions.after_success(op, cluster)

    async def release_execute(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["ReleaseExecute"]
        routed = await resolve_checked(self.r, shape, request, context, frozenset({_RELEASE_OP_ID, _RELEASE_ALL}))
        session = routed.session
        operation_id = routed.text(_RELEASE_OP_ID)
        release_all = _RELEASE_ALL in routed.fields
        owner_id = self.r.operations.owner(session.key, operation_id)
        cluster = self.r.fleet.get(owner_id) if owner_id is not None else None
        if cluster is None or cluster.state is not ClusterState.READY:
            # Nothing is left to release on a lost cluster, and nothing this gateway run knows of
            # on no cluster at all: acknowledge like a server would.
            if release_all and owner_id is not None:
                self.r.operations.forget(session.key, operation_id)
            return release_execute_ack(session.session_id, session.server_side_session_id, operation_id)
        key = (*session.key, operation_id)
        if not release_all:
            # The client sends one of these per response message. Acknowledge at once and forward
            # only the newest position, one at a time: the cluster keeps at most its retry buffer
            # of unreleased responses, so a late release costs nothing but that buffer.
            self.releases.submit(key, lambda: self._unary(shape, request, routed, cluster))
            return release_execute_ack(session.session_id, session.server_side_session_id, operation_id)
        self.releases.discard(key)
        response = await self._unary(shape, request, routed, cluster)
        if release_all:
            op = self.r.operations.active(session.key, operation_id)
            if op is not None:
                self.r.operations.finished(op, "released", cluster.runtime.name, reason="released before completing")
            self.r.operations.forget(session.key, operation_id)
        return response

    # ---- simple session RPCs -----------------------------------------------------------------

    async def _unary(self, shape, request: bytes, routed: Routed, cluster: Cluster) -> bytes:  # type: ignore[no-untyped-def]
        call = self.r.backends.unary_unary(cluster, shape.name)
        try:
            response = await call(
                self.r.to_backend(shape, request, routed.session, cluster),
                metadata=self.r.call_metadata(cluster, routed),
            )
        except grpc.aio.AioRpcError as error:
            raise (await self.r.backend_failed(error, cluster, f"a {shape.name} call")) from None
        return self.r.to_client(shape, response, routed.session, cluster)[0]

    async def _forward_home(self, name: str, request: bytes, routed: Routed) -> bytes:
        """Config, AnalyzePlan, ArtifactStatus: placed like a query; re-sent elsewhere if the
        cluster is lost (none of them has an effect outside the session)."""
        shape = RPCS[name]
        session = routed.session
        for attempt in range(1, _UNARY_ATTEMPTS + 1):
            cluster, _ = await self.r.place(session, request)
            try:
                await self.replay.catch_up(session, cluster, routed.metadata)
                response = await self._unary(shape, request, routed, cluster)
                break
            except ClusterLost as lost:
                if attempt == _UNARY_ATTEMPTS:
                    raise
                log.info("%s of session %s re-sent after: %s", name, session.session_id, lost.message)
        if name == "Config" and _changes_config(request):
            self.replay.record_config(session, cluster, request)
        if _ANALYZE_PERSIST in routed.fields:
            session.pins[cluster.id] = "persisted (cached) DataFrame"
        return response

    async def analyze_plan(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        routed = await resolve_checked(self.r, RPCS["AnalyzePlan"], request, context, frozenset({_ANALYZE_PERSIST}))
        refuse_unreadable_cached_data(routed.session, "AnalyzePlan", request)
        return await self._forward_home("AnalyzePlan", request, routed)

    async def config(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """sparkfleet.* keys are the gateway's (gateway/options.py); the rest go to Spark."""
        routed = await resolve_checked(self.r, RPCS["Config"], request, context)
        session = routed.session
        try:
            split = split_config(request, session.options, session.session_id, session.server_side_session_id)
        except DecodeError:
            raise MalformedMessage("Config request is not a valid ConfigRequest") from None
        if split.untouched:
            return await self._forward_home("Config", request, routed)
        self.r.sessions.persist(session)
        answer = await self._forward_home("Config", split.forward, routed) if split.forward is not None else None
        return split.answer(answer)

    async def artifact_status(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        routed = await resolve_checked(self.r, RPCS["ArtifactStatus"], request, context)
        return await self._forward_home("ArtifactStatus", request, routed)

    async def add_artifacts(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return await add_artifacts(self.r, self.replay, requests, context)

    async def fetch_error_details(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["FetchErrorDetails"]
        routed = await resolve_checked(self.r, shape, request, context, frozenset({_ERROR_ID}))
        error_id = routed.text(_ERROR_ID)
        owner = self.r.operations.error_owner(error_id)
        cluster = await self.r.owner_or_home(routed.session, owner, f"the query that raised error {error_id}")
        return await self._unary(shape, request, routed, cluster)

    # ---- session-wide RPCs -------------------------------------------------------------------

    async def interrupt(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["Interrupt"]
        routed = await resolve_checked(self.r, shape, request, context, frozenset({_INTERRUPT_TYPE, _INTERRUPT_OP_ID}))
        session = routed.session
        kind = routed.fields[_INTERRUPT_TYPE].value if _INTERRUPT_TYPE in routed.fields else 0
        stopped = stop_queued(self.r, session.key, kind, routed.text(_INTERRUPT_OP_ID))
        if routed.fields.get(_INTERRUPT_TYPE) and routed.fields[_INTERRUPT_TYPE].value == _INTERRUPT_OPERATION:
            operation_id = routed.text(_INTERRUPT_OP_ID)
            owner = self.r.fleet.get(self.r.operations.owner(session.key, operation_id) or "")
            # An operation on no live cluster has nothing left to interrupt.
            targets = [owner] if owner is not None and owner.state is ClusterState.READY else []
        else:
            targets = self.r.live_backends(session) or [(await self.r.place(session))[0]]
        responses = await asyncio.gather(*(self._unary(shape, request, routed, c) for c in targets))
        interrupted = stopped + [as_str(f) for response in responses for f in read_repeated(response, _INTERRUPTED_IDS)]
        return (
            encode_string_field(1, session.session_id)
            + b"".join(encode_string_field(_INTERRUPTED_IDS, op_id) for op_id in interrupted)
            + encode_string_field(3, session.server_side_session_id)
        )

    async def get_status(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["GetStatus"]
        routed = await resolve_checked(self.r, shape, request, context)
        session = routed.session
        try:
            parsed = base_pb2.GetStatusRequest.FromString(request)
        except DecodeError:
            raise MalformedMessage("GetStatus request is not a valid GetStatusRequest") from None
        wanted_ids = list(parsed.operation_status.operation_ids)
        requests: dict[str, tuple[Cluster, bytes]] = {}
        queued = []
        # Read once: a request may name any number of operations (ids it made up, too).
        positions = {query_id: (n, reason) for query_id, n, reason in self.r.admission.waiting()}
        if wanted_ids:
            by_cluster: dict[str, list[str]] = {}
            clusters: dict[str, Cluster] = {}
            home: Cluster | None = None  # where operations unknown here are asked about
            for op_id in wanted_ids:
                waiting = positions.get(op_id)
                if waiting is not None and self.r.operations.active(session.key, op_id) is not None:
                    queued.append(queued_status(op_id, *waiting))
                    continue
                owner = self.r.operations.owner(session.key, op_id)
                try:
                    if owner is None and home is not None:
                        cluster = home
                    else:
                        cluster = await self.r.owner_or_home(session, owner, f"operation {op_id}")
                        home = cluster if owner is None else home
                except ClusterLost:
                    continue  # its status is unknown now; the client sees it absent
                clusters[cluster.id] = cluster
                by_cluster.setdefault(cluster.id, []).append(op_id)
            for cluster_id, ids in by_cluster.items():
                part = base_pb2.GetStatusRequest()
                part.CopyFrom(parsed)
                del part.operation_status.operation_ids[:]
                part.operation_status.operation_ids.extend(ids)
                requests[cluster_id] = (clusters[cluster_id], part.SerializeToString())
        else:
            for cluster in self.r.live_backends(session) or [(await self.r.place(session))[0]]:
                requests[cluster.id] = (cluster, request)
            for op in self.r.operations.running():
                waiting = positions.get(op.id)
                if op.session_key == session.key and waiting is not None:
                    queued.append(queued_status(op.id, *waiting))
        merged = base_pb2.GetStatusResponse(
            session_id=session.session_id, server_side_session_id=session.server_side_session_id
        )
        answers = await asyncio.gather(*(self._unary(shape, body, routed, c) for c, body in requests.values()))
        merged.operation_statuses.extend(queued)
        for answer in answers:
            part = base_pb2.GetStatusResponse.FromString(answer)
            merged.operation_statuses.extend(part.operation_statuses)
            if not merged.extensions:
                merged.extensions.extend(part.extensions)
        return merged.SerializeToString()

    async def release_session(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["ReleaseSession"]
        routed = await resolve_checked(self.r, shape, request, context, frozenset({_ALLOW_RECONNECT}))
        session = routed.session
        targets = self.r.live_backends(session)
        results = await asyncio.gather(
            *(self._unary(shape, request, routed, c) for c in targets), return_exceptions=True
        )
        for cluster in targets:
            cluster.sessions.discard(session.session_id)
        self.r.sessions.close(session, forget=bool(routed.fields.get(_ALLOW_RECONNECT)))
        failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ClusterLost)]
        if failures:
            raise failures[0]
        return encode_string_field(1, session.session_id) + encode_string_field(2, session.server_side_session_id)

    async def clone_session(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        shape = RPCS["CloneSession"]
        routed = await resolve_checked(self.r, shape, request, context)
        session = routed.session
        cluster, _ = await self.r.place(session)
        await self.replay.catch_up(session, cluster, routed.metadata)
        response = await self._unary(shape, request, routed, cluster)
        fields = read_fields(response, frozenset({_CLONE_NEW_SESSION_ID, _CLONE_NEW_SERVER_SIDE_ID}))
        clone = self.r.sessions.adopt_clone(
            session,
            as_str(fields.get(_CLONE_NEW_SESSION_ID)),
            cluster.id,
            as_str(fields.get(_CLONE_NEW_SERVER_SIDE_ID)),
        )
        cluster.sessions.add(clone.session_id)
        return replace_string_field(response, _CLONE_NEW_SERVER_SIDE_ID, clone.server_side_session_id)
