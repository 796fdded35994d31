"""policy/oom.py: the shapes in which Spark reports running out of memory, and the culprit session.

The log excerpts are the lines a 1-core, 1 GiB local Spark Connect server (pyspark 4.3.0) wrote
when a collect_list over 40 M rows in one group ran out of heap; only ids are shortened.
"""

from __future__ import annotations

from sparkfleet.policy.oom import (
    OOM_EXIT_STATUS,
    explained_by_log,
    oom_culprit_sessions,
    oom_in_error,
    oom_in_exit,
)

CULPRIT = "53fff2b8-03d7-4e82-ad52-a9ca7d2ac669"
VICTIM = "0b1c2d3e-0000-4000-8000-000000000001"

LOG = f"""\
26/12/01 23:12:27 INFO DAGScheduler: Submitting ShuffleMapStage 1 (MapPartitionsRDD[3] at Spark Connect - session_id: "{VICTIM}"
plan {{
26/12/01 23:12:27 INFO DAGScheduler: Final stage: ResultStage 2 (Spark Connect - session_id: "{CULPRIT}"
plan {{
  root {{
    project {{
      in...)
26/12/01 23:12:27 INFO DAGScheduler: Submitting ResultStage 2 (MapPartitionsRDD[7] at Spark Connect - session_id: "{CULPRIT}"
plan {{
26/12/01 23:12:27 INFO Executor: Running task 0.0 in stage 2.0 (TID 4)
26/12/01 23:12:31 ERROR Executor: Exception in task 0.0 in stage 2.0 (TID 4)
java.lang.OutOfMemoryError: Java heap space
26/12/01 23:12:31 ERROR SparkUncaughtExceptionHandler: Uncaught exception in thread Thread[Executor task launch worker for task 0.0 in stage 2.0 (TID 4),5,main]
java.lang.OutOfMemoryError: Java heap space
26/12/01 23:12:31 WARN TaskSetManager: Lost task 0.0 in stage 2.0 (TID 4) (localhost executor driver): java.lang.OutOfMemoryError: Java heap space
26/12/01 23:12:31 ERROR TaskSetManager: Task 0 in stage 2.0 failed 1 times; aborting job
"""


def test_every_shape_of_out_of_memory_in_an_error_is_recognised() -> None:
    driver = oom_in_error(None, "(java.lang.OutOfMemoryError) Java heap space")
    assert driver is not None and driver.where == "driver"
    driver = oom_in_error(None, "java.lang.OutOfMemoryError: GC overhead limit exceeded")
    assert driver is not None and driver.detail == "java.lang.OutOfMemoryError: GC overhead limit exceeded"
    manager = oom_in_error("UNABLE_TO_ACQUIRE_MEMORY", "[UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire 65536 bytes of memory, got 0.")
    assert manager is not None and manager.where == "memory manager"
    assert oom_in_error(None, "org.apache.spark.memory.SparkOutOfMemoryError: error while calling spill()") is not None
    assert oom_in_error("EXECUTOR_BROADCAST_JOIN_OUT_OF_MEMORY", "Not enough memory to build the broadcast") is not None
    task = oom_in_error("SparkException", "Job aborted due to stage failure: Task 0 in stage 2.0 failed 1 times, most "
                        "recent failure: Lost task 0.0 in stage 2.0 (TID 4) (localhost executor driver): "
                        "java.lang.OutOfMemoryError: Java heap space")
    assert task is not None and task.where == "task" and task.detail == "java.lang.OutOfMemoryError: Java heap space"


RESULT_FETCH_LOG = """\
26/12/02 04:30:30 WARN BlockManager: Failed to fetch remote block taskresult_0 from [BlockManagerId(driver, 127.0.0.1, 45147, None)] after 1 fetch failures. Most recent failure cause:
org.apache.spark.SparkException: Exception thrown in awaitResult:
\tat org.apache.spark.util.SparkThreadUtils$.awaitResult(SparkThreadUtils.scala:53)
Caused by: java.lang.OutOfMemoryError: Java heap space
\tat java.base/java.nio.HeapByteBuffer.<init>(HeapByteBuffer.java:64)
26/12/02 04:30:30 WARN TaskSetManager: Lost task 0.0 in stage 0.0 (TID 0) (localhost executor driver): TaskResultLost (result lost from block manager)
"""
RESULT_LOST = ("Job aborted due to stage failure: Task 0 in stage 0.0 failed 1 times, most recent failure: Lost task "
               "0.0 in stage 0.0 (TID 0) (localhost executor driver): TaskResultLost (result lost from block manager)")


def test_a_task_result_lost_is_out_of_memory_only_when_the_log_says_so() -> None:
    # What a 1 GiB driver answers when a task's result is too big for its heap (measured).
    assert explained_by_log(RESULT_LOST)
    lost = oom_in_error("org.apache.spark.SparkException", RESULT_LOST, RESULT_FETCH_LOG)
    assert lost is not None and lost.where == "driver" and "fetching it" in lost.detail
    assert oom_in_error("org.apache.spark.SparkException", RESULT_LOST, "") is None  # a lost block, no OOM
    assert not explained_by_log("[DIVIDE_BY_ZERO] Division by zero.")


def test_errors_that_are_not_about_memory_are_not_oom() -> None:
    assert oom_in_error("TABLE_OR_VIEW_NOT_FOUND", "[TABLE_OR_VIEW_NOT_FOUND] The table `t` cannot be found.") is None
    assert oom_in_error("DIVIDE_BY_ZERO", "Division by zero. Use `try_divide`") is None
    # What the other sessions see while the server dies: nothing in it says memory.
    assert oom_in_error(None, "(java.lang.IllegalStateException) Cannot call methods on a stopped SparkContext.") is None


def test_a_cluster_exit_is_oom_by_its_status_or_its_log() -> None:
    by_status = oom_in_exit(OOM_EXIT_STATUS, "")
    assert by_status is not None and "status 52" in by_status.detail
    by_log = oom_in_exit(1, LOG)
    assert by_log is not None and "java.lang.OutOfMemoryError" in by_log.detail
    assert oom_in_exit(0, LOG) is None  # a clean stop, whatever happened before
    assert oom_in_exit(-9, "26/12/01 INFO SparkContext: Running Spark version 4.3.0") is None  # killed


def test_the_culprit_is_the_session_whose_stage_ran_out_of_memory() -> None:
    assert oom_culprit_sessions(LOG) == frozenset({CULPRIT})
    assert oom_culprit_sessions(LOG.replace("OutOfMemoryError", "IOException")) == frozenset()
    # A log that lost the stage's call site names nobody (every session then counts as a victim).
    assert oom_culprit_sessions("\n".join(line for line in LOG.splitlines() if "session_id" not in line)) == frozenset()


# ---- the gateway reads it off a live cluster's error ----------------------------------------------


def _backend_error(details: str, metadata: dict[str, str]):  # type: ignore[no-untyped-def]
    import grpc
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    from sparkfleet.gateway.status import STATUS_DETAILS_KEY

    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason="org.apache.spark.SparkException", metadata=metadata))
    status = status_pb2.Status(code=2, message=details, details=[packed]).SerializeToString()
    return grpc.aio.AioRpcError(grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(),
                                grpc.aio.Metadata((STATUS_DETAILS_KEY, status)), details)


def test_a_live_clusters_error_that_says_out_of_memory_becomes_a_recoverable_loss() -> None:
    from types import SimpleNamespace

    from sparkfleet.errors import ClusterLost, RanOutOfMemory
    from sparkfleet.gateway.attempts import out_of_memory_in

    cluster = SimpleNamespace(id="s-1", handle=None)
    # Spark 4.x's own trailer for a broadcast too big for a 1 GiB driver: nothing in its
    # classes or error class names memory; the message does.
    broadcast = _backend_error(
        "Not enough memory to build and broadcast the table to all worker nodes. As a workaround, you "
        "can either disable broadcast by setting spark.sql.autoBroadcastJoinThreshold to -1 or ...",
        {"classes": '["org.apache.spark.SparkException","java.lang.Exception","java.lang.Throwable",'
                    '"java.lang.Object"]', "errorClass": "_LEGACY_ERROR_TEMP_2250"},
    )
    ran_out = out_of_memory_in(broadcast, cluster)  # type: ignore[arg-type]
    assert isinstance(ran_out, RanOutOfMemory) and isinstance(ran_out, ClusterLost)
    assert ran_out.cluster_id == "s-1" and ran_out.evidence.startswith("driver: Not enough memory to build")
    managed = _backend_error("error while calling spill()",
                             {"classes": '["org.apache.spark.memory.SparkOutOfMemoryError"]', "errorClass": ""})
    assert "SparkOutOfMemoryError" in out_of_memory_in(managed, cluster).evidence  # type: ignore[arg-type, union-attr]
    assert ran_out.error_class == "SPARKFLEET.OUT_OF_MEMORY"
    driver = _backend_error("java.lang.OutOfMemoryError: Java heap space", {"errorClass": ""})
    assert out_of_memory_in(driver, cluster).evidence == "driver: java.lang.OutOfMemoryError: Java heap space"  # type: ignore[arg-type, union-attr]
    analysis = _backend_error("[TABLE_OR_VIEW_NOT_FOUND] The table `t` cannot be found.",
                              {"errorClass": "TABLE_OR_VIEW_NOT_FOUND"})
    assert out_of_memory_in(analysis, cluster) is None  # type: ignore[arg-type]
