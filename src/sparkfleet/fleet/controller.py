"""The fleet controller: makes the pool real through a provisioner, watches it, replaces losses.

It owns the mutable cluster records; everything else sees :class:`FleetSnapshot` copies or asks
for a cluster by id. Every state change goes through the lifecycle table and is recorded with
its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Callable

from sparkfleet.clock import Clock
from sparkfleet.config import Settings, pool_member
from sparkfleet.errors import ClusterStartFailed, SparkfleetError
from sparkfleet.fleet.model import (
    ALIVE,
    ENDED,
    ClusterState,
    ClusterView,
    FleetSnapshot,
    LoadReading,
    RunningWork,
    SizeClass,
    check_transition,
)
from sparkfleet.fleet.provisioners.local import ClusterSpec, LocalCluster, LocalProvisioner, ProgressCallback
from sparkfleet.fleet.runtimes import Runtime
from sparkfleet.store import Database
from sparkfleet.store.clusters import record_cluster, record_cluster_event

log = logging.getLogger(__name__)

ClusterListener = Callable[["Cluster"], None]


@dataclass
class Cluster:
    id: str
    size: SizeClass
    runtime: Runtime
    cpus: tuple[int, ...]
    created_at: float
    state: ClusterState = ClusterState.STARTING
    handle: LocalCluster | None = None
    # Queries placed here and not finished (reserved at placement, released when the attempt ends).
    work: dict[str, RunningWork] = field(default_factory=dict)
    # The latest reading of the cluster's Spark REST API (fleet/monitor.py), if any.
    load: LoadReading | None = None
    # When batch work last ended here (monotonic seconds), if ever.
    batch_ended_at: float | None = None
    # When any work last ended here (monotonic seconds), if ever.
    work_ended_at: float | None = None
    sessions: set[str] = field(default_factory=set)
    lost_reason: str = ""
    # When it reached a terminal state (wall-clock seconds, like ``created_at``).
    ended_at: float | None = None

    def core_seconds(self, now: float) -> float:
        """Cores it held times the seconds it held them: from the start of its JVM to its end."""
        end = self.ended_at if self.ended_at is not None else now
        return self.size.cores * max(0.0, end - self.created_at)

    @property
    def running_queries(self) -> int:
        return len(self.work)

    @property
    def address(self) -> str | None:
        return self.handle.address if self.handle else None

    @property
    def token(self) -> str:
        return self.handle.token if self.handle else ""

    def view(self) -> ClusterView:
        return ClusterView(
            id=self.id,
            size=self.size,
            runtime=self.runtime.name,
            state=self.state,
            running_queries=self.running_queries,
            sessions=len(self.sessions),
            work=tuple(self.work.values()),
            load=self.load,
            batch_ended_at=self.batch_ended_at,
            work_ended_at=self.work_ended_at,
            cpus=self.cpus,
        )

    def describe(self) -> str:
        pid = f", pid {self.handle.pid}" if self.handle else ""
        return f"cluster {self.id} ({self.size.name}, Spark {self.runtime.name}{pid})"


class FleetController:
    def __init__(
        self,
        settings: Settings,
        provisioner: LocalProvisioner,
        runtimes: Callable[[str | None], Runtime],
        db: Database,
        clock: Clock,
        progress: ProgressCallback | None = None,
        cluster_conf: dict[str, str] | None = None,
    ) -> None:
        self._settings = settings
        # Confs every cluster gets from sparkfleet itself (e.g. the shared catalog's address);
        # the pool's own spark_conf comes after them and wins.
        self._cluster_conf = dict(cluster_conf or {})
        self._provisioner = provisioner
        # A runtime by name (None: the general one), from fleet/runtime_registry.py.
        self._runtimes = runtimes
        self._db = db
        self._clock = clock
        self._progress = progress
        self._clusters: dict[str, Cluster] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._listeners: list[ClusterListener] = []
        self._cpus = sorted(os.sched_getaffinity(0))
        # Whether an autoscaler may start clusters of any size class (fleet/autoscaler.py).
        self.autoscaled = False

    # ---- queries from the rest of the system -------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot(tuple(c.view() for c in self._clusters.values()))

    def get(self, cluster_id: str) -> Cluster | None:
        return self._clusters.get(cluster_id)

    def clusters(self) -> list[Cluster]:
        return list(self._clusters.values())

    def on_state_change(self, listener: ClusterListener) -> None:
        self._listeners.append(listener)

    # ---- lifecycle ---------------------------------------------------------------------------

    def core_seconds(self) -> dict[str, float]:
        """Core-seconds every cluster of this run has held so far, by size class (the cost of compute)."""
        now = self._clock.now()
        used: dict[str, float] = {}
        for cluster in self._clusters.values():
            used[cluster.size.name] = used.get(cluster.size.name, 0.0) + cluster.core_seconds(now)
        return used

    def size_class(self, name: str) -> SizeClass:
        size = self._settings.sizes[name]
        return SizeClass(name=name, cores=size.cores, memory_mb=size.memory_mb)

    async def start(self) -> list[Cluster]:
        """Start the configured pool and wait until every cluster is ready (or one fails)."""
        self._forget_previous_run()
        members = [pool_member(entry) for entry in self._settings.pool.clusters]
        runtimes = {name: self._runtimes(name) for _, name in members}  # unknown runtimes fail before any JVM starts
        starts = [self.start_cluster(self.size_class(size), runtime=runtimes[name].name) for size, name in members]
        return list(await asyncio.gather(*starts))

    async def start_cluster(self, size: SizeClass, reason: str = "configured pool member",
                            warm_up: bool = True, runtime: str | None = None) -> Cluster:
        """Start a cluster and return it once it is ready; ``warm_up``: run a few small queries on
        it first (when ``[pool] warm_up`` allows), so its first user query is not slowed by a cold
        JVM. Not worth it for a cluster that queries already wait for. ``runtime``: its name
        (None: the general runtime)."""
        spark = self._runtimes(runtime)
        cluster = Cluster(
            id=f"{size.name.lower()}-{secrets.token_hex(3)}",
            size=size,
            runtime=spark,
            cpus=tuple(self._cpus),
            created_at=self._clock.now(),
        )
        self._clusters[cluster.id] = cluster
        self._record(cluster, f"starting: {reason}")
        self._report(cluster.id, f"starting {size.name} ({size.cores} core(s), {size.memory_mb} MiB, "
                                 f"CPUs {','.join(map(str, cluster.cpus))}, Spark {spark.name})")
        spec = ClusterSpec(
            id=cluster.id,
            size=size,
            runtime=spark,
            spark_conf={**self._cluster_conf, **self._settings.pool.spark_conf},
            # Every cluster may run on idle CPUs of the pool (policy/cpu_share.py): twice its
            # cores in task slots use them, as far as the pool has them.
            task_slots=max(size.cores, min(len(self._cpus), 2 * size.cores)),
            warm_up=warm_up and self._settings.pool.warm_up,
        )
        started_at = self._clock.monotonic()
        try:
            cluster.handle = await self._provisioner.start(spec, self._report)
        except SparkfleetError as exc:
            self._set_state(cluster, ClusterState.FAILED, str(exc).splitlines()[0])
            raise
        if self._stopping:
            self._set_state(cluster, ClusterState.STOPPING, "shutdown began while starting")
            await cluster.handle.stop(self._provisioner.stop_timeout_s)
            self._set_state(cluster, ClusterState.STOPPED, "stopped during shutdown")
            raise ClusterStartFailed(f"{cluster.describe()} was stopped: sparkfleet is shutting down")
        elapsed = self._clock.monotonic() - started_at
        self._set_state(cluster, ClusterState.READY, f"answered Spark Connect{' and warmed up' if spec.warm_up else ''} "
                                                        f"after {elapsed:.1f}s")
        self._report(cluster.id, f"ready at {cluster.address} in {elapsed:.1f}s")
        self._spawn(self._watch(cluster))
        return cluster

    async def shutdown(self) -> None:
        """Stop every cluster (SIGTERM, then SIGKILL after the grace period) and wait for them."""
        self._stopping = True
        stops = []
        for cluster in list(self._clusters.values()):
            if cluster.state in (ClusterState.READY, ClusterState.DRAINING) and cluster.handle:
                self._set_state(cluster, ClusterState.STOPPING, "sparkfleet is shutting down")
                stops.append(self._stop(cluster))
        await asyncio.gather(*stops, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def drain_cluster(self, cluster_id: str, reason: str) -> None:
        """No new queries for the cluster; the running ones finish (the autoscaler stops it later)."""
        cluster = self._clusters.get(cluster_id)
        if cluster is not None and cluster.state is ClusterState.READY:
            self._set_state(cluster, ClusterState.DRAINING, reason)

    def stop_cluster(self, cluster_id: str, reason: str):  # type: ignore[no-untyped-def]
        """Stop an idle ready or drained cluster (scale-in): it takes no query from now on; the
        returned coroutine stops its processes (None if there is nothing to stop)."""
        cluster = self._clusters.get(cluster_id)
        if (cluster is None or cluster.handle is None or cluster.work
                or cluster.state not in (ClusterState.READY, ClusterState.DRAINING)):
            return None
        self._set_state(cluster, ClusterState.STOPPING, reason)
        return self._stop(cluster)

    def size_names(self) -> list[str]:
        return list(self._settings.sizes)

    def next_larger_size(self, memory_mb: int) -> SizeClass | None:
        """The smallest size class with more memory than ``memory_mb`` a query can get now: any
        configured one while the autoscaler may start clusters, else one a ready cluster has."""
        if self.autoscaled:
            candidates = [self.size_class(name) for name in self._settings.sizes]
        else:
            candidates = [c.size for c in self._clusters.values() if c.state is ClusterState.READY]
        larger = [s for s in candidates if s.memory_mb > memory_mb]
        return min(larger, key=lambda s: (s.memory_mb, s.cores, s.name)) if larger else None

    async def _stop(self, cluster: Cluster) -> None:
        assert cluster.handle is not None
        code = await cluster.handle.stop(self._provisioner.stop_timeout_s)
        self._set_state(cluster, ClusterState.STOPPED, f"processes exited (status {code})")

    async def _watch(self, cluster: Cluster) -> None:
        assert cluster.handle is not None
        code = await cluster.handle.wait()
        if cluster.state in (ClusterState.READY, ClusterState.DRAINING):
            tail = cluster.handle.log_tail(3000)
            hint = " (out of memory)" if "OutOfMemoryError" in tail else ""
            cluster.lost_reason = f"its JVM exited with status {code}{hint}"
            self._set_state(cluster, ClusterState.LOST, cluster.lost_reason)
            # A fixed pool gets a cluster of the same size back. An autoscaled one gets what the
            # queries lost with it need (one that ran it out of memory needs a larger size, and
            # a same-size replacement would only hold the budget), as the autoscaler decides.
            if not self._stopping and not self.autoscaled:
                self._spawn(self._replace(cluster))

    async def _replace(self, lost: Cluster) -> None:
        try:
            await self.start_cluster(lost.size, reason=f"replaces lost cluster {lost.id}", warm_up=False,
                                     runtime=lost.runtime.name)
        except SparkfleetError as exc:
            log.error("could not replace %s: %s", lost.describe(), exc)

    # ---- internals ---------------------------------------------------------------------------

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_state(self, cluster: Cluster, new: ClusterState, reason: str) -> None:
        check_transition(cluster.id, cluster.state, new)
        cluster.state = new
        if new in ENDED:
            cluster.ended_at = self._clock.now()
        self._record(cluster, reason)
        for listener in self._listeners:
            listener(cluster)

    def _record(self, cluster: Cluster, reason: str) -> None:
        now = self._clock.now()
        handle = cluster.handle
        record_cluster(
            self._db,
            {
                "id": cluster.id,
                "size": cluster.size.name,
                "runtime": cluster.runtime.name,
                "state": cluster.state.value,
                "address": handle.address if handle else None,
                "pid": handle.pid if handle else None,
                "cores": cluster.size.cores,
                "memory_mb": cluster.size.memory_mb,
                "cpus": ",".join(map(str, cluster.cpus)),
                "created_at": cluster.created_at,
                "updated_at": now,
                "exit_code": handle.exit_code if handle else None,
            },
        )
        record_cluster_event(self._db, cluster.id, now, cluster.state.value, reason)

    def _report(self, cluster_id: str, message: str) -> None:
        log.info("%s: %s", cluster_id, message)
        if self._progress:
            self._progress(cluster_id, message)

    def _forget_previous_run(self) -> None:
        """Clusters a previous run left 'alive' in the store died with it (parent-death signal)."""
        rows = self._db.read(
            "SELECT id FROM clusters WHERE state IN (?, ?, ?, ?)",
            ("starting", "ready", "draining", "stopping"),
        )
        now = self._clock.now()
        for row in rows:
            self._db.write("UPDATE clusters SET state='lost', updated_at=? WHERE id=?", (now, row["id"]))
            record_cluster_event(self._db, row["id"], now, "lost", "the sparkfleet process that ran it ended")

