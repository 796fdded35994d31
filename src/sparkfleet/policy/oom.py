"""Pure out-of-memory detection: did a query fail for lack of memory, and whose query caused it?

Spark reports running out of memory in several shapes, all recognised here from text alone:

- the driver's own heap: gRPC UNKNOWN with ``java.lang.OutOfMemoryError: Java heap space`` (or
  ``GC overhead limit exceeded``);
- Spark's memory manager: ``SparkOutOfMemoryError``, the ``UNABLE_TO_ACQUIRE_MEMORY`` condition and
  the ``*_OUT_OF_MEMORY`` error classes;
- a task's ``java.lang.OutOfMemoryError`` inside a job abort ("Job aborted due to stage failure");
- the driver failing to build a broadcast table ("Not enough memory to build and broadcast the
  table", a plain SparkException ``_LEGACY_ERROR_TEMP_2250`` in Spark 4: nothing in its class
  names memory), and the driver running out of heap while it fetches a large task result: the
  job aborts with ``TaskResultLost (result lost from block manager)`` and only the cluster's log
  shows the ``OutOfMemoryError`` behind it. Both leave the cluster alive;
- the cluster JVM exiting because of it. In local mode a task's OOM kills the whole server (exit
  status 52, Spark's ``SparkExitCode.OOM``): the in-flight calls of every session then fail with
  "Cannot call methods on a stopped SparkContext" (and, in the seconds before the JVM is gone,
  new calls fail UNKNOWN "Application error processing RPC"): neither says anything about memory. The
  server's log says which stage's task ran out, and the stage's call site names the Spark Connect
  session that submitted it: that session's query is the culprit, the others are victims.

No I/O: callers pass the error text, the exit status and the tail of the cluster's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# SparkExitCode.OOM: the JVM's uncaught-exception handler exits with it after an OutOfMemoryError.
OOM_EXIT_STATUS = 52

_JVM_OOM = re.compile(r"java\.lang\.OutOfMemoryError(?::\s*([^\n|]+))?")
_SPARK_OOM = re.compile(r"SparkOutOfMemoryError|UNABLE_TO_ACQUIRE_MEMORY|\b[A-Z_]*_OUT_OF_MEMORY\b"
                        r"|Not enough memory to build and broadcast the table")
_RESULT_LOST = re.compile(r"TaskResultLost \(result lost from block manager\)")
# "WARN BlockManager: Failed to fetch remote block taskresult_0 from [...] ... Caused by:
# java.lang.OutOfMemoryError: Java heap space" (the driver fetching a task's result).
_RESULT_FETCH_OOM = re.compile(r"Failed to fetch remote block taskresult_\d+[\s\S]{0,20000}?java\.lang\.OutOfMemoryError")
# "... in thread Thread[Executor task launch worker for task 0.0 in stage 2.0 (TID 4),5,main]"
# and "Lost task 0.0 in stage 2.0 (TID 4) (...): java.lang.OutOfMemoryError: Java heap space".
_OOM_TASK_STAGE = re.compile(
    r"(?:Uncaught exception in thread Thread\[Executor task launch worker for task \S+ in stage (\d+)\.\d+"
    r"[^\n]*\n\s*java\.lang\.OutOfMemoryError"
    r"|Lost task \S+ in stage (\d+)\.\d+ \(TID \d+\)[^\n]*java\.lang\.OutOfMemoryError)"
)
# "Submitting ResultStage 2 (MapPartitionsRDD[7] at Spark Connect - session_id: "53ff..."
_STAGE_SESSION = re.compile(r'(?:Submitting|Final stage:) \w*Stage (\d+) \([^\n]*?session_id: "([0-9a-fA-F-]+)"')


@dataclass(frozen=True, slots=True)
class OomEvidence:
    where: str  # "driver", "memory manager", "task", "cluster exit"
    detail: str  # the words that gave it away


def oom_in_error(error_class: str | None, message: str, log_tail: str = "") -> OomEvidence | None:
    """Whether a query's error says it ran out of memory, and where; ``log_tail``: the end of
    its cluster's log, for the errors that only the log explains."""
    text = f"{error_class or ''} {message}"
    spark = _SPARK_OOM.search(text)
    if spark is not None:
        return OomEvidence("driver" if spark.group(0).startswith("Not enough") else "memory manager", spark.group(0))
    if _RESULT_LOST.search(text) and _RESULT_FETCH_OOM.search(log_tail):
        return OomEvidence("driver", "a task's result was lost: the driver ran out of heap fetching it "
                                     "(java.lang.OutOfMemoryError in the cluster's log)")
    jvm = _JVM_OOM.search(text)
    if jvm is None:
        return None
    detail = f"java.lang.OutOfMemoryError: {jvm.group(1).strip()}" if jvm.group(1) else jvm.group(0)
    if "Job aborted due to stage failure" in text or "Lost task" in text:
        return OomEvidence("task", detail)
    return OomEvidence("driver", detail)


def explained_by_log(message: str) -> bool:
    """Whether an error may be out of memory that only the cluster's log can confirm."""
    return _RESULT_LOST.search(message) is not None


def oom_in_exit(exit_status: int | None, log_tail: str) -> OomEvidence | None:
    """Whether a cluster's JVM exited because it ran out of memory."""
    if exit_status == OOM_EXIT_STATUS:
        return OomEvidence("cluster exit", f"the JVM exited with status {OOM_EXIT_STATUS} (Spark's OOM exit)")
    jvm = _JVM_OOM.search(log_tail)
    if jvm is not None and exit_status not in (None, 0):
        return OomEvidence("cluster exit", f"the JVM exited with status {exit_status} after {jvm.group(0).strip()}")
    return None


def oom_culprit_sessions(log_tail: str) -> frozenset[str]:
    """Spark Connect sessions whose tasks ran out of memory, read from a cluster's log."""
    stages = {int(a or b) for a, b in _OOM_TASK_STAGE.findall(log_tail)}
    if not stages:
        return frozenset()
    owners: dict[int, str] = {}
    for stage, session in _STAGE_SESSION.findall(log_tail):
        owners[int(stage)] = session
    return frozenset(owners[s] for s in stages if s in owners)
