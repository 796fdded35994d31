"""``sparkfleet bench overhead``: what the gateway adds to small queries and large results.

Two stock PySpark clients in this process talk to the same cluster, one through the gateway and
one directly. Every measurement alternates the two (and swaps which goes first each round) so
drift, GC and JIT warm-up fall on both sides alike; small-query overhead is the median of the
*paired* per-iteration differences, not a difference of two medians.

The stock client releases every response it reads with an asynchronous ReleaseExecute RPC. Each
timed query starts only after the previous query's releases have finished, so one side's
background work never lands in the other side's timing; that work still shows in the CPU lines.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.harness import CpuMeter, Target, median, one_cluster_fleet, percentile

SIDES = ("gateway", "direct")
LATENCY_GOAL_MS = 1.0
THROUGHPUT_GOAL = 0.95
MIN_LARGE_BYTES = 150 * 1000 * 1000


@dataclass(frozen=True)
class SmallQuery:
    name: str
    run: Callable[[Any], object]  # takes a SparkSession


SMALL_QUERIES = (
    SmallQuery("sql(select 1).collect", lambda s: s.sql("select 1").collect()),
    SmallQuery("range(10).count", lambda s: s.range(10).count()),
    SmallQuery("conf.get", lambda s: s.conf.get("spark.sql.shuffle.partitions")),
    SmallQuery("range(100).toArrow", lambda s: s.range(100).toArrow()),
)


@dataclass
class Samples:
    """Seconds per iteration, per side, for one query; index i of each side is one pair."""

    gateway: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)

    def side(self, name: str) -> list[float]:
        return self.gateway if name == "gateway" else self.direct

    def paired_diffs_ms(self) -> list[float]:
        return [(g - d) * 1000.0 for g, d in zip(self.gateway, self.direct)]


@dataclass
class Phase:
    """CPU seconds per process and wall seconds of one part of the benchmark."""

    cpu: dict[str, float]
    wall_s: float


@dataclass
class Results:
    small: dict[str, Samples]
    small_phase: Phase
    gateway_small_queries: int  # warm-up included, as the CPU lines include it
    rates: dict[str, list[float]]  # MB/s per measured run
    nbytes: int
    large_phase: Phase
    gateway_large_runs: int


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench overhead", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--iterations", type=int, default=200, help="measured iterations per small query and side")
    p.add_argument("--warmup", type=int, default=30, help="unmeasured iterations per small query and side")
    p.add_argument("--large-runs", type=int, default=6, help="measured large-result runs per side")
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the large result (2 bigint columns)")
    args = p.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.large_runs < 1 or args.rows < 1:
        p.error("--iterations, --large-runs and --rows must be positive, --warmup not negative")
    return args


def _order(i: int) -> tuple[str, str]:
    """ABBA: alternate which side goes first so neither always runs on a warmer cache."""
    return SIDES if i % 2 == 0 else SIDES[::-1]


def settle(session: Any, timeout_s: float = 10.0) -> None:
    """Wait for the session's asynchronous ReleaseExecute calls (pyspark waits the same way on stop)."""
    futures = getattr(getattr(session, "client", None), "_release_futures", None)
    if futures:
        concurrent.futures.wait(list(futures), timeout=timeout_s)


def measure_small(sessions: dict[str, Any], iterations: int, warmup: int) -> dict[str, Samples]:
    for i in range(warmup):
        for query in SMALL_QUERIES:
            for side in _order(i):
                query.run(sessions[side])
                settle(sessions[side])
    samples = {q.name: Samples() for q in SMALL_QUERIES}
    clock = time.perf_counter
    for i in range(iterations):
        for query in SMALL_QUERIES:
            for side in _order(i):
                session = sessions[side]
                start = clock()
                query.run(session)
                samples[query.name].side(side).append(clock() - start)
                settle(session)
    return samples


def _large_result(session: Any, rows: int) -> Any:
    return session.range(0, rows).selectExpr("id", "id * 2 as b").toArrow()


def measure_large(sessions: dict[str, Any], runs: int, rows: int) -> tuple[dict[str, list[float]], int]:
    """MB/s per run and side, and the result's Arrow size in bytes."""
    nbytes = 0
    for side in SIDES:  # warm-up: JIT, allocation of client buffers
        table = _large_result(sessions[side], rows)
        nbytes = table.nbytes
        del table
        settle(sessions[side])
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(runs):
        for side in _order(i):
            gc.collect()
            start = time.perf_counter()
            table = _large_result(sessions[side], rows)
            elapsed = time.perf_counter() - start
            if table.nbytes != nbytes:
                raise RuntimeError(f"{side} returned {table.nbytes} bytes, expected {nbytes}")
            del table
            rates[side].append(nbytes / 1e6 / elapsed)
            settle(sessions[side])
    return rates, nbytes


def _ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.3f}"


def report(out: Console, r: Results) -> tuple[float, float]:
    """Print the tables and the two headline lines; return (added ms, throughput ratio)."""
    table = Table(title="small queries (ms; paired diff = gateway - direct, same iteration)")
    for column in ("query", "n", "direct p50", "gateway p50", "direct p95", "gateway p95",
                   "diff p50", "diff p95"):
        table.add_column(column, justify="left" if column == "query" else "right")
    all_diffs: list[float] = []
    for name, s in r.small.items():
        diffs = s.paired_diffs_ms()
        all_diffs += diffs
        table.add_row(
            name, str(len(diffs)), _ms(median(s.direct)), _ms(median(s.gateway)),
            _ms(percentile(s.direct, 95)), _ms(percentile(s.gateway, 95)),
            f"{median(diffs):+.3f}", f"{percentile(diffs, 95):+.3f}",
        )
    added_ms = median(all_diffs)
    table.add_row("all small queries", str(len(all_diffs)), "", "", "", "", f"{added_ms:+.3f}",
                  f"{percentile(all_diffs, 95):+.3f}", style="bold")
    out.print(table)
    out.print(f"small queries: {CpuMeter.describe(r.small_phase.cpu, r.small_phase.wall_s)}")
    per_query = r.small_phase.cpu["gateway"] * 1000.0 / r.gateway_small_queries
    out.print(f"gateway CPU per small query through it: {per_query:.2f} ms")

    large = Table(title=f"large result: {r.nbytes / 1e6:.1f} MB of Arrow per run (MB/s)")
    large.add_column("side")
    for i in range(len(r.rates["direct"])):
        large.add_column(f"run {i + 1}", justify="right")
    large.add_column("median", justify="right")
    for side in ("direct", "gateway"):
        large.add_row(side, *(f"{x:.1f}" for x in r.rates[side]), f"{median(r.rates[side]):.1f}")
    paired = [g / d for g, d in zip(r.rates["gateway"], r.rates["direct"])]
    ratio = median(paired)
    large.add_row("ratio g/d", *(f"{x:.3f}" for x in paired), f"{ratio:.3f}", style="bold")
    out.print(large)
    out.print(f"large results: {CpuMeter.describe(r.large_phase.cpu, r.large_phase.wall_s)}")
    relayed_mb = r.gateway_large_runs * r.nbytes / 1e6
    out.print(f"gateway CPU per MB relayed: {r.large_phase.cpu['gateway'] * 1000.0 / relayed_mb:.2f} ms")
    if r.nbytes < MIN_LARGE_BYTES:
        out.print(f"[yellow]note: the large result is {r.nbytes / 1e6:.1f} MB, under the "
                  f"{MIN_LARGE_BYTES / 1e6:.0f} MB this benchmark is meant for; raise --rows[/yellow]")
    out.print()
    out.print(f"added latency per small query (paired median): {added_ms:.3f} ms (goal <= {LATENCY_GOAL_MS:g} ms)")
    out.print(f"large result throughput ratio gateway/direct: {ratio:.3f} (goal >= {THROUGHPUT_GOAL})")
    return added_ms, ratio


def _measure(out: Console, args: argparse.Namespace, target: Target, sessions: dict[str, Any]) -> Results:
    meter = CpuMeter(target)
    out.print(f"[dim]small queries: {args.warmup} warm-up + {args.iterations} measured iterations each...[/dim]")
    before, start = meter.read(), time.perf_counter()
    small = measure_small(sessions, args.iterations, args.warmup)
    small_phase = Phase(CpuMeter.used(before, meter.read()), time.perf_counter() - start)
    out.print(f"[dim]large result: 1 warm-up + {args.large_runs} measured runs per side...[/dim]")
    before, start = meter.read(), time.perf_counter()
    rates, nbytes = measure_large(sessions, args.large_runs, args.rows)
    large_phase = Phase(CpuMeter.used(before, meter.read()), time.perf_counter() - start)
    return Results(
        small=small,
        small_phase=small_phase,
        gateway_small_queries=(args.warmup + args.iterations) * len(SMALL_QUERIES),
        rates=rates,
        nbytes=nbytes,
        large_phase=large_phase,
        gateway_large_runs=args.large_runs + 1,
    )


def connect(url: str) -> Any:
    """A separate stock session that fails fast instead of retrying for minutes.

    The default policy retries an unavailable server for about ten minutes, which after Ctrl-C
    (the fleet is already stopping) would hold ``stop()`` and the release threads that long. A
    benchmark never expects a retry, so a short policy changes nothing while it runs.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    session = SparkSession.builder.remote(url).create()
    session.client.set_retry_policies([DefaultPolicy(max_retries=2, max_backoff=500)])
    return session


def run(argv: list[str]) -> int:
    args = _parse(argv)
    out = Console(highlight=False, width=max(Console().width, 110))
    out.print("[dim]starting sparkfleet with one cluster...[/dim]")
    with one_cluster_fleet() as target:
        out.print(f"[dim]gateway {target.gateway_url} -> cluster {target.cluster_id} "
                  f"(pid {target.cluster_pid}) at {target.cluster_address}[/dim]")
        sessions: dict[str, Any] = {}
        try:
            sessions["gateway"] = connect(target.gateway_url)
            sessions["direct"] = connect(target.direct_url)
            results = _measure(out, args, target, sessions)
        finally:
            for session in sessions.values():
                try:
                    session.stop()
                except Exception:  # noqa: BLE001 - the fleet is stopped next anyway
                    pass
    report(out, results)
    return 0
