"""``sparkfleet compat``: pyspark's own Spark Connect doctests, directly and through the gateway.

Every ``pyspark.sql.connect.*`` module of the installed wheel that has a ``_test()`` runs in its
own child process (``python -m sparkfleet.bench.doctest_recorder <module>``, which is
``python -m <module>`` plus a per-example record) against ``SPARK_CONNECT_TESTING_REMOTE``: once
against a Spark Connect server started directly, then, after that server is stopped, through a
fresh ``sparkfleet up``. With ``--placement workload`` (the default) the gateway has one cluster of
the same size; with ``--placement alternate`` it has two and moves every request of a session to
the other one, so each doctest's session state must follow it across clusters. Examples are
identified by (module, doctest name, line in the docstring); an *extra failure* is one that passed
directly and failed, or was never reached, through the gateway.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sparkfleet.bench.doctest_results import (
    PACKAGE,
    DoctestModule,
    ExampleResult,
    ExtraFailure,
    ModuleRun,
    PlacementSpread,
    TargetRun,
    extra_failures,
    placement_spread,
    read_results,
)
from sparkfleet.bench.harness import sigterm_as_interrupt

DEFAULT_TIMEOUT_S = 2700.0
_KILL_GRACE_S = 5.0

_WIDE = 150  # logs and pipes get full lines rather than rich's 80-column default


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=_WIDE)


err = _console(stderr=True)


# ---- what to run -----------------------------------------------------------------------------


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"sparkfleet compat: {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _tested_module(test_fn: ast.FunctionDef) -> str | None:
    """The dotted name passed to ``doctest.testmod`` inside ``_test`` (often a classic module)."""
    for node in ast.walk(test_fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "testmod":
            if node.args:
                return ast.unparse(node.args[0])
    return None


def _example_estimate(pyspark_dir: Path, module: str, tested: str | None) -> int:
    """Connect modules borrow the docstrings of their classic twins: count ``>>>`` in both."""
    count = 0
    for dotted in {module, tested or module, module.replace(".connect.", ".", 1)}:
        path = pyspark_dir.parent.joinpath(*dotted.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                count = max(count, candidate.read_text(encoding="utf-8", errors="replace").count(">>>"))
    return count


def discover_modules(package: str = PACKAGE) -> list[DoctestModule]:
    """Modules under ``package`` whose source defines a top-level ``_test``, longest first."""
    root = _package_dir(package)
    pyspark_dir = _package_dir("pyspark")
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        if "proto" in rel.parts or "tests" in rel.parts:
            continue
        parts = [p for p in rel.parts if p != "__init__"]
        name = ".".join([package, *parts])
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        test_fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_test"), None)
        if test_fn is not None:
            found.append(DoctestModule(name, _example_estimate(pyspark_dir, name, _tested_module(test_fn))))
    return sorted(found, key=lambda m: (-m.weight, m.name))


def select_modules(available: list[DoctestModule], wanted: str | None) -> list[DoctestModule]:
    if not wanted:
        return available
    by_name = {m.short: m for m in available} | {m.name: m for m in available}
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(
            f"sparkfleet compat: unknown module(s) {unknown}; known: {', '.join(m.short for m in available)}"
        )
    chosen = {by_name[n].name for n in names}
    return [m for m in available if m.name in chosen]


# ---- running ---------------------------------------------------------------------------------


@dataclass
class _Child:
    module: DoctestModule
    proc: subprocess.Popen[bytes]
    started: float
    log_path: Path
    results_path: Path
    timed_out: bool = False


def _child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    env["SPARK_CONNECT_TESTING_REMOTE"] = url
    # Several _test()s chdir to SPARK_HOME; for a pip-installed pyspark that is the package dir.
    env.setdefault("SPARK_HOME", str(_package_dir("pyspark")))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers; reap the child."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything the child left in its group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_target(
    name: str,
    url: str,
    modules: list[DoctestModule],
    jobs: int,
    timeout_s: float,
    out_dir: Path,
    on_done: Callable[[ModuleRun], None],
) -> TargetRun:
    """Run every module against ``url``, at most ``jobs`` at once; children never outlive this call."""
    target = TargetRun(name)
    target_dir = out_dir / name
    target_dir.mkdir(parents=True, exist_ok=True)
    env = _child_env(url)
    pending = list(modules)
    running: list[_Child] = []
    start = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                module = pending.pop(0)
                log_path = target_dir / f"{module.short}.log"
                results_path = target_dir / f"{module.short}.jsonl"
                results_path.unlink(missing_ok=True)
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "sparkfleet.bench.doctest_recorder", module.name, str(results_path)],
                        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,  # Ctrl-C reaches us, not them; we stop them
                    )
                running.append(_Child(module, proc, time.monotonic(), log_path, results_path))
            time.sleep(0.25)
            for child in list(running):
                now = time.monotonic()
                if child.proc.poll() is None and now - child.started > timeout_s:
                    child.timed_out = True
                    _kill_group(child.proc)
                if child.proc.poll() is None:
                    continue
                _kill_group(child.proc)
                running.remove(child)
                examples, finished = read_results(
                    child.module, child.results_path, "timeout" if child.timed_out else "crashed"
                )
                run = ModuleRun(
                    child.module, child.proc.returncode, child.timed_out, now - child.started,
                    child.log_path, examples, finished,
                )
                target.modules[child.module.name] = run
                on_done(run)
    finally:
        for child in running:
            _kill_group(child.proc)
        target.seconds = time.monotonic() - start
    return target


# Every Spark Connect server of both targets has the same size (so output that depends on the
# number of partitions matches): the direct one, and each cluster of the gateway's pool.
_CORES, _MEMORY_MB = 2, 2048
PLACEMENTS = {"workload": 1, "alternate": 2}  # placement -> clusters in the gateway's pool
_QUERY_RECORDS = 10_000  # the admin API's largest page: the spread is of the newest records


def gateway_toml(placement: str) -> str:
    from sparkfleet.testing.process import FIXED_FLEET

    clusters = ", ".join(['"M"'] * PLACEMENTS[placement])
    return (f'[pool]\nclusters = [{clusters}]\nplacement = "{placement}"\n\n'
            f'[sizes.M]\ncores = {_CORES}\nmemory_mb = {_MEMORY_MB}\n' + FIXED_FLEET)


def _direct_target():  # type: ignore[no-untyped-def]
    from sparkfleet.testing.direct import DirectServer

    # The gateway's pool keeps its tables in a Hive metastore (the shared catalog): the direct
    # server uses a Hive catalog too (its own, embedded), so what is compared is the gateway, not
    # the catalog kind (a Hive catalog describes `default` as "Default Hive database").
    return DirectServer(cores=_CORES, memory_mb=_MEMORY_MB,
                        spark_conf={"spark.sql.catalogImplementation": "hive"})


def _gateway_target(placement: str):  # type: ignore[no-untyped-def]
    from sparkfleet.testing.process import SparkfleetProcess

    return SparkfleetProcess(config_toml=gateway_toml(placement), name="sparkfleet-compat")


def _with_server(make, run: Callable[[str], TargetRun], inspect=None) -> TargetRun:  # type: ignore[no-untyped-def]
    """Start a server, run against its url, let ``inspect`` look at it, and stop it however the
    run ends (Ctrl-C included)."""
    server = make()
    try:
        server.start()
        result = run(server.url)
        if inspect is not None:
            inspect(server)
        return result
    finally:
        server.stop()


# ---- reporting -------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _describe(result: ExampleResult | None) -> str:
    if result is None:
        return "not reached"
    if result.outcome in ("timeout", "crashed"):
        return f"{result.outcome} while running it"
    if result.outcome == "error":
        return "raised " + _first_line(result.detail)[:200]
    got = result.detail.split("Got:\n", 1)[-1]
    return "output differs; got: " + _first_line(got)[:160]


def _stuck_in(run: ModuleRun) -> str:
    stuck = [r for r in run.examples.values() if r.outcome in ("timeout", "crashed")]
    return f" in {stuck[0].key[1]}, line {stuck[0].file_line}" if stuck else ""


def _describe_spread(spread: PlacementSpread) -> str:
    clusters = ", ".join(f"{cluster} {n}" for cluster, n in spread.per_cluster.items())
    return (f"queries per cluster ({spread.records} newest records): {clusters}; "
            f"sessions that ran on more than one cluster: {spread.sessions_on_several} of {spread.sessions}")


def print_report(out: Console, modules: list[DoctestModule], direct: TargetRun, gateway: TargetRun,
                 extra: list[ExtraFailure], placement: str = "workload", spread: PlacementSpread | None = None) -> None:
    pool = PLACEMENTS[placement]
    title = f"gateway placement {placement}, {pool} cluster{'s' if pool > 1 else ''}"
    table = Table(title=f"pyspark Spark Connect doctests: direct vs through the gateway ({title})")
    table.add_column("module", no_wrap=True)
    for target in ("direct", "gateway"):
        table.add_column(f"{target}\ntried", justify="right")
        table.add_column("\npassed", justify="right")
        table.add_column("\nfailed", justify="right")
        table.add_column("\nstatus", no_wrap=True)
    table.add_column("extra", justify="right")
    extra_by_module: dict[str, int] = {}
    for item in extra:
        extra_by_module[item.direct.key[0]] = extra_by_module.get(item.direct.key[0], 0) + 1
    for module in modules:
        row = [module.short]
        for target in (direct, gateway):
            run = target.modules.get(module.name)
            if run is None:
                row += ["", "", "", "not run"]  # interrupted before this module
            else:
                row += [str(len(run.examples)), str(run.passed), str(run.failed), f"{run.status} {run.seconds:.0f}s"]
        row.append(str(extra_by_module.get(module.name, 0)))
        table.add_row(*row)
    table.add_row(
        "total",
        str(direct.attempted), str(direct.passed), str(direct.failed), f"{direct.seconds:.0f}s",
        str(gateway.attempted), str(gateway.passed), str(gateway.failed), f"{gateway.seconds:.0f}s",
        str(len(extra)), style="bold",
    )
    out.print(table)
    skipped = sorted({r.module.short for t in (direct, gateway) for r in t.modules.values() if r.status == "skipped"})
    if skipped:
        out.print(f"skipped by their own _test() (see the logs): {', '.join(skipped)}")
    for target in (direct, gateway):
        troubled = [
            f"{r.module.short} ({r.status}{_stuck_in(r)})" for r in target.modules.values()
            if r.status not in ("ok", "failures", "skipped")
        ]
        if troubled:
            out.print(f"{target.name} modules that did not finish: {', '.join(troubled)}")
    print(f"gateway placement: {placement} ({pool} cluster{'s' if pool > 1 else ''} of {_CORES} cores, {_MEMORY_MB} MB)")
    if spread is not None:
        print(f"  {_describe_spread(spread)}")
    print(f"direct: {direct.passed} passed, {direct.failed} failed")
    print(f"gateway: {gateway.passed} passed, {gateway.failed} failed")
    print(f"extra failures through the gateway: {len(extra)}")
    for item in extra:
        module, test, _ = item.direct.key
        print(f"  - {module} {test} (line {item.direct.file_line}): {_first_line(item.direct.source)}")
        print(f"      gateway: {_describe(item.gateway)}")


def _write_summary(path: Path, direct: TargetRun, gateway: TargetRun, extra: list[ExtraFailure],
                   placement: str = "workload", spread: PlacementSpread | None = None) -> None:
    def target_json(target: TargetRun) -> dict:
        return {
            "attempted": target.attempted, "passed": target.passed, "failed": target.failed,
            "seconds": round(target.seconds, 1),
            "modules": {
                r.module.short: {"attempted": len(r.examples), "passed": r.passed, "failed": r.failed,
                                 "status": r.status, "seconds": round(r.seconds, 1)}
                for r in target.modules.values()
            },
            "failures": [
                {"module": r.key[0], "test": r.key[1], "file_line": r.file_line, "source": r.source,
                 "outcome": r.outcome, "detail": r.detail}
                for r in sorted(target.examples().values(), key=lambda r: r.key) if not r.passed
            ],
        }

    summary = {
        "placement": {
            "name": placement, "clusters": PLACEMENTS[placement],
            "queries_per_cluster": spread.per_cluster if spread else None,
            "sessions": spread.sessions if spread else None,
            "sessions_on_several_clusters": spread.sessions_on_several if spread else None,
        },
        "direct": target_json(direct),
        "gateway": target_json(gateway),
        "extra_failures": [
            {"module": e.direct.key[0], "test": e.direct.key[1], "file_line": e.direct.file_line,
             "source": e.direct.source, "gateway_outcome": e.gateway.outcome if e.gateway else "not reached",
             "gateway_detail": e.gateway.detail if e.gateway else ""}
            for e in extra
        ],
    }
    path.write_text(json.dumps(summary, indent=2))


# ---- command ---------------------------------------------------------------------------------


def run_compat(args: argparse.Namespace) -> int:
    modules = select_modules(discover_modules(), getattr(args, "modules", None))
    jobs = max(1, int(getattr(args, "jobs", None) or 2))
    placement = getattr(args, "placement", None) or "workload"
    if placement not in PLACEMENTS:
        raise SystemExit(f"sparkfleet compat: unknown placement {placement!r}; known: {', '.join(PLACEMENTS)}")
    timeout_s = float(getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S)
    out_dir = getattr(args, "out", None)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="sparkfleet-compat-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    err.print(
        f"sparkfleet compat: {len(modules)} module(s), {jobs} at a time, {timeout_s:.0f}s timeout each; "
        f"gateway placement {placement} ({PLACEMENTS[placement]} cluster(s)); logs in {out_dir}"
    )
    started = time.monotonic()
    targets: dict[str, TargetRun] = {}
    spreads: list[PlacementSpread] = []

    def record_spread(server) -> None:  # type: ignore[no-untyped-def]
        spreads.append(placement_spread(server.api(f"/api/queries?limit={_QUERY_RECORDS}")))

    try:
        with sigterm_as_interrupt(), Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=False,
        ) as progress:
            sides = (("direct", _direct_target, None),
                     ("gateway", functools.partial(_gateway_target, placement), record_spread))
            for name, make, inspect in sides:
                task = progress.add_task(f"{name}: starting server", total=len(modules))

                def on_done(run: ModuleRun, name: str = name, task=task) -> None:  # type: ignore[no-untyped-def]
                    style = {"ok": "green", "failures": "yellow"}.get(run.status, "bold red")
                    progress.console.print(
                        f"[dim]{time.monotonic() - started:7.0f}s[/dim] {name:7} {run.module.short:28} "
                        f"{len(run.examples):5} tried {run.passed:5} passed {run.failed:4} failed "
                        f"[{style}]{run.status}[/{style}] ({run.seconds:.0f}s)"
                    )
                    progress.advance(task)

                def run(url: str, name: str = name, task=task, on_done=on_done) -> TargetRun:  # type: ignore[no-untyped-def]
                    shown = url.split(";token=", 1)[0]  # the token stays out of logs
                    progress.update(task, description=f"{name}: running doctests against {shown}")
                    return run_target(name, url, modules, jobs, timeout_s, out_dir, on_done)

                targets[name] = _with_server(make, run, inspect)
                progress.update(task, description=f"{name}: done, server stopped")
    except KeyboardInterrupt:
        err.print("sparkfleet compat: interrupted; every server and doctest process was stopped")
        return 130
    except RuntimeError as exc:  # a server that did not start; it was stopped already
        err.print(f"[bold red]sparkfleet compat: {exc}[/bold red]")
        return 2
    direct, gateway = targets["direct"], targets["gateway"]
    extra = extra_failures(direct, gateway)
    spread = spreads[0] if spreads else None
    print_report(_console(stderr=False), modules, direct, gateway, extra, placement, spread)
    _write_summary(out_dir / "summary.json", direct, gateway, extra, placement, spread)
    err.print(f"wall time {time.monotonic() - started:.0f}s; details in {out_dir}/summary.json and *.log")
    return 0 if not extra else 1
