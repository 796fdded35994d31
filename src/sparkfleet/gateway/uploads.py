"""AddArtifacts: one upload stream checked message by message, forwarded to a cluster and teed to disk.

Each message is checked before it goes anywhere: well formed, artifact names Spark can store
safely (``request_checks.check_artifact_name``), and the bytes of the upload and of the session's
stored uploads within their limits. The first problem stops the upload: the cluster's half of the
call is cancelled, the copy on disk dropped, and the client hears what was wrong. Memory holds one
message at a time; the upload itself goes to disk (``gateway/artifacts.py``). ``cache/`` data is
judged as Arrow on the way (``gateway/local_data.py``), its verdict kept with the upload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

import grpc

from sparkfleet.errors import MalformedMessage, QuotaExceeded, SparkfleetError
from sparkfleet.gateway.artifacts import DEFAULT_MAX_SESSION_BYTES, DEFAULT_MAX_UPLOAD_BYTES, stored_uploads
from sparkfleet.gateway.local_data import CachedDataCheck
from sparkfleet.gateway.request_checks import check_artifact_name, check_request, resolve_checked, shown
from sparkfleet.gateway.routing import RPCS
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.wire import as_int, as_message, as_str, read_fields, read_repeated

if TYPE_CHECKING:
    from sparkfleet.gateway.replay import Replayer
    from sparkfleet.gateway.routing import Router

_SHAPE = RPCS["AddArtifacts"]
# AddArtifactsRequest: batch{artifacts{name}}, begin_chunk{name, total_bytes}
_BATCH, _BEGIN_CHUNK, _BATCH_ARTIFACTS, _NAME, _TOTAL_BYTES = 3, 4, 1, 1, 2


class UploadGuard:
    """The checks of one AddArtifacts stream; ``check`` raises at the first message that fails one."""

    def __init__(self, session: VirtualSession, max_upload_bytes: int, max_session_bytes: int) -> None:
        self._max_upload = max_upload_bytes
        self._max_session = max_session_bytes
        entries = session.journal.entries if session.journal is not None else []
        self._stored = sum(upload.size for upload in stored_uploads(entries))
        self.received = 0
        self.cached_data = CachedDataCheck()  # which cache/ artifacts Spark could read

    def check(self, request: bytes, whole: bool = True) -> None:
        """``whole``: also check the message as Spark's parser would (the first one already was)."""
        if whole:
            check_request("AddArtifacts", request)
        fields = read_fields(request, frozenset({_BATCH, _BEGIN_CHUNK}))
        if _BEGIN_CHUNK in fields:
            begin = read_fields(as_message(fields[_BEGIN_CHUNK], "begin_chunk"), frozenset({_NAME, _TOTAL_BYTES}))
            name = as_str(begin.get(_NAME))
            check_artifact_name(name)
            declared = as_int(begin.get(_TOTAL_BYTES))
            if declared > self._max_upload:
                raise self._too_big(f"artifact {shown(name)} declares {declared:,} bytes")
        if _BATCH in fields:
            for artifact in read_repeated(as_message(fields[_BATCH], "batch"), _BATCH_ARTIFACTS):
                check_artifact_name(as_str(read_fields(as_message(artifact, "artifacts"), frozenset({_NAME})).get(_NAME)))
        self.received += len(request)
        if self.received > self._max_upload:
            raise self._too_big(f"this upload sent more than {self._max_upload:,} bytes")
        if self._stored + self.received > self._max_session:
            raise QuotaExceeded(
                f"the session's artifacts would take more than {self._max_session:,} bytes "
                f"({self._stored:,} already stored); the limit is gateway.max_artifact_session_bytes. "
                "Release the session (spark.stop()) and start a new one, or ask for a higher limit",
                "gateway.max_artifact_session_bytes",
            )
        self.cached_data.feed(request)

    def _too_big(self, what: str) -> QuotaExceeded:
        return QuotaExceeded(
            f"{what}; one AddArtifacts upload may carry at most {self._max_upload:,} bytes "
            "(gateway.max_artifact_upload_bytes)",
            "gateway.max_artifact_upload_bytes",
        )


async def add_artifacts(
    router: "Router", replay: "Replayer", requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> bytes:
    """Forward an upload to one cluster while teeing it to disk; once the cluster has accepted
    it, journal it, so the session's other clusters receive it before its next request there."""
    try:
        first = await requests.__anext__()
    except StopAsyncIteration:
        raise MalformedMessage("AddArtifacts stream carried no request") from None
    routed = await resolve_checked(router, _SHAPE, first, context)
    session = routed.session
    store = replay.artifacts
    guard = UploadGuard(
        session,
        store.max_upload_bytes if store is not None else DEFAULT_MAX_UPLOAD_BYTES,
        store.max_session_bytes if store is not None else DEFAULT_MAX_SESSION_BYTES,
    )
    guard.check(first, whole=False)
    cluster, _ = await router.place(session)
    await replay.catch_up(session, cluster, routed.metadata)
    upload = store.begin(session.user_id, session.session_id) if store is not None else None
    refused: list[SparkfleetError] = []

    async def outgoing() -> AsyncIterator[bytes]:
        # Never raise in here: grpc would cancel the call and the client would hear nothing.
        request = first
        while True:
            try:
                if request is not first:
                    guard.check(request)
                forwarded = router.to_backend(_SHAPE, request, session, cluster)
            except SparkfleetError as error:
                refused.append(error)
                call.cancel()
                return
            if upload is not None:
                upload.add(request)
            yield forwarded
            try:
                request = await requests.__anext__()
            except StopAsyncIteration:
                return

    call = router.backends.stream_unary(cluster, "AddArtifacts")(
        outgoing(), metadata=router.call_metadata(cluster, routed)
    )
    try:
        response = await call
    except BaseException as error:  # refused, cluster lost or client gone: keep nothing
        guard.cached_data.close()
        if upload is not None:
            upload.abort()
        if refused:
            raise refused[0] from None
        if isinstance(error, grpc.aio.AioRpcError):
            raise (await router.backend_failed(error, cluster, "an AddArtifacts upload")) from None
        raise
    out = router.to_client(_SHAPE, response, session, cluster)[0]
    try:
        unreadable = guard.cached_data.finish()
    finally:
        guard.cached_data.close()
    if upload is not None:
        if session.closed:
            upload.abort()
        # None for an upload with nothing to replay (only copyFromLocalToFs writes); raises
        # StoreError if the copy could not be kept: the artifacts would not follow the session.
        elif (stored := upload.commit(unreadable)) is not None:
            replay.record_artifacts(session, cluster, stored)
    return out
