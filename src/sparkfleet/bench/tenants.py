"""``sparkfleet bench tenants``: a quiet tenant's interactive latency alone and beside a flooding tenant.

Issue 7's benchmark. sparkfleet runs with token auth and two tenants on two 1-core clusters (the
machine's two cores). The quiet tenant's clients run small queries with think time; the flooding
tenant's clients run heavier CPU-bound queries back to back, more of them at once than the fleet
has cores, and declare them interactive (``sparkfleet.profile``), so that they compete for the
very slots the quiet tenant's queries need: workload placement alone does not keep them apart.

Two fleets, each started fresh and stopped after its windows, in one invocation:

  (alone) / (flood)        windows of the quiet tenant alone, then beside the flood under the
                           flooding tenant's quotas (default: its fair share of the machine, one
                           core: max_cores = 1, max_concurrent_queries = 2, max_queued = 3; its
                           clients beyond that are refused and try again)
  (alone-2) / (unlimited)  the same on a fleet without quotas: what the quotas buy

On each fleet the two kinds of window alternate (``--rounds``), so that a change in the rest of the
machine's load falls on both alike; the CPU each part used is reported beside the latencies.

Goal: the quiet tenant's p95 in (flood) within 1.5x of (alone). Reported, not enforced: the run
exits 1 only if a quiet client saw an error or a flooding one an error other than a quota refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.console import Console

from sparkfleet.bench.fault_results import error_class_of, first_line
from sparkfleet.bench.harness import cpu_seconds, machine_busy_seconds, measured
from sparkfleet.bench.mixed_results import Timing
from sparkfleet.bench.tenants_results import (
    FLOOD,
    QUIET,
    Phase,
    PhaseRun,
    exit_code,
    pool_windows,
    report,
    summarize_tenant,
    tenant_of_records,
)
from sparkfleet.gateway.auth import hash_token
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

_now = time.monotonic  # one clock for every client thread and the main thread
PROGRESS_EVERY_S = 10.0
_PAUSE_AFTER_REFUSAL_S = 0.5  # a refused client tries again after this, like a person would
_WARM_UP_TIMEOUT_S = 600.0
_WIND_DOWN_S = 300.0
ADMIN = "ops"

# Each flood phase has a fleet of its own, where its windows alternate with its baseline's.
PHASES = {
    "flood": (Phase("alone", "the quiet tenant alone (fleet with quotas)", flood=False, quotas=True),
              Phase("flood", "beside the flood, under its quotas", flood=True, quotas=True, baseline="alone")),
    "unlimited": (Phase("alone-2", "the quiet tenant alone (fleet without quotas)", flood=False, quotas=False),
                  Phase("unlimited", "beside the flood, no quotas", flood=True, quotas=False, baseline="alone-2")),
}
DEFAULT_QUOTAS = {"max_concurrent_queries": 2, "max_cores": 1, "max_queued": 3}

# Small queries a person waits for.
QUIET_QUERIES = {
    "sum": "select sum(id) from range(0, 100000)",
    "group": "select id % 10 as k, count(*) as n from range(0, 100000) group by id % 10 order by k",
    "filter": "select count(*) from range(0, 200000) where id % 997 = 3",
}


def flood_query(rows: int) -> str:
    """CPU-bound, a few seconds on one core; its result is one row."""
    return f"select sum(hash(id) % 1000) as h from range(0, {rows})"


# ---- the fleet ----------------------------------------------------------------------------------


def fleet_toml(tokens: dict[str, str], quotas: dict[str, Any] | None) -> str:
    """Two 1-core clusters, token auth: one token per tenant and an admin's."""
    lines = ['[pool]\nclusters = ["S", "S"]\n', '[auth]\nmode = "token"\n']
    for tenant, token in tokens.items():
        groups = '["admin"]' if tenant == ADMIN else "[]"
        lines.append(f'[[auth.tokens]]\nsha256 = "{hash_token(token)}"\nuser = "{tenant}-user"\n'
                     f'tenant = "{tenant}"\ngroups = {groups}\n')
    if quotas:
        lines.append("[tenants.flood]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in quotas.items()))
    return "\n".join(lines) + FIXED_FLEET


# ---- the clients --------------------------------------------------------------------------------


@dataclass
class Signals:
    go: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    warm: dict[str, threading.Event] = field(default_factory=dict)


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timings: list[Timing] = []

    def add(self, timing: Timing) -> None:
        with self._lock:
            self._timings.append(timing)

    def snapshot(self) -> list[Timing]:
        with self._lock:
            return list(self._timings)


def _timed(spark: Any, client: str, name: str, sql: str, warm_up: bool) -> Timing:
    started = _now()
    try:
        spark.sql(sql).collect()
    except Exception as exc:  # noqa: BLE001 - every failure is what this benchmark reports
        return Timing(client, name, started, _now(), error_class_of(exc),
                      f"{type(exc).__name__}: {first_line(str(exc))}", warm_up=warm_up)
    return Timing(client, name, started, _now(), warm_up=warm_up)


def run_client(spark: Any, client: str, queries: dict[str, str], think_s: float, signals: Signals,
               ledger: Ledger) -> None:
    """Each query once to warm up, then the queries in turn until told to stop; a refused query
    is recorded and the client tries again after a pause."""
    for name, sql in queries.items():
        timing = _timed(spark, client, name, sql, warm_up=True)
        if not timing.ok:
            ledger.add(timing)
    signals.warm[client].set()
    signals.go.wait()
    turn = 0
    names = list(queries)
    while not signals.stop.is_set():
        name = names[turn % len(names)]
        turn += 1
        timing = _timed(spark, client, name, queries[name], warm_up=False)
        ledger.add(timing)
        pause = think_s if timing.ok else max(think_s, _PAUSE_AFTER_REFUSAL_S)
        if pause:
            signals.stop.wait(pause)


def _sessions(url: str, token: str, count: int, profile: str | None) -> list[Any]:
    from pyspark.sql import SparkSession

    found = []
    for _ in range(count):
        spark = SparkSession.builder.remote(f"{url}/;token={token}").create()
        if profile:
            spark.conf.set("sparkfleet.profile", profile)
        found.append(spark)
    return found


def _stop_sessions(sessions: Sequence[Any]) -> None:
    for spark in sessions:
        try:
            spark.stop()
        except Exception:  # noqa: BLE001 - nothing left to release
            pass


# ---- one window ---------------------------------------------------------------------------------


def _refusals(proc: SparkfleetProcess) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(proc.text("/metrics")):
        for sample in family.samples:
            if sample.name == "sparkfleet_quota_refusals_total":
                found[(sample.labels["tenant"], sample.labels["quota"])] = sample.value
    return found


class CpuSplit:
    """CPU seconds of the gateway, its cluster JVMs, this process (the clients) and the rest."""

    def __init__(self, proc: SparkfleetProcess) -> None:
        assert proc.proc is not None
        self._gateway = proc.proc.pid
        self._clusters = [int(c["pid"]) for c in proc.ready_clusters() if c.get("pid")]

    def read(self) -> dict[str, float]:
        ours = {
            "gateway": cpu_seconds(self._gateway),
            "clusters": sum(cpu_seconds(pid, descendants=True) for pid in self._clusters),
            "client": cpu_seconds(os.getpid()),
        }
        return {**ours, "other": machine_busy_seconds() - sum(ours.values())}


def _progress(out: Console, phase: Phase, ledger: Ledger, started: float) -> None:
    timings = [t for t in ledger.snapshot() if not t.warm_up]
    quiet = summarize_tenant([t for t in timings if t.client.startswith(QUIET)])
    line = f"({phase.key}) {_now() - started:4.0f}s  quiet {quiet.done} (p95 {quiet.latency.p95_s:.2f}s)"
    if phase.flood:
        flood = summarize_tenant([t for t in timings if t.client.startswith(FLOOD)])
        line += f"  flood {flood.done} done, {flood.refused} refused, {flood.errors} errors"
    out.print(line)


def measure_window(out: Console, proc: SparkfleetProcess, phase: Phase, clients: dict[str, Any],
                   args: argparse.Namespace) -> PhaseRun:
    """Run the phase's clients (the quiet ones; the flooding ones too in a flood phase) for one
    window, after every one of them has warmed up; each finishes the query it runs at the end."""
    chosen = {name: spark for name, spark in clients.items() if phase.flood or name.startswith(QUIET)}
    signals, ledger = Signals(), Ledger()
    threads = []
    for name, spark in chosen.items():
        signals.warm[name] = threading.Event()
        quiet = name.startswith(QUIET)
        queries = QUIET_QUERIES if quiet else {"flood": flood_query(args.flood_rows)}
        think = args.think if quiet else 0.0
        threads.append(threading.Thread(target=run_client, args=(spark, name, queries, think, signals, ledger),
                                        name=f"tenants-{phase.key}-{name}", daemon=True))
    for thread in threads:
        thread.start()
    deadline = _now() + _WARM_UP_TIMEOUT_S
    while not all(e.is_set() for e in signals.warm.values()):
        if _now() > deadline or not all(t.is_alive() for t in threads):
            signals.stop.set()
            signals.go.set()
            raise RuntimeError(f"({phase.key}) the clients did not finish their warm-up")
        time.sleep(0.2)
    cpu = CpuSplit(proc)
    before, cpu_before = _refusals(proc), cpu.read()
    records_before = {r["id"] for r in proc.api("/api/queries?limit=10000")}
    measured_from = _now()
    signals.go.set()
    out.print(f"[dim]({phase.key}) {len(chosen)} clients warm; measuring for {args.duration:g}s[/dim]")
    next_progress = measured_from + PROGRESS_EVERY_S
    while _now() < measured_from + args.duration:
        time.sleep(0.2)
        if _now() >= next_progress:
            _progress(out, phase, ledger, measured_from)
            next_progress += PROGRESS_EVERY_S
    signals.stop.set()
    for thread in threads:
        thread.join(_WIND_DOWN_S)
    ended = _now()
    after, cpu_after = _refusals(proc), cpu.read()
    sessions = {spark.session_id: name.split("-")[0] for name, spark in chosen.items()}
    records = [r for r in proc.api("/api/queries?limit=10000") if r["id"] not in records_before]
    return PhaseRun(phase, ended - measured_from, ledger.snapshot(),
                    {k: v - before.get(k, 0.0) for k, v in after.items()}, tenant_of_records(records, sessions),
                    {part: cpu_after[part] - cpu_before[part] for part in cpu_before})


def run_fleet(out: Console, baseline: Phase, phase: Phase, args: argparse.Namespace) -> list[PhaseRun]:
    """One fleet (with the flooding tenant's quotas or without): ``args.rounds`` rounds of a
    ``baseline`` window (the quiet tenant alone) then a ``phase`` window (beside the flood), so
    that a change in the machine's other load falls on both alike. Stopped whatever happens."""
    tokens = {tenant: f"sft_bench_{tenant}_{uuid.uuid4().hex}" for tenant in (QUIET, FLOOD, ADMIN)}
    quotas = args.quotas if phase.quotas else None
    proc = SparkfleetProcess(fleet_toml(tokens, quotas), name="sparkfleet-bench-tenants", admin_token=tokens[ADMIN])
    try:
        started = _now()
        out.rule(f"({baseline.key}) and ({phase.key}), {args.rounds} round(s)")
        proc.start()  # an interrupt while it starts must stop it too, hence no ``with proc``
        out.print(f"[dim]ready in {_now() - started:.0f}s: "
                  + ", ".join(f"{c['id']} ({c['size']})" for c in proc.ready_clusters()) + "[/dim]")
        quiet = _sessions(proc.url, tokens[QUIET], args.quiet_clients, None)
        flood = _sessions(proc.url, tokens[FLOOD], args.flood_clients,
                          "interactive" if args.flood_profile == "interactive" else None)
        clients = {**{f"{QUIET}-{n}": s for n, s in enumerate(quiet, 1)},
                   **{f"{FLOOD}-{n}": s for n, s in enumerate(flood, 1)}}
        windows = []
        for _ in range(args.rounds):
            windows += [measure_window(out, proc, baseline, clients, args),
                        measure_window(out, proc, phase, clients, args)]
        _stop_sessions([*quiet, *flood])
        return windows
    finally:
        proc.stop()


# ---- command ------------------------------------------------------------------------------------


def _quotas(text: str) -> dict[str, Any]:
    """``KEY=VALUE,...`` as a [tenants.flood] table's values."""
    found: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if part:
            key, _, value = (x.strip() for x in part.partition("="))
            found[key] = value if key == "max_size_class" else float(value) if key == "requests_per_s" else int(value)
    return found


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench tenants", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--duration", type=float, default=None,
                   help="seconds each window measures (default 30; 15 with --quick)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of (alone, flood) windows per fleet (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="a short run: one round of 15-second windows per fleet")
    p.add_argument("--fleets", default="flood,unlimited",
                   help="which fleets to run: flood (with the quotas), unlimited (without); default both")
    p.add_argument("--quiet-clients", type=int, default=2, help="the quiet tenant's clients, one session each")
    p.add_argument("--think", type=float, default=0.5, help="seconds a quiet client waits between queries")
    p.add_argument("--flood-clients", type=int, default=6, help="the flooding tenant's clients, back to back")
    p.add_argument("--flood-rows", type=int, default=60_000_000, help="rows each flood query hashes and sums")
    p.add_argument("--flood-profile", choices=("interactive", "infer"), default="interactive",
                   help="what the flooding sessions declare (default interactive: the slots the quiet tenant uses)")
    p.add_argument("--quotas", default=",".join(f"{k}={v}" for k, v in DEFAULT_QUOTAS.items()),
                   help="the flooding tenant's [tenants.flood] table, KEY=VALUE,... (default %(default)s)")
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (15.0 if args.quick else 30.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.fleets = [k.strip() for k in args.fleets.split(",") if k.strip()]
    unknown = [k for k in args.fleets if k not in PHASES]
    if unknown or not args.fleets:
        p.error(f"--fleets takes a comma-separated list of {', '.join(PHASES)}; got {unknown or 'none'}")
    try:
        args.quotas = _quotas(args.quotas)
    except ValueError:
        p.error(f"--quotas takes KEY=NUMBER pairs separated by commas; got {args.quotas!r}")
    if args.duration <= 0 or args.rounds < 1 or args.quiet_clients < 1 or args.flood_clients < 1 or args.think < 0:
        p.error("--duration, --rounds and the client counts must be positive, --think not negative")
    return args


def measure(out: Console, args: argparse.Namespace) -> list[PhaseRun]:
    out.print(f"[dim]{args.quiet_clients} quiet clients (think {args.think:g}s), {args.flood_clients} flooding "
              f"clients ({flood_query(args.flood_rows)}, profile {args.flood_profile}); "
              f"{args.rounds} round(s) of two {args.duration:g}s windows per fleet[/dim]")
    windows = []
    for key in args.fleets:
        windows += run_fleet(out, *PHASES[key], args)
    return pool_windows(windows)


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    runs = measured(out, "tenants", lambda: measure(out, args))
    out.rule("results")
    report(out, runs, args.quotas, len(os.sched_getaffinity(0)))
    return exit_code(runs)

