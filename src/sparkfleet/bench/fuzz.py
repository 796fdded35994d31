"""``sparkfleet bench fuzz``: hostile input at all twelve RPCs of a fresh gateway for a while; no crash, no unbounded memory.

Starts its own sparkfleet (one S cluster, autoscaler off, a per-cluster catalog so no metastore
JVM), runs the hypothesis fuzzer of ``sparkfleet.testing.fuzz`` for ``--seconds`` with ``--seed``
(the same seed replays the same inputs), then prints the inputs per RPC and status, the gateway's
RSS at start, after the warm-up and at the end, and every finding. Exits 1 on any finding: a call
that did not end in time, a status that explains nothing, the gateway gone or unhealthy, a stock
client that can no longer count ``spark.range(5)``, or RSS growth past ``--rss-bound-mib``.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.harness import exit_now, measured
from sparkfleet.testing.fuzz import FuzzReport, GatewayFuzzer
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

FLEET_TOML = '[pool]\nclusters = ["S"]\ncatalog = "per-cluster"\n' + FIXED_FLEET


def fuzz_fleet(seconds: float, fuzz_seed: int) -> FuzzReport:
    """A fresh sparkfleet, fuzzed for ``seconds``; stopped (every JVM) whatever happens."""
    with SparkfleetProcess(config_toml=FLEET_TOML, name="sparkfleet-fuzz") as proc:
        assert proc.proc is not None
        fuzzer = GatewayFuzzer(proc.port, proc.proc.pid, fuzz_seed, proc.admin)
        try:
            return fuzzer.run(seconds)
        finally:
            fuzzer.close()


def show(out: Console, report: FuzzReport, rss_bound_kb: int) -> list[str]:
    """Print the run; return its problems (empty: the gateway held)."""
    codes = sorted({code for counter in report.counts.values() for code in counter})
    table = Table(title=f"inputs per RPC and status (seed {report.seed}, {report.seconds:.0f} s)")
    table.add_column("rpc")
    for code in codes + ["total"]:
        table.add_column(code, justify="right")
    for rpc, counter in report.counts.items():
        table.add_row(rpc, *(str(counter.get(code, 0)) for code in codes), str(sum(counter.values())))
    out.print(table)
    for line in report.lines()[len(report.counts) + 2:]:  # RSS, the checks after the run, findings
        out.print(line, markup=False)
    problems = report.problems(rss_bound_kb)
    out.print(f"{report.inputs} inputs, {len(report.findings)} findings, "
              f"RSS bound {rss_bound_kb // 1024} MiB after warm-up: "
              + ("[green]the gateway held[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]"))
    for problem in problems:
        out.print(f"  {problem}", markup=False)
    return problems


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench fuzz", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz (default 300)")
    p.add_argument("--seed", type=int, default=1, help="seed of the inputs; the same seed replays them (default 1)")
    p.add_argument("--rss-bound-mib", type=int, default=128,
                   help="how much the gateway's RSS may grow after the warm-up (default 128)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.rss_bound_mib <= 0:
        p.error("--seconds and --rss-bound-mib must be positive")
    return args


def run(argv: list[str]) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))
    report = measured(out, "fuzz", lambda: fuzz_fleet(args.seconds, args.seed))
    out.rule("results")
    problems = show(out, report, args.rss_bound_mib * 1024)
    exit_now(1 if problems else 0)
