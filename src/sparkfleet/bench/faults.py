"""``sparkfleet bench faults``: clients keep reading while clusters of the pool are SIGKILLed.

A real ``sparkfleet up`` with a pool of several clusters serves a few stock PySpark sessions (one
per thread). Each session first sets up state (a conf, a temp view, a Python UDF), then loops over
mixed reads and checks every result. Meanwhile a killer SIGKILLs a random ready cluster every
``--kill-every`` seconds and times how long the fleet takes to have all its clusters ready again.
The next kill waits for that recovery, so each kill is measured on its own and the pool never
misses more than one cluster at a time.

The goal: reads never fail and never return a wrong answer. The report lists every client-visible
failure with its error class, and the run exits 1 if there was any failure or wrong result.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.harness import measured
from sparkfleet.bench.fault_results import (
    Kill,
    QueryOutcome,
    error_class_of,
    exit_code,
    first_line,
    group_problems,
    kill_impacts,
    pick_victim,
    ready_count,
    retried_queries,
    spread,
    summarize_kinds,
)
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

PROGRESS_EVERY_S = 10.0
_POLL_S = 0.25
_PAUSE_AFTER_FAILURE_S = 0.2  # a session that keeps failing must not spin
_WIND_DOWN_S = 120.0  # how long queries in flight at the end may take before they count as stuck
_RECOVERY_TIMEOUT_S = 300.0  # a kill not recovered by then is reported as never recovered
_now = time.monotonic  # one clock for workers and killer, so their timestamps compare

# ---- the workload ------------------------------------------------------------------------------

NUMS_ROWS = 4000  # the temp view; toPandas reads all of it
UDF_ROWS = 20
AGG_ROWS = 1_000_000
AGG_GROUPS = 7
JOIN_ROWS = 100_000
SLOW_ROWS, SLOW_SLEEP_S = 4, 0.75  # one partition: about 3 s per query
_SHUFFLE = "spark.sql.shuffle.partitions"


@dataclass(frozen=True, slots=True)
class SessionState:
    """What one session sets up; values differ per session so a leak between sessions shows."""

    index: int

    @property
    def k(self) -> int:  # the view scales by k and the UDF adds k
        return self.index + 2

    @property
    def partitions(self) -> str:
        return str(3 + self.index)


def set_up(spark: Any, state: SessionState) -> None:
    spark.conf.set(_SHUFFLE, state.partitions)
    spark.range(NUMS_ROWS).selectExpr("id", f"id * {state.k} as scaled").createOrReplaceTempView("nums")
    k = state.k
    spark.udf.register("plus_k", lambda x: x + k, "long")


def _mismatch(what: str, got: object, expected: object) -> str | None:
    if got == expected:
        return None
    shown = repr(got)
    return f"{what}: expected {expected!r}, got {shown[:200]}"


def conf_get(spark: Any, state: SessionState) -> str | None:
    return _mismatch(_SHUFFLE, spark.conf.get(_SHUFFLE), state.partitions)


def udf_sql(spark: Any, state: SessionState) -> str | None:
    rows = spark.sql(f"select id, plus_k(scaled) as v from nums where id < {UDF_ROWS} order by id").collect()
    expected = [(i, i * state.k + state.k) for i in range(UDF_ROWS)]
    return _mismatch("plus_k over nums", [(r.id, r.v) for r in rows], expected)


@functools.cache
def _expected_groups() -> dict[int, tuple[int, int]]:
    return {g: (len(range(g, AGG_ROWS, AGG_GROUPS)), sum(range(g, AGG_ROWS, AGG_GROUPS))) for g in range(AGG_GROUPS)}


def aggregate(spark: Any, state: SessionState) -> str | None:
    from pyspark.sql import functions as F

    rows = (
        spark.range(AGG_ROWS).groupBy((F.col("id") % AGG_GROUPS).alias("g"))
        .agg(F.count("id").alias("n"), F.sum("id").alias("total")).collect()
    )
    return _mismatch("groups", {r.g: (r.n, r.total) for r in rows}, _expected_groups())


def join(spark: Any, state: SessionState) -> str | None:
    from pyspark.sql import functions as F

    row = (
        spark.range(JOIN_ROWS).join(spark.range(0, JOIN_ROWS, 3), "id")
        .agg(F.count("*").alias("n"), F.sum("id").alias("total")).collect()[0]
    )
    every_third = range(0, JOIN_ROWS, 3)
    return _mismatch("join", (row.n, row.total), (len(every_third), sum(every_third)))


def to_pandas(spark: Any, state: SessionState) -> str | None:
    frame = spark.table("nums").toPandas()
    got = (len(frame), int(frame["scaled"].sum()))
    return _mismatch("toPandas(nums)", got, (NUMS_ROWS, state.k * sum(range(NUMS_ROWS))))


def slow_udf(spark: Any, state: SessionState) -> str | None:
    from pyspark.sql import functions as F

    delay = SLOW_SLEEP_S
    slow_double = F.udf(lambda x: (time.sleep(delay), 2 * x)[1], "long")
    rows = spark.range(0, SLOW_ROWS, 1, 1).select(slow_double("id").alias("v")).collect()
    return _mismatch("slow_double", [r.v for r in rows], [2 * i for i in range(SLOW_ROWS)])


# Each returns None when the result is right, or says what was wrong.
KINDS: dict[str, Callable[[Any, SessionState], str | None]] = {
    "conf get": conf_get,
    "udf sql on view": udf_sql,
    "aggregate 1e6": aggregate,
    "join": join,
    "toPandas": to_pandas,
    "slow udf": slow_udf,
}


# ---- the shell: sessions, killer, fleet ---------------------------------------------------------


class Ledger:
    """What the threads observed, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[QueryOutcome] = []
        self._kills: list[Kill] = []
        self._in_flight: dict[int, tuple[str, float]] = {}
        self.recovering: tuple[str, float] | None = None  # (cluster id, kill time) being measured

    def begin(self, session: int, kind: str, at: float) -> None:
        with self._lock:
            self._in_flight[session] = (kind, at)

    def end(self, outcome: QueryOutcome) -> None:
        with self._lock:
            self._in_flight.pop(outcome.session, None)
            self._outcomes.append(outcome)

    def add_kill(self, kill: Kill) -> None:
        with self._lock:
            self._kills.append(kill)

    def snapshot(self) -> tuple[list[QueryOutcome], list[Kill], dict[int, tuple[str, float]]]:
        with self._lock:
            return list(self._outcomes), list(self._kills), dict(self._in_flight)


def run_session(spark: Any, state: SessionState, deadline: float, stop: threading.Event, ledger: Ledger) -> None:
    """Loop over the kinds (each session starting at a different one) until the deadline."""
    names = list(KINDS)
    turn = state.index
    while not stop.is_set() and _now() < deadline:
        kind = names[turn % len(names)]
        turn += 1
        started = _now()
        ledger.begin(state.index, kind, started)
        try:
            wrong = KINDS[kind](spark, state)
        except Exception as exc:  # noqa: BLE001 - every failure is what this benchmark reports
            ledger.end(QueryOutcome(state.index, kind, started, _now(), error_class_of(exc),
                                    f"{type(exc).__name__}: {first_line(str(exc))}"))
            stop.wait(_PAUSE_AFTER_FAILURE_S)
            continue
        ledger.end(QueryOutcome(state.index, kind, started, _now(), wrong=wrong or ""))


def _clusters(proc: SparkfleetProcess) -> list[dict[str, Any]] | None:
    """The admin API's clusters, or None when it did not answer (the next poll tries again)."""
    try:
        return proc.api("/api/clusters?history=0")
    except OSError:
        return None


def kill_and_measure(proc: SparkfleetProcess, victim: dict[str, Any], known: set[str], expected: int,
                     stop: threading.Event, ledger: Ledger) -> Kill | None:
    """SIGKILL ``victim``'s JVM, then poll until it left ready and the fleet is whole again
    (``known``: every cluster id listed before the kill, to tell which one replaced it).

    None if the process was already gone (nothing was killed)."""
    try:
        os.kill(int(victim["pid"]), signal.SIGKILL)
    except ProcessLookupError:
        return None
    at = _now()
    ledger.recovering = (victim["id"], at)
    left: float | None = None
    recovered: float | None = None
    replaced_by = ""
    while not stop.wait(_POLL_S) and _now() - at < _RECOVERY_TIMEOUT_S:
        clusters = _clusters(proc)
        if clusters is None:
            continue
        elapsed = _now() - at
        if left is None and not any(c["id"] == victim["id"] and c["state"] == "ready" for c in clusters):
            left = elapsed
        if left is not None and ready_count(clusters) >= expected:
            recovered = elapsed
            replaced_by = ",".join(sorted(c["id"] for c in clusters if c["state"] == "ready" and c["id"] not in known))
            break
    ledger.recovering = None
    return Kill(victim["id"], int(victim["pid"]), at, left, recovered, replaced_by)


def run_killer(proc: SparkfleetProcess, expected: int, kill_every: float, deadline: float,
               stop: threading.Event, ledger: Ledger, rng: random.Random) -> None:
    """Kill a ready cluster every ``kill_every`` seconds, never before the last kill recovered."""
    next_kill = _now() + kill_every
    while not stop.wait(_POLL_S):
        now = _now()
        if now >= deadline:
            return
        if now < next_kill:
            continue
        clusters = _clusters(proc) or []
        victim = pick_victim(clusters, rng)
        if victim is None:
            continue
        kill = kill_and_measure(proc, victim, {c["id"] for c in clusters}, expected, stop, ledger)
        if kill is not None:
            ledger.add_kill(kill)
            next_kill = kill.at + kill_every


def _progress(out: Console, ledger: Ledger, proc: SparkfleetProcess, started: float, expected: int) -> None:
    outcomes, kills, in_flight = ledger.snapshot()
    failed = sum(1 for o in outcomes if o.error_class)
    wrong = sum(1 for o in outcomes if o.wrong)
    clusters = _clusters(proc)
    ready = "?" if clusters is None else f"{ready_count(clusters)}/{expected}"
    line = (f"{_now() - started:6.0f}s  queries {len(outcomes)} ok {len(outcomes) - failed - wrong} "
            f"failed {failed} wrong {wrong}  kills {len(kills)}  ready clusters {ready}")
    recovering = ledger.recovering
    if recovering:
        line += f"  ({recovering[0]} killed {_now() - recovering[1]:.0f}s ago)"
    oldest = min((at for _, at in in_flight.values()), default=None)
    if oldest is not None and _now() - oldest > 30:
        line += f"  [yellow]oldest query running {_now() - oldest:.0f}s[/yellow]"
    out.print(line)


def _every(seconds: float, show: Callable[[], None]) -> Callable[[], None]:
    """A tick that calls ``show`` once every ``seconds``, however often it is called."""
    due = [_now() + seconds]

    def tick() -> None:
        if _now() >= due[0]:
            show()
            due[0] += seconds

    return tick


def _wait(threads: Sequence[threading.Thread], until: float, tick: Callable[[], None]) -> None:
    """Wait for ``threads`` to end or ``until``, ticking while waiting."""
    while any(t.is_alive() for t in threads) and _now() < until:
        time.sleep(_POLL_S)
        tick()


@contextlib.contextmanager
def stock_sessions(url: str, count: int) -> Iterator[list[Any]]:
    """``count`` stock sessions, each stopped when the run ends normally.

    After an interrupt they are left as they are: a terminal's Ctrl-C also reaches
    ``sparkfleet up``, and stopping a session whose gateway is gone retries for minutes.
    """
    from pyspark.sql import SparkSession

    sessions = [SparkSession.builder.remote(url).create() for _ in range(count)]
    yield sessions
    for session in sessions:
        with contextlib.suppress(Exception):  # nothing left to release if it fails
            session.stop()


@dataclass
class Run:
    outcomes: list[QueryOutcome]
    kills: list[Kill]
    stuck: dict[int, tuple[str, float]]  # session -> (kind, started) still running at the end
    records: list[dict[str, Any]] = field(default_factory=list)  # the gateway's query records
    seconds: float = 0.0


def run_workload(out: Console, proc: SparkfleetProcess, args: argparse.Namespace) -> Run:
    expected = len(args.clusters)
    clusters = _clusters(proc) or []
    if ready_count(clusters) != expected:
        raise RuntimeError(f"expected {expected} ready clusters at the start, found {ready_count(clusters)}")
    out.print(f"[dim]clusters at the start: {', '.join(c['id'] for c in clusters if c['state'] == 'ready')}[/dim]")
    ledger, stop = Ledger(), threading.Event()
    with stock_sessions(proc.url, args.sessions) as sparks:
        try:
            for index, spark in enumerate(sparks):
                set_up(spark, SessionState(index))
            out.print(f"[dim]{len(sparks)} sessions set up; reading for {args.duration:g}s, "
                      f"killing a cluster every {args.kill_every:g}s[/dim]")
            started = _now()
            deadline = started + args.duration
            workers = [
                threading.Thread(target=run_session, args=(spark, SessionState(i), deadline, stop, ledger),
                                 name=f"faults-session-{i}", daemon=True)
                for i, spark in enumerate(sparks)
            ]
            killer = threading.Thread(
                target=run_killer, name="faults-killer", daemon=True,
                args=(proc, expected, args.kill_every, deadline, stop, ledger, random.Random(args.seed)),
            )
            for thread in (*workers, killer):
                thread.start()
            tick = _every(PROGRESS_EVERY_S, functools.partial(_progress, out, ledger, proc, started, expected))
            _wait(workers, deadline + _WIND_DOWN_S, tick)
            _wait([killer], deadline + _RECOVERY_TIMEOUT_S, tick)
        finally:
            stop.set()  # Ctrl-C included: no thread starts another query or kill
        outcomes, kills, stuck = ledger.snapshot()
        run = Run(outcomes, kills, stuck, seconds=_now() - started)
        for spark in sparks:
            run.records += proc.api(f"/api/queries?session_id={spark.session_id}&limit=10000")
        return run


# ---- report ------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "never" if value is None else ("-" if math.isnan(value) else f"{value:.1f}")


def report(out: Console, run: Run) -> None:
    kinds = Table(title=f"queries by kind over {run.seconds:.0f}s (seconds of successful queries)")
    for column in ("kind", "ok", "failed", "wrong", "p50 s", "max s"):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    for k in summarize_kinds(run.outcomes, list(KINDS)):
        kinds.add_row(k.kind, str(k.ok), str(k.failed), str(k.wrong), f"{k.p50_s:.2f}", f"{k.max_s:.2f}")
    kinds.add_row("total", str(sum(o.ok for o in run.outcomes)),
                  str(sum(1 for o in run.outcomes if o.error_class)),
                  str(sum(1 for o in run.outcomes if o.wrong)), "", "", style="bold")
    out.print(kinds)

    problems = group_problems(run.outcomes)
    if problems:
        table = Table(title="client-visible failures and wrong results")
        for column in ("kind", "error class", "n", "first message"):
            table.add_column(column, justify="right" if column == "n" else "left", overflow="fold")
        for p in problems:
            table.add_row(p.kind, p.what, str(p.count), p.example)
        out.print(table)
    for session, (kind, at) in sorted(run.stuck.items()):
        out.print(f"[bold red]session {session}: {kind} still running {_now() - at:.0f}s after it began[/bold red]")

    kills = Table(title="kills (seconds after the SIGKILL)")
    for column in ("#", "cluster", "pid", "left ready", "fleet whole", "replaced by", "failures",
                   "sessions failed", "client gap", "slowest query across"):
        kills.add_column(column, justify="left" if column in ("cluster", "replaced by") else "right")
    impacts = kill_impacts(run.kills, run.outcomes)
    for n, impact in enumerate(impacts, 1):
        k = impact.kill
        kills.add_row(str(n), k.cluster_id, str(k.pid), _s(k.left_ready_s), _s(k.recovered_s),
                      k.replaced_by or "-", str(impact.failures), ",".join(map(str, impact.failed_sessions)) or "-",
                      _s(impact.gap_s), "-" if impact.slowest_across_s is None else f"{impact.slowest_across_s:.1f}")
    out.print(kills)
    recovered = [k.recovered_s for k in run.kills if k.recovered_s is not None]
    low, mid, high = spread(recovered)
    out.print(f"recovery (fleet whole again) over {len(recovered)} of {len(run.kills)} kills: "
              f"min {_s(low)}s median {_s(mid)}s max {_s(high)}s")
    if len(recovered) < len(run.kills):
        out.print(f"[bold red]{len(run.kills) - len(recovered)} kill(s) never recovered[/bold red]")

    retried = retried_queries(run.records)
    states = Counter(r["state"] for r in run.records)
    out.print(f"gateway query records: {len(run.records)} ({', '.join(f'{s} {n}' for s, n in states.most_common())}); "
              f"retried by the gateway (more than one attempt): {len(retried)}")
    for record in retried[:10]:
        path = " -> ".join(f"{a.get('cluster_id')} {a.get('outcome')}" for a in record["attempts"])
        out.print(f"  {record['id']} {record['kind']}: {path}")

    failed = sum(1 for o in run.outcomes if o.error_class) + len(run.stuck)
    wrong = sum(1 for o in run.outcomes if o.wrong)
    out.print()
    out.print(f"client-visible failures: {failed} (goal 0); wrong results: {wrong} (goal 0); "
              f"kills: {len(run.kills)}")
    if not run.kills:
        out.print("[yellow]no cluster was killed: raise --duration or lower --kill-every[/yellow]")


# ---- command -----------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench faults", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--clusters", default="S,S,S", help="comma-separated size classes of the pool (default S,S,S)")
    p.add_argument("--sessions", type=int, default=4, help="concurrent client sessions, one thread each")
    p.add_argument("--duration", type=float, default=120.0, help="seconds the sessions keep reading")
    p.add_argument("--kill-every", type=float, default=15.0, help="seconds from one kill to the next; a kill also waits until the fleet recovered from the last one")
    p.add_argument("--seed", type=int, default=None, help="seed for choosing which cluster to kill")
    args = p.parse_args(argv)
    args.clusters = [c.strip() for c in args.clusters.split(",") if c.strip()]
    if len(args.clusters) < 2:
        p.error("--clusters needs at least two clusters, so one survives each kill")
    if args.sessions < 1 or args.duration <= 0 or args.kill_every <= 0:
        p.error("--sessions, --duration and --kill-every must be positive")
    return args


def pool_toml(clusters: Sequence[str]) -> str:
    return "[pool]\nclusters = [" + ", ".join(f'"{c}"' for c in clusters) + "]\n" + FIXED_FLEET


def run(argv: list[str]) -> int:
    args = _parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    out.print(f"[dim]starting sparkfleet with clusters {', '.join(args.clusters)}...[/dim]")
    proc = SparkfleetProcess(config_toml=pool_toml(args.clusters), name="sparkfleet-faults")

    def measure() -> Run:
        try:
            proc.start()  # an interrupt while it starts must stop it too, hence no ``with proc``
            out.print(f"[dim]gateway {proc.url}, admin {proc.admin}[/dim]")
            return run_workload(out, proc, args)
        finally:
            proc.stop()

    result = measured(out, "faults", measure, catch_failures=False)
    report(out, result)
    return 1 if result.stuck else exit_code(result.outcomes)
