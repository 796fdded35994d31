"""``sparkfleet bench estimate``: how often the gateway's cost estimate names the class a query turns out to be.

For each scale factor, a real ``sparkfleet up`` (one cluster) runs the 22 TPC-H queries twice in
one stock session: the first run has no history (the estimate comes from the plan and the sizes of
its inputs), the second has the first in its workload history. Each run's estimate is read from
its query record (``/api/queries``), its observed cost from the store (``workload_runs.task_ms``,
read-only). Then, on the same cluster, it times what asking Spark would cost instead
(AnalyzePlan: ``inputFiles()``, ``explain("cost")``, sent directly to the cluster) against the
gateway's own estimate (plan summary, temp views, fingerprint, input sizes, static model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.table import Table

from sparkfleet.bench.estimate_results import (
    HISTORY,
    STATIC,
    QueryResult,
    by_scale_factor,
    exit_code,
    match_summary,
    missed_by_gateway,
    parse_estimate,
    query_rows,
    spread_ms,
    static_estimate_stability,
)
from sparkfleet.bench.tpch import QUERY_NAMES, TABLES, TPCH_QUERIES, ensure_tpch_data, register_tpch
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session

DEFAULT_DATA = Path.home() / ".cache" / "sparkfleet" / "tpch"
_METRICS_WAIT_S = 120.0  # a run's cost is read from the Spark UI after it ends, in the background
_ANALYZE_REPEATS = 2
_STATS = re.compile(r"Statistics\(sizeInBytes=([0-9.]+)\s*([KMGTPE]?i?B)")
_RUN_RECORDED_WAIT_S = 30.0  # per query: its cost is read while the cluster is idle, before the next one


@dataclass
class AnalyzeTimings:
    """Milliseconds per query: AnalyzePlan calls made directly to the cluster, and the gateway's estimate."""

    input_files_ms: list[float] = field(default_factory=list)
    explain_cost_ms: list[float] = field(default_factory=list)
    gateway_cold_ms: list[float] = field(default_factory=list)  # fresh sizer: every directory walked
    gateway_warm_ms: list[float] = field(default_factory=list)  # sizes cached (the common case)
    # What explain("cost") would have told: the optimizer's size of the whole plan, per query.
    optimizer_bytes: dict[str, float] = field(default_factory=dict)


@dataclass
class ScaleRun:
    scale_factor: float
    results: list[QueryResult]
    timings: AnalyzeTimings
    input_bytes: int


# ---- the shell -----------------------------------------------------------------------------------


def pool_toml(cluster: str) -> str:
    return f'[pool]\nclusters = ["{cluster}"]\n' + FIXED_FLEET


def make_tables_visible(spark: Any, data: Path, mode: str) -> None:
    """``views``: temp views over the Parquet files (the gateway follows them to the files through
    the session journal); ``managed``: copies in the shared warehouse, where the gateway sizes
    ``<warehouse>/<table>``."""
    if mode == "views":
        register_tpch(spark, data)
        return
    for table in TABLES:
        spark.read.parquet(str(data / table)).write.mode("overwrite").saveAsTable(table)


def _relation_records(proc: SparkfleetProcess, session_id: str) -> list[dict[str, Any]]:
    return [q for q in proc.api(f"/api/queries?session_id={session_id}&limit=10000") if q["kind"] == "relation"]


def run_queries(proc: SparkfleetProcess, spark: Any, names: Sequence[str], out: Console) -> list[tuple[str, dict[str, Any] | None, str]]:
    """Run each query once; returns (name, its gateway record, error) in order.

    Each query waits for the previous one's cost to be recorded: the gateway reads it from the
    Spark UI in the background, with short timeouts that a cluster busy with the next query can
    miss (the run would then have no observed cost)."""
    runs: list[tuple[str, dict[str, Any] | None, str]] = []
    seen = {q["id"] for q in _relation_records(proc, spark.session_id)}
    for name in names:
        error = ""
        started = time.perf_counter()
        try:
            spark.sql(TPCH_QUERIES[name]).collect()
        except Exception as exc:  # noqa: BLE001 - reported per query
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        seconds = time.perf_counter() - started
        new = [q for q in _relation_records(proc, spark.session_id) if q["id"] not in seen]
        seen.update(q["id"] for q in new)
        record = max(new, key=lambda q: q["submitted_at"]) if new else None
        runs.append((name, record, error))
        if record is not None and not error:
            read_task_ms(proc.data_dir / "sparkfleet.db", [record["id"]], _RUN_RECORDED_WAIT_S)
        out.print(f"[dim]  {name} {seconds:6.2f}s  {'' if record is None else record.get('estimate') or ''}"
                  f"{'  [red]' + error + '[/red]' if error else ''}[/dim]", overflow="ellipsis", no_wrap=True)
    return runs


def read_task_ms(db_path: Path, query_ids: Sequence[str], wait_s: float = _METRICS_WAIT_S) -> dict[str, float | None]:
    """``workload_runs.task_ms`` of each query (read-only); waits for rows still being recorded."""
    wanted = [q for q in query_ids if q]
    found: dict[str, float | None] = {}
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
            marks = ",".join("?" for _ in wanted)
            for query_id, task_ms in db.execute(
                f"SELECT query_id, task_ms FROM workload_runs WHERE query_id IN ({marks})", wanted
            ):
                found[query_id] = task_ms
        if all(q in found for q in wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def ui_url(proc: SparkfleetProcess) -> str | None:
    """The Spark UI of the pool's one cluster (its port is on the JVM's command line)."""
    cluster = proc.ready_clusters()[0]
    try:
        args = Path(f"/proc/{cluster['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in args:
        if arg.startswith(b"spark.ui.port="):
            return f"http://127.0.0.1:{int(arg.split(b'=', 1)[1])}"
    return None


def measure_missing(proc: SparkfleetProcess, session_id: str, query_ids: Sequence[str]) -> dict[str, float]:
    """task_ms of runs the gateway recorded without a cost, read from the Spark UI the same way
    (``fetch_query_metrics``) but with patient timeouts, one query at a time."""
    import asyncio

    from sparkfleet.fleet import monitor

    url = ui_url(proc)
    if url is None or not query_ids:
        return {}

    async def measure() -> dict[str, float]:
        found: dict[str, float] = {}
        for query_id in query_ids:
            metrics = await monitor.fetch_query_metrics(url, session_id, query_id, settle_timeout_s=5.0,
                                                        request_timeout_s=10.0)
            if metrics is not None:
                found[query_id] = float(metrics.task_ms)
        return found

    return asyncio.run(measure())


def _results(scale_factor: float, run: int, runs: list[tuple[str, dict[str, Any] | None, str]],
             task_ms: dict[str, float | None], measured: dict[str, float]) -> list[QueryResult]:
    return [
        QueryResult(
            scale_factor=scale_factor, query=name, run=run,
            estimate=parse_estimate(record.get("estimate")) if record else None,
            task_ms=(task_ms.get(record["id"]) if task_ms.get(record["id"]) is not None
                     else measured.get(record["id"])) if record else None,
            measured_by="gateway" if record and task_ms.get(record["id"]) is not None else "bench",
            duration_ms=record.get("duration_ms") if record else None,
            error=error or ("" if record else "no query record found"),
        )
        for name, record, error in runs
    ]


@contextlib.contextmanager
def direct_session(proc: SparkfleetProcess) -> Iterator[Any]:
    """A stock session straight to the pool's one cluster (with its token), bypassing the gateway."""
    cluster = proc.ready_clusters()[0]
    token = (proc.data_dir / "clusters" / cluster["id"] / "token").read_text().strip()
    port = int(cluster["address"].rsplit(":", 1)[1])
    with spark_session(f"sc://localhost:{port}/;token={token}") as spark:
        yield spark


def warm_up(proc: SparkfleetProcess, data: Path, names: Sequence[str]) -> None:
    """Run the queries once over small data straight on the cluster: the JIT and Spark's codegen
    cache warm up on the same plan shapes, and the gateway sees nothing (no records, no history)."""
    with direct_session(proc) as spark:
        register_tpch(spark, data)
        for name in names:
            spark.sql(TPCH_QUERIES[name]).collect()


def _ms(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000.0, value


def optimizer_size(explained: str) -> float | None:
    """The first (root) ``Statistics(sizeInBytes=...)`` of an ``explain("cost")`` text, in bytes."""
    match = _STATS.search(explained)
    if match is None:
        return None
    units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5, "EiB": 1024**6}
    return float(match.group(1)) * units.get(match.group(2), 1)


def time_analyze_plan(proc: SparkfleetProcess, data: Path, mode: str, names: Sequence[str]) -> AnalyzeTimings:
    """AnalyzePlan round trips straight to the cluster vs. the gateway's own estimate, per query."""
    from sparkfleet.clock import SystemClock
    from sparkfleet.gateway.assessment import with_temp_views
    from sparkfleet.gateway.input_sizes import InputSizer
    from sparkfleet.plan.estimate import estimate_static
    from sparkfleet.plan.fingerprint import fingerprint
    from sparkfleet.plan.relations import summarize_plan

    timings = AnalyzeTimings()
    warehouse = proc.data_dir / "warehouse"
    with direct_session(proc) as spark:
        if mode == "views":
            register_tpch(spark, data)
            views = {t: spark.read.parquet(str((data / t).resolve()))._plan.to_proto(spark.client).SerializeToString()
                     for t in TABLES}
        else:
            views = {}
        warm_sizer = InputSizer(warehouse, SystemClock())

        def gateway_estimate(plan: bytes, sizer: InputSizer) -> None:
            summary = with_temp_views(summarize_plan(plan), views)
            fingerprint(plan)
            estimate_static(summary, sizer.sizes(summary.scans, "default"))

        for name in names:
            text = TPCH_QUERIES[name]
            df = spark.sql(text)
            plan = df._plan.to_proto(spark.client).SerializeToString()
            cold = [_ms(lambda: gateway_estimate(plan, InputSizer(warehouse, SystemClock())))[0]
                    for _ in range(_ANALYZE_REPEATS)]
            gateway_estimate(plan, warm_sizer)
            warm = [_ms(lambda: gateway_estimate(plan, warm_sizer))[0] for _ in range(_ANALYZE_REPEATS)]
            # A fresh DataFrame per call: the client caches nothing, but Spark may cache the analysis.
            files = [_ms(lambda: spark.sql(text).inputFiles())[0] for _ in range(_ANALYZE_REPEATS)]
            explained = [_ms(lambda: spark.sql(text)._explain_string(mode="cost")) for _ in range(_ANALYZE_REPEATS)]
            timings.gateway_cold_ms.append(statistics.median(cold))
            timings.gateway_warm_ms.append(statistics.median(warm))
            timings.input_files_ms.append(statistics.median(files))
            timings.explain_cost_ms.append(statistics.median(ms for ms, _ in explained))
            size = optimizer_size(explained[0][1])
            if size is not None:
                timings.optimizer_bytes[name] = size
    return timings


def run_scale_factor(out: Console, args: argparse.Namespace, scale_factor: float) -> ScaleRun:
    data = ensure_tpch_data(args.data, scale_factor, out).resolve()
    input_bytes = sum(f.stat().st_size for t in TABLES for f in (data / t).glob("*.parquet"))
    out.print(f"[bold]SF {scale_factor:g}[/bold] ({input_bytes / 1e6:.0f} MB of Parquet in {data}): "
              f"starting sparkfleet with one {args.cluster} cluster...")
    proc = SparkfleetProcess(config_toml=pool_toml(args.cluster), name=f"sparkfleet-estimate-sf{scale_factor:g}")
    proc.start()
    try:
        with spark_session(proc.url) as spark:
            started = time.perf_counter()
            make_tables_visible(spark, data, args.tables)
            if args.warm_up_sf > 0:
                warm_up(proc, ensure_tpch_data(args.data, args.warm_up_sf, out).resolve(), args.queries)
            out.print(f"[dim]tables made visible as {args.tables}"
                      f"{f', JVM warmed up on SF {args.warm_up_sf:g}' if args.warm_up_sf > 0 else ''} in "
                      f"{time.perf_counter() - started:.1f}s[/dim]")
            results: list[QueryResult] = []
            for run in range(1, args.runs + 1):
                out.print(f"[dim]run {run} of {args.runs}:[/dim]")
                runs = run_queries(proc, spark, args.queries, out)
                ids = [record["id"] for _, record, error in runs if record is not None and not error]
                # The next run's estimates come from this run's costs: wait until they are stored.
                task_ms = read_task_ms(proc.data_dir / "sparkfleet.db", ids)
                measured = measure_missing(proc, spark.session_id, [q for q in ids if task_ms.get(q) is None])
                results += _results(scale_factor, run, runs, task_ms, measured)
        if args.skip_analyze:
            timings = AnalyzeTimings()
        else:
            out.print("[dim]timing AnalyzePlan (directly on the cluster) against the gateway's estimate...[/dim]")
            timings = time_analyze_plan(proc, data, args.tables, args.queries)
    finally:
        proc.stop()
    return ScaleRun(scale_factor, results, timings, input_bytes)


# ---- report --------------------------------------------------------------------------------------


def _estimated(result: QueryResult | None) -> str:
    if result is None:
        return "-"
    e = result.estimate
    return "?" if e is None else f"{e.cost_class.value} {e.core_seconds:.3g} {e.source[0]}"


def _observed(result: QueryResult | None) -> str:
    if result is None:
        return "-"
    cls = result.observed_class
    return "?" if cls is None or result.task_ms is None else f"{cls.value} {result.task_ms / 1000:.3g}"


def _yes(result: QueryResult | None) -> str:
    matched = None if result is None else result.matched
    return "?" if matched is None else ("yes" if matched else "[red]no[/red]")


def report(out: Console, runs: Sequence[ScaleRun]) -> None:
    everything = [r for run in runs for r in run.results]
    for run in runs:
        table = Table(title=f"TPC-H SF {run.scale_factor:g}: estimated vs observed class "
                            "(core-s; s = static estimate, h = from history; observed = task time)")
        numbers = sorted({r.run for r in run.results})
        table.add_column("query")
        for n in numbers:
            for column in (f"run {n} estimate", "observed", "match"):
                table.add_column(column, justify="right")
        table.add_column("plan-alone reason (run 1)", overflow="fold")
        for row in query_rows(run.results):
            cells = [row.query]
            for n in numbers:
                result = row.run(n)
                cells += [_estimated(result), _observed(result), _yes(result)]
            first = row.run(numbers[0]) if numbers else None
            reason = ""
            if first is not None:
                reason = first.error or (first.estimate.reason if first.estimate else "")
            table.add_row(*cells, reason)
        out.print(table)
        for source in (STATIC, HISTORY):
            out.print(f"SF {run.scale_factor:g} {match_summary(run.results, source).describe()}")
        stability = static_estimate_stability(run.results)
        if stability > 1.01:
            out.print(f"[yellow]SF {run.scale_factor:g}: the plan-alone estimate of one query differed by "
                      f"x{stability:.2f} between its runs[/yellow]")
        missed = missed_by_gateway(run.results)
        if missed:
            out.print(f"[yellow]SF {run.scale_factor:g}: the gateway recorded {missed} of {len(run.results)} runs "
                      "without a cost (its read of the Spark UI failed); the benchmark read those itself, and "
                      "the next run of such a query had no history[/yellow]")
        failed = [r for r in run.results if r.error or r.task_ms is None or r.estimate is None]
        for r in failed:
            out.print(f"[red]SF {run.scale_factor:g} {r.query} run {r.run}: "
                      f"{r.error or ('no estimate' if r.estimate is None else 'cost not recorded')}[/red]")
        t = run.timings
        if t.input_files_ms:
            out.print(f"SF {run.scale_factor:g} AnalyzePlan direct to the cluster, per query: "
                      f"inputFiles {spread_ms(t.input_files_ms).describe()}; "
                      f"explain(cost) {spread_ms(t.explain_cost_ms).describe()}")
            out.print(f"SF {run.scale_factor:g} gateway estimate (summary + views + fingerprint + sizes + model), "
                      f"per query: cold sizer {spread_ms(t.gateway_cold_ms).describe()}; "
                      f"cached sizes {spread_ms(t.gateway_warm_ms).describe()}")
        out.print()
    if len(runs) > 1:
        out.print("[bold]all scale factors[/bold]")
        for source in (STATIC, HISTORY):
            out.print(f"  {match_summary(everything, source).describe()}")
    grouped = by_scale_factor(everything)
    out.print(f"scale factors: {', '.join(f'{sf:g}' for sf in grouped)}; queries per run: "
              f"{len({r.query for r in everything})}; exit {exit_code(everything)}")


def dump_json(path: Path, runs: Sequence[ScaleRun]) -> None:
    """Raw observations, for calibrating plan/estimate.py offline."""
    payload = [
        {
            "scale_factor": run.scale_factor,
            "input_bytes": run.input_bytes,
            "results": [
                {**{k: v for k, v in asdict(r).items() if k != "estimate"},
                 "estimate": None if r.estimate is None else {**asdict(r.estimate), "cost_class": r.estimate.cost_class.value}}
                for r in run.results
            ],
            "timings": asdict(run.timings),
        }
        for run in runs
    ]
    path.write_text(json.dumps(payload, indent=1) + "\n")


# ---- command -------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench estimate", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--scale-factors", default="0.1,1", help="comma-separated TPC-H scale factors (default 0.1,1)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"root of the TPC-H data, sf<N>/ per scale factor, generated if missing (default {DEFAULT_DATA})")
    p.add_argument("--queries", default=",".join(QUERY_NAMES), help="comma-separated query names (default all 22)")
    p.add_argument("--cluster", default="M", help="size class of the pool's one cluster (default M: 2 cores)")
    p.add_argument("--tables", choices=("views", "managed"), default="views",
                   help="how the tables are made visible: temp views over the files (default), or managed "
                        "tables written into the shared warehouse")
    p.add_argument("--runs", type=int, default=2, help="runs of each query (the first has no history; default 2)")
    p.add_argument("--warm-up-sf", type=float, default=0.01,
                   help="before the measured runs, run the queries once at this scale factor directly on the "
                        "cluster, so JIT compilation is not charged to the first run (0: no warm-up; default 0.01)")
    p.add_argument("--skip-analyze", action="store_true", help="do not time AnalyzePlan against the gateway's estimate")
    p.add_argument("--json", type=Path, default=None, help="also write the raw observations to this file")
    args = p.parse_args(argv)
    try:
        args.scale_factors = [float(s) for s in args.scale_factors.split(",") if s.strip()]
    except ValueError:
        p.error("--scale-factors takes numbers, e.g. 0.1,1")
    args.queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    unknown = [q for q in args.queries if q not in TPCH_QUERIES]
    if unknown or not args.queries:
        p.error(f"unknown queries {unknown}; known: {', '.join(QUERY_NAMES)}")
    if not args.scale_factors or any(sf <= 0 for sf in args.scale_factors) or args.runs < 1:
        p.error("--scale-factors must be positive and --runs at least 1")
    return args


def run(argv: list[str]) -> int:
    args = _parse(argv)
    out = Console(highlight=False, width=max(Console().width, 160))
    runs = []
    try:
        for scale_factor in args.scale_factors:
            runs.append(run_scale_factor(out, args, scale_factor))
    except KeyboardInterrupt:
        out.print("sparkfleet bench estimate: interrupted; sparkfleet and its cluster were stopped")
        return 130
    if args.json is not None:
        dump_json(args.json, runs)
    report(out, runs)
    return exit_code([r for run in runs for r in run.results])
