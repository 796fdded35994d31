"""``sparkfleet bench cost``: a bursty trace on Standard, Performance-optimized and a static fleet.

Issue 5's cost benchmark. The same trace runs on three fleets in turn (each started fresh and
stopped after its run), in one invocation:

  standard:     the autoscaler in Standard mode, starting with one S cluster
  performance:  the autoscaler in Performance-optimized mode (the default), one S cluster to start
  static:       a fixed fleet sized for the trace's peak: two S clusters (1 core each), always on

The trace: after the sessions are open, an idle lead-in, then bursts separated by idle gaps. In a
burst, interactive clients send small queries with think time and a batch client runs heavy
queries back to back; in a gap nobody sends anything (people went to lunch; the pipeline waits for
its next trigger). The sessions stay open throughout.

Prints, per fleet: the core-seconds its clusters held over the measured window (and the share of the
static fleet's), clusters started because queries waited for them (cold starts) or ahead of demand
(warm), the latency of each client's first query after an idle gap, and interactive p50/p95.
Goals: Standard at most 40% of the static fleet's core-seconds; Performance-optimized's first
result after idle within 0.5 s. Goals are reported, not enforced: the run exits 1 only if a
client saw an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sparkfleet.bench.cost_report import report
from sparkfleet.bench.cost_results import BATCH, INTERACTIVE, ArmRun, QueryTiming, exit_code
from sparkfleet.bench.fault_results import first_line
from sparkfleet.bench.faults import stock_sessions
from sparkfleet.bench.harness import exit_now, measured
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

_now = time.monotonic  # one clock for every client thread and the main thread
_SAMPLE_EVERY_S = 2.0
_WIND_DOWN_S = 600.0  # a batch query running at the end of the last burst may take this long


@dataclass(frozen=True, slots=True)
class Arm:
    key: str
    title: str
    toml: str


ARMS = {
    a.key: a
    for a in (
        Arm("standard", "Standard mode (least compute, scale to zero)",
            '[pool]\nclusters = ["S"]\n\n[autoscaler]\nenabled = true\nmode = "standard"\n'),
        Arm("performance", "Performance-optimized mode (warm capacity)",
            '[pool]\nclusters = ["S"]\n\n[autoscaler]\nenabled = true\nmode = "performance"\n'),
        Arm("static", "static fleet sized for the peak: 2 x S, always on",
            '[pool]\nclusters = ["S", "S"]\n' + FIXED_FLEET),
    )
}


@dataclass(frozen=True, slots=True)
class Trace:
    lead_in_s: float
    bursts: int
    burst_s: float
    gap_s: float
    think_s: float
    interactive_clients: int
    batch_rows: int
    seed: int

    def burst_start(self, index: int) -> float:
        return self.lead_in_s + index * (self.burst_s + self.gap_s)

    @property
    def window_s(self) -> float:
        return self.burst_start(self.bursts)


# ---- the queries --------------------------------------------------------------------------------


def interactive_query(spark: Any, rng: random.Random) -> Any:
    k = rng.randint(2, 50)
    shapes = (
        lambda: spark.range(0, 200_000).selectExpr(f"sum(id % {k}) as v"),
        lambda: spark.range(0, 50_000).selectExpr(f"id % {k} as g").groupBy("g").count().orderBy("g").limit(5),
        lambda: spark.sql(f"select {k} * 2 as v, current_date() as d"),
    )
    return rng.choice(shapes)()


def batch_query(spark: Any, rows: int) -> Any:
    return spark.range(0, rows, 1, 4).selectExpr("id % 1009 as g", "id").groupBy("g").sum("id").selectExpr("count(*)")


# ---- the clients --------------------------------------------------------------------------------


def _timed(fn) -> tuple[float, bool, str]:  # type: ignore[no-untyped-def]
    started = _now()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a client's error is a result of the run
        return _now() - started, False, first_line(str(exc))
    return _now() - started, True, ""


def _sleep_until(deadline: float, stop: threading.Event) -> bool:
    """Sleep until ``deadline``; False if the run was stopped meanwhile."""
    return not stop.wait(max(0.0, deadline - _now()))


def interactive_client(name: str, spark: Any, trace: Trace, t0: float, seed: int,
                       out: list[QueryTiming], stop: threading.Event) -> None:
    rng = random.Random(seed)
    for burst in range(trace.bursts):
        start, end = t0 + trace.burst_start(burst), t0 + trace.burst_start(burst) + trace.burst_s
        if not _sleep_until(start + rng.uniform(0, 1.0), stop):
            return
        first = True
        while _now() < end and not stop.is_set():
            sent = _now() - t0
            latency, ok, error = _timed(lambda: interactive_query(spark, rng).collect())
            out.append(QueryTiming(name, INTERACTIVE, burst, sent, latency, ok, first, error))
            first = False
            if not _sleep_until(_now() + rng.uniform(0.5, 1.5) * trace.think_s, stop):
                return


def batch_client(spark: Any, trace: Trace, t0: float, out: list[QueryTiming], stop: threading.Event) -> None:
    for burst in range(trace.bursts):
        start, end = t0 + trace.burst_start(burst), t0 + trace.burst_start(burst) + trace.burst_s
        if not _sleep_until(start, stop):
            return
        first = True
        while _now() < end and not stop.is_set():
            sent = _now() - t0
            latency, ok, error = _timed(lambda: batch_query(spark, trace.batch_rows).collect())
            out.append(QueryTiming("batch", BATCH, burst, sent, latency, ok, first, error))
            first = False


# ---- one fleet ----------------------------------------------------------------------------------


def _starts_in_window(proc: SparkfleetProcess, since: float) -> tuple[int, int]:
    """Clusters the autoscaler started after ``since`` (wall clock): (for waiting queries, ahead of demand)."""
    cold = warm = 0
    for cluster in proc.api("/api/clusters"):
        first = cluster["history"][0] if cluster.get("history") else None
        if first is None or first["at"] < since or not first["reason"].startswith("starting: autoscaler"):
            continue
        if "warm" in first["reason"]:
            warm += 1
        else:
            cold += 1
    return cold, warm


def _live_clusters(proc: SparkfleetProcess) -> int:
    return sum(1 for c in proc.api("/api/clusters?history=0") if c["state"] in ("starting", "ready", "draining"))


def run_arm(out: Console, arm: Arm, trace: Trace) -> ArmRun:
    """Start the arm's fleet fresh, play the trace, stop it (and every JVM) whatever happens."""
    out.rule(f"{arm.key}: {arm.title}")
    proc = SparkfleetProcess(config_toml=arm.toml, name=f"sparkfleet-cost-{arm.key}")
    stop = threading.Event()
    try:
        proc.start()  # an interrupt while it starts must stop it too, hence no ``with proc``
        with stock_sessions(proc.url, trace.interactive_clients + 1) as sessions:
            batch, *interactive = sessions
            batch.conf.set("sparkfleet.profile", "batch")
            for spark in interactive:  # every session has run once before the window opens
                interactive_query(spark, random.Random(0)).collect()
            timings: list[QueryTiming] = []
            wall0, t0 = time.time(), _now()
            used0 = proc.metric("sparkfleet_cluster_core_seconds_total")
            threads = [threading.Thread(target=batch_client, args=(batch, trace, t0, timings, stop), daemon=True)]
            threads += [
                threading.Thread(target=interactive_client,
                                 args=(f"interactive-{i + 1}", s, trace, t0, trace.seed + i, timings, stop), daemon=True)
                for i, s in enumerate(interactive)
            ]
            for thread in threads:
                thread.start()
            live: list[tuple[float, int]] = []
            next_note = 0.0
            while _now() - t0 < trace.window_s:
                offset = _now() - t0
                live.append((offset, _live_clusters(proc)))
                if offset >= next_note:
                    out.print(f"[dim]  {offset:5.0f}s  live clusters {live[-1][1]}, queries {len(timings)}[/dim]")
                    next_note += 30.0
                time.sleep(_SAMPLE_EVERY_S)
            used = proc.metric("sparkfleet_cluster_core_seconds_total") - used0
            window = _now() - t0
            cold, warm = _starts_in_window(proc, wall0)
            stop.set()
            for thread in threads:
                thread.join(_WIND_DOWN_S)
            records, clusters = proc.api("/api/queries?limit=1000"), proc.api("/api/clusters")
        return ArmRun(arm.key, arm.title, window, used, cold, warm, list(timings), live, records, clusters)
    finally:
        stop.set()
        proc.stop()


# ---- command ------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench cost", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--arms", default=",".join(ARMS), help=f"fleets to run, in this order (default {','.join(ARMS)})")
    p.add_argument("--bursts", type=int, default=3, help="bursts of queries (default 3)")
    p.add_argument("--burst", type=float, default=30.0, help="seconds a burst lasts (default 30)")
    p.add_argument("--gap", type=float, default=120.0,
                   help="idle seconds after each burst, and before the first (default 120; Standard stops "
                        "clusters idle for 60 s)")
    p.add_argument("--think", type=float, default=1.0, help="mean seconds an interactive client waits between queries")
    p.add_argument("--interactive-clients", type=int, default=2, help="interactive clients, one session each")
    p.add_argument("--batch-rows", type=int, default=400_000_000, help="rows each batch query aggregates")
    p.add_argument("--seed", type=int, default=0, help="seed of the interactive clients' queries and think times")
    p.add_argument("--dump", type=Path, default=None, metavar="DIR",
                   help="write each fleet's timings, gateway query records and clusters to DIR/<fleet>.json")
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        p.error(f"--arms takes a comma-separated list of {', '.join(ARMS)}; got {unknown or 'none'}")
    if args.bursts < 1 or args.burst <= 0 or args.gap < 0 or args.think < 0 or args.interactive_clients < 1:
        p.error("--bursts, --burst and --interactive-clients must be positive; --gap and --think not negative")
    args.trace = Trace(args.gap, args.bursts, args.burst, args.gap, args.think, args.interactive_clients,
                       args.batch_rows, args.seed)
    return args


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    trace: Trace = args.trace
    out.print(f"[dim]trace: {trace.lead_in_s:g}s idle, then {trace.bursts} bursts of {trace.burst_s:g}s, each "
              f"followed by {trace.gap_s:g}s idle ({trace.window_s:g}s per fleet); {trace.interactive_clients} "
              f"interactive clients (think ~{trace.think_s:g}s), 1 batch client[/dim]")
    runs = measured(out, "cost", lambda: [run_arm(out, ARMS[key], trace) for key in args.arms])
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        for r in runs:
            (args.dump / f"{r.arm}.json").write_text(json.dumps(dataclasses.asdict(r), indent=1, default=str))
    out.rule("results")
    report(out, runs)
    exit_now(exit_code(runs))
