"""Carry out the CPU-sharing policy on the running local clusters' control groups.

Whenever the work placed on the clusters changes (coalesced to one pass per event-loop turn),
and once a second for pipelines whose linger ran out, ``policy/cpu_share.py`` says how each
cluster should compete for CPU time; only a cluster whose share differs from what its group has
is written (a few sysfs writes, microseconds). Without control groups the policy's shares are
still shown, but nothing is set.
"""

from __future__ import annotations

import asyncio
import logging

from sparkfleet.clock import Clock
from sparkfleet.fleet.cgroups import ClusterGroups
from sparkfleet.fleet.controller import FleetController
from sparkfleet.policy.cpu_share import CpuShare, CpuShareSettings, plan_cpu_shares

log = logging.getLogger(__name__)

_RECHECK_S = 1.0


class CpuSharer:
    def __init__(self, fleet: FleetController, groups: ClusterGroups | None, clock: Clock,
                 settings: CpuShareSettings) -> None:
        self._fleet = fleet
        self._groups = groups
        self._clock = clock
        self._settings = settings
        self._applied: dict[str, CpuShare] = {}
        self._scheduled = False
        self._loop_task: asyncio.Task[None] | None = None

    def share_of(self, cluster_id: str) -> CpuShare | None:
        return self._applied.get(cluster_id)

    def refresh(self) -> None:
        """Re-plan at the end of this event-loop turn (many changes in one turn make one pass)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._apply_plan)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._every_second())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(_RECHECK_S)
            self.refresh()

    def _apply_plan(self) -> None:
        self._scheduled = False
        plan = plan_cpu_shares(self._fleet.snapshot().clusters, self._clock.monotonic(), self._settings)
        for cluster_id in set(self._applied) - set(plan):
            del self._applied[cluster_id]  # stopped or lost
        for cluster_id, share in plan.items():
            applied = self._applied.get(cluster_id)
            if applied is not None and (applied.shares, applied.idle) == (share.shares, share.idle):
                self._applied[cluster_id] = share  # the same class for another reason
                continue
            if self._groups is not None:
                try:
                    self._groups.set_cpu(cluster_id, share.shares, share.idle)
                except OSError as exc:
                    log.warning("could not set the CPU share of cluster %s: %s", cluster_id, exc)
                    continue
            self._applied[cluster_id] = share
