"""Carry out the CPU-sharing policy on the running local clusters.

Whenever the work placed on the clusters changes (and once a second, for pipelines that went
quiet), ``policy/cpu_share.py`` says which CPU set and nice value each cluster should have; the
clusters whose share differs from what they have are set, on a worker thread, one pass at a time.
"""

from __future__ import annotations

import asyncio
import logging

from sparkfleet.clock import Clock
from sparkfleet.fleet.controller import FleetController
from sparkfleet.fleet.cpu_control import apply_cpu_share
from sparkfleet.policy.cpu_share import CpuShare, CpuShareSettings, plan_cpu_shares

log = logging.getLogger(__name__)

_RECHECK_S = 1.0
# Every cluster's share is set again this often even when unchanged: a thread that escaped a pass
# (started by one not set yet) gets it within this time.
_REASSERT_S = 5.0


class CpuSharer:
    def __init__(self, fleet: FleetController, clock: Clock, settings: CpuShareSettings) -> None:
        self._fleet = fleet
        self._clock = clock
        self._settings = settings
        # What each cluster's threads were last set to (by cluster id and the pid it was set on).
        self._applied: dict[str, tuple[int, CpuShare]] = {}
        self._pass: asyncio.Task[None] | None = None
        self._again = False
        self._loop_task: asyncio.Task[None] | None = None
        self._reasserted_at = 0.0

    @property
    def settings(self) -> CpuShareSettings:
        return self._settings

    def share_of(self, cluster_id: str) -> CpuShare | None:
        applied = self._applied.get(cluster_id)
        return applied[1] if applied else None

    def refresh(self) -> None:
        """Re-plan now (from the event loop); a pass already running is followed by one more."""
        if self._pass is not None and not self._pass.done():
            self._again = True
            return
        self._pass = asyncio.get_running_loop().create_task(self._apply_plan())

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._every_second())

    async def stop(self) -> None:
        for task in (self._loop_task, self._pass):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._loop_task, self._pass) if t is not None), return_exceptions=True)

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(_RECHECK_S)
            self.refresh()

    async def _apply_plan(self) -> None:
        while True:
            self._again = False
            now = self._clock.monotonic()
            plan = plan_cpu_shares(self._fleet.snapshot().clusters, now, self._settings)
            reassert = now - self._reasserted_at >= _REASSERT_S
            if reassert:
                self._reasserted_at = now
            changes = []
            for cluster_id, share in plan.items():
                cluster = self._fleet.get(cluster_id)
                if cluster is None or cluster.handle is None:
                    continue
                pid = cluster.handle.pid
                if reassert or self._applied.get(cluster_id) != (pid, share):
                    changes.append((cluster_id, pid, share))
            for cluster_id in set(self._applied) - set(plan):
                del self._applied[cluster_id]  # stopped or lost
            if changes:
                await asyncio.to_thread(self._set, changes)
            if not self._again:
                return

    def _set(self, changes: list[tuple[str, int, CpuShare]]) -> None:
        for cluster_id, pid, share in changes:
            try:
                threads = apply_cpu_share(pid, share.cpus, share.nice)
            except PermissionError as exc:
                log.warning("CPU sharing is off: cannot set the priority of cluster %s's threads (%s)", cluster_id, exc)
                self._settings = CpuShareSettings(enabled=False)
                continue
            except OSError as exc:
                log.warning("could not set the CPUs of cluster %s: %s", cluster_id, exc)
                continue
            self._applied[cluster_id] = (pid, share)
            log.debug("cluster %s: CPUs %s nice %d on %d threads (%s)", cluster_id, share.cpus, share.nice, threads, share.reason)
