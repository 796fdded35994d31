"""What each query cost, pushed by the cluster itself: a Spark listener's log, read in batches.

Each local cluster runs ``java/QueryCostListener.java`` (``spark.extraListeners``): on Spark's
listener bus, off every query's path, it sums the task metrics of each Spark Connect operation's
jobs and appends one JSON line per job, then an ``end`` line when the operation ends. The gateway
reads the new lines of a cluster's log now and then (:class:`CostLog`), with no call to the
cluster at all; :func:`add_line` folds them into per-operation :class:`QueryMetrics`.

The listener is compiled once per Spark version with ``javac`` into a cache shared by every data
dir (:func:`build_listener`); without a JDK the fleet runs without per-query costs (a warning).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sparkfleet.errors import EnvironmentProblem
from sparkfleet.fleet.monitor import OPERATION_TAG_PREFIX, QueryMetrics

log = logging.getLogger(__name__)

LISTENER_SOURCE = Path(__file__).parent / "java" / "QueryCostListener.java"
LISTENER_CLASS = "sparkfleet.QueryCostListener"
COSTS_DIR_CONF = "spark.sparkfleet.costs.dir"
_SEGMENT_GLOB = "costs-*.jsonl"
_COMPILE_TIMEOUT_S = 120.0


# ---- the listener ---------------------------------------------------------------------------------


def listener_cache_dir() -> Path:
    """Where compiled listeners are kept: the user's cache, shared by every sparkfleet data dir."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparkfleet" / "listeners"


async def build_listener(spark_home: Path, spark_version: str, cache: Path | None = None) -> Path:
    """The directory of the listener's classes compiled against this Spark (compiled on first use).

    Raises EnvironmentProblem when there is no ``javac`` or it fails."""
    source = LISTENER_SOURCE.read_bytes()
    key = hashlib.sha256(source + spark_version.encode()).hexdigest()[:16]
    target = (cache or listener_cache_dir()) / f"{spark_version}-{key}"
    if (target / "sparkfleet" / "QueryCostListener.class").is_file():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise EnvironmentProblem("'javac' is not on PATH (a JRE, not a JDK)")
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    process = await asyncio.create_subprocess_exec(
        javac, "--release", "17", "-nowarn", "-cp", str(spark_home / "jars" / "*"), "-d", str(staging),
        str(LISTENER_SOURCE), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), _COMPILE_TIMEOUT_S)
    except BaseException:
        process.kill()
        await process.wait()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if process.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EnvironmentProblem(f"javac could not compile {LISTENER_SOURCE.name}: {output.decode(errors='replace')[-800:]}")
    try:
        staging.rename(target)  # atomic: parallel starts compile alike, the first rename wins
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def listener_conf(classes: Path, costs_dir: Path, conf: Mapping[str, str]) -> dict[str, str]:
    """Confs that run the listener on a cluster, kept beside any listeners and class path of ``conf``."""
    listeners = ",".join(x for x in (conf.get("spark.extraListeners", ""), LISTENER_CLASS) if x)
    class_path = os.pathsep.join(x for x in (conf.get("spark.driver.extraClassPath", ""), str(classes)) if x)
    return {"spark.extraListeners": listeners, "spark.driver.extraClassPath": class_path,
            COSTS_DIR_CONF: str(costs_dir)}


# ---- reading its log (pure folding, small shell) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationCost:
    """What the lines read so far say of one operation."""

    metrics: QueryMetrics
    ended: bool = False  # its end line was read: no more of its jobs will come
    first_start_ms: int = 0  # epoch ms, of its first job
    last_end_ms: int = 0


_NO_JOBS = QueryMetrics(jobs=0, stages=0, tasks=0, failed_jobs=0, duration_ms=0, task_ms=0, cpu_ms=0,
                        peak_execution_memory=0, spilled_bytes=0, shuffle_bytes=0, input_bytes=0, input_records=0)


def operation_of(tag: str) -> tuple[str, str] | None:
    """(session id, operation id) of a Spark Connect operation's job tag."""
    if not tag.startswith(OPERATION_TAG_PREFIX) or "_Session_" not in tag:
        return None
    session_and_op = tag.rsplit("_Session_", 1)[1]
    if "_Operation_" not in session_and_op:
        return None
    session_id, operation_id = session_and_op.split("_Operation_", 1)
    return session_id, operation_id


def add_line(costs: dict[tuple[str, str], OperationCost], line: Mapping[str, Any]) -> tuple[str, str] | None:
    """Fold one line of the listener's log into ``costs``; the operation it is about, if any."""
    key = operation_of(str(line.get("tag", "")))
    if key is None:
        return None
    before = costs.get(key, OperationCost(_NO_JOBS))
    if line.get("end") is True:
        costs[key] = dataclasses.replace(before, ended=True)
        return key
    m = before.metrics
    start, end = int(line["start"]), int(line["end"])
    first = min(start, before.first_start_ms) if m.jobs else start
    last = max(end, before.last_end_ms)
    costs[key] = OperationCost(QueryMetrics(
        jobs=m.jobs + 1,
        stages=m.stages + int(line["stages"]),
        tasks=m.tasks + int(line["tasks"]),
        failed_jobs=m.failed_jobs + (1 if line["failed"] else 0),
        duration_ms=max(0, last - first),
        task_ms=m.task_ms + int(line["run_ms"]),
        cpu_ms=m.cpu_ms + int(line["cpu_ms"]),
        peak_execution_memory=max(m.peak_execution_memory, int(line["peak"])),
        spilled_bytes=m.spilled_bytes + int(line["spill"]),
        shuffle_bytes=m.shuffle_bytes + int(line["shuffle"]),
        input_bytes=m.input_bytes + int(line["input_bytes"]),
        input_records=m.input_records + int(line["input_records"]),
    ), before.ended, first, last)
    return key


class CostLog:
    """New complete lines of one cluster's listener log, across its segments.

    A segment is deleted once it has been read to its end and a later one exists (the listener
    writes only to its newest)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment: Path | None = None
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        try:
            segments = sorted(self.directory.glob(_SEGMENT_GLOB))
        except OSError:
            return lines
        for n, segment in enumerate(segments):
            if self._segment is not None and segment.name < self._segment.name:
                continue  # read and deleted before; a leftover of a failed delete
            if segment != self._segment:
                self._segment, self._offset, self._partial = segment, 0, b""
            lines += self._read(segment)
            if n < len(segments) - 1:  # finished: the listener has moved on
                segment.unlink(missing_ok=True)
        return lines

    def _read(self, segment: Path) -> list[dict[str, Any]]:
        try:
            with segment.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        parsed = []
        for raw in complete:
            try:
                parsed.append(json.loads(raw))
            except ValueError:
                log.debug("skipped an unreadable cost line in %s: %r", segment, raw[:200])
        return parsed
