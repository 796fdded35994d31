"""What the fleet learns while it runs: each query's observed cost, and each cluster's load.

After an ExecutePlan ends, its cost (task time, CPU, peak execution memory, spill, shuffle,
input) comes from the log its cluster's query-cost listener writes (``fleet/query_costs.py``),
read once a second while queries await their cost, and is recorded under the query's workload
fingerprint; the next estimate of that workload uses it. No call reaches the cluster for it.
A cluster's load is read from its Spark REST API every ``poll_s`` seconds while a placement
decision can use it: while work runs there, and once after work ended (an idle cluster's last
reading stays true); it is copied onto the cluster for the placement policy, and a change in busy
task slots re-evaluates the queries waiting for a cluster. Spark jobs an interrupted or failed
query left running are cancelled (``_reap_jobs``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

import httpx

from sparkfleet.clock import Clock
from sparkfleet.fleet.controller import Cluster, FleetController
from sparkfleet.fleet.model import ALIVE, LoadReading
from sparkfleet.fleet.monitor import (
    ClusterLoad,
    ClusterLoadPoller,
    QueryMetrics,
    fetch_app_id,
    kill_job,
    running_jobs_of_operation,
    ui_base_url,
)
from sparkfleet.fleet.query_costs import CostLog, OperationCost, add_line
from sparkfleet.plan.cost import ObservedCost
from sparkfleet.store import Database
from sparkfleet.policy.sizing import SizedRun, memory_floor_mb
from sparkfleet.store.history import OUT_OF_MEMORY, WorkloadRun, observed_cost, record_run, sized_runs

log = logging.getLogger(__name__)

_MAX_CACHED_FINGERPRINTS = 50_000
# Costs are read in batches: once this often while queries await theirs.
_COST_READ_EVERY_S = 1.0
# A query whose operation's end line has not come by then is recorded with what has.
_COST_SETTLE_S = 10.0
_MAX_UNCLAIMED_COSTS = 10_000
# Seconds after an operation ended, and between, at which its still-running jobs are cancelled.
_REAP_AFTER_S = (3.0, 10.0)


class WorkloadObserver:
    def __init__(self, db: Database, fleet: FleetController, clock: Clock, poll_s: float = 1.0) -> None:
        self._db = db
        self._fleet = fleet
        self._clock = clock
        self._poll_s = poll_s
        self._poller = ClusterLoadPoller(self._ui_urls, clock, interval_s=poll_s, needs_reading=self._needs_reading)
        self._costs: dict[str, ObservedCost | None] = {}
        self._floors: dict[str, int] = {}
        self._app_ids: dict[str, str] = {}
        self._client: httpx.AsyncClient | None = None
        self._reapers: set[asyncio.Task[None]] = set()  # cancelled at stop: they only wait and check
        self._copier: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._reaped_listeners: list[Callable[[], None]] = []
        # Queries awaiting their cost, by (session id, operation id); per cluster, its cost log and
        # what it said so far of operations (lines may come before the query's end is known here).
        self._awaiting: dict[tuple[str, str], _AwaitedCost] = {}
        self._cost_logs: dict[str, CostLog] = {}
        self._costs_seen: dict[str, dict[tuple[str, str], OperationCost]] = {}
        self._costs_awaited = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None

    # ---- workload history ----------------------------------------------------------------------

    def observed(self, fingerprint: str) -> ObservedCost | None:
        """What past runs of this workload cost (cached; the store is read once per fingerprint)."""
        if fingerprint not in self._costs:
            if len(self._costs) >= _MAX_CACHED_FINGERPRINTS:
                self._costs.clear()
            self._costs[fingerprint] = observed_cost(self._db, fingerprint)
        return self._costs[fingerprint]

    def memory_floor(self, fingerprint: str) -> int:
        """Memory (MB) a cluster must exceed for this workload, learned from its out-of-memory runs."""
        if fingerprint not in self._floors:
            if len(self._floors) >= _MAX_CACHED_FINGERPRINTS:
                self._floors.clear()
            runs = []
            for row in sized_runs(self._db, fingerprint):
                memory_mb = self._size_memory_mb(row["size_class"])
                if memory_mb:
                    runs.append(SizedRun(memory_mb, row["outcome"] == OUT_OF_MEMORY, int(row["peak_execution_memory"] or 0)))
            self._floors[fingerprint] = memory_floor_mb(runs)
        return self._floors[fingerprint]

    def _size_memory_mb(self, size_name: str) -> int:
        try:
            return self._fleet.size_class(size_name).memory_mb
        except KeyError:  # a size class no longer configured
            return 0

    def out_of_memory(self, run: WorkloadRun) -> None:
        """Record an attempt that ran its cluster out of memory (its size is what the workload outgrew)."""
        self._record(dataclasses.replace(run, outcome=OUT_OF_MEMORY))

    def query_finished(self, cluster: Cluster | None, run: WorkloadRun, session_id: str) -> None:
        """Record a finished query; a successful one once its cluster's listener told its cost."""
        if not run.fingerprint:
            return
        handle = cluster.handle if cluster is not None else None
        if run.outcome != "succeeded" or handle is None:
            self._record(run)
            if handle is not None:
                self._spawn(self._reap_jobs(handle.ui_port, cluster.id, run.query_id, session_id),  # type: ignore[union-attr]
                            self._reapers)
            return
        if handle.costs_dir is None:  # a cluster without the listener: no cost to wait for
            self._record(run)
            return
        self._cost_logs.setdefault(cluster.id, CostLog(handle.costs_dir))  # type: ignore[union-attr]
        self._awaiting[(session_id, run.query_id)] = _AwaitedCost(
            cluster.id, run, self._clock.monotonic() + _COST_SETTLE_S)  # type: ignore[union-attr]
        self._costs_awaited.set()

    def _spawn(self, coro, tasks: set[asyncio.Task[None]]) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _reap_jobs(self, ui_port: int, cluster_id: str, query_id: str, session_id: str) -> None:
        """Cancel Spark jobs an ended (interrupted, failed) operation left running.

        Spark cancels an interrupted operation's jobs by tag, once: a job the query submits just
        after (adaptive execution starts stages from other threads) runs on with nobody to read
        it, holding the cluster's task slots for as long as it takes (measured: a cross join
        interrupted between its broadcast and its main stage ran on for minutes). Jobs of the
        operation still running a little after it ended are cancelled through the Spark UI."""
        url = ui_base_url(ui_port)
        for delay in _REAP_AFTER_S:
            await asyncio.sleep(delay)
            try:
                client = self._http()
                app_id = await self._app_id(cluster_id, url)
                if not app_id:
                    return
                for job_id in await running_jobs_of_operation(url, app_id, session_id, query_id, client=client):
                    if await kill_job(url, job_id, client=client):
                        log.warning("cancelled Spark job %d of ended query %s on cluster %s: it was still running",
                                    job_id, query_id, cluster_id)
                        for listener in self._reaped_listeners:
                            listener()
            except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                log.debug("could not check query %s's jobs on %s: %r", query_id, cluster_id, exc)

    async def _collect_costs(self) -> None:
        """Read the cost logs once a second while queries await their cost."""
        while True:
            await self._costs_awaited.wait()
            await asyncio.sleep(_COST_READ_EVERY_S)
            try:
                self._read_costs(settle_all=False)
            except Exception:  # the history is an optimisation: never let it stop
                log.exception("reading query costs failed")
            if not self._awaiting:
                self._costs_awaited.clear()

    def _read_costs(self, settle_all: bool) -> None:
        """Fold new cost lines in; record the awaiting queries whose operation has ended (or
        whose time is up, or all of them with ``settle_all``)."""
        now = self._clock.monotonic()
        for cluster_id in {a.cluster_id for a in self._awaiting.values()}:
            seen = self._costs_seen.setdefault(cluster_id, {})
            for line in self._cost_logs[cluster_id].read_new():
                add_line(seen, line)
        for key, awaited in list(self._awaiting.items()):
            seen = self._costs_seen.get(awaited.cluster_id, {})
            cost = seen.get(key)
            if (cost is None or not cost.ended) and now < awaited.settle_by and not settle_all:
                continue
            del self._awaiting[key]
            seen.pop(key, None)
            self._record(awaited.run if cost is None else _with_cost(awaited.run, cost.metrics))
        live = {c.id for c in self._fleet.clusters() if c.state in ALIVE}
        for cluster_id, seen in list(self._costs_seen.items()):
            if cluster_id not in live and all(a.cluster_id != cluster_id for a in self._awaiting.values()):
                del self._costs_seen[cluster_id]
                self._cost_logs.pop(cluster_id, None)
            elif len(seen) > _MAX_UNCLAIMED_COSTS:  # operations nobody awaits (failed, not fingerprinted)
                for key in [k for k, c in seen.items() if c.ended and k not in self._awaiting]:
                    del seen[key]

    def _record(self, run: WorkloadRun) -> None:
        record_run(self._db, run)
        # Read afresh, with this run, next time.
        self._costs.pop(run.fingerprint, None)
        self._floors.pop(run.fingerprint, None)

    async def _app_id(self, cluster_id: str, url: str) -> str | None:
        """The cluster's Spark application id, read from its UI once."""
        app_id = self._app_ids.get(cluster_id) or await fetch_app_id(url, client=self._http())
        if app_id:
            self._app_ids[cluster_id] = app_id
        return app_id

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=2.0)
        return self._client

    # ---- cluster load --------------------------------------------------------------------------

    def on_orphan_job_cancelled(self, listener: Callable[[], None]) -> None:
        self._reaped_listeners.append(listener)

    def on_load_change(self, listener: Callable[[], None]) -> None:
        """Called when a cluster's busy task slots change (e.g. to re-evaluate waiting queries)."""
        self._listeners.append(listener)

    def _ui_urls(self) -> dict[str, str]:
        return {
            c.id: ui_base_url(c.handle.ui_port)
            for c in self._fleet.clusters()
            if c.state in ALIVE and c.handle is not None
        }

    def _needs_reading(self, cluster_id: str, latest: ClusterLoad | None) -> bool:
        """Whether a placement decision can use a new reading of the cluster: while work runs
        there (or its last reading showed tasks running), and once after work ended there; an
        idle cluster's idle reading stays true (policy/placement.py ``_fresh_load``)."""
        cluster = self._fleet.get(cluster_id)
        if cluster is None or latest is None or cluster.work or latest.active_tasks:
            return True
        return cluster.work_ended_at is not None and latest.observed_at < cluster.work_ended_at

    def start(self) -> None:
        self._poller.start()
        self._collector = asyncio.get_running_loop().create_task(self._collect_costs(), name="sparkfleet-query-costs")
        self._copier = asyncio.get_running_loop().create_task(self._copy_readings(), name="sparkfleet-load-copier")

    async def _copy_readings(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s / 2)
            changed = False
            for cluster in self._fleet.clusters():
                load = self._poller.latest(cluster.id)
                if load is None:
                    continue
                previous = cluster.load
                cluster.load = LoadReading(
                    load.observed_at, load.active_tasks, load.task_slots, load.heap_used_bytes, load.heap_max_bytes,
                    None if load.execution_memory_bytes is None
                    else load.execution_memory_bytes + load.storage_used_bytes,
                )
                if previous is None or (previous.active_tasks >= previous.task_slots) != (
                    load.active_tasks >= load.task_slots
                ):
                    changed = True
            if changed:
                for listener in self._listeners:
                    listener()

    async def stop(self) -> None:
        for task in (self._copier, self._collector):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._poller.stop()
        for reaper in list(self._reapers):
            reaper.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)
        self._read_costs(settle_all=True)  # what the logs say by now, for every query still waiting
        if self._client is not None:
            await self._client.aclose()


@dataclass(frozen=True, slots=True)
class _AwaitedCost:
    cluster_id: str
    run: WorkloadRun
    settle_by: float  # monotonic: recorded with what is known by then


def _with_cost(run: WorkloadRun, metrics: QueryMetrics) -> WorkloadRun:
    return dataclasses.replace(
        run,
        task_ms=metrics.task_ms,
        cpu_ms=metrics.cpu_ms,
        peak_execution_memory=metrics.peak_execution_memory,
        spilled_bytes=metrics.spilled_bytes,
        shuffle_bytes=metrics.shuffle_bytes,
        input_bytes=metrics.input_bytes,
    )
