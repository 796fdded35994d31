"""Does a write's target exist yet? Asked before re-running a write whose cluster was lost."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import grpc
import pyarrow.ipc

from sparkfleet.gateway.routing import RPCS

if TYPE_CHECKING:
    from sparkfleet.fleet.controller import Cluster
    from sparkfleet.gateway.forwarding import Metadata
    from sparkfleet.gateway.routing import Router
    from sparkfleet.gateway.sessions import VirtualSession


def local_path_exists(target: str) -> bool | None:
    """Whether a local-filesystem write target exists; None when it is not on this machine's disk.

    Local clusters share the gateway's filesystem, so a plain path or a ``file:`` URI can be
    checked directly. Anything else (hdfs:, s3a:, ...) is unknown here.
    """
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    if parsed.scheme == "" and Path(target).is_absolute():
        return Path(target).exists()
    return None  # another filesystem, or relative to a cluster's working directory


async def table_exists(router: "Router", session: "VirtualSession", cluster: "Cluster", metadata: "Metadata", name: str) -> bool | None:
    """Ask ``cluster`` whether table ``name`` exists in the session's catalog; None if it cannot tell.

    With the pool's shared catalog every cluster answers for the same tables, so a healthy cluster
    can tell whether a write that ran on a lost one created its target.
    """
    from pyspark.sql.connect.proto import base_pb2

    request = base_pb2.ExecutePlanRequest(
        session_id=session.session_id, client_type="sparkfleet/target-check", operation_id=str(uuid.uuid4())
    )
    request.user_context.user_id = session.user_id
    request.plan.root.catalog.table_exists.table_name = name
    shape = RPCS["ExecutePlan"]
    payload = router.to_backend(shape, request.SerializeToString(), session, cluster)
    call = router.backends.unary_stream(cluster, "ExecutePlan")
    try:
        async for message in call(payload, metadata=router.backends.metadata(cluster, metadata)):
            router.to_client(shape, message, session, cluster)
            response = base_pb2.ExecutePlanResponse.FromString(message)
            if response.HasField("arrow_batch") and response.arrow_batch.row_count:
                table = pyarrow.ipc.open_stream(response.arrow_batch.data).read_all()
                return bool(table.column(0)[0].as_py())
    except grpc.aio.AioRpcError:
        return None
    return None


def managed_table_location(warehouse: Path, name: str, current_database: str = "default") -> Path | None:
    """Where the shared catalog keeps managed table ``name`` (db.table or table), if that is knowable."""
    parts = [p.strip("`").lower() for p in name.split(".") if p]
    if parts and parts[0] == "spark_catalog":
        parts = parts[1:]
    if len(parts) == 1:
        parts = [current_database, parts[0]]
    if len(parts) != 2 or not all(parts):
        return None
    database, table = parts
    return warehouse / table if database == "default" else warehouse / f"{database}.db" / table


# What a Spark write leaves before its job commits: task output under _temporary, staging dirs.
_UNCOMMITTED = ("_temporary", ".spark-staging")


def clear_uncommitted_location(location: Path) -> bool:
    """Remove ``location`` if it holds only a failed write's uncommitted output.

    True when nothing is left there (it was absent, or held only staging files); False when it
    holds anything else, which may be committed data and is left alone.
    """
    if not location.exists():
        return True
    if not location.is_dir():
        return False
    if any(not entry.name.startswith(_UNCOMMITTED) for entry in location.iterdir()):
        return False
    shutil.rmtree(location, ignore_errors=True)
    return not location.exists()
