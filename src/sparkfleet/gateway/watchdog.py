"""The watchdog's shell: every second, ask ``policy/watchdog.py`` about running queries and act.

Reclassify: the workload's future runs are batch (``QueryAssessor.reclassified``), and the
query's record says why. Cancel: the query is interrupted on its cluster, and the client gets
``SPARKFLEET.QUERY_CANCELLED`` naming the limit instead of Spark's cancellation error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import grpc
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.gateway.assessment import QueryAssessor
from sparkfleet.gateway.operations import Operation
from sparkfleet.gateway.routing import RPCS, Router
from sparkfleet.policy.watchdog import (
    MAX_DURATION_CONF,
    Cancel,
    Reclassify,
    WatchdogSettings,
    WatchedQuery,
    check_running,
    parse_duration_s,
)

log = logging.getLogger(__name__)

_INTERRUPT_TIMEOUT_S = 10.0


class Watchdog:
    def __init__(
        self,
        router: Router,
        assessor: QueryAssessor,
        settings: WatchdogSettings,
        interval_s: float = 1.0,
        on_action: Callable[[str], None] | None = None,
    ) -> None:
        self._r = router
        self._on_action = on_action or (lambda action: None)
        self._assessor = assessor
        self._settings = settings
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sparkfleet-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # the watchdog must outlive any one bad decision
                log.exception("watchdog check failed")

    def _watched(self, op: Operation) -> WatchedQuery | None:
        traits = op.traits
        if traits is None or op.started_mono is None:
            return None  # still queued: the queue has its own limits
        cluster = self._r.fleet.get(op.cluster_id)
        session = self._r.sessions.find(*op.session_key)
        max_duration = None
        if session is not None and MAX_DURATION_CONF in session.options:
            try:
                max_duration = parse_duration_s(session.options[MAX_DURATION_CONF])
            except ValueError:
                max_duration = None  # validated when set; a stored value from elsewhere is ignored
        expected = None
        if traits.estimate is not None and cluster is not None:
            expected = traits.estimate.core_seconds / cluster.size.cores
        return WatchedQuery(
            op.id, traits.fingerprint, traits.profile, op.started_mono, expected, max_duration,
            op.reclassified or traits.fingerprint in self._assessor.reclassified, bool(op.cancel_reason),
        )

    async def check(self) -> None:
        by_id = {}
        watched = []
        for op in self._r.operations.running():
            query = self._watched(op)
            if query is not None:
                by_id[op.id] = op
                watched.append(query)
        for decision in check_running(watched, self._r.operations.clock.monotonic(), self._settings):
            op = by_id[decision.query_id]
            self._on_action("reclassify" if isinstance(decision, Reclassify) else "cancel")
            if isinstance(decision, Reclassify):
                op.reclassified = True
                self._assessor.reclassified.add(decision.fingerprint)
                log.info("watchdog: operation %s: %s", op.id, decision.reason)
                op.placement_reason = f"{op.placement_reason}; watchdog: {decision.reason}"
                self._r.operations.note(op, {"placement_reason": op.placement_reason})
            elif isinstance(decision, Cancel):
                op.cancel_reason = decision.reason
                log.info("watchdog: cancelling operation %s: %s", op.id, decision.reason)
                await self._interrupt(op)

    async def _interrupt(self, op: Operation) -> None:
        cluster = self._r.fleet.get(op.cluster_id)
        session = self._r.sessions.find(*op.session_key)
        if cluster is None or session is None:
            return
        request = base_pb2.InterruptRequest(
            session_id=session.session_id,
            interrupt_type=base_pb2.InterruptRequest.INTERRUPT_TYPE_OPERATION_ID,
            operation_id=op.id,
        )
        request.user_context.user_id = session.user_id
        body = self._r.to_backend(RPCS["Interrupt"], request.SerializeToString(), session, cluster)
        try:
            await self._r.backends.unary_unary(cluster, "Interrupt")(
                body, metadata=self._r.backends.metadata(cluster, ()), timeout=_INTERRUPT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            log.warning("watchdog could not interrupt operation %s on %s: %s", op.id, cluster.id, error.details())
