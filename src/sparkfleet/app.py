"""One sparkfleet instance: store, fleet, gateway and admin server, started and stopped together."""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

import grpc
import uvicorn

from sparkfleet.admin.api import build_admin_app
from sparkfleet.admin.metrics import Metrics
from sparkfleet.clock import Clock, SystemClock
from sparkfleet.config import Settings
from sparkfleet.errors import EnvironmentProblem
from sparkfleet.fleet.catalog import SharedCatalog
from sparkfleet.fleet.controller import FleetController
from sparkfleet.fleet.provisioners.local import LocalProvisioner, ProgressCallback
from sparkfleet.fleet.runtime_registry import RuntimeRegistry
from sparkfleet.gateway.versions import WorkloadRuntimes
from sparkfleet.policy.versions import RolloutSettings as VersionSettings
from sparkfleet.fleet.runtimes import Runtime, check_java, installed_pyspark_runtime
from sparkfleet.gateway.artifacts import ArtifactStore
from sparkfleet.gateway.auth import Authenticator, refuse_open_remote_access
from sparkfleet.gateway.forwarding import Backends
from sparkfleet.gateway.assessment import build_assessor
from sparkfleet.gateway.operations import Operation, OperationRegistry
from sparkfleet.gateway.routing import Router
from sparkfleet.gateway.server import bind_grpc_server, build_handler, listen_addresses
from sparkfleet.policy.placement import PlacementSettings as PlacementPolicySettings
from sparkfleet.gateway.service import SparkConnectService
from sparkfleet.gateway.sessions import SessionRegistry
from sparkfleet.gateway.tenants import Tenants, tenant_limits
from sparkfleet.gateway.watchdog import Watchdog
from sparkfleet.gateway.workloads import WorkloadObserver
from sparkfleet.fleet.autoscaler import Autoscaler, machine_budget
from sparkfleet.fleet.cgroups import ClusterGroups, GroupsUnavailable
from sparkfleet.policy.scaling import DEFAULT_MODES, Mode, ScalingSettings
from sparkfleet.fleet.cpu_sharing import CpuSharer
from sparkfleet.policy.cpu_share import CpuShareSettings
from sparkfleet.policy.watchdog import WatchdogSettings
from sparkfleet.store.history import WorkloadRun
from sparkfleet.store import Database
from sparkfleet.tls import TlsPair, load_tls_pair

log = logging.getLogger(__name__)

PROVISIONERS = {"local": LocalProvisioner}
# How often the versions loop checks recent workloads for slowdowns and may move a runtime to its
# next rollout stage.
_ROLLOUT_EVERY_S = 10.0


class _QuietUvicorn(uvicorn.Server):
    """Uvicorn without its own signal handling: the app decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Sparkfleet:
    def __init__(self, settings: Settings, clock: Clock | None = None, progress: ProgressCallback | None = None):
        self.settings = settings
        self.clock = clock or SystemClock()
        self._progress = progress
        self.runtime: Runtime
        self.runtimes: RuntimeRegistry
        self.db: Database
        self.fleet: FleetController
        self.sessions: SessionRegistry
        self.metrics = Metrics()
        self._grpc: grpc.aio.Server | None = None
        self._admin: _QuietUvicorn | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self._rollout_task: asyncio.Task[None] | None = None
        self.versions: WorkloadRuntimes | None = None
        self._backends: Backends | None = None
        self.catalog: SharedCatalog | None = None
        self._tls: TlsPair | None = None
        self.groups: ClusterGroups | None = None
        self.cpu_isolation = "none (not a local pool)"  # how local clusters are kept apart, for /api/health
        self.port = 0
        self.admin_port = 0

    @property
    def gateway_url(self) -> str:
        return f"sc://localhost:{self.port}"

    @property
    def admin_url(self) -> str:
        scheme = "https" if self.settings.tls.enabled else "http"
        return f"{scheme}://localhost:{self.admin_port}"

    @property
    def ready_line(self) -> str:
        return f"sparkfleet ready: {self.gateway_url} admin {self.admin_url}"

    async def start(self) -> None:
        """Start everything; on failure, stop what already started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    def _runtime_named(self, name: str | None) -> Runtime:
        """A registered runtime (None: the general one), as the store has it now."""
        self.runtimes.refresh()
        return self.runtimes.general() if name is None else self.runtimes.get(name)

    async def _start(self) -> None:
        s = self.settings
        refuse_open_remote_access(s.auth, {
            "gateway": listen_addresses(s.gateway.host), "admin server": listen_addresses(s.admin.host),
        })
        self.auth = Authenticator(s.auth, self.clock,
                                  on_failure=lambda reason, endpoint: self.metrics.auth_failures.labels(reason, endpoint).inc())
        # Checked before anything starts: a bad certificate or key fails at once, naming the file.
        self._tls = load_tls_pair(s.tls) if s.tls.enabled else None
        check_java()
        self.runtime = installed_pyspark_runtime()
        data_dir = Path(s.data_dir)
        self.db = Database(data_dir / "sparkfleet.db").open()
        self.runtimes = RuntimeRegistry(self.db, self.clock)
        self.runtimes.ensure_default()
        provisioner_cls = PROVISIONERS.get(s.pool.provisioner)
        if provisioner_cls is None:
            raise EnvironmentProblem(
                f"unknown provisioner {s.pool.provisioner!r}; available: {sorted(PROVISIONERS)}"
            )
        self.groups = self._open_groups()
        provisioner = provisioner_cls(data_dir, s.pool.start_timeout_s, s.pool.stop_timeout_s, self.groups)
        cluster_conf: dict[str, str] = {}
        if s.pool.catalog == "shared":
            self.catalog = SharedCatalog(data_dir, self.runtime, s.pool.start_timeout_s, s.pool.stop_timeout_s)
            cluster_conf = self.catalog.cluster_conf()
        self.fleet = FleetController(
            s, provisioner, self._runtime_named, self.db, self.clock, self._progress, cluster_conf=cluster_conf,
        )
        self.cpu_sharer = CpuSharer(self.fleet, self.groups, self.clock, CpuShareSettings(
            enabled=s.placement.cpu_sharing and s.pool.placement == "workload" and self.groups is not None,
            batch_linger_s=s.placement.batch_linger_s))
        self.fleet.on_state_change(lambda _cluster: self.cpu_sharer.refresh())
        self.metrics.watch_fleet(lambda: ((c.size.name, c.state.value) for c in self.fleet.clusters()),
                                 self.fleet.core_seconds)
        artifacts = ArtifactStore(data_dir / "artifacts", s.gateway.max_artifact_upload_bytes,
                                  s.gateway.max_artifact_session_bytes).open()
        self.sessions = SessionRegistry(self.db, self.clock, artifacts=artifacts,
                                        max_sessions_per_user=s.gateway.max_sessions_per_user)
        self.metrics.sessions.set_function(self.sessions.open_count)
        operations = OperationRegistry(self.db, self.clock, max_per_user=s.gateway.max_operations_per_user)
        self._backends = Backends(self.fleet)
        placement = s.placement
        self.router = router = Router(
            self.fleet, self.sessions, operations, self._backends, s.pool.placement, s.gateway.capacity_wait_s,
            self.clock,
            PlacementPolicySettings(
                interactive_reserve_clusters=placement.interactive_reserve_clusters,
                batch_per_cluster=placement.batch_per_cluster,
                interactive_per_core=placement.interactive_per_core,
                memory_fraction=placement.memory_fraction,
                stale_after_s=placement.stale_after_s,
                batch_linger_s=placement.batch_linger_s,
            ),
            s.gateway.max_queued,
            s.gateway.queue_wait_s,
            Tenants(tenant_limits(s.tenants, self.fleet.size_class), self.clock,
                    on_refusal=lambda tenant, quota: self.metrics.quota_refusals.labels(tenant, quota).inc()),
        )
        router.auth = self.auth
        operations.on_finished(lambda op: router.release(op.cluster_id, op.id))
        self.metrics.queued.set_function(router.admission.queued_count)
        self.metrics.oldest_queued.set_function(router.admission.oldest_wait_s)
        router.admission.on_queue_wait(self.metrics.queue_wait.observe)
        router.admission.on_wait(operations.note_waiting)
        router.admission.on_work_change(self.cpu_sharer.refresh)
        operations.on_placed(self._count_placement)
        self.workloads = WorkloadObserver(self.db, self.fleet, self.clock, placement.load_poll_s)
        self.workloads.on_load_change(router.admission.changed)
        self.workloads.on_orphan_job_cancelled(self.metrics.orphan_jobs.inc)
        operations.on_finished(self._record_workload_run)
        self.assessor = build_assessor(self.workloads.observed, self.catalog.warehouse if self.catalog else None,
                                       self.clock, self.workloads.memory_floor)
        self.watchdog = Watchdog(
            router, self.assessor,
            WatchdogSettings(placement.interactive_budget_s, placement.runaway_factor, placement.runaway_min_s),
            on_action=lambda action: self.metrics.watchdog_actions.labels(action).inc(),
        )
        rollout = s.rollout
        self.versions = WorkloadRuntimes(self.runtimes, self.db, self.clock, VersionSettings(
            canary_fraction=rollout.canary_fraction, promote_after_workloads=max(1, rollout.promote_after_workloads),
            max_regression_rate=rollout.max_regression_rate, slowdown_ratio=rollout.slowdown_ratio,
            min_runs_for_slowdown=rollout.min_runs_for_slowdown))
        self._automatic_rollout = rollout.promote_after_workloads > 0
        service = SparkConnectService(
            router, artifacts, self.catalog.warehouse if self.catalog else None, self.assessor, self.versions
        )

        # Both ports are taken before any JVM starts, so a conflict fails fast.
        self._grpc, self.port = bind_grpc_server(build_handler(service, self.metrics), s.gateway.host, s.gateway.port,
                                                 self._tls, s.gateway.max_concurrent_rpcs)
        await self._start_admin()
        # Clients may connect while the pool starts: their requests wait for a ready cluster.
        await self._grpc.start()
        self.workloads.start()
        self.watchdog.start()
        self.cpu_sharer.start()
        self.autoscaler = self._build_autoscaler()
        if self.autoscaler is not None:
            self.autoscaler.start()
        self._rollout_task = asyncio.get_running_loop().create_task(
            self.versions.advance_every(_ROLLOUT_EVERY_S, promote=self._automatic_rollout))
        await asyncio.gather(*([self.catalog.start(self._progress)] if self.catalog else []), self.fleet.start())

    def _build_autoscaler(self) -> Autoscaler | None:
        settings = self.settings.autoscaler
        if not settings.enabled:
            return None
        self.fleet.autoscaled = True
        self.router.scaling_mode = settings.mode
        sessions = self.sessions

        def pinned_clusters() -> set[str]:  # clusters holding state no replay can rebuild
            return {cluster_id for s in sessions.all() if not s.closed for cluster_id in s.pins}

        mode = Mode(settings.mode)
        modes = dict(DEFAULT_MODES)
        timing = {k: v for k, v in (("scale_out_after_s", settings.scale_out_after_s),
                                     ("idle_before_stop_s", settings.idle_before_stop_s)) if v is not None}
        modes[mode] = dataclasses.replace(modes[mode], **timing)
        scaling = ScalingSettings(modes=modes, memory_fraction=self.settings.placement.memory_fraction)
        if settings.min_lifetime_s is not None:
            scaling = dataclasses.replace(scaling, min_lifetime_s=settings.min_lifetime_s)
        return Autoscaler(
            self.fleet, self.clock, mode, machine_budget(settings.max_cores, settings.max_memory_mb),
            self.router.admission.demand, pinned_clusters, scaling,
            on_action=lambda action, size: self.metrics.scaling_actions.labels(action, size).inc(),
            general_runtime=lambda: self.runtimes.general().name,
        )

    def _open_groups(self) -> ClusterGroups | None:
        """Each local cluster's control group (fleet/cgroups.py), or None, said once, where the
        kernel's control groups cannot be written."""
        if self.settings.pool.provisioner != "local":
            return None
        try:
            groups = ClusterGroups.open(os.sched_getaffinity(0))
            self.cpu_isolation = f"control groups (cgroup v{groups.version})"
            return groups
        except GroupsUnavailable as exc:
            self.cpu_isolation = f"off: {exc}"
            log.warning("clusters run without control groups (%s): they share the CPUs with equal weight, and "
                        "batch work is not kept behind interactive work. Run sparkfleet as root to isolate them", exc)
            return None

    def _count_placement(self, op: Operation) -> None:
        traits = op.traits
        if traits is not None and traits.runs_job:
            cost = traits.estimate.cost_class.value if traits.estimate is not None else "unknown"
            self.metrics.placements.labels(traits.profile.value, cost).inc()

    def _record_workload_run(self, op: Operation) -> None:
        traits = op.traits
        if traits is None or not traits.fingerprint:
            return
        for attempt in op.attempts:
            if attempt.get("outcome") == "out of memory":
                lost = self.fleet.get(attempt.get("cluster_id") or "")
                self.workloads.out_of_memory(WorkloadRun(
                    fingerprint=traits.fingerprint, query_id=op.id, cluster_id=lost.id if lost else None,
                    size_class=lost.size.name if lost else None, runtime=attempt.get("runtime"),
                    outcome="out_of_memory", recorded_at=self.clock.now(),
                ))
        cluster = self.fleet.get(op.cluster_id)
        estimate = traits.estimate
        self.workloads.query_finished(
            cluster,
            WorkloadRun(
                fingerprint=traits.fingerprint,
                query_id=op.id,
                cluster_id=op.cluster_id or None,
                size_class=cluster.size.name if cluster else None,
                runtime=cluster.runtime.name if cluster else None,
                outcome=op.attempts[-1]["outcome"] if op.attempts else "unknown",
                recorded_at=self.clock.now(),
                duration_ms=(self.clock.monotonic() - op.started_mono) * 1000.0 if op.started_mono else None,
                estimated_class=estimate.cost_class.value if estimate else None,
                estimated_core_seconds=estimate.core_seconds if estimate else None,
            ),
            op.session_key[1],
        )

    async def _start_admin(self) -> None:
        s = self.settings.admin
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((socket.gethostbyname(s.host), s.port))
        except OSError as exc:
            sock.close()
            raise EnvironmentProblem(f"admin server cannot listen on {s.host}:{s.port}: {exc}") from exc
        self.admin_port = sock.getsockname()[1]
        tls = self._tls
        config = uvicorn.Config(build_admin_app(self), log_level="warning", lifespan="off", access_log=False,
                                ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None)
        self._admin = _QuietUvicorn(config)
        self._admin_task = asyncio.get_running_loop().create_task(self._admin.serve(sockets=[sock]))
        while not self._admin.started:
            if self._admin_task.done():
                self._admin_task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting clients, stop every cluster, close the store. Safe to call twice."""
        if self._grpc is not None:
            await self._grpc.stop(self.settings.gateway.shutdown_grace_s)
            self._grpc = None
        if getattr(self, "watchdog", None) is not None:
            await self.watchdog.stop()
        if getattr(self, "workloads", None) is not None:
            await self.workloads.stop()
        if getattr(self, "cpu_sharer", None) is not None:
            await self.cpu_sharer.stop()
        if getattr(self, "autoscaler", None) is not None:
            await self.autoscaler.stop()
        if self._rollout_task is not None:
            self._rollout_task.cancel()
            await asyncio.gather(self._rollout_task, return_exceptions=True)
        if hasattr(self, "fleet"):
            await self.fleet.shutdown()
        if self.groups is not None:
            self.groups.close()
        if self.catalog is not None:
            await self.catalog.stop()
        if self._backends is not None:
            await self._backends.close()
            self._backends = None
        if self._admin is not None and self._admin_task is not None:
            self._admin.should_exit = True
            await asyncio.gather(self._admin_task, return_exceptions=True)
            self._admin = None
        if hasattr(self, "db"):
            self.db.close()
