"""TPC-H for benchmarks: Parquet data generated once per scale factor, temp views, the 22 queries.

Data comes from ``tpchgen-cli`` (pinned in pyproject) into ``root/sf<N>/<table>/<table>.<part>.parquet``.
A scale factor is generated into ``sf<N>.partial`` and renamed to ``sf<N>`` only once complete,
with a marker file inside, so a directory that exists is whole; a generation that was interrupted
is removed and redone on the next call. A file lock lets several processes ask at once.

The queries are written from the TPC-H specification (v3) with its validation substitution
parameters; ``SPEC_SF1_ROWS`` is how many rows the spec's answer set has for each at SF 1.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import math
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sparkfleet.errors import EnvironmentProblem

TABLES = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
QUERY_NAMES = tuple(f"q{number:02d}" for number in range(1, 23))
COMPLETE_MARKER = "_tpch_complete.json"

# Rows in the answer set the spec gives for each query at SF 1 (queries with LIMIT count the limit).
SPEC_SF1_ROWS = {
    "q01": 4, "q02": 100, "q03": 10, "q04": 5, "q05": 5, "q06": 1, "q07": 4, "q08": 2,
    "q09": 175, "q10": 20, "q11": 1048, "q12": 2, "q13": 42, "q14": 1, "q15": 1, "q16": 18314,
    "q17": 1, "q18": 57, "q19": 1, "q20": 186, "q21": 100, "q22": 7,
}

# tpchgen-cli logs (at info level) one line per finished file and one per part left empty.
_FILE_DONE = re.compile(r"Generated table (\w+) to ")
_PART_EMPTY = re.compile(r"Skipping table (\w+) \(part")


@dataclass(frozen=True, slots=True)
class QueryRun:
    name: str
    seconds: float  # wall time of spark.sql(text).collect(), results received included
    rows: int


@dataclass(frozen=True, slots=True)
class TableFiles:
    name: str
    files: int
    rows: int
    bytes: int


# ---- data ------------------------------------------------------------------------------------


def scale_dir(root: Path, scale_factor: float) -> Path:
    """Where a scale factor's tables live: ``root/sf1``, ``root/sf0.01``..."""
    return Path(root) / f"sf{scale_factor:g}"


def parts_for(scale_factor: float) -> int:
    """Files per table: about 110 MB of lineitem Parquet per file, one file below SF 0.5."""
    return max(1, math.ceil(scale_factor * 2))


def tpchgen_executable() -> Path:
    """``tpchgen-cli`` of this interpreter's environment (a venv need not be activated)."""
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.is_file():
        return beside
    found = shutil.which("tpchgen-cli")
    if found:
        return Path(found)
    raise EnvironmentProblem(
        f"tpchgen-cli was not found next to {sys.executable} nor on PATH; "
        "install sparkfleet's pinned requirements (tpchgen-cli==4.0.0) into this environment"
    )


def ensure_tpch_data(root: Path, scale_factor: float, progress: Console | None = None) -> Path:
    """The directory holding the 8 TPC-H tables at ``scale_factor`` as Parquet, generated if needed.

    ``progress``: where to show generation table by table and the sizes at the end; None is silent.
    """
    if not scale_factor > 0:
        raise ValueError(f"the scale factor must be positive, not {scale_factor!r}")
    target = scale_dir(root, scale_factor)
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f"{target.name}.lock"):
        if (target / COMPLETE_MARKER).is_file():  # another process finished it while we waited
            return target
        partial = target.parent / f"{target.name}.partial"
        for leftover in (target, partial):  # an interrupted generation, or a dir without a marker
            if leftover.exists():
                shutil.rmtree(leftover)
        partial.mkdir()
        try:
            started = time.monotonic()
            _generate(partial, scale_factor, progress)
            seconds = time.monotonic() - started
            tables = describe_tables(partial)
            _write_marker(partial, scale_factor, seconds, tables)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if progress is not None:
        _print_summary(progress, target, scale_factor, seconds, tables)
    return target


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate(out_dir: Path, scale_factor: float, progress: Console | None) -> None:
    parts = parts_for(scale_factor)
    cmd = [str(tpchgen_executable()), "parquet", "--scale-factor", f"{scale_factor:g}",
           "--output-dir", str(out_dir), "--parts", str(parts), "--verbose", "--no-progress"]
    setpriv = shutil.which("setpriv")
    if setpriv:  # dies with us even on SIGKILL, so it never writes into a directory being redone
        cmd = [setpriv, "--pdeathsig", "KILL", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    tail: collections.deque[str] = collections.deque(maxlen=30)

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            lines.put(line)

    reader = threading.Thread(target=read_log, name="tpchgen-log", daemon=True)
    reader.start()
    try:
        if progress is None:
            proc.wait()
        else:
            _show_generation(progress, proc, lines, out_dir, scale_factor, parts)
    finally:
        if proc.poll() is None:  # interrupted: leave nothing running behind
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    if proc.returncode != 0:
        raise EnvironmentProblem(
            f"tpchgen-cli failed (exit {proc.returncode}) generating TPC-H SF {scale_factor:g} into "
            f"{out_dir}; check free disk space. Its last log lines:\n" + "".join(tail)
        )


def _show_generation(out: Console, proc: subprocess.Popen[str], lines: queue.SimpleQueue[str],
                     out_dir: Path, scale_factor: float, parts: int) -> None:
    """One bar per table (files written of files expected) and its size on disk so far."""
    columns = (TextColumn("{task.description:<9}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TextColumn("files {task.fields[size]:>10}"), TimeElapsedColumn())
    out.print(f"[dim]generating TPC-H SF {scale_factor:g} with tpchgen-cli into {out_dir}...[/dim]")
    with Progress(*columns, console=out) as bars:
        tasks = {t: bars.add_task(t, total=parts, size="") for t in TABLES}
        while True:
            finished = proc.poll() is not None
            while not lines.empty():
                line = lines.get()
                if match := _FILE_DONE.search(line):
                    if match.group(1) in tasks:
                        bars.advance(tasks[match.group(1)])
                elif match := _PART_EMPTY.search(line):
                    if match.group(1) in tasks:
                        task = tasks[match.group(1)]
                        bars.update(task, total=max(1, (bars.tasks[task].total or 1) - 1))
            for table, task in tasks.items():
                bars.update(task, size=_human(_dir_bytes(out_dir / table)))
            if finished:
                break
            time.sleep(0.25)


def describe_tables(data_dir: Path) -> list[TableFiles]:
    """Files, rows (from Parquet footers) and bytes of each table; raises if one is missing."""
    import pyarrow.parquet as pq

    described = []
    for table in TABLES:
        files = sorted((data_dir / table).glob("*.parquet"))
        if not files:
            raise EnvironmentProblem(f"TPC-H table {table} has no Parquet files under {data_dir / table}")
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        described.append(TableFiles(table, len(files), rows, sum(f.stat().st_size for f in files)))
    return described


def _write_marker(data_dir: Path, scale_factor: float, seconds: float, tables: list[TableFiles]) -> None:
    marker = {
        "scale_factor": scale_factor,
        "generator": "tpchgen-cli",
        "generation_seconds": round(seconds, 3),
        "tables": {t.name: {"files": t.files, "rows": t.rows, "bytes": t.bytes} for t in tables},
    }
    (data_dir / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _print_summary(out: Console, data_dir: Path, scale_factor: float, seconds: float,
                   tables: list[TableFiles]) -> None:
    out.print(f"TPC-H SF {scale_factor:g} generated in {seconds:.1f} s: {data_dir}")
    summary = Table()
    for column in ("table", "files", "rows", "size"):
        summary.add_column(column, justify="left" if column == "table" else "right")
    for t in tables:
        summary.add_row(t.name, str(t.files), f"{t.rows:,}", _human(t.bytes))
    summary.add_row("total", str(sum(t.files for t in tables)), f"{sum(t.rows for t in tables):,}",
                    _human(sum(t.bytes for t in tables)), style="bold")
    out.print(summary)


def _dir_bytes(path: Path) -> int:
    try:
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    except OSError:  # not created yet, or a file renamed under us
        return 0


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


# ---- sessions and queries ----------------------------------------------------------------------


def register_tpch(spark: Any, data_dir: Path) -> None:
    """Make the 8 tables temp views of a Spark Connect session (journaled: they follow the session)."""
    data_dir = Path(data_dir).resolve()
    missing = [t for t in TABLES if not (data_dir / t).is_dir()]
    if missing:
        raise EnvironmentProblem(
            f"{data_dir} lacks the TPC-H tables {', '.join(missing)}; create it with ensure_tpch_data()"
        )
    for table in TABLES:
        spark.read.parquet(str(data_dir / table)).createOrReplaceTempView(table)


def load_queries() -> dict[str, str]:
    """The 22 query texts by name (``q01`` ... ``q22``), read from the package's ``tpch_queries``."""
    folder = resources.files("sparkfleet.bench").joinpath("tpch_queries")
    return {name: folder.joinpath(f"{name}.sql").read_text() for name in QUERY_NAMES}


class _QueryTexts(Mapping[str, str]):
    """The query texts, read from the package on first use rather than at import."""

    def __init__(self) -> None:
        self._texts: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = load_queries()
        return self._texts

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(QUERY_NAMES)


TPCH_QUERIES: Mapping[str, str] = _QueryTexts()


def run_query(spark: Any, name: str) -> QueryRun:
    """Run one TPC-H query to completion on ``spark`` (tables registered) and time it."""
    text = TPCH_QUERIES[name]
    started = time.perf_counter()
    rows = spark.sql(text).collect()
    return QueryRun(name, time.perf_counter() - started, len(rows))
