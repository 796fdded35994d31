"""Bringing a cluster's copy of a session up to date, and journaling what changed it.

Before a session's request reaches a cluster, the journal entries that cluster has not applied
are re-sent to it, in order, once (a lock per session and cluster). After a state-changing
request succeeds, its effects are journaled and the executing cluster's cursor moves past them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import AsyncIterator

import grpc
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import ReplayFailed, SparkfleetError, StoreError
from sparkfleet.fleet.controller import Cluster
from sparkfleet.gateway.artifacts import ArtifactStore, StoredUpload, artifact_key
from sparkfleet.gateway.forwarding import Metadata
from sparkfleet.gateway.journal import Entry, ReplayCursor, advance, entries_to_replay
from sparkfleet.gateway.routing import RPCS, Router
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.state import Effect
from sparkfleet.plan.wire import replace_string_field

log = logging.getLogger(__name__)

_SESSION_ID = 1
_EXECUTE_OPERATION_ID = 6


class Replayer:
    def __init__(self, router: Router, artifacts: ArtifactStore | None = None) -> None:
        self.r = router
        # Where AddArtifacts entries keep their bytes; without it uploads are not journaled.
        self.artifacts = artifacts

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
        if entry.rpc == "AddArtifacts":
            await self._replay_artifacts(entry, session, cluster, metadata)
            return
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

    async def _replay_artifacts(
        self, entry: Entry, session: VirtualSession, cluster: Cluster, metadata: Metadata
    ) -> None:
        """Stream a stored AddArtifacts upload to ``cluster`` as this session, one message at a time."""
        shape = RPCS["AddArtifacts"]

        def failed(why: str) -> ReplayFailed:
            return ReplayFailed(
                f"could not bring session {session.session_id} up to date on {cluster.describe()}: "
                f"replaying journal entry {entry.seq} ({entry.key}) failed: {why}"
            )

        if self.artifacts is None:
            raise failed("this gateway keeps no artifact files")
        try:
            messages = self.artifacts.read(session.user_id, session.session_id, StoredUpload.decode(entry.payload))
        except StoreError as error:
            if session.journal is not None and entry not in session.journal.entries:
                return  # superseded (and its file deleted) while waiting for the replay lock
            raise failed(f"{error.message}. Add the artifacts to the session again.") from None
        damaged: list[StoreError] = []

        async def requests() -> AsyncIterator[bytes]:
            # An exception here would only cancel the call: end the stream and report afterwards.
            with messages:
                try:
                    for message in messages:
                        # Copied entries (CloneSession) name their source session: send as this one.
                        message = replace_string_field(message, _SESSION_ID, session.session_id)
                        yield self.r.to_backend(shape, message, session, cluster)
                except StoreError as error:
                    damaged.append(error)

        try:
            response = await self.r.backends.stream_unary(cluster, "AddArtifacts")(
                requests(), metadata=self.r.backends.metadata(cluster, metadata)
            )
        except grpc.aio.AioRpcError as error:
            if damaged:
                raise failed(damaged[0].message) from None
            surfaced = await self.r.backend_failed(error, cluster, f"the replay of {entry.key}")
            if isinstance(surfaced, SparkfleetError):
                raise surfaced from None
            raise failed(f"{error.code().name}: {error.details()}") from None
        finally:
            messages.close()
        if damaged:
            raise failed(f"{damaged[0].message}. Add the artifacts to the session again.")
        self.r.to_client(shape, response, session, cluster)

    def record_artifacts(self, session: VirtualSession, cluster: Cluster, stored: StoredUpload) -> None:
        """Journal an upload ``cluster`` accepted; an earlier upload of the same names is superseded
        and its file deleted."""
        assert self.artifacts is not None
        journal = session.journal
        if journal is None or session.closed:
            self.artifacts.delete(session.user_id, session.session_id, stored)
            return
        key = artifact_key(stored.names)
        session.unreadable_cached_data = None  # read again from the journal when next needed
        earlier = [e for e in journal.entries if e.rpc == "AddArtifacts" and e.key == key]
        self.record(session, cluster, [Effect(key)], "AddArtifacts", stored.encode())
        for entry in earlier:
            if entry in journal.entries:
                continue
            try:
                self.artifacts.delete(session.user_id, session.session_id, StoredUpload.decode(entry.payload))
            except StoreError as error:
                log.warning("could not delete the file of superseded journal entry %s: %s", entry.key, error)

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
