"""Runs an ExecutePlan and, if its cluster is lost (or it ran its cluster out of memory), runs it
again elsewhere when that is safe.

This is the imperative shell around ``policy/recovery.py``, which only decides, from plain facts and
without I/O, whether a query whose cluster was lost may run again. Here the gateway gathers those
facts (whether the request reached the cluster, how many result messages the client already holds,
which attempt this was, and whether a write's target exists yet, probed on disk or through a
healthy cluster's catalog) and carries the decision out: the failed attempt is recorded and the
same request is placed, caught up and run again *in the same client stream*, or the loss reaches
the client as ``ClusterLost`` saying why the query was not retried.

With runtimes side by side (``gateway/versions.py``), it also places each new ExecutePlan on a
cluster of its workload's runtime, and runs one that failed there with an error that may be the
runtime's again on the runtime before it ("blink twice"), when a second run cannot duplicate
anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import grpc

from sparkfleet.errors import ClusterLost, InvalidHandle, RanOutOfMemory, SparkfleetError
from sparkfleet.fleet.controller import Cluster
from sparkfleet.fleet.model import ALIVE
from sparkfleet.gateway.assessment import current_database
from sparkfleet.gateway.operations import Operation, OperationRegistry
from sparkfleet.gateway.replay import Replayer
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.gateway.routing import RPCS, Routed, Router, error_class_of
from sparkfleet.gateway.status import error_info_of
from sparkfleet.gateway.targets import (
    clear_uncommitted_location,
    local_path_exists,
    managed_table_location,
    table_exists,
)
from sparkfleet.gateway.versions import BlinkTwice, FailedRun, WorkloadRuntimes
from sparkfleet.policy.oom import explained_by_log, oom_culprit_sessions, oom_in_error, oom_in_exit
from sparkfleet.policy.recovery import FailureFacts, Retry, decide_retry
from sparkfleet.policy.versions import blink_refusal

log = logging.getLogger(__name__)

_EXEC = RPCS["ExecutePlan"]
# How much of a lost cluster's log is read for who ran it out of memory: the OOM and the stage's
# call site are written within seconds of each other, but plans in the log can be long.
_OOM_LOG_BYTES = 1_000_000

# Forwards one ExecutePlan response stream (call, operation, routed request, its cluster, whether
# the stream is reattachable) and settles the operation when it is final. A lost cluster must be
# raised as ClusterLost with the operation still open, so that the runner can decide on a retry.
RelayStream = Callable[[Any, Operation, Routed, Cluster, bool], AsyncIterator[bytes]]


class AttemptRunner:
    """Runs ExecutePlan operations attempt by attempt, re-running one after a cluster loss when safe."""

    def __init__(self, router: Router, replay: Replayer, relay: RelayStream, warehouse: Path | None = None,
                 versions: WorkloadRuntimes | None = None) -> None:
        self.r = router
        self.replay = replay
        self._relay = relay
        # Runtimes side by side (gateway/versions.py): a suspect failure runs again on the
        # previous runtime; None when there is nothing to choose between.
        self.versions = versions
        # The pool's shared warehouse, when it has one (see fleet/catalog.py): a failed write's
        # uncommitted output is cleared from a managed table's location there before a re-run.
        self.warehouse = warehouse

    async def place_first(self, op: Operation, session: VirtualSession, request: bytes, traits) -> tuple[Cluster, str]:  # type: ignore[no-untyped-def]
        """Place a new ExecutePlan on a cluster of its workload's runtime (gateway/versions.py)."""
        versions = self.versions
        assignment = None
        if versions is not None and traits is not None and versions.serving() > 1:
            # A fixed fleet runs only the runtimes of its clusters; an autoscaled one starts any.
            available = None if self.r.fleet.autoscaled else frozenset(
                c.runtime.name for c in self.r.fleet.clusters() if c.state in ALIVE)
            is_read = op.intent is not None and op.intent.kind == "read"
            assignment = versions.assign(traits.fingerprint, available, is_read)
        if assignment is None:
            return await self.r.place(session, request, traits=traits, query_id=op.id)
        op.blink_to, op.probing = assignment.fallback, assignment.probe
        cluster, reason = await self.r.place(session, request, traits=traits, query_id=op.id,
                                             runtime=assignment.runtime)
        return cluster, f"{reason}; runtime: {assignment.reason}"

    async def run(
        self, op: Operation, routed: Routed, cluster: Cluster, reattachable: bool, attempt: int = 1
    ) -> AsyncIterator[bytes]:
        """Run the operation on ``cluster`` as its ``attempt``-th attempt; if the cluster is lost,
        retry elsewhere when safe."""
        try:
            await self.replay.catch_up(routed.session, cluster, routed.metadata)
            call = self.r.backends.unary_stream(cluster, "ExecutePlan")(
                self.r.to_backend(_EXEC, op.request, routed.session, cluster),
                metadata=self.r.call_metadata(cluster, routed),
            )
        except ClusterLost as lost:
            lost.reached_cluster = False  # it died while catching up: the query was never sent
            failure: ClusterLost | None = lost
        except SparkfleetError as error:  # the session could not be brought up to date there
            self.r.operations.finished(op, "failed", cluster.runtime.name, error.error_class, str(error))
            raise
        else:
            failure = None
        if failure is None:
            try:
                async for message in self._relay(call, op, routed, cluster, reattachable):
                    yield message
                return
            except ClusterLost as lost:
                failure = lost
            except BlinkTwice as blink:
                async for message in self.blink(op, routed, cluster, blink, attempt):
                    yield message
                return
        async for message in self.retry_after_loss(op, routed, failure, attempt):
            yield message

    def after_failure(self, op: Operation, cluster: Cluster, error: grpc.aio.AioRpcError, surfaced: Any) -> None:
        """A run on ``cluster`` failed with a Spark error: raise BlinkTwice when it may be the
        runtime's fault and may run on the previous runtime; after a blink that failed too, settle
        the operation and raise the first run's error (the workload's own). Else return."""
        if self.versions is None or op.traits is None:
            return
        error_class = error_class_of(surfaced) or ""
        message = error.details() or ""
        if op.blinked is not None:
            failed = op.blinked
            reason = self.versions.blink_failed(op.traits.fingerprint, failed, cluster.runtime.name)
            self.r.operations.finished(op, "failed", cluster.runtime.name, failed.error_class, failed.message,
                                       reason=reason, attempt_error_class=error_class)
            raise failed.error
        if not op.blink_to or not self.versions.suspect(error_class, error.code().name):
            return
        intent = op.intent
        refusal = blink_refusal(intent.kind, intent.idempotent, op.responses_forwarded) if intent is not None else "unknown"
        if refusal is not None:
            log.info("operation %s failed on %s; not run on %s: %s", op.id, cluster.runtime.name, op.blink_to, refusal)
            return
        now = self.r.operations.clock.monotonic()
        seconds = now - op.started_mono if op.started_mono is not None else 0.0
        raise BlinkTwice(FailedRun(cluster.runtime.name, error_class, message, seconds, op.id, surfaced), op.blink_to)

    async def blink(self, op: Operation, routed: Routed, cluster: Cluster, blink: BlinkTwice,
                     attempt: int) -> AsyncIterator[bytes]:
        """Run the operation again on the previous runtime ("blink twice")."""
        op.blink_to, op.blinked = "", blink.failed
        reason = (f"failed on runtime {blink.failed.runtime} with {blink.failed.error_class or 'an error'}: "
                  f"run again on {blink.to}, the runtime before it")
        self.r.operations.attempt_failed(op, cluster.runtime.name, "failed", blink.failed.error_class, reason)
        log.info("operation %s: %s", op.id, reason)
        self.r.release(cluster.id, op.id)
        try:
            next_cluster, placed = await self.r.place(routed.session, op.request, frozenset(), op.traits, op.id,
                                                      runtime=blink.to)
        except SparkfleetError as error:
            self.r.operations.finished(op, "failed", blink.failed.runtime, blink.failed.error_class,
                                       f"{blink.failed.message} (not run on {blink.to}: {error})")
            raise blink.failed.error from None
        self.r.operations.placed(op, next_cluster.id, next_cluster.runtime.name, placed)
        async for message in self.run(op, routed, next_cluster, reattachable=True, attempt=attempt + 1):
            yield message

    async def retry_after_loss(
        self, op: Operation, routed: Routed, lost: ClusterLost, attempt: int
    ) -> AsyncIterator[bytes]:
        """Re-run ``op`` on another cluster if ``policy/recovery.py`` allows it after ``lost``.

        ``attempt`` counts the attempt that was lost. When the query is not re-run, its record is
        settled as failed and ClusterLost is raised with the reason.
        """
        cluster = self.r.fleet.get(lost.cluster_id)
        runtime = cluster.runtime.name if cluster is not None else ""
        # The fleet may not know yet that the cluster died: never place this query back on it.
        avoid = frozenset({lost.cluster_id})
        try:
            target_exists = await self._target_exists(op, routed, avoid)
        except SparkfleetError as error:  # e.g. no cluster left to ask: the query ends here
            self.r.operations.finished(op, "failed", runtime, lost.error_class, f"{lost.message} {error}")
            raise
        culprit = (lost.evidence if isinstance(lost, RanOutOfMemory)
                   else out_of_memory_evidence(cluster, routed.session.session_id))
        lost_memory_mb = cluster.size.memory_mb if cluster is not None else 0
        # The next size up, unless there is none or the tenant may not use it (size_quota says why).
        larger, size_quota = (self.r.larger_size_for(routed.session, lost_memory_mb) if culprit and cluster is not None
                              else (None, ""))
        decision = decide_retry(
            op.intent,
            FailureFacts(
                cluster_id=lost.cluster_id,
                sent=lost.reached_cluster,
                responses_forwarded=op.responses_forwarded,
                attempts=attempt,
                target_exists=target_exists,
                caused_out_of_memory=culprit,
                lost_size=cluster.size.name if cluster is not None else "",
                lost_memory_mb=lost_memory_mb,
                larger_size=larger.name if larger is not None else "",
                size_quota=size_quota,
            ),
        )
        if not isinstance(decision, Retry):
            self.r.operations.finished(op, "failed", runtime, lost.error_class, lost.message, reason=decision.reason)
            message = f"{lost.message} The query was {decision.reason}."
            if isinstance(lost, RanOutOfMemory):
                raise RanOutOfMemory(message, lost.cluster_id, lost.evidence) from None
            raise ClusterLost(message, lost.cluster_id) from None
        outcome = "out of memory" if culprit else "cluster lost"
        self.r.operations.attempt_failed(op, runtime, outcome, lost.error_class, decision.reason)
        log.info("operation %s: %s", op.id, decision.reason)
        if cluster is not None:
            self.r.release(cluster.id, op.id)
        try:
            next_cluster, reason = await self.r.place(routed.session, op.request, avoid, op.traits, op.id,
                                                      min_memory_mb=decision.min_memory_mb)
        except SparkfleetError as error:
            self.r.operations.finished(op, "failed", runtime, lost.error_class, f"{lost.message} {error}")
            raise
        self.r.operations.placed(op, next_cluster.id, next_cluster.runtime.name, reason)
        async for message in self.run(op, routed, next_cluster, reattachable=True, attempt=attempt + 1):
            yield message

    async def _target_exists(self, op: Operation, routed: Routed, avoid: frozenset[str]) -> bool | None:
        """Whether the target a write must find absent exists now; None if unknown or there is none."""
        intent = op.intent
        if intent.needs_absent_target and intent.target_kind == "path":
            return local_path_exists(intent.target)
        if not (intent.needs_absent_target and intent.target_kind == "table" and intent.target):
            return None
        # The lost cluster can no longer commit (its JVM is gone): ask a healthy one.
        healthy, _ = await self.r.place(routed.session, op.request, avoid)
        try:
            await self.replay.catch_up(routed.session, healthy, routed.metadata)
            exists = await table_exists(self.r, routed.session, healthy, routed.metadata, intent.target)
        except SparkfleetError:
            return None
        if exists is False and self.warehouse is not None:
            # Not in the catalog, but the failed attempt may have left files at the table's
            # location, which would make the re-run fail: only uncommitted output is removed.
            location = managed_table_location(self.warehouse, intent.target, current_database(routed.session))
            if location is None or not clear_uncommitted_location(location):
                return None
        return exists


def out_of_memory_evidence(cluster: Cluster | None, session_id: str) -> str:
    """Why ``session_id``'s query is the one that ran ``cluster`` out of memory, or "" if it is not.

    The cluster's log names the session whose stage's task ran out (``policy/oom.py``); every
    other session's query lost with the cluster is a victim and retries as usual."""
    handle = cluster.handle if cluster is not None else None
    if handle is None:
        return ""
    tail = handle.log_tail(_OOM_LOG_BYTES)
    if session_id not in oom_culprit_sessions(tail):
        return ""
    exited = oom_in_exit(handle.process.returncode, tail)
    return exited.detail if exited is not None else "its log shows this query's task running out of heap"


def out_of_memory_in(error: grpc.aio.AioRpcError, cluster: Cluster) -> RanOutOfMemory | None:
    """The query's error says it ran ``cluster`` out of memory (the driver's heap, Spark's memory
    manager, a task's OutOfMemoryError in a job abort, a broadcast or a task result too big for the
    driver): recover it as such, or None."""
    info = error_info_of(tuple(error.trailing_metadata() or ()))
    # The exception classes Spark lists in the trailer may name SparkOutOfMemoryError where the
    # message alone does not.
    classes = info.metadata.get("classes", "") if info is not None else ""
    message = f"{error.details() or ''} {classes}"
    handle = cluster.handle
    log = handle.log_tail(_OOM_LOG_BYTES) if handle is not None and explained_by_log(message) else ""
    evidence = oom_in_error(error_class_of(error), message, log)
    if evidence is None:
        return None
    return RanOutOfMemory(error.details() or "", cluster.id, f"{evidence.where}: {evidence.detail}")


def not_found_for_reattach(
    operations: OperationRegistry, session_key: tuple[str, str], operation_id: str
) -> SparkfleetError:
    """The answer to a ReattachExecute for an operation this gateway run does not know.

    OPERATION_NOT_FOUND makes the stock client re-send its ExecutePlan, which is right for a read;
    a write or command the stored record says was running (before a gateway restart) may have
    committed, so it surfaces as a loss instead. Only the session's own records count: another
    session's operation is as unknown to it as one that never existed.
    """
    past = operations.past_query(operation_id)
    if past is not None and (past["user_id"], past["session_id"]) != session_key:
        past = None
    if past is not None and past["state"] not in ("succeeded", "failed", "cancelled", "released"):
        intent = past.get("intent") or ""
        if intent and intent != "read" and not intent.startswith("session state"):
            return ClusterLost(
                f"operation {operation_id} ({intent}) was running when the gateway restarted; "
                "it was not re-run because it may have committed. Check its target before "
                "running it again.",
                past.get("cluster_id") or "",
            )
    return InvalidHandle(
        f"The handle {operation_id} is invalid. Operation not found.", "INVALID_HANDLE.OPERATION_NOT_FOUND"
    )
