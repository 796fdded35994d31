"""``sparkfleet bench overhead``: the default fleet against a plain Spark Connect server, as a user sees them.

The fleet is what ``./scripts/up`` starts (no config); the plain server is what a user starts from
the same pyspark (``spark-submit --class ...SparkConnectServer``, Spark's defaults). Stock PySpark
sessions in this process run the same small queries on both, alternating (the order rotates each
iteration), so drift and machine load fall on both alike; added latency is the median of the
*paired* per-iteration differences. Two passes:

  1. plain vs fleet: latency, and CPU per query of the processes that serve only one side (the
     gateway and the fleet's JVMs serve the fleet; the plain JVM serves plain).
  2. plain vs cluster-direct: the same queries sent straight to the fleet cluster that ran the
     fleet side's warm-up. cluster-direct - plain is what the fleet does to its cluster (CPU
     pinning, bookkeeping); fleet - cluster-direct is what the gateway adds.

Then CPU while nobody sends anything, and a ~160 MB result's throughput, fleet vs plain. The
stock client releases every response with an asynchronous ReleaseExecute: each timed query starts
only after the previous one's releases finished (they still count in the CPU).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from rich.console import Console

from sparkfleet.bench.harness import (
    Contenders,
    CpuMeter,
    default_fleet_and_plain_server,
    exit_now,
    live_clusters,
    measured,
    wait_until_settled,
)
from sparkfleet.bench.overhead_report import report
from sparkfleet.bench.overhead_results import (
    CLUSTER_DIRECT,
    FLEET,
    PLAIN,
    Idle,
    LargeResult,
    Pass,
    Results,
    WorkloadBlock,
    queries_per_cluster,
    rotation,
)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    small: bool  # counts towards the gateway's CPU goal per small query
    run: Callable[[Any], object]  # takes a SparkSession


WORKLOADS = (
    Workload("sum(range(100))", True, lambda s: s.range(100).selectExpr("sum(id)").collect()),
    Workload("select * from v (10 rows)", True, lambda s: s.sql("select * from v").collect()),
    Workload("range(1000).count()", True, lambda s: s.range(1000).count()),
    Workload("toPandas 10000x2", False, lambda s: s.range(10000).selectExpr("id", "id*2 as b").toPandas()),
)

FULL = {"warmup": 30, "iterations": 100, "idle_s": 60.0, "large_runs": 5}
QUICK = {"warmup": 10, "iterations": 30, "idle_s": 15.0, "large_runs": 2}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench overhead", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--iterations", type=int, help=f"measured iterations per workload and side (default {FULL['iterations']})")
    p.add_argument("--warmup", type=int, help=f"unmeasured iterations per workload and side first (default {FULL['warmup']})")
    p.add_argument("--idle-s", type=float, help=f"seconds nobody sends anything, for idle CPU (default {FULL['idle_s']:g})")
    p.add_argument("--large-runs", type=int, help=f"measured large-result runs per side (default {FULL['large_runs']})")
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the large result (2 bigint columns)")
    p.add_argument("--quick", action="store_true",
                   help="a fast check: " + ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()))
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.iterations < 1 or args.warmup < 0 or args.idle_s <= 0 or args.large_runs < 1 or args.rows < 1:
        p.error("--iterations, --idle-s, --large-runs and --rows must be positive, --warmup not negative")
    return args


def open_session(url: str) -> Any:
    """A separate stock session that fails fast instead of retrying for minutes, with the view ``v``.

    The default policy retries an unavailable server for about ten minutes, which after Ctrl-C
    (the servers are already stopping) would hold ``stop()`` and the release threads that long. A
    benchmark never expects a retry, so a short policy changes nothing while it runs.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    session = SparkSession.builder.remote(url).create()
    session.client.set_retry_policies([DefaultPolicy(max_retries=2, max_backoff=500)])
    session.range(10).createOrReplaceTempView("v")
    settle(session)
    return session


def settle(session: Any, timeout_s: float = 10.0) -> None:
    """Wait for the session's asynchronous ReleaseExecute calls (pyspark waits the same way on stop)."""
    futures = getattr(getattr(session, "client", None), "_release_futures", None)
    if futures:
        concurrent.futures.wait(list(futures), timeout=timeout_s)


class ClientWarnings(logging.Handler):
    """The stock client's warnings (a failed ReleaseExecute or ReleaseSession), by the side whose
    query was running: its release threads log them and go on, which would otherwise go unseen."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.side = ""
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen[f"{self.side}: {record.getMessage().splitlines()[0][:160]}"] += 1

    @contextlib.contextmanager
    def recording(self) -> Iterator["ClientWarnings"]:
        logger = logging.getLogger("pyspark.sql.connect.logging")  # disabled unless SPARK_CONNECT_LOG_LEVEL
        kept = logger.disabled, logger.level, logger.handlers, logger.propagate
        logger.disabled, logger.handlers, logger.propagate = False, [self], False
        logger.setLevel(logging.WARNING)
        try:
            yield self
        finally:
            logger.disabled, logger.handlers, logger.propagate = kept[0], kept[2], kept[3]
            logger.setLevel(kept[1])


CLIENT_WARNINGS = ClientWarnings()


def timed(workload: Workload, session: Any, side: str) -> float:
    CLIENT_WARNINGS.side = side
    start = time.perf_counter()
    workload.run(session)
    elapsed = time.perf_counter() - start
    settle(session)
    return elapsed


def warm_up(sessions: dict[str, Any], sides: tuple[str, ...], iterations: int) -> None:
    for workload in WORKLOADS:
        for i in range(iterations):
            for side in rotation(sides, i):
                timed(workload, sessions[side], side)


def fleet_queries_per_cluster(fleet: Any, session_id: str) -> Counter[str]:
    return queries_per_cluster(fleet.api(f"/api/queries?session_id={session_id}&limit=10000"))


def cluster_direct_url(fleet: Any, cluster_id: str) -> str:
    """The stock client's URL for one of the fleet's clusters, with the token the fleet gave it."""
    cluster = next((c for c in live_clusters(fleet) if c["id"] == cluster_id), None)
    if cluster is None or not cluster["address"]:
        raise RuntimeError(f"cluster {cluster_id}, which ran the fleet side's warm-up, is gone")
    token = (fleet.data_dir / "clusters" / cluster_id / "token").read_text().strip()
    port = int(cluster["address"].rsplit(":", 1)[1])
    return f"sc://localhost:{port}/;token={token}"  # the stock client sends a token only to "localhost"


def run_pass(contenders: Contenders, sessions: dict[str, Any], side: str, iterations: int,
             notes: list[str]) -> Pass:
    """Each workload's measured iterations, plain alternating with ``side``, CPU read around each workload."""
    fleet_session = sessions[FLEET].session_id
    ran_before = fleet_queries_per_cluster(contenders.fleet, fleet_session)
    meter = CpuMeter(contenders.cpu_parts())
    blocks = []
    for workload in WORKLOADS:
        times: dict[str, list[float]] = {PLAIN: [], side: []}
        before, start = meter.read(), time.perf_counter()
        for i in range(iterations):
            for current in rotation((PLAIN, side), i):
                times[current].append(timed(workload, sessions[current], current))
        after, wall_s = meter.read(), time.perf_counter() - start
        notes += [f"{side} pass, {workload.name}: {change}" for change in CpuMeter.changes(before, after)]
        blocks.append(WorkloadBlock(workload.name, workload.small, tuple(times[PLAIN]), tuple(times[side]),
                                    CpuMeter.used(before, after), wall_s))
    ran = fleet_queries_per_cluster(contenders.fleet, fleet_session) - ran_before if side == FLEET else Counter()
    return Pass(side, tuple(blocks), dict(ran))


def measure_idle(contenders: Contenders, seconds: float, notes: list[str]) -> Idle:
    meter = CpuMeter(contenders.cpu_parts())
    before, start = meter.read(), time.perf_counter()
    time.sleep(seconds)
    after, wall_s = meter.read(), time.perf_counter() - start
    notes += [f"idle: {change}" for change in CpuMeter.changes(before, after)]
    return Idle(wall_s, CpuMeter.used(before, after))


def _large_result(session: Any, rows: int) -> Any:
    return session.range(0, rows).selectExpr("id", "id * 2 as b").toArrow()


def measure_large(contenders: Contenders, sessions: dict[str, Any], runs: int, rows: int,
                  notes: list[str]) -> LargeResult:
    """MB/s per run and side (1 warm-up each first), fleet alternating with plain."""
    sides = (FLEET, PLAIN)
    fleet_session = sessions[FLEET].session_id
    ran_before = fleet_queries_per_cluster(contenders.fleet, fleet_session)
    meter = CpuMeter(contenders.cpu_parts())
    before, start = meter.read(), time.perf_counter()
    nbytes = 0
    for side in sides:  # warm-up: JIT, allocation of client buffers
        CLIENT_WARNINGS.side = side
        table = _large_result(sessions[side], rows)
        nbytes = table.nbytes
        del table
        settle(sessions[side])
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(runs):
        for side in rotation(sides, i):
            CLIENT_WARNINGS.side = side
            gc.collect()
            began = time.perf_counter()
            table = _large_result(sessions[side], rows)
            elapsed = time.perf_counter() - began
            if table.nbytes != nbytes:
                raise RuntimeError(f"{side} returned {table.nbytes} bytes, expected {nbytes}")
            del table
            rates[side].append(nbytes / 1e6 / elapsed)
            settle(sessions[side])
    after, wall_s = meter.read(), time.perf_counter() - start
    notes += [f"large result: {change}" for change in CpuMeter.changes(before, after)]
    ran = fleet_queries_per_cluster(contenders.fleet, fleet_session) - ran_before
    return LargeResult(nbytes, {s: tuple(r) for s, r in rates.items()}, CpuMeter.used(before, after), wall_s,
                       runs + 1, dict(ran))


def _settled_again(out: Console, contenders: Contenders, before: list[str]) -> None:
    """The warm-up may have made the fleet start or stop clusters: measure the fleet once it is steady."""
    after = [c["id"] for c in wait_until_settled(contenders.fleet)]
    if after != before:
        out.print(f"[dim]the fleet changed its clusters during the warm-up: {before} -> {after}[/dim]")


def measure(out: Console, args: argparse.Namespace) -> Results:
    notes: list[str] = []
    with default_fleet_and_plain_server(out) as contenders, CLIENT_WARNINGS.recording():
        sessions: dict[str, Any] = {}
        try:
            clusters = [c["id"] for c in live_clusters(contenders.fleet)]
            sessions[PLAIN] = open_session(contenders.plain.url)
            sessions[FLEET] = open_session(contenders.fleet.url)
            out.print(f"[dim]warm-up: {args.warmup} iterations per workload, plain and fleet...[/dim]")
            warm_up(sessions, (PLAIN, FLEET), args.warmup)
            ran = fleet_queries_per_cluster(contenders.fleet, sessions[FLEET].session_id)
            if not ran:
                raise RuntimeError("the gateway recorded no cluster for the fleet side's warm-up queries")
            cluster_id = ran.most_common(1)[0][0]
            out.print(f"[dim]the fleet ran the warm-up on {dict(ran)}; cluster-direct talks to {cluster_id}[/dim]")
            sessions[CLUSTER_DIRECT] = open_session(cluster_direct_url(contenders.fleet, cluster_id))
            warm_up(sessions, (CLUSTER_DIRECT,), args.warmup)
            _settled_again(out, contenders, clusters)
            passes = {}
            for side in (FLEET, CLUSTER_DIRECT):
                out.print(f"[dim]pass plain vs {side}: {args.iterations} iterations per workload...[/dim]")
                passes[side] = run_pass(contenders, sessions, side, args.iterations, notes)
            out.print(f"[dim]idle: {args.idle_s:g}s with nobody sending anything...[/dim]")
            idle = measure_idle(contenders, args.idle_s, notes)
            out.print(f"[dim]large result: 1 warm-up + {args.large_runs} runs per side...[/dim]")
            large = measure_large(contenders, sessions, args.large_runs, args.rows, notes)
        finally:
            for side, session in sessions.items():
                CLIENT_WARNINGS.side = f"closing the {side} session"
                try:
                    session.stop()
                except Exception as exc:  # noqa: BLE001 - the servers are stopped next anyway
                    notes.append(f"closing the {side} session failed: {exc}")
    notes += [f"client warning, {what} (x{n})" for what, n in CLIENT_WARNINGS.seen.items()]
    return Results(passes, cluster_id, idle, large, tuple(notes))


def run(argv: list[str]) -> int:
    args = _parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    results = measured(out, "overhead", lambda: measure(out, args))
    report(out, results)
    exit_now(0)
