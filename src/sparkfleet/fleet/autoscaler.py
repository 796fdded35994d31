"""Carry out the scaling policy: start, drain and stop clusters as ``policy/scaling.py`` decides.

Once a second, and whenever the admission queue or the fleet changes, the autoscaler gathers the
facts (each cluster's work, how long it has been idle, whether an open session holds state on it
that no replay can rebuild; the queries waiting for a cluster), asks ``plan_scaling`` and carries
the actions out through the fleet controller. Each action's reason is recorded on the cluster's
history (``/api/clusters``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable, Iterable

from sparkfleet.clock import Clock
from sparkfleet.errors import SparkfleetError
from sparkfleet.fleet.controller import FleetController
from sparkfleet.fleet.model import ALIVE
from sparkfleet.policy.scaling import (
    Budget,
    ClusterFacts,
    Demand,
    DrainCluster,
    Mode,
    ScalingSettings,
    StartCluster,
    StopCluster,
    plan_scaling,
)

log = logging.getLogger(__name__)

_TICK_S = 1.0


def machine_budget(max_cores: int | None, max_memory_mb: int | None) -> Budget:
    """The configured budget, or every CPU this process may use and 3/4 of the machine's memory."""
    cores = max_cores or len(os.sched_getaffinity(0))
    if max_memory_mb is None:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        max_memory_mb = total_mb * 3 // 4
    return Budget(cores, max_memory_mb)


class Autoscaler:
    def __init__(
        self,
        fleet: FleetController,
        clock: Clock,
        mode: Mode,
        budget: Budget,
        demand: Callable[[], Iterable[Demand]],
        pinned_clusters: Callable[[], set[str]],
        settings: ScalingSettings = ScalingSettings(),
        on_action: Callable[[str, str], None] = lambda action, size: None,
        general_runtime: Callable[[], str] = lambda: "",
    ) -> None:
        self._fleet = fleet
        self._clock = clock
        self.mode = mode
        self.budget = budget
        self._demand = demand
        self._pinned_clusters = pinned_clusters
        self._settings = settings
        self._on_action = on_action  # (action, size class) of each action carried out
        self._general_runtime = general_runtime
        self._idle_since: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._every_tick())

    async def stop(self) -> None:
        self._stopping = True
        for task in [self._loop, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._loop, *self._tasks] if t is not None), return_exceptions=True)

    async def _every_tick(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                self.tick()
            except Exception:  # the loop must outlive a bad pass; the next one may do better
                log.exception("autoscaler pass failed")

    def tick(self) -> None:
        """One pass: gather the facts, plan, carry the actions out (starts and stops in the background)."""
        if self._stopping:
            return
        now = self._clock.monotonic()
        pinned = self._pinned_clusters()
        facts = []
        clusters = self._fleet.clusters()
        for gone in set(self._started_at) - {c.id for c in clusters if c.state in ALIVE}:
            self._started_at.pop(gone, None)
            self._idle_since.pop(gone, None)
        for cluster in clusters:
            if cluster.state not in ALIVE:
                continue
            view = cluster.view()
            started = self._started_at.setdefault(cluster.id, now)
            if view.work:
                self._idle_since.pop(cluster.id, None)
                idle_since = None
            else:
                idle_since = self._idle_since.setdefault(cluster.id, now)
            facts.append(ClusterFacts(view, started, idle_since, holds_state=cluster.id in pinned))
        demand = list(self._demand())
        sizes = [self._fleet.size_class(name) for name in self._fleet.size_names()]
        for action in plan_scaling(facts, demand, sizes, self.budget, self.mode, now, self._settings,
                                   general_runtime=self._general_runtime()):
            self._carry_out(action)

    def _carry_out(self, action: StartCluster | DrainCluster | StopCluster) -> None:
        log.info("autoscaler: %s", action)
        if isinstance(action, StartCluster):
            self._on_action("start", action.size)
            self._spawn(self._start(action))
            return
        cluster = self._fleet.get(action.cluster_id)
        size = cluster.size.name if cluster is not None else ""
        if isinstance(action, DrainCluster):
            self._fleet.drain_cluster(action.cluster_id, f"autoscaler: {action.reason}")
            self._on_action("drain", size)
        else:
            stopping = self._fleet.stop_cluster(action.cluster_id, f"autoscaler: {action.reason}")
            if stopping is not None:
                self._on_action("stop", size)
                self._spawn(stopping)

    async def _start(self, action: StartCluster) -> None:
        try:
            await self._fleet.start_cluster(self._fleet.size_class(action.size), reason=f"autoscaler: {action.reason}",
                                          warm_up=action.warm_up, runtime=action.runtime or None)
        except SparkfleetError as exc:
            log.error("autoscaler could not start a %s cluster: %s", action.size, exc)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
