"""Workload-aware placement with real clusters: ETL isolated from interactive work, a bounded queue
whose position the client can read, sparkfleet.* session confs, and the watchdog's time limit."""

from __future__ import annotations

import pytest
from pyspark.errors import PySparkException

from sparkfleet.fleet.cgroups import SYSFS_CGROUP
from sparkfleet.gateway.queue_status import queue_info
from sparkfleet.testing.process import (
    FIXED_FLEET,
    SparkfleetProcess,
    run_in_thread,
    spark_session,
    wait_until,
    wait_until_running_on_cluster,
)

# Two one-core clusters: batch work may take one, the other stays free for interactive work.
POOL = """
[pool]
clusters = ["S", "S"]

[placement]
interactive_budget_s = 6
batch_linger_s = 2
""" + FIXED_FLEET
# Long enough to still be running while the test looks; interrupted at the end.
HEAVY = "select count(*) as n from range(0, 1000000000) a cross join range(0, 10000) b where (a.id + b.id) % 7 = 3"


@pytest.fixture(scope="module")
def pool():
    with SparkfleetProcess(POOL, name="sparkfleet-placement") as proc:
        yield proc


def _queries(proc: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    return proc.api(f"/api/queries?session_id={spark.session_id}&limit=1000")


def _running_query(proc: SparkfleetProcess, spark) -> str:  # type: ignore[no-untyped-def]
    """The id of the session's DataFrame query once its cluster runs it. (spark.sql first sends
    the SQL text, which Spark only analyses: that request is never the running query.)"""
    def relation_running() -> list[str] | None:
        ids = wait_until_running_on_cluster(proc, spark)
        kinds = {q["id"]: q["kind"] for q in _queries(proc, spark)}
        return [i for i in ids if kinds.get(i) == "relation"] or None

    [query_id] = wait_until(relation_running, 60, what="the session's query to run")
    return query_id


def test_interactive_queries_run_beside_etl_not_behind_it(pool):
    with spark_session(pool.url) as etl, spark_session(pool.url) as analyst:
        etl.conf.set("sparkfleet.profile", "batch")
        analyst.conf.set("sparkfleet.profile", "interactive")  # however slow a loaded machine makes it
        thread, box = run_in_thread(lambda: etl.sql(HEAVY).collect())
        try:
            heavy_id = _running_query(pool, etl)
            heavy = next(q for q in _queries(pool, etl) if q["id"] == heavy_id)
            assert heavy["profile"] == "batch" and "set by sparkfleet.profile" in heavy["placement_reason"]
            for n in range(5):
                assert analyst.range(100 + n).selectExpr("sum(id)").collect()[0][0] == sum(range(100 + n))
            small = [q for q in _queries(pool, analyst) if q["kind"] == "relation"]
            assert len(small) == 5
            for record in small:
                assert record["cluster_id"] != heavy["cluster_id"], record["placement_reason"]
                assert record["profile"] == "interactive"
                assert record["placement_reason"].startswith("interactive (set by sparkfleet.profile)")
                assert "0 batch" in record["placement_reason"]
        finally:
            etl.interruptAll()
            thread.join(60)
        assert "error" in box  # interrupted, as intended


def test_a_second_etl_job_waits_in_the_queue_and_the_client_sees_its_position(pool):
    with spark_session(pool.url) as first, spark_session(pool.url) as second, spark_session(pool.url) as analyst:
        first.conf.set("sparkfleet.profile", "batch")
        second.conf.set("sparkfleet.profile", "batch")
        first_thread, first_box = run_in_thread(lambda: first.sql(HEAVY).collect())
        second_thread, second_box = None, {}
        try:
            _running_query(pool, first)
            second_thread, second_box = run_in_thread(lambda: second.sql(HEAVY).collect())

            def queued() -> list[dict] | None:
                return [q for q in _queries(pool, second) if q["state"] == "queued"] or None

            [waiting] = wait_until(queued, 60, what="the second ETL query to be queued")
            assert waiting["placement_reason"].startswith("waiting: batch") and waiting["cluster_id"] is None
            assert [q["query_id"] for q in pool.api("/api/queue")] == [waiting["id"]]
            statuses = second._client._get_operation_statuses([waiting["id"]]).operation_statuses
            [status] = statuses
            info = queue_info(status)
            assert info is not None and info["queued"] is True and info["position"] == 1
            # The ETL cluster is busy (its batch slot or its memory budget), the other one is kept free.
            assert "kept for interactive work" in info["reason"] and info["reason"].startswith("batch")
            # Interactive work is not queued behind it.
            assert analyst.range(10).count() == 10
            # The first job ends: the queued one is placed at once (no timer), and runs.
            first.interruptAll()
            first_thread.join(60)
            running = _running_query(pool, second)
            assert running == waiting["id"]
            record = next(q for q in _queries(pool, second) if q["id"] == running)
            assert record["state"] == "running" and record["placement_reason"].startswith("batch")
        finally:
            first.interruptAll()
            second.interruptAll()
            first_thread.join(60)
            if second_thread is not None:
                second_thread.join(60)
        assert "error" in first_box and "error" in second_box


def test_interrupting_a_queued_query_cancels_it_in_the_gateway(pool):
    with spark_session(pool.url) as first, spark_session(pool.url) as second:
        first.conf.set("sparkfleet.profile", "batch")
        second.conf.set("sparkfleet.profile", "batch")
        first_thread, _ = run_in_thread(lambda: first.sql(HEAVY).collect())
        try:
            _running_query(pool, first)
            second_thread, second_box = run_in_thread(lambda: second.sql(HEAVY).collect())
            [queued] = wait_until(
                lambda: [q for q in _queries(pool, second) if q["state"] == "queued"] or None, 60,
                what="the second query to be queued",
            )
            interrupted = second.interruptAll()
            assert len(interrupted) == 1
            second_thread.join(60)
            error = second_box.get("error")
            assert isinstance(error, PySparkException) and error.getCondition() == "SPARKFLEET.QUERY_CANCELLED"
            assert "cancelled while queued: interrupted by the client" in str(error)
            [record] = [q for q in _queries(pool, second) if q["id"] == queued["id"]]
            assert record["state"] == "cancelled" and record["cluster_id"] is None
            assert record["error_class"] == "SPARKFLEET.QUERY_CANCELLED"
        finally:
            first.interruptAll()
            first_thread.join(60)


def test_sparkfleet_confs_are_the_gateways_and_never_reach_spark(pool):
    with spark_session(pool.url) as spark:
        assert spark.conf.get("sparkfleet.profile") == "auto"
        spark.conf.set("sparkfleet.profile", "Batch")
        spark.conf.set("spark.sql.shuffle.partitions", "3")
        assert spark.conf.get("sparkfleet.profile") == "Batch"
        assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
        assert spark.conf.getAll.get("sparkfleet.profile") == "Batch"
        server_side = {row.key for row in spark.sql("SET").collect()}
        assert "spark.sql.shuffle.partitions" in server_side and not any(k.startswith("sparkfleet.") for k in server_side)
        with pytest.raises(PySparkException, match="sparkfleet.profile must be interactive\\|batch"):
            spark.conf.set("sparkfleet.profile", "urgent")
        with pytest.raises(PySparkException, match="not a sparkfleet setting"):
            spark.conf.set("sparkfleet.colour", "blue")
        assert spark.conf.get("sparkfleet.mode") == "default"
        spark.conf.set("sparkfleet.mode", "standard")
        assert spark.conf.get("sparkfleet.mode") == "standard"
        with pytest.raises(PySparkException, match="sparkfleet.mode must be standard\\|performance"):
            spark.conf.set("sparkfleet.mode", "cheap")
        spark.conf.unset("sparkfleet.profile")
        assert spark.conf.get("sparkfleet.profile") == "auto"
        assert spark.range(3).count() == 3
        [record] = [q for q in _queries(pool, spark) if q["state"] == "succeeded"][:1]
        assert record["profile"] == "interactive"


def test_max_query_duration_cancels_a_query_with_a_clear_error(pool):
    with spark_session(pool.url) as spark:
        spark.conf.set("sparkfleet.maxQueryDuration", "3s")
        with pytest.raises(PySparkException) as raised:
            spark.sql(HEAVY).collect()
        assert raised.value.getCondition() == "SPARKFLEET.QUERY_CANCELLED"
        assert "sparkfleet.maxQueryDuration=3s" in str(raised.value)
        record = next(q for q in _queries(pool, spark) if q["error_class"])
        assert record["state"] == "cancelled" and record["error_class"] == "SPARKFLEET.QUERY_CANCELLED"
        # The session goes on.
        spark.conf.unset("sparkfleet.maxQueryDuration")
        assert spark.range(5).count() == 5


def test_an_interactive_query_past_its_budget_makes_its_workload_batch(pool):
    with spark_session(pool.url) as spark:
        thread, box = run_in_thread(lambda: spark.sql(HEAVY).collect())
        try:
            first = _running_query(pool, spark)
            record = next(q for q in _queries(pool, spark) if q["id"] == first)
            assert record["profile"] == "interactive"  # medium-sized, from a session with no history

            def reclassified() -> dict | None:
                found = next(q for q in _queries(pool, spark) if q["id"] == first)
                return found if "; watchdog: " in found["placement_reason"] else None

            found = wait_until(reclassified, 60, what="the watchdog to reclassify the query")
            assert "budget 6s" in found["placement_reason"] and "batch from now on" in found["placement_reason"]
        finally:
            spark.interruptAll()
            thread.join(60)
        assert "error" in box
        # The same workload (other literals, same shape) is batch from now on.
        again_thread, _ = run_in_thread(lambda: spark.sql(HEAVY.replace("% 7 = 3", "% 7 = 5")).collect())
        try:
            second = _running_query(pool, spark)
            record = next(q for q in _queries(pool, spark) if q["id"] == second)
            assert record["profile"] == "batch"
            assert record["fingerprint"] == found["fingerprint"]
        finally:
            spark.interruptAll()
            again_thread.join(60)


def _kernel_cpu_class(pid: int) -> tuple[str, int] | None:
    """(cpu group, cpu.idle) of a process as the kernel has them; None on a machine without the
    cgroup v1 cpu hierarchy (the groups are then checked through the API only)."""
    if not (SYSFS_CGROUP / "cpu" / "cpu.shares").is_file():
        return None
    with open(f"/proc/{pid}/cgroup") as f:
        groups = dict(line.strip().split(":", 2)[1:] for line in f)
    group = groups.get("cpu", "/")
    idle = SYSFS_CGROUP / "cpu" / group.lstrip("/") / "cpu.idle"
    return group, int(idle.read_text()) if group != "/" else -1


def _clusters(proc: SparkfleetProcess) -> dict[str, dict]:
    return {c["id"]: c for c in proc.api("/api/clusters?history=0") if c["state"] == "ready"}


def test_a_batch_cluster_gets_only_cpu_time_nothing_else_wants_and_gives_it_back(pool):
    def quiet():  # earlier tests' batch work has ended and its linger run out
        rows = _clusters(pool)
        return rows if all(not r["work"] and r["cpu_share"] and not r["cpu_share"]["idle"] for r in rows.values()) else None

    rows = wait_until(quiet, 60, what="idle clusters")
    if pool.api("/api/health")["cpu_isolation"].startswith("off"):  # the documented fallback
        for row in rows.values():
            assert row["cpu_share"]["group"] is None and "CPU sharing is off" in row["cpu_share"]["reason"]
        return
    for row in rows.values():  # every cluster in a group of its own, weighted by its cores
        assert row["cpu_share"]["shares"] == 1024 * row["cores"] and row["cpu_share"]["group"].endswith(row["id"])
        assert _kernel_cpu_class(row["pid"]) in (None, (row["cpu_share"]["group"], 0))
    with spark_session(pool.url) as etl, spark_session(pool.url) as analyst:
        etl.conf.set("sparkfleet.profile", "batch")
        analyst.conf.set("sparkfleet.profile", "interactive")
        thread, box = run_in_thread(lambda: etl.sql(HEAVY).collect())
        try:
            heavy_id = _running_query(pool, etl)
            clusters = _clusters(pool)
            batch_id = next(c for c, row in clusters.items() if any(w["query_id"] == heavy_id for w in row["work"]))
            [other_id] = [c for c in clusters if c != batch_id]

            def shares_settled():  # the sharer sets them just after the placement
                rows = _clusters(pool)
                return rows if rows[batch_id]["cpu_share"] and rows[batch_id]["cpu_share"]["idle"] else None

            rows = wait_until(shares_settled, 30, what="the batch cluster's CPU share")
            batch, other = rows[batch_id], rows[other_id]
            assert "only batch work" in batch["cpu_share"]["reason"]
            assert _kernel_cpu_class(batch["pid"]) in (None, (batch["cpu_share"]["group"], 1))
            assert not other["cpu_share"]["idle"] and other["cpu_share"]["reason"].startswith("idle:")
            assert _kernel_cpu_class(other["pid"]) in (None, (other["cpu_share"]["group"], 0))

            # An interactive query on the other cluster competes at its full weight while it runs.
            slow, slow_box = run_in_thread(
                lambda: analyst.range(0, 400_000_000, 1, 2).selectExpr("sum(id % 7)").collect())

            def interactive_share():
                share = _clusters(pool)[other_id]["cpu_share"]
                return share if share["reason"].startswith("interactive") else None

            share = wait_until(interactive_share, 60, what="the interactive cluster's share")
            assert not share["idle"] and share["shares"] == 1024
            slow.join(120)
            assert slow_box["result"][0][0] == sum(i % 7 for i in range(7)) * (400_000_000 // 7) + sum(range(400_000_000 % 7))
        finally:
            etl.interruptAll()
            thread.join(60)
        assert "error" in box  # interrupted, as intended

        def back():  # batch_linger_s after the batch work ended
            row = _clusters(pool)[batch_id]
            return row if not row["cpu_share"]["idle"] else None

        row = wait_until(back, 60, what="the batch cluster to leave the idle class")
        assert _kernel_cpu_class(row["pid"]) in (None, (row["cpu_share"]["group"], 0))
