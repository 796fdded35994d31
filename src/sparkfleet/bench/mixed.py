"""``sparkfleet bench mixed``: small interactive queries while heavy TPC-H ETL runs beside them.

Issue 4's benchmark. Two interactive clients issue small queries with think time while a third
client runs heavy TPC-H queries back to back, for a fixed time, on each of these fleets in turn
(each started fresh and stopped after its phase), all in one invocation:

  (d) idle:      the interactive clients alone on fleet (a), no ETL: the latency to compare with
  (a) workload:  two 1-core clusters, sparkfleet's workload-aware placement
  (b) affinity:  the same two clusters, each session pinned round robin (a plain Spark Connect proxy)
  (c) shared:    one cluster with both cores and the summed memory

Goals: interactive p95 on (a) within 1.3x of (d); ETL work rate on (a) at least 0.9x of (c).
Goals are reported, not enforced: the run exits 1 only if a client saw an error.

Sessions first reach the gateway in a fixed order, ETL first, then interactive-1, interactive-2.
With session affinity a new session goes to the cluster with the fewest sessions (ties: the lowest
id), so the ETL session lands on the first cluster, interactive-1 on the second and interactive-2
back on the first, with the ETL: what round robin does with 3 sessions over 2 clusters. The report
shows where each client's queries ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from sparkfleet.bench.fault_results import error_class_of, first_line
from sparkfleet.bench.harness import measured
from sparkfleet.bench.faults import stock_sessions
from sparkfleet.bench.mixed_report import report
from sparkfleet.bench.mixed_results import ETL_CLIENT, Phase, PhaseRun, Timing, exit_code, summarize_latency
from sparkfleet.bench.tpch import TPCH_QUERIES, ensure_tpch_data, register_tpch
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

PROGRESS_EVERY_S = 10.0
_POLL_S = 0.25
_PAUSE_AFTER_FAILURE_S = 0.5  # a client whose queries keep failing must not spin
_ETL_WIND_DOWN_S = 600.0  # the ETL query running at the deadline may take this long to finish
_WARM_UP_TIMEOUT_S = 1200.0
_QUIET_POLL_S = 30.0
_now = time.monotonic  # one clock for every client thread and the main thread

# Heavy at SF 1 (seconds on 2 cores, measured once: q21 30, q18 21, q01 18, q05 19): a scan and
# aggregation of lineitem, a large join with a grouped subquery, a six-table join.
DEFAULT_ETL_QUERIES = ("q01", "q18", "q05")

PHASES = {
    "d": Phase("d", "idle: fleet (a), interactive clients alone", with_etl=False),
    "a": Phase("a", "workload placement, 2 clusters x 1 core", with_etl=True),
    "b": Phase("b", "session affinity, 2 clusters x 1 core", with_etl=True),
    "c": Phase("c", "one shared cluster, 2 cores", with_etl=True),
}


# ---- the interactive queries --------------------------------------------------------------------


def _nation_lookup(rng: random.Random, sf: float) -> str:
    return ("select n_name, r_name from nation join region on n_regionkey = r_regionkey "
            f"where n_nationkey = {rng.randrange(25)}")


def _supplier_lookup(rng: random.Random, sf: float) -> str:
    return f"select s_name, s_phone, s_acctbal from supplier where s_suppkey = {rng.randint(1, max(1, int(10_000 * sf)))}"


def _order_count(rng: random.Random, sf: float) -> str:
    # Order keys are sparse: 1.5 M orders per SF spread over 6 M keys.
    return f"select count(*) from orders where o_orderkey = {rng.randint(1, max(1, int(6_000_000 * sf)))}"


def _nations_per_region(rng: random.Random, sf: float) -> str:
    return ("select r_name, count(*) as nations from region join nation on r_regionkey = n_regionkey "
            "group by r_name order by r_name")


INTERACTIVE_QUERIES: dict[str, Callable[[random.Random, float], str]] = {
    "nation lookup": _nation_lookup,
    "supplier lookup": _supplier_lookup,
    "order count by key": _order_count,
    "nations per region": _nations_per_region,
}


# ---- the clients --------------------------------------------------------------------------------


class Ledger:
    """What the client threads observed, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timings: list[Timing] = []
        self._in_flight: dict[str, tuple[str, float]] = {}

    def begin(self, client: str, query: str) -> float:
        at = _now()
        with self._lock:
            self._in_flight[client] = (query, at)
        return at

    def end(self, timing: Timing) -> None:
        """Keep a measured query, and a warm-up query only if it failed."""
        with self._lock:
            self._in_flight.pop(timing.client, None)
            if not timing.warm_up or not timing.ok:
                self._timings.append(timing)

    def snapshot(self) -> tuple[list[Timing], dict[str, tuple[str, float]]]:
        with self._lock:
            return list(self._timings), dict(self._in_flight)


@dataclass
class Signals:
    """How the main thread drives the clients of one phase."""

    go: threading.Event = field(default_factory=threading.Event)  # every client is warm: measure
    stop: threading.Event = field(default_factory=threading.Event)  # interactive clients end
    deadline: float = math.inf  # no ETL query starts after it
    warm: dict[str, threading.Event] = field(default_factory=dict)


def _timed(ledger: Ledger, client: str, query: str, spark: Any, text: str, warm_up: bool = False) -> Timing:
    """Run one SQL query to completion (every row received) and record how long it took."""
    started = ledger.begin(client, query)
    try:
        spark.sql(text).collect()
    except Exception as exc:  # noqa: BLE001 - every failure is what this benchmark reports
        timing = Timing(client, query, started, _now(), error_class_of(exc),
                        f"{type(exc).__name__}: {first_line(str(exc))}", warm_up=warm_up)
    else:
        timing = Timing(client, query, started, _now(), warm_up=warm_up)
    ledger.end(timing)
    return timing


def run_interactive(spark: Any, client: str, sf: float, think_s: float, seed: int,
                    signals: Signals, ledger: Ledger) -> None:
    """Each query once to warm up, then small queries in turn with random keys and think time."""
    rng = random.Random(seed)
    kinds = list(INTERACTIVE_QUERIES)
    for kind in kinds:
        _timed(ledger, client, kind, spark, INTERACTIVE_QUERIES[kind](rng, sf), warm_up=True)
    signals.warm[client].set()
    signals.go.wait()
    turn = rng.randrange(len(kinds))  # the two clients do not run the same query at once
    while not signals.stop.is_set():
        kind = kinds[turn % len(kinds)]
        turn += 1
        timing = _timed(ledger, client, kind, spark, INTERACTIVE_QUERIES[kind](rng, sf))
        signals.stop.wait(think_s if timing.ok else max(think_s, _PAUSE_AFTER_FAILURE_S))


def run_etl(spark: Any, names: Sequence[str], signals: Signals, ledger: Ledger) -> None:
    """Each query once to warm up, then the queries back to back until the deadline; the one
    running at the deadline finishes (it counts)."""
    for name in names:
        _timed(ledger, ETL_CLIENT, name, spark, TPCH_QUERIES[name], warm_up=True)
    signals.warm[ETL_CLIENT].set()
    signals.go.wait()
    turn = 0
    while not signals.stop.is_set() and _now() < signals.deadline:
        name = names[turn % len(names)]
        turn += 1
        if not _timed(ledger, ETL_CLIENT, name, spark, TPCH_QUERIES[name]).ok:
            signals.stop.wait(_PAUSE_AFTER_FAILURE_S)


# ---- one phase ----------------------------------------------------------------------------------


def fleet_toml(phase: Phase, memory_mb: int) -> str:
    """(c) is one cluster of both cores and the summed memory; the others two 1-core clusters."""
    sizes = (f"[sizes.B1]\ncores = 1\nmemory_mb = {memory_mb}\n\n"
             f"[sizes.B2]\ncores = 2\nmemory_mb = {2 * memory_mb}\n\n")
    if phase.key == "c":
        return sizes + '[pool]\nclusters = ["B2"]\nplacement = "workload"\n' + FIXED_FLEET
    placement = "session-affinity" if phase.key == "b" else "workload"
    return sizes + f'[pool]\nclusters = ["B1", "B1"]\nplacement = "{placement}"\n' + FIXED_FLEET


def _client_names(phase: Phase, interactive: int) -> list[str]:
    """In the order their sessions first reach the gateway: the ETL first (see the docstring)."""
    return ([ETL_CLIENT] if phase.with_etl else []) + [f"interactive-{i}" for i in range(1, interactive + 1)]


def _progress(out: Console, phase: Phase, ledger: Ledger, started: float | None) -> None:
    timings, in_flight = ledger.snapshot()
    if started is None:
        running = ", ".join(f"{c} {q} {_now() - at:.0f}s" for c, q, at in
                            ((c, *v) for c, v in sorted(in_flight.items())))
        out.print(f"[dim]({phase.key}) warming up: {running or 'between queries'}[/dim]")
        return
    interactive = [t for t in timings if t.client != ETL_CLIENT and not t.warm_up]
    etl = [t for t in timings if t.client == ETL_CLIENT and not t.warm_up]
    latency = summarize_latency(interactive)
    line = (f"({phase.key}) {_now() - started:5.0f}s  interactive {latency.count} "
            f"(p95 {latency.p95_s:.2f}s, errors {sum(not t.ok for t in timings)})")
    if phase.with_etl:
        line += f"  ETL done {sum(t.ok for t in etl)} (errors {sum(not t.ok for t in etl)})"
        if ETL_CLIENT in in_flight:
            query, at = in_flight[ETL_CLIENT]
            line += f", running {query} for {_now() - at:.0f}s"
    out.print(line)


def _every(seconds: float, show: Callable[[], None]) -> Callable[[], None]:
    due = [_now() + seconds]

    def tick() -> None:
        if _now() >= due[0]:
            show()
            due[0] = _now() + seconds

    return tick


def _wait(until: Callable[[], bool], limit: float, tick: Callable[[], None]) -> bool:
    """Wait for ``until()`` or the ``limit`` (monotonic), ticking; whether ``until()`` came true."""
    while not until():
        if _now() >= limit:
            return False
        time.sleep(_POLL_S)
        tick()
    return True


def drive_clients(out: Console, proc: SparkfleetProcess, phase: Phase, args: argparse.Namespace,
                  data_dir: Path, signals: Signals) -> PhaseRun:
    names = _client_names(phase, args.interactive_clients)
    ledger = Ledger()
    with stock_sessions(proc.url, len(names)) as sparks:
        # Sequential and in order: with session affinity the first request places the session.
        for client, spark in zip(names, sparks):
            if client == ETL_CLIENT:
                spark.conf.set("sparkfleet.profile", "batch")
            elif args.interactive_profile == "interactive":
                spark.conf.set("sparkfleet.profile", "interactive")
            register_tpch(spark, data_dir)
        sessions = {spark.session_id: client for client, spark in zip(names, sparks)}
        threads = []
        for n, (client, spark) in enumerate(zip(names, sparks)):
            signals.warm[client] = threading.Event()
            if client == ETL_CLIENT:
                target: Callable[[], None] = functools.partial(run_etl, spark, args.etl_queries, signals, ledger)
            else:
                target = functools.partial(run_interactive, spark, client, args.scale_factor, args.think,
                                           args.seed * 1000 + n, signals, ledger)
            threads.append(threading.Thread(target=target, name=f"mixed-{phase.key}-{client}", daemon=True))
        for thread in threads:
            thread.start()
        warm_tick = _every(PROGRESS_EVERY_S, functools.partial(_progress, out, phase, ledger, None))
        def all_warm() -> bool:
            return all(event.is_set() for event in signals.warm.values())

        _wait(lambda: all_warm() or not all(t.is_alive() for t in threads), _now() + _WARM_UP_TIMEOUT_S, warm_tick)
        if not all_warm():
            raise RuntimeError(f"phase ({phase.key}): the clients did not finish their warm-up "
                               f"within {_WARM_UP_TIMEOUT_S:g}s")
        measured_from = _now()
        signals.deadline = measured_from + args.duration
        signals.go.set()
        out.print(f"[dim]({phase.key}) every client warm; measuring for {args.duration:g}s[/dim]")
        tick = _every(PROGRESS_EVERY_S, functools.partial(_progress, out, phase, ledger, measured_from))
        if phase.with_etl:
            etl_thread = threads[0]
            if not _wait(lambda: not etl_thread.is_alive(), signals.deadline + _ETL_WIND_DOWN_S, tick):
                out.print(f"[bold red]({phase.key}) the ETL query running at the deadline did not finish "
                          f"within {_ETL_WIND_DOWN_S:g}s; stopping[/bold red]")
        else:
            _wait(lambda: False, signals.deadline, tick)
        signals.stop.set()
        for thread in threads:
            thread.join(120)  # each finishes the query it is running
        ended = _now()
        timings, _ = ledger.snapshot()
        records: list[dict[str, Any]] = []
        for session_id in sessions:
            records += proc.api(f"/api/queries?session_id={session_id}&limit=10000")
        run = PhaseRun(phase, measured_from, signals.deadline, ended, timings, records,
                       sessions, proc.api("/api/clusters?history=0"))
        if args.dump is not None:
            dump_phase(args.dump, run)
        return run


def dump_phase(folder: Path, run: PhaseRun) -> None:
    """What the gateway recorded in a phase, for a closer look than the report gives."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run.phase.key}.json").write_text(json.dumps({
        "phase": run.phase.key, "sessions": run.sessions, "measured_from": run.measured_from,
        "timings": [dataclasses.asdict(t) for t in run.timings],
        "records": run.records, "clusters": run.clusters,
    }, indent=1, default=str))


def wait_while_exists(out: Console, path: Path | None) -> None:
    """On a shared machine: hold off starting JVMs while another job asks for quiet."""
    if path is None:
        return
    while path.exists():
        out.print(f"[dim]{path} exists; waiting {_QUIET_POLL_S:g}s before starting a fleet[/dim]")
        time.sleep(_QUIET_POLL_S)


def run_phase(out: Console, phase: Phase, args: argparse.Namespace, data_dir: Path) -> PhaseRun:
    """Start the phase's fleet fresh, run its clients, stop it (and every JVM) whatever happens."""
    wait_while_exists(out, args.wait_while_exists)
    out.rule(f"({phase.key}) {phase.title}")
    proc = SparkfleetProcess(config_toml=fleet_toml(phase, args.memory_mb), name=f"sparkfleet-mixed-{phase.key}")
    signals = Signals()
    try:
        started = _now()
        proc.start()  # an interrupt while it starts must stop it too, hence no ``with proc``
        clusters = proc.ready_clusters()
        out.print(f"[dim]({phase.key}) ready in {_now() - started:.0f}s: "
                  + ", ".join(f"{c['id']} ({c['size']})" if "size" in c else c["id"] for c in clusters) + "[/dim]")
        return drive_clients(out, proc, phase, args, data_dir, signals)
    finally:
        signals.stop.set()
        signals.go.set()  # a client still waiting to measure ends at once
        proc.stop()


# ---- command ------------------------------------------------------------------------------------


def default_data_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sparkfleet" / "tpch"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench mixed",
                                description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--duration", type=float, default=None, help="seconds each phase measures (default 120; 30 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke test: TPC-H SF 0.1 and 30-second phases")
    p.add_argument("--scale-factor", type=float, default=None, help="TPC-H scale factor (default 1; 0.1 with --quick)")
    p.add_argument("--data", type=Path, default=None,
                   help=f"where TPC-H data is cached, one sf<N> directory per scale factor (default {default_data_root()})")
    p.add_argument("--phases", default="d,a,b,c", help="phases to run, in this order (default d,a,b,c)")
    p.add_argument("--etl-queries", default=",".join(DEFAULT_ETL_QUERIES),
                   help=f"TPC-H queries the ETL client runs in turn (default {','.join(DEFAULT_ETL_QUERIES)})")
    p.add_argument("--interactive-clients", type=int, default=2, help="interactive clients, one session each")
    p.add_argument("--think", type=float, default=0.5, help="seconds an interactive client waits between queries")
    p.add_argument("--interactive-profile", choices=("infer", "interactive"), default="infer",
                   help="leave the interactive sessions' profile to the gateway (default) or set "
                        "sparkfleet.profile=interactive")
    p.add_argument("--memory-mb", type=int, default=3072, help="heap of a 1-core cluster; (c) gets twice this")
    p.add_argument("--seed", type=int, default=0, help="seed of the interactive queries' random keys")
    p.add_argument("--dump", type=Path, default=None, metavar="DIR",
                   help="write each phase's gateway query records and clusters to DIR/<phase>.json")
    p.add_argument("--wait-while-exists", type=Path, default=None, metavar="PATH",
                   help="before starting each fleet, wait while PATH exists (a shared machine's quiet flag)")
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (30.0 if args.quick else 120.0)
    args.scale_factor = args.scale_factor if args.scale_factor is not None else (0.1 if args.quick else 1.0)
    args.data = args.data or default_data_root()
    args.phases = [k.strip() for k in args.phases.split(",") if k.strip()]
    unknown = [k for k in args.phases if k not in PHASES]
    if unknown or not args.phases:
        p.error(f"--phases takes a comma-separated list of {', '.join(PHASES)}; got {unknown or 'none'}")
    args.etl_queries = [q.strip() for q in args.etl_queries.split(",") if q.strip()]
    bad = [q for q in args.etl_queries if q not in TPCH_QUERIES]
    if bad or not args.etl_queries:
        p.error(f"--etl-queries takes TPC-H query names q01..q22; got {bad or 'none'}")
    if args.duration <= 0 or args.scale_factor <= 0 or args.interactive_clients < 1 or args.think < 0:
        p.error("--duration, --scale-factor and --interactive-clients must be positive, --think not negative")
    return args


def measure(out: Console, args: argparse.Namespace) -> list[PhaseRun]:
    """Every phase of ``args`` in turn; raises KeyboardInterrupt after stopping the running fleet."""
    data_dir = ensure_tpch_data(args.data, args.scale_factor, progress=out)
    out.print(f"[dim]TPC-H SF {args.scale_factor:g} from {data_dir}; ETL {', '.join(args.etl_queries)}; "
              f"{args.interactive_clients} interactive clients (profile: {args.interactive_profile}), "
              f"think {args.think:g}s; {args.duration:g}s per phase[/dim]")
    return [run_phase(out, PHASES[key], args, data_dir) for key in args.phases]


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    runs = measured(out, "mixed", lambda: measure(out, args))
    out.rule("results")
    report(out, runs)
    return exit_code(runs)
