"""Admin HTTP API: health, clusters, sessions, queries, runtimes and Prometheus metrics.

Who sees what is decided in admin/access.py: with auth on, a bearer token is needed everywhere
but /api/health; non-admins see their own tenant's rows only; changes are for admins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sparkfleet.admin.access import caller_of, require_admin, tenant_filter, visible_regressions
from sparkfleet.errors import PermissionDenied, SparkfleetError, Unauthenticated
from sparkfleet.fleet.model import ClusterState
from sparkfleet.policy.versions import Stage
from sparkfleet.store.clusters import list_clusters
from sparkfleet.store.queries import list_queries
from sparkfleet.store.sessions import list_sessions
from sparkfleet.store.runtimes import list_pins, list_regressions

if TYPE_CHECKING:
    from sparkfleet.app import Sparkfleet

_MAX_LIMIT = 10_000


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit", str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SparkfleetError(f"limit must be an integer, got {raw!r}") from None
    if not 1 <= value <= _MAX_LIMIT:
        raise SparkfleetError(f"limit must be between 1 and {_MAX_LIMIT}, got {value}")
    return value


def build_admin_app(app: "Sparkfleet") -> Starlette:
    async def health(request: Request) -> JSONResponse:
        clusters = app.fleet.clusters()
        ready = sum(1 for c in clusters if c.state is ClusterState.READY)
        return JSONResponse(
            {
                "status": "ok" if ready else "degraded",
                "clusters_ready": ready,
                "clusters_total": sum(1 for c in clusters if c.state not in _ENDED),
                "sessions": app.sessions.open_count(),
                "gateway": app.gateway_url,
                "catalog": app.catalog.describe() if app.catalog is not None else None,
                "cpu_isolation": app.cpu_isolation,
            }
        )

    def running_tenants() -> dict[str, str]:
        """Operation id -> tenant, for every operation of this gateway run still going."""
        found = {}
        for op in app.router.operations.running():
            session = app.sessions.find(*op.session_key)
            if session is not None:
                found[op.id] = session.tenant
        return found

    async def clusters(request: Request) -> JSONResponse:
        only = tenant_filter(caller_of(app.auth, request))
        tenant_of = running_tenants()
        rows = list_clusters(app.db, include_history=request.query_params.get("history", "1") != "0")
        live = {c.id: c for c in app.fleet.clusters()}
        for row in rows:
            cluster = live.get(row["id"])
            row["running_queries"] = cluster.running_queries if cluster else 0
            if cluster is not None:
                row["core_seconds"] = round(cluster.core_seconds(app.clock.now()), 1)
            row["sessions"] = len(cluster.sessions) if cluster else 0
            # What placement sees: the work it reserved there, and Spark's latest load reading.
            row["work"] = [
                {"query_id": w.query_id, "profile": w.profile.value, "core_seconds": w.core_seconds,
                 "memory_bytes": w.memory_bytes}
                for w in (cluster.work.values() if cluster else ())
                if only is None or tenant_of.get(w.query_id) == only
            ]
            load = cluster.load if cluster else None
            row["load"] = None if load is None else {
                "age_s": round(app.clock.monotonic() - load.observed_at, 3),
                "active_tasks": load.active_tasks, "task_slots": load.task_slots,
                "heap_used_bytes": load.heap_used_bytes, "heap_max_bytes": load.heap_max_bytes,
            }
            # How its control group competes for CPU time now (fleet/cpu_sharing.py).
            share = app.cpu_sharer.share_of(row["id"]) if cluster else None
            row["cpu_share"] = None if share is None else {
                "shares": share.shares, "idle": share.idle, "reason": share.reason,
                "group": app.groups.group_of(row["id"]) if app.groups is not None else None,
            }
        return JSONResponse(rows)

    async def queue(request: Request) -> JSONResponse:
        """Queries waiting for a cluster, in the order they will be placed, with why they wait."""
        only = tenant_filter(caller_of(app.auth, request))
        tenant_of = running_tenants()
        return JSONResponse([
            {"query_id": q, "position": n, "reason": reason, "tenant": tenant_of.get(q)}
            for q, n, reason in app.router.admission.waiting()
            if only is None or tenant_of.get(q) == only
        ])

    async def sessions(request: Request) -> JSONResponse:
        only = tenant_filter(caller_of(app.auth, request))
        return JSONResponse(list_sessions(app.db, _limit(request, 1000), tenant=only))

    async def queries(request: Request) -> JSONResponse:
        rows = list_queries(
            app.db,
            _limit(request, 200),
            session_id=request.query_params.get("session_id"),
            state=request.query_params.get("state"),
            tenant=tenant_filter(caller_of(app.auth, request)),
        )
        return JSONResponse(rows)

    async def runtimes(request: Request) -> JSONResponse:
        caller = caller_of(app.auth, request)
        app.runtimes.refresh()
        pinned = list_pins(app.db)
        answer = []
        for r in app.runtimes.records():
            answer.append({
                "name": r["name"], "version": r["version"], "stage": r["stage"], "stage_reason": r["stage_reason"],
                "stage_changed_at": r["stage_changed_at"], "added_at": r["added_at"], "default_conf": r["conf"],
                "clusters": sum(1 for c in app.fleet.clusters() if c.runtime.name == r["name"] and c.state not in _ENDED),
                # Pins are workloads of every tenant: their count for everyone, the list for admins.
                "pinned_workloads": [p for p in pinned if p["runtime"] == r["name"]] if caller.admin else [],
                "pinned_count": sum(1 for p in pinned if p["runtime"] == r["name"]),
            })
        return JSONResponse(answer)

    async def set_runtime_stage(request: Request) -> JSONResponse:
        """POST {"stage": "general", "reason": "..."}: the operator's override, like `sparkfleet runtimes stage`."""
        caller = caller_of(app.auth, request)
        require_admin(caller, "changing a runtime's stage")
        try:
            body = await request.json()
        except ValueError:
            raise SparkfleetError("the body must be JSON like {\"stage\": \"general\"}") from None
        stage = body.get("stage") if isinstance(body, dict) else None
        if stage not in {s.value for s in Stage}:
            raise SparkfleetError(f"stage must be one of {[s.value for s in Stage]}, got {stage!r}")
        reason = str(body.get("reason") or "")[:500] or "set through the admin API"
        name = request.path_params["name"]
        app.runtimes.set_stage(name, Stage(stage), f"{reason} (by {caller.user})")
        return JSONResponse({"name": name, "stage": stage})

    async def regressions(request: Request) -> JSONResponse:
        return JSONResponse(visible_regressions(app.db, caller_of(app.auth, request), list_regressions(app.db)))

    async def metrics(request: Request) -> Response:
        require_admin(caller_of(app.auth, request), "/metrics (every tenant's counters)")
        return Response(app.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def handle_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SparkfleetError)
        if isinstance(exc, Unauthenticated):
            return JSONResponse({"error": exc.error_class, "message": exc.message}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        status = 403 if isinstance(exc, PermissionDenied) else 404 if isinstance(exc, LookupError) else 400
        return JSONResponse({"error": exc.error_class, "message": exc.message}, status_code=status)

    return Starlette(
        routes=[
            Route("/api/health", health),
            Route("/api/clusters", clusters),
            Route("/api/sessions", sessions),
            Route("/api/queries", queries),
            Route("/api/queue", queue),
            Route("/api/runtimes", runtimes),
            Route("/api/runtimes/{name}/stage", set_runtime_stage, methods=["POST"]),
            Route("/api/regressions", regressions),
            Route("/metrics", metrics),
        ],
        exception_handlers={SparkfleetError: handle_error},
    )


_ENDED: frozenset[Any] = frozenset({ClusterState.STOPPED, ClusterState.FAILED, ClusterState.LOST})
