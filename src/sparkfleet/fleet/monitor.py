"""What a query cost and how busy a cluster is, read from each cluster's Spark UI REST API.

Spark Connect tags every Spark job of an operation with
``SparkConnect_OperationTag_User_<user>_Session_<session>_Operation_<operation>`` (``ExecuteJobTag``
in Spark's ``ExecuteHolder.scala``); ``/api/v1/applications/<app>/jobs`` lists each job's
``jobTags`` and ``stageIds``, and ``/stages/<id>?details=false`` the stage's summed task metrics.
A cluster's load comes from ``/executors`` (task slots, running tasks, storage memory) and the
metrics servlet ``/metrics/json/`` (JVM heap from ``JvmSource``, which ``LocalProvisioner`` turns
on, and execution memory as of the driver's last heartbeat).

The UI keeps only the last ``spark.ui.retainedJobs`` / ``retainedStages`` (1000 each by default)
jobs and stages: metrics must be fetched soon after an operation ends, and on a busy long-running
cluster an operation followed by more than that many jobs or stages is gone (it then reads as no
jobs, or ``complete=False`` when only some stages were evicted). Every call is bounded by short
timeouts and answers None rather than raising when the UI is slow or the cluster is dead.

Parsing (``summarise_operation``, ``load_from``) is pure; the fetch functions and
:class:`ClusterLoadPoller` are the shell.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

import httpx

from sparkfleet.clock import Clock

log = logging.getLogger(__name__)

OPERATION_TAG_PREFIX = "SparkConnect_OperationTag_"
# How long one HTTP request to a cluster's UI may take; a healthy local UI answers in ~1-30 ms
# (the jobs list of a long-running cluster is ~1 MB). A missed load reading just ages.
DEFAULT_REQUEST_TIMEOUT_S = 0.5
QUERY_METRICS_REQUEST_TIMEOUT_S = 5.0
# The first REST request a JVM serves starts Spark's REST servlet (0.3 s idle, 3.9 s measured on
# a loaded 2-core machine); the application id is read once per cluster and may wait that long.
APP_ID_TIMEOUT_S = 5.0
# Jobs finish on the DAG scheduler before the UI's listener has seen their last events.
DEFAULT_SETTLE_TIMEOUT_S = 2.0
_SETTLE_RETRY_S = 0.1
_MAX_PARALLEL_REQUESTS = 8
_STAGE_READS_AT_ONCE = 2
_CSRF_TOKEN = re.compile(r'name="csrfToken" value="([0-9A-Za-z_-]+)"')
_UNSETTLED_JOB = frozenset({"RUNNING", "UNKNOWN"})
_UNSETTLED_STAGE = frozenset({"ACTIVE", "PENDING"})


def ui_base_url(ui_port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{ui_port}"


def operation_job_tag(user_id: str, session_id: str, operation_id: str) -> str:
    """The tag Spark Connect puts on every Spark job an operation runs."""
    return f"{OPERATION_TAG_PREFIX}User_{user_id}_Session_{session_id}_Operation_{operation_id}"


def is_job_of_operation(job_tags: Iterable[str], session_id: str, operation_id: str) -> bool:
    """Whether a job's tags name this operation (of any user: session ids are unique UUIDs)."""
    suffix = f"_Session_{session_id}_Operation_{operation_id}"
    return any(t.startswith(OPERATION_TAG_PREFIX) and t.endswith(suffix) for t in job_tags)


# ---- query metrics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryMetrics:
    """What one Spark Connect operation cost on its cluster, summed over its Spark jobs.

    Times are milliseconds, sizes bytes. An operation that ran no Spark job (metadata, a local
    relation answered by the driver) has ``jobs == 0`` and zeros everywhere.
    """

    jobs: int
    stages: int  # stage attempts that ran (skipped stages excluded)
    tasks: int  # task attempts that ran: completed, failed and killed
    failed_jobs: int
    duration_ms: int  # first job submitted to last job completed
    task_ms: int  # executor run time summed over tasks (core-milliseconds)
    cpu_ms: int  # executor CPU time summed over tasks
    peak_execution_memory: int  # max over stages of the stage's summed task peaks
    spilled_bytes: int  # memory + disk spill
    shuffle_bytes: int  # shuffle read + write
    input_bytes: int
    input_records: int
    # False when jobs or stages were still running after the settle timeout, or some stages
    # were already evicted from the UI: the numbers are then a lower bound.
    complete: bool = True


def summarise_operation(
    jobs: Iterable[Mapping[str, Any]],
    stage_attempts: Iterable[Mapping[str, Any]],
    *,
    complete: bool = True,
) -> QueryMetrics:
    """Sum the REST ``JobData`` of one operation's jobs and ``StageData`` of their stage attempts."""
    jobs = list(jobs)
    ran = [s for s in stage_attempts if s.get("status") != "SKIPPED"]
    starts = [_epoch_ms(j["submissionTime"]) for j in jobs if j.get("submissionTime")]
    ends = [_epoch_ms(j["completionTime"]) for j in jobs if j.get("completionTime")]
    settled = all(j.get("status") not in _UNSETTLED_JOB for j in jobs) and all(
        s.get("status") not in _UNSETTLED_STAGE for s in ran
    )

    def total(*fields: str) -> int:
        return sum(int(s.get(f, 0)) for s in ran for f in fields)

    return QueryMetrics(
        jobs=len(jobs),
        stages=len(ran),
        tasks=total("numCompleteTasks", "numFailedTasks", "numKilledTasks"),
        failed_jobs=sum(1 for j in jobs if j.get("status") == "FAILED"),
        duration_ms=max(0, max(ends) - min(starts)) if starts and ends else 0,
        task_ms=total("executorRunTime"),
        cpu_ms=total("executorCpuTime") // 1_000_000,  # nanoseconds in the REST API
        peak_execution_memory=max((int(s.get("peakExecutionMemory", 0)) for s in ran), default=0),
        spilled_bytes=total("memoryBytesSpilled", "diskBytesSpilled"),
        shuffle_bytes=total("shuffleReadBytes", "shuffleWriteBytes"),
        input_bytes=total("inputBytes"),
        input_records=total("inputRecords"),
        complete=complete and settled,
    )


async def fetch_query_metrics(
    ui_base_url: str,
    session_id: str,
    operation_id: str,
    *,
    client: httpx.AsyncClient | None = None,
    app_id: str | None = None,
    settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S,
    request_timeout_s: float = QUERY_METRICS_REQUEST_TIMEOUT_S,
) -> QueryMetrics | None:
    """The cost of one operation, or None when the cluster's UI cannot be read in time.

    Waits up to ``settle_timeout_s`` for the operation's jobs and stages to settle in the UI;
    after that the metrics are returned with ``complete=False``.
    """
    async with _client_for(client, request_timeout_s) as http:
        try:
            async with asyncio.timeout(APP_ID_TIMEOUT_S + settle_timeout_s + 4 * request_timeout_s):
                app = app_id or await fetch_app_id(ui_base_url, client=http)
                if app is None:
                    return None
                return await _settled_metrics(http, f"{ui_base_url}/api/v1/applications/{app}",
                                              session_id, operation_id, settle_timeout_s, request_timeout_s)
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.debug("no metrics for operation %s from %s: %r", operation_id, ui_base_url, exc)
            return None


async def _settled_metrics(
    http: httpx.AsyncClient, app_url: str, session_id: str, operation_id: str, settle_timeout_s: float,
    request_timeout_s: float,
) -> QueryMetrics:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_timeout_s
    while True:
        jobs = await _operation_jobs(http, app_url, session_id, operation_id, request_timeout_s)
        stage_ids = sorted({sid for j in jobs for sid in j.get("stageIds", ())})
        attempts, missing = await _stage_attempts(http, app_url, stage_ids, request_timeout_s)
        metrics = summarise_operation(jobs, attempts, complete=not missing)
        if metrics.complete or missing or loop.time() >= deadline:
            return metrics
        await asyncio.sleep(_SETTLE_RETRY_S)


async def _operation_jobs(
    http: httpx.AsyncClient, app_url: str, session_id: str, operation_id: str, request_timeout_s: float
) -> list[dict[str, Any]]:
    """The operation's jobs among every job the UI retains.

    The list is ~1 KB per retained job (1 MB at the default 1000): it is searched for the tag as
    bytes first, and parsed off the event loop only when the operation is in it.
    """
    response = await http.get(f"{app_url}/jobs", timeout=_timeout(request_timeout_s))
    response.raise_for_status()
    if f"_Session_{session_id}_Operation_{operation_id}".encode() not in response.content:
        return []
    every_job = await asyncio.to_thread(json.loads, response.content)
    return [j for j in every_job if is_job_of_operation(j.get("jobTags", ()), session_id, operation_id)]


async def running_jobs_of_operation(
    ui_base_url: str, app_id: str, session_id: str, operation_id: str, *, client: httpx.AsyncClient,
    request_timeout_s: float = QUERY_METRICS_REQUEST_TIMEOUT_S,
) -> list[int]:
    """Ids of the operation's Spark jobs that are still running."""
    jobs = await _operation_jobs(client, f"{ui_base_url}/api/v1/applications/{app_id}", session_id, operation_id,
                                 request_timeout_s)
    return sorted(int(j["jobId"]) for j in jobs if j.get("status") == "RUNNING")


async def kill_job(ui_base_url: str, job_id: int, *, client: httpx.AsyncClient,
                   request_timeout_s: float = QUERY_METRICS_REQUEST_TIMEOUT_S) -> bool:
    """Cancel a running Spark job as the UI's kill link does; False if the UI shows no such link.

    The link is a form POST (``spark.ui.killEnabled``, on by default); Spark 4.3 requires the
    form's CSRF token, which the jobs page carries in each running job's kill form."""
    page = await client.get(f"{ui_base_url}/jobs/", timeout=_timeout(request_timeout_s))
    page.raise_for_status()
    form = {"id": str(job_id)}
    token = _CSRF_TOKEN.search(page.text)
    if token is not None:
        form["csrfToken"] = token.group(1)
    elif f'name="id" value="{job_id}"' not in page.text:
        return False  # not running any more (or the UI does not allow killing)
    response = await client.post(f"{ui_base_url}/jobs/job/kill/", data=form,
                                 timeout=_timeout(request_timeout_s), follow_redirects=False)
    if response.status_code >= 400:
        raise httpx.HTTPStatusError(f"kill job {job_id}: HTTP {response.status_code}", request=response.request,
                                    response=response)
    return True


async def _stage_attempts(
    http: httpx.AsyncClient, app_url: str, stage_ids: list[int], request_timeout_s: float
) -> tuple[list[dict[str, Any]], int]:
    """Every attempt of each stage (retries consumed resources too), and how many were evicted."""
    # The UI's listening socket has a tiny backlog (measured: 1): a burst of parallel requests
    # times out connecting, so a query's stages are read two at a time.
    limit = asyncio.Semaphore(_STAGE_READS_AT_ONCE)

    async def one(stage_id: int) -> list[dict[str, Any]] | None:
        async with limit:
            response = await http.get(f"{app_url}/stages/{stage_id}", params={"details": "false"},
                                      timeout=_timeout(request_timeout_s))
        if response.status_code == 404:  # evicted past spark.ui.retainedStages
            return None
        response.raise_for_status()
        return list(response.json())

    found = await asyncio.gather(*(one(s) for s in stage_ids))
    return [a for attempts in found if attempts for a in attempts], sum(1 for a in found if a is None)


# ---- cluster load -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterLoad:
    """What a cluster's Spark said about its load, and when (``observed_at``: monotonic seconds).

    A reading older than the caller's tolerance means "unknown", never "idle". None in a field:
    Spark did not expose it.
    """

    observed_at: float
    active_tasks: int
    task_slots: int  # cores: local[N] runs N tasks at once
    storage_used_bytes: int  # cached blocks (persist, broadcast) in the unified memory
    storage_max_bytes: int
    heap_used_bytes: int | None = None  # live JVM heap, garbage included (JvmSource)
    heap_max_bytes: int | None = None
    # On- plus off-heap execution memory held by tasks, as of the driver's last heartbeat
    # (spark.executor.heartbeatInterval, 10 s): may lag behind the other fields.
    execution_memory_bytes: int | None = None

    @property
    def free_slots(self) -> int:
        return max(0, self.task_slots - self.active_tasks)

    def age_s(self, now: float) -> float:
        return now - self.observed_at


def load_from(
    executors: Iterable[Mapping[str, Any]], gauges: Mapping[str, Any], observed_at: float
) -> ClusterLoad:
    """A load reading from REST ``ExecutorSummary`` rows and the metrics servlet's gauges."""
    active = [e for e in executors if e.get("isActive", True)]
    by_name = {name.split(".driver.", 1)[-1]: g.get("value") for name, g in gauges.items()}

    def gauge(name: str) -> int | None:
        value = by_name.get(name)
        return int(value) if isinstance(value, (int, float)) and value >= 0 else None

    on_heap = gauge("ExecutorMetrics.OnHeapExecutionMemory")
    off_heap = gauge("ExecutorMetrics.OffHeapExecutionMemory")
    return ClusterLoad(
        observed_at=observed_at,
        active_tasks=sum(int(e.get("activeTasks", 0)) for e in active),
        task_slots=sum(int(e.get("maxTasks", e.get("totalCores", 0))) for e in active),
        storage_used_bytes=sum(int(e.get("memoryUsed", 0)) for e in active),
        storage_max_bytes=sum(int(e.get("maxMemory", 0)) for e in active),
        heap_used_bytes=gauge("jvm.heap.used"),
        heap_max_bytes=gauge("jvm.heap.max"),
        execution_memory_bytes=None if on_heap is None else on_heap + (off_heap or 0),
    )


async def fetch_utilisation(
    ui_base_url: str,
    clock: Clock,
    *,
    client: httpx.AsyncClient | None = None,
    app_id: str | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> ClusterLoad | None:
    """One load reading of a cluster, or None when its UI does not answer in time.

    The heap and execution-memory fields are None when the metrics servlet cannot be read; the
    reading is None only when the executors list cannot.
    """
    async with _client_for(client, request_timeout_s) as http:
        try:
            async with asyncio.timeout(APP_ID_TIMEOUT_S + 2 * request_timeout_s):
                app = app_id or await fetch_app_id(ui_base_url, client=http)
                if app is None:
                    return None
                executors, gauges = await asyncio.gather(
                    _get_json(http, f"{ui_base_url}/api/v1/applications/{app}/executors", request_timeout_s),
                    _gauges(http, ui_base_url, request_timeout_s),
                )
                return load_from(executors, gauges, clock.monotonic())
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.debug("no load reading from %s: %r", ui_base_url, exc)
            return None


async def _gauges(http: httpx.AsyncClient, ui_base_url: str, request_timeout_s: float) -> Mapping[str, Any]:
    try:
        # The trailing slash avoids a redirect.
        return (await _get_json(http, f"{ui_base_url}/metrics/json/", request_timeout_s)).get("gauges", {})
    except (httpx.HTTPError, ValueError, AttributeError):
        return {}


async def fetch_app_id(ui_base_url: str, *, client: httpx.AsyncClient | None = None,
                       request_timeout_s: float = APP_ID_TIMEOUT_S) -> str | None:
    """The id of the one Spark application a cluster's UI serves, or None if it cannot be read."""
    async with _client_for(client, request_timeout_s) as http:
        try:
            apps = await _get_json(http, f"{ui_base_url}/api/v1/applications", request_timeout_s)
            return str(apps[0]["id"]) if apps else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.debug("no application id from %s: %r", ui_base_url, exc)
            return None


# ---- the poller (impure shell) ------------------------------------------------------------------


class ClusterLoadPoller:
    """Keeps the latest :class:`ClusterLoad` of every live cluster, read every ``interval_s``.

    ``ui_urls`` returns the live clusters (cluster id -> UI base URL), ``needs_reading`` which of
    them to read this time; with none, nothing is requested. Readings of clusters that left the
    list are dropped. Each cluster is polled on
    its own, one request set in flight at a time, so a hung cluster delays only its own reading;
    a cluster that does not answer keeps its last reading, which ages: the policy decides when
    it is too old. Polling never raises into the event loop; ``stop()`` cancels it.
    """

    def __init__(
        self,
        ui_urls: Callable[[], Mapping[str, str]],
        clock: Clock,
        *,
        interval_s: float = 1.0,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_parallel: int = _MAX_PARALLEL_REQUESTS,
        client: httpx.AsyncClient | None = None,
        needs_reading: Callable[[str, "ClusterLoad | None"], bool] | None = None,
    ) -> None:
        self._ui_urls = ui_urls
        # Whether a listed cluster is read this time (cluster id, its latest reading); default: always.
        self._needs_reading = needs_reading or (lambda _cluster_id, _latest: True)
        self._clock = clock
        self._interval_s = interval_s
        self._request_timeout_s = request_timeout_s
        self._limit = asyncio.Semaphore(max_parallel)
        self._client = client or _new_client(request_timeout_s)
        self._owns_client = client is None
        self._readings: dict[str, ClusterLoad] = {}
        self._app_ids: dict[str, str] = {}  # UI base URL -> application id (fixed per JVM)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def latest(self, cluster_id: str) -> ClusterLoad | None:
        return self._readings.get(cluster_id)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sparkfleet-load-poller")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._in_flight.clear()
        if self._owns_client:
            await self._client.aclose()

    async def poll_once(self) -> None:
        """Read every listed cluster once and wait for the readings."""
        urls = self._current_clusters()
        await asyncio.gather(*(self._poll(cluster_id, url) for cluster_id, url in urls.items()))

    async def _run(self) -> None:
        while True:
            try:
                for cluster_id, url in self._current_clusters().items():
                    if not self._needs_reading(cluster_id, self._readings.get(cluster_id)):
                        continue
                    task = self._in_flight.get(cluster_id)
                    if task is None or task.done():  # the previous poll of a slow cluster still runs
                        self._in_flight[cluster_id] = asyncio.create_task(self._poll(cluster_id, url))
            except Exception:  # a bug here must not stop the poller or reach the event loop
                log.exception("polling cluster load failed")
            await asyncio.sleep(self._interval_s)

    def _current_clusters(self) -> dict[str, str]:
        """The clusters to poll; forgets what is known of the others."""
        urls = dict(self._ui_urls())
        for gone in self._readings.keys() - urls.keys():
            del self._readings[gone]
        for gone in self._in_flight.keys() - urls.keys():
            self._in_flight.pop(gone).cancel()
        live = set(urls.values())
        self._app_ids = {url: app for url, app in self._app_ids.items() if url in live}
        return urls

    async def _poll(self, cluster_id: str, url: str) -> None:
        try:
            async with self._limit:
                app = self._app_ids.get(url)
                if app is None:
                    app = await fetch_app_id(url, client=self._client)
                    if app is None:
                        return
                    self._app_ids[url] = app
                reading = await fetch_utilisation(url, self._clock, client=self._client, app_id=app,
                                                  request_timeout_s=self._request_timeout_s)
            if reading is None:
                self._app_ids.pop(url, None)  # the JVM may have been replaced behind the same URL
            elif cluster_id in self._ui_urls():
                self._readings[cluster_id] = reading
        except Exception:  # noqa: BLE001 - never into the event loop; the reading just ages
            log.exception("polling the load of cluster %s failed", cluster_id)


# ---- HTTP plumbing ------------------------------------------------------------------------------


def _timeout(request_timeout_s: float) -> httpx.Timeout:
    # Connecting to a local port either works at once or is refused: a dead cluster fails fast.
    return httpx.Timeout(request_timeout_s, connect=min(request_timeout_s, 0.25))


def _new_client(request_timeout_s: float) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never sit between us and 127.0.0.1.
    return httpx.AsyncClient(timeout=_timeout(request_timeout_s), trust_env=False)


@asynccontextmanager
async def _client_for(
    client: httpx.AsyncClient | None, request_timeout_s: float
) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client as is, or a short-lived one closed on exit."""
    if client is not None:
        yield client
        return
    async with _new_client(request_timeout_s) as owned:
        yield owned


async def _get_json(http: httpx.AsyncClient, url: str, request_timeout_s: float) -> Any:
    response = await http.get(url, timeout=_timeout(request_timeout_s))
    response.raise_for_status()
    return response.json()


def _epoch_ms(spark_time: str) -> int:
    """Milliseconds since the epoch of a REST API time such as ``2026-12-01T18:51:12.170GMT``."""
    parsed = datetime.strptime(spark_time.removesuffix("GMT"), "%Y-%m-%dT%H:%M:%S.%f")
    return int(parsed.replace(tzinfo=timezone.utc).timestamp() * 1000)
