"""REFRESH TABLE as one Spark server does it, on clusters that keep no table relation cache.

With the shared catalog every cluster runs with ``spark.sql.filesourceTableRelationCacheSize=0``
(``fleet/catalog.py``), so that no cluster reads a table through a file listing taken before
another cluster rewrote it. Spark's ``refreshTable`` (``REFRESH TABLE``, ``spark.catalog.refreshTable``)
relies on that cache, though: it refreshes the file listing of the relation it resolves *now*,
then re-caches every cached plan of the table *with the plan's own relation*. With the relation
cache both are one object; without it the cached plan keeps the listing taken when it was cached,
so after files changed the next read of a cached table fails (``FAILED_READ_FILE.FILE_NOT_EXIST``)
or misses new files, on a plain Spark server started with that setting too.

After a REFRESH TABLE succeeds, the gateway therefore looks the table's location up on the same
cluster, as the same session, and refreshes that path there (``spark.catalog.refreshByPath``):
that refreshes the listings cached plans hold, which is what the client asked for. Cached data
lives only on the cluster the session is pinned to (``plan/state.py``), where the REFRESH ran.
A view has no location: refreshing a cached view over file tables is not completed this way.
"""

from __future__ import annotations

import logging
import re
import uuid

import grpc
import pyarrow as pa
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import SparkfleetError
from sparkfleet.fleet.controller import Cluster
from sparkfleet.gateway.operations import Operation
from sparkfleet.gateway.routing import RPCS, Routed, Router
from sparkfleet.plan.eager import eager_statement, is_plain_compressed_query, sql_of_command
from sparkfleet.plan.inspect import inspect_plan, plan_body
from sparkfleet.plan.wire import as_message, iter_fields, read_fields

log = logging.getLogger(__name__)

_EXEC = RPCS["ExecutePlan"]
# ExecutePlanRequest.plan; Command.sql_command
_EXEC_PLAN, _SQL_COMMAND = 3, 5
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*\n|/\*.*?\*/)+", re.S)
_REFRESH_TABLE = re.compile(r"^refresh\s+table\s+(.+?)\s*;?\s*$", re.I | re.S)


def refreshed_table(request: bytes | memoryview) -> str | None:
    """The table an ExecutePlanRequest refreshes (SQL ``REFRESH TABLE t``, ``spark.catalog.refreshTable``),
    as the client named it; None for any other request."""
    plan = read_fields(request, frozenset({_EXEC_PLAN})).get(_EXEC_PLAN)
    if plan is None:
        return None
    plan_bytes = as_message(plan, "plan")
    if inspect_plan(plan_bytes).kind == "relation":
        if is_plain_compressed_query(plan_bytes):
            return None
        eager = eager_statement(plan_body(plan_bytes))
        sql = eager[1] if eager is not None else None
    else:
        field = next(iter_fields(plan_body(plan_bytes)), None)
        if field is None or field.number != _SQL_COMMAND:
            return None
        sql = sql_of_command(as_message(field, "sql_command"))
    if not sql:
        return None
    match = _REFRESH_TABLE.match(_LEADING_COMMENTS.sub("", sql))
    return match.group(1) if match else None


def location_of(rows: list[dict[str, object]]) -> str | None:
    """The ``Location`` of a table from the rows of ``DESCRIBE TABLE EXTENDED``."""
    for row in rows:
        if str(row.get("col_name") or "").strip() == "Location" and row.get("data_type"):
            return str(row["data_type"]).strip()
    return None


class TableRefresher:
    def __init__(self, router: Router) -> None:
        self.r = router

    async def after_success(self, op: Operation | None, routed: Routed, cluster: Cluster) -> None:
        """If ``op`` was a REFRESH TABLE that just succeeded on ``cluster``, refresh the file
        listings that cluster's cached plans hold for the table. Never fails the client's query."""
        intent = op.intent if op is not None else None
        # REFRESH is catalog maintenance: an idempotent command (plan/sql_intent.py). Anything
        # else is not read any further.
        if op is None or intent is None or intent.kind != "command" or not intent.idempotent:
            return
        try:
            table = refreshed_table(op.request)
            if table is None:
                return
            rows = await self._rows(routed, cluster, f"DESCRIBE TABLE EXTENDED {table}")
            location = location_of(rows)
            if location is None:
                return  # a view, or a table without a location: nothing to re-list
            refresh = base_pb2.Plan()
            refresh.root.catalog.refresh_by_path.path = location
            await self._run(routed, cluster, refresh)
        except (grpc.aio.AioRpcError, SparkfleetError, ValueError, pa.ArrowException) as error:
            log.warning(
                "REFRESH TABLE of session %s on %s: could not refresh the cached file listing: %s",
                routed.session.session_id, cluster.id, error,
            )

    async def _rows(self, routed: Routed, cluster: Cluster, sql: str) -> list[dict[str, object]]:
        plan = base_pb2.Plan()
        plan.root.sql.query = sql
        batches = []
        for response in await self._run(routed, cluster, plan):
            if response.HasField("arrow_batch"):
                batches.extend(pa.ipc.open_stream(response.arrow_batch.data).read_all().to_pylist())
        return batches

    async def _run(self, routed: Routed, cluster: Cluster, plan: base_pb2.Plan) -> list[base_pb2.ExecutePlanResponse]:
        """Run ``plan`` on ``cluster`` as the routed request's session; its responses."""
        session = routed.session
        request = base_pb2.ExecutePlanRequest(
            session_id=session.session_id, operation_id=str(uuid.uuid4()), client_type=session.client_type
        )
        request.user_context.user_id = session.user_id
        request.plan.CopyFrom(plan)
        call = self.r.backends.unary_stream(cluster, "ExecutePlan")(
            self.r.to_backend(_EXEC, request.SerializeToString(), session, cluster),
            metadata=self.r.call_metadata(cluster, routed),
        )
        responses = []
        async for message in call:
            self.r.to_client(_EXEC, message, session, cluster)
            responses.append(base_pb2.ExecutePlanResponse.FromString(message))
        return responses
