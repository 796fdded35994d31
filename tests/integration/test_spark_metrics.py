"""fleet/monitor.py against a real Spark Connect server: an operation's cost and a cluster's load;
and what the warm-up of a new cluster (fleet/provisioners/warmup.py) leaves on it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

import grpc
import httpx
import pytest
from pyspark.sql import functions as F

from sparkfleet.clock import SystemClock, VirtualClock
from sparkfleet.fleet.monitor import (
    OPERATION_TAG_PREFIX,
    ClusterLoad,
    ClusterLoadPoller,
    fetch_app_id,
    fetch_query_metrics,
    fetch_utilisation,
    kill_job,
    operation_job_tag,
    running_jobs_of_operation,
    ui_base_url,
)
from sparkfleet.fleet.query_costs import CostLog, OperationCost, add_line, build_listener
from sparkfleet.fleet.runtimes import installed_pyspark_runtime
from sparkfleet.testing.direct import DirectServer
from sparkfleet.fleet.provisioners.local import free_port
from sparkfleet.fleet.provisioners.warmup import WARM_UP_QUERIES, execute_request, warm_up
from sparkfleet.testing.process import spark_session

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.fixture(scope="module")
def server() -> Iterator[DirectServer]:
    runtime = installed_pyspark_runtime()
    listener = asyncio.run(build_listener(runtime.spark_home, runtime.version))
    direct = DirectServer(cores=2, memory_mb=2048, listener=listener).start()
    try:
        yield direct
    finally:
        direct.stop()


@pytest.fixture(scope="module")
def ui(server: DirectServer) -> str:
    base = ui_base_url(server.ui_port)
    # Spark starts its REST servlet on the first request (seconds on a busy machine); what the
    # tests measure is the warm path, as a poller keeps it warm in the gateway.
    assert _run(fetch_app_id(base, request_timeout_s=60)) is not None
    return base


@pytest.fixture
def spark(server: DirectServer) -> Iterator[Any]:
    with spark_session(server.url) as session:
        yield session


class OperationIds:
    """The operation id of each ExecutePlan the stock client finished, via its progress handlers."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    def __call__(self, stages: Any, inflight_tasks: int, operation_id: str | None, done: bool) -> None:
        if done and operation_id and operation_id not in self.finished:
            self.finished.append(operation_id)

    def of(self, spark: Any, action: Callable[[], T]) -> tuple[str, T]:
        before = len(self.finished)
        result = action()
        [operation_id] = self.finished[before:]
        return operation_id, result


@pytest.fixture
def operations(spark: Any) -> OperationIds:
    ids = OperationIds()
    spark.registerProgressHandler(ids)
    return ids


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _until(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _endless_query(spark: Any, partitions: int) -> tuple[threading.Thread, list[BaseException]]:
    """A query that runs until it is interrupted or cancelled, in a thread; what ended it lands in the list."""
    failure: list[BaseException] = []

    def endless_query() -> None:
        try:
            spark.range(0, 10**13, 1, partitions).selectExpr("sum(hash(id))").collect()
        except Exception as exc:  # noqa: BLE001 - the interruption ends it
            failure.append(exc)

    runner = threading.Thread(target=endless_query, daemon=True)
    runner.start()
    return runner, failure


# ---- the cost of one operation ------------------------------------------------------------------


def test_the_clusters_own_listener_reports_what_the_rest_api_does(
    server: DirectServer, spark: Any, operations: OperationIds, ui: str
) -> None:
    """The query-cost listener (what the gateway reads) against the Spark UI's REST API (what it
    read before): the same jobs, stages, tasks, task time and bytes for a query with a shuffle."""
    rows = 2_000_000
    operation_id, _ = operations.of(
        spark, lambda: spark.range(rows).groupBy((F.col("id") % 100).alias("k")).count().collect())
    costs: dict[tuple[str, str], OperationCost] = {}
    log = CostLog(server.costs_dir)

    def ended() -> OperationCost | None:
        for line in log.read_new():
            add_line(costs, line)
        cost = costs.get((spark.session_id, operation_id))
        return cost if cost is not None and cost.ended else None

    pushed = _until(ended, 30, "the listener's end line for the operation").metrics
    rest = _run(fetch_query_metrics(ui, spark.session_id, operation_id))
    assert rest is not None and rest.complete
    assert (pushed.jobs, pushed.stages, pushed.tasks, pushed.failed_jobs) == (rest.jobs, rest.stages, rest.tasks, 0)
    assert pushed.task_ms == rest.task_ms > 0
    assert abs(pushed.cpu_ms - rest.cpu_ms) <= pushed.jobs  # nanoseconds rounded per job, not per query
    assert pushed.peak_execution_memory == rest.peak_execution_memory
    assert pushed.shuffle_bytes == rest.shuffle_bytes > 0
    assert (pushed.input_records, pushed.spilled_bytes) == (rest.input_records, rest.spilled_bytes)


def test_a_shuffle_query_reports_its_work(spark: Any, operations: OperationIds, ui: str) -> None:
    rows = 2_000_000
    operation_id, result = operations.of(
        spark, lambda: spark.range(rows).groupBy((F.col("id") % 100).alias("k")).count().collect()
    )
    assert sorted(r["count"] for r in result) == [rows // 100] * 100

    metrics = _run(fetch_query_metrics(ui, spark.session_id, operation_id))
    assert metrics is not None and metrics.complete
    assert metrics.jobs >= 1 and metrics.stages >= 2 and metrics.tasks >= 2  # map and reduce side
    assert metrics.failed_jobs == 0
    assert metrics.task_ms > 0 and metrics.cpu_ms > 0
    assert metrics.cpu_ms <= metrics.task_ms + metrics.tasks  # CPU time is part of run time
    assert metrics.duration_ms > 0
    assert metrics.shuffle_bytes > 0  # 100 groups per map task written, then read
    assert metrics.input_records == rows  # range() reads its rows without bytes from a source
    assert metrics.input_bytes == 0
    assert metrics.peak_execution_memory > 0  # the hash aggregate
    assert metrics.spilled_bytes == 0


def test_the_job_tag_is_spark_connects(spark: Any, operations: OperationIds, ui: str) -> None:
    operation_id, _ = operations.of(spark, lambda: spark.range(10).collect())

    async def tags() -> list[str]:
        async with httpx.AsyncClient(trust_env=False) as http:
            app = await fetch_app_id(ui, client=http)
            jobs = (await http.get(f"{ui}/api/v1/applications/{app}/jobs")).json()
        return [t for j in jobs for t in j["jobTags"] if operation_id in t]

    # The stock client sends an empty user id unless one is configured.
    assert _run(tags()) == [operation_job_tag("", spark.session_id, operation_id)]
    assert operation_job_tag("", "s", "o").startswith(OPERATION_TAG_PREFIX)


def test_an_operation_without_spark_jobs_costs_nothing(spark: Any, operations: OperationIds, ui: str) -> None:
    # A small local relation is answered by the driver alone.
    operation_id, _ = operations.of(spark, lambda: spark.createDataFrame([(1, "a")], "x int, y string").collect())
    metrics = _run(fetch_query_metrics(ui, spark.session_id, operation_id))
    assert metrics is not None
    assert (metrics.jobs, metrics.tasks, metrics.task_ms, metrics.shuffle_bytes) == (0, 0, 0, 0)


def test_a_dead_or_silent_ui_gives_no_metrics_quickly(spark: Any) -> None:
    dead = ui_base_url(free_port())  # nothing listens there
    assert _run(fetch_query_metrics(dead, spark.session_id, "00000000-0000-0000-0000-000000000000")) is None
    assert _run(fetch_utilisation(dead, SystemClock())) is None
    assert _run(fetch_app_id(dead)) is None


# ---- warming a new cluster up -------------------------------------------------------------------


def test_the_warm_up_runs_shuffles_on_the_cluster_and_releases_its_session(server: DirectServer, ui: str) -> None:
    session_id = str(uuid.uuid4())
    took = _run(warm_up(f"127.0.0.1:{server.port}", server.token, "direct", session_id=session_id))
    assert took is not None and took > 0

    async def jobs_of_session() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(trust_env=False) as http:
            app = await fetch_app_id(ui, client=http)
            jobs = (await http.get(f"{ui}/api/v1/applications/{app}/jobs")).json()
        return [j for j in jobs if any(f"_Session_{session_id}_" in t for t in j["jobTags"])]

    jobs = _run(jobs_of_session())
    assert len(jobs) >= len(WARM_UP_QUERIES) and all(j["status"] == "SUCCEEDED" for j in jobs)
    assert sum(len(j["stageIds"]) for j in jobs) > len(jobs)  # shuffles: jobs of more than one stage

    # Its session was released: the server refuses to run anything more in it.
    async def reuse() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            execute = channel.unary_stream("/spark.connect.SparkConnectService/ExecutePlan")
            async for _ in execute(execute_request(session_id, "SELECT 1"),
                                   metadata=(("authorization", f"Bearer {server.token}"),)):
                pass

    with pytest.raises(grpc.aio.AioRpcError, match="SESSION_CLOSED"):
        _run(reuse())


def test_a_failed_warm_up_is_reported_not_raised(server: DirectServer) -> None:
    assert _run(warm_up(f"127.0.0.1:{server.port}", "not-the-token", "direct")) is None


# ---- a cluster's load ---------------------------------------------------------------------------


def _load_where(ui: str, clock: VirtualClock, wanted: Callable[[ClusterLoad], bool]) -> ClusterLoad | None:
    reading = _run(fetch_utilisation(ui, clock))
    return reading if reading is not None and wanted(reading) else None


def test_load_shows_running_tasks_and_then_none(server: DirectServer, ui: str) -> None:
    clock = VirtualClock()
    idle = _run(fetch_utilisation(ui, clock))
    assert idle is not None
    assert idle.task_slots == 2 and idle.observed_at == clock.monotonic()
    assert idle.storage_max_bytes > 0
    assert idle.heap_used_bytes is not None and idle.heap_max_bytes is not None  # JvmSource is on
    assert 0 < idle.heap_used_bytes <= idle.heap_max_bytes
    assert idle.execution_memory_bytes is not None

    with spark_session(server.url) as spark:
        runner, failure = _endless_query(spark, partitions=8)
        try:
            busy = _until(lambda: _load_where(ui, clock, lambda r: r.active_tasks > 0), 120, "running tasks")
            assert busy.active_tasks <= busy.task_slots
            assert busy.free_slots == busy.task_slots - busy.active_tasks
        finally:
            spark.interruptAll()
            runner.join(60)
        assert failure, "the endless query ended without being interrupted"
    done = _until(lambda: _load_where(ui, clock, lambda r: r.active_tasks == 0), 60, "no running tasks")
    assert done.free_slots == done.task_slots == 2


async def _silent_server(connections: list[int]) -> tuple[asyncio.Server, str]:
    """A port that accepts connections and never answers (a hung cluster UI); counts connections."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    return server, ui_base_url(server.sockets[0].getsockname()[1])


def test_the_poller_keeps_the_latest_reading_of_listed_clusters_only(ui: str) -> None:
    async def scenario() -> None:
        hung_connections: list[int] = []
        hung, hung_url = await _silent_server(hung_connections)
        clusters = {"c-1": ui, "c-dead": ui_base_url(free_port()), "c-hung": hung_url}
        poller = ClusterLoadPoller(lambda: clusters, SystemClock(), interval_s=0.1)
        assert poller.latest("c-1") is None
        poller.start()
        try:
            readings = []
            deadline = time.monotonic() + 30
            while len(readings) < 5 and time.monotonic() < deadline:  # five fresh readings
                latest = poller.latest("c-1")
                if latest is not None and (not readings or latest.observed_at > readings[-1].observed_at):
                    readings.append(latest)
                await asyncio.sleep(0.02)
            assert len(readings) == 5 and readings[0].task_slots == 2
            # Meanwhile the hung cluster was asked at most twice (each request waits for its
            # timeout): clusters are polled on their own, so a hung one never holds up the others'
            # readings (one round for all would have asked it before each of the five).
            assert 1 <= len(hung_connections) <= 2
            assert poller.latest("c-dead") is None and poller.latest("c-hung") is None  # unknown, not idle
            clusters.pop("c-1")  # the cluster left the fleet
            while poller.latest("c-1") is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert poller.latest("c-1") is None
        finally:
            await poller.stop()
            hung.close()

    _run(scenario())


def test_a_running_job_is_found_by_its_operation_and_cancelled_through_the_ui(server: DirectServer, ui: str) -> None:
    """What the gateway does to jobs an ended operation left running (gateway/workloads.py)."""
    seen: list[str] = []

    def progress(stages: Any, inflight_tasks: int, operation_id: str | None, done: bool) -> None:
        if operation_id and operation_id not in seen:
            seen.append(operation_id)

    with spark_session(server.url) as spark:
        spark.registerProgressHandler(progress)
        runner, failure = _endless_query(spark, partitions=2)
        try:
            operation_id = _until(lambda: seen[0] if seen else None, 120, "the query's progress")

            async def running() -> list[int]:
                async with httpx.AsyncClient() as client:
                    app_id = await fetch_app_id(ui, client=client)
                    assert app_id is not None
                    return await running_jobs_of_operation(ui, app_id, spark.session_id, operation_id, client=client)

            job_ids = _until(lambda: _run(running()) or None, 60, "the query's running job")

            async def kill() -> None:
                async with httpx.AsyncClient() as client:
                    for job_id in job_ids:
                        assert await kill_job(ui, job_id, client=client)

            _run(kill())
            runner.join(60)
            assert not runner.is_alive() and failure, "the query went on after its job was cancelled"
            assert "cancel" in str(failure[0]).lower()
            assert _until(lambda: [] if not _run(running()) else None, 30, "no running job") == []
        finally:
            spark.interruptAll()
            runner.join(60)
