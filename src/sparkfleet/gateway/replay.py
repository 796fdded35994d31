"""Bringing a cluster's copy of a session up to date, and journaling what changed it.

Before a session's request reaches a cluster, the journal entries that cluster has not applied
are re-sent to it, in order, once (a lock per session and cluster). After a state-changing
request succeeds, its effects are journaled and the executing cluster's cursor moves past them.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import ReplayFailed, SparkfleetError
from sparkfleet.fleet.controller import Cluster
from sparkfleet.gateway.forwarding import Metadata
from sparkfleet.gateway.journal import Entry, ReplayCursor, advance, entries_to_replay
from sparkfleet.gateway.routing import RPCS, Router
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.state import Effect
from sparkfleet.plan.wire import replace_string_field

_SESSION_ID = 1
_EXECUTE_OPERATION_ID = 6


class Replayer:
    def __init__(self, router: Router) -> None:
        self.r = router

    def cursor(self, session: VirtualSession, cluster: Cluster) -> ReplayCursor:
        return session.cursors.setdefault(cluster.id, ReplayCursor())

    async def catch_up(self, session: VirtualSession, cluster: Cluster, metadata: Metadata) -> None:
        """Replay what ``cluster`` is missing of ``session``'s journal."""
        journal = session.journal
        if journal is None or not journal.entries:
            return
        cursor = self.cursor(session, cluster)
        if cursor.seq >= journal.last_seq:
            return
        lock = session.replay_locks.setdefault(cluster.id, asyncio.Lock())
        async with lock:
            for entry in entries_to_replay(journal.entries, cursor):
                await self._replay(entry, session, cluster, metadata)
                advance(cursor, [entry])

    async def _replay(self, entry: Entry, session: VirtualSession, cluster: Cluster, metadata: Metadata) -> None:
        shape = RPCS[entry.rpc]
        # Entries copied from another session (CloneSession) name that session: replay as this one.
        payload = replace_string_field(entry.payload, _SESSION_ID, session.session_id)
        if entry.rpc == "ExecutePlan":
            payload = replace_string_field(payload, _EXECUTE_OPERATION_ID, str(uuid.uuid4()))
        request = self.r.to_backend(shape, payload, session, cluster)
        call_metadata = self.r.backends.metadata(cluster, metadata)
        try:
            if entry.rpc == "ExecutePlan":
                async for message in self.r.backends.unary_stream(cluster, "ExecutePlan")(
                    request, metadata=call_metadata
                ):
                    self.r.to_client(shape, message, session, cluster)
            else:
                response = await self.r.backends.unary_unary(cluster, entry.rpc)(request, metadata=call_metadata)
                self.r.to_client(shape, response, session, cluster)
        except grpc.aio.AioRpcError as error:
            surfaced = await self.r.backend_failed(error, cluster, f"the replay of {entry.key}")
            if isinstance(surfaced, SparkfleetError):
                raise surfaced from None
            raise ReplayFailed(
                f"could not bring session {session.session_id} up to date on {cluster.describe()}: "
                f"replaying journal entry {entry.seq} ({entry.key}) failed with "
                f"{error.code().name}: {error.details()}"
            ) from None

    def record(self, session: VirtualSession, cluster: Cluster, effects: list[Effect], rpc: str, payload: bytes) -> None:
        """Journal effects that just succeeded on ``cluster``; it holds them without replay."""
        journal = session.journal
        if journal is None:
            return
        cursor = self.cursor(session, cluster)
        for effect in effects:
            up_to_date = cursor.seq == journal.last_seq
            entry = journal.record(effect, rpc, payload)
            if up_to_date:
                advance(cursor, [entry])

    def record_config(self, session: VirtualSession, cluster: Cluster, request: bytes) -> None:
        """Journal a successful Config set/unset, one entry per key (so keys compact apart)."""
        parsed = base_pb2.ConfigRequest.FromString(request)
        op = parsed.operation.WhichOneof("op_type")
        if op not in ("set", "unset"):
            return
        base = base_pb2.ConfigRequest(session_id=parsed.session_id, client_type=parsed.client_type)
        base.user_context.CopyFrom(parsed.user_context)
        if op == "set":
            for pair in parsed.operation.set.pairs:
                one = base_pb2.ConfigRequest()
                one.CopyFrom(base)
                one.operation.set.pairs.add().CopyFrom(pair)
                one.operation.set.silent = parsed.operation.set.silent
                self.record(session, cluster, [Effect(f"conf:{pair.key}")], "Config", one.SerializeToString())
        else:
            for key in parsed.operation.unset.keys:
                one = base_pb2.ConfigRequest()
                one.CopyFrom(base)
                one.operation.unset.keys.append(key)
                self.record(session, cluster, [Effect(f"conf:{key}", removes=True)], "Config", one.SerializeToString())
