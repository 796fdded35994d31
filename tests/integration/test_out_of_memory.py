"""A query that runs its cluster out of memory, through the gateway, with real clusters.

In local mode a task's OutOfMemoryError stops the SparkContext and exits the JVM (status 52). The
gateway reads the cluster's log for the session whose task ran out: that query is never repeated
on a cluster of the same size (it would take that one down too). With the autoscaler on, it is
restarted on a cluster of the next larger size class, started for it, and the client sees only a
slower success; without it, the query fails with a clear error. The lost cluster is replaced.

A broadcast too big for the driver fails the query on a cluster that stays alive (Spark's
"Not enough memory to build and broadcast the table"): it is recovered the same way.
"""

from __future__ import annotations

import pytest

from sparkfleet.testing.process import (
    FIXED_FLEET,
    SparkfleetProcess,
    hang_once_udf,
    run_in_thread,
    spark_session,
    wait_until,
)

pytestmark = pytest.mark.integration

# 1 GiB clusters: one group of 40 M longs collected into one list does not fit; 4 GiB holds it.
SIZES = """
[sizes.S]
cores = 1
memory_mb = 1024

[sizes.M]
cores = 1
memory_mb = 4096

[sizes.L]
cores = 2
memory_mb = 8192
"""
FIXED_POOL = SIZES + '\n[pool]\nclusters = ["S", "S"]\n' + FIXED_FLEET
AUTOSCALED_POOL = SIZES + '\n[pool]\nclusters = ["S"]\n\n[autoscaler]\nenabled = true\nmode = "standard"\n'
ROWS = 40_000_000
# A broadcast table of 8 M rows with a ~20-character string: too big for a 1 GiB driver, fine in 4 GiB.
BROADCAST_ROWS = 14_000_000


def _one_big_group(spark):  # type: ignore[no-untyped-def]
    return (spark.range(0, ROWS, 1, 4).selectExpr("0 as k", "id")
            .groupBy("k").agg({"id": "collect_list"}).selectExpr("size(`collect_list(id)`) as n"))


def _broadcast_join(spark):  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    table = spark.range(0, BROADCAST_ROWS).selectExpr("id", "repeat(cast(id as string), 3) as s")
    return spark.range(10).join(F.broadcast(table), "id")


def _relation_records(proc: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    """The session's DataFrame queries, oldest first."""
    records = [q for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=100") if q["kind"] == "relation"]
    return sorted(records, key=lambda q: q["submitted_at"])


def test_without_a_larger_size_the_query_fails_clearly_and_is_not_repeated():
    with SparkfleetProcess(FIXED_POOL, name="sparkfleet-oom") as pool, spark_session(pool.url) as spark:
        with pytest.raises(Exception) as raised:
            _one_big_group(spark).collect()
        message = str(raised.value)
        assert "out of memory" in message and "not retried" in message, message
        [record] = _relation_records(pool, spark)
        assert record["state"] == "failed"
        assert len(record["attempts"]) == 1  # never sent to the other cluster
        lost_id = record["attempts"][0]["cluster_id"]
        assert "ran cluster " + lost_id + " out of memory" in record["attempts"][0]["reason"]
        assert "no larger size class can be started" in record["attempts"][0]["reason"]

        def replaced():
            rows = pool.api("/api/clusters?history=0")
            lost = [r for r in rows if r["id"] == lost_id and r["state"] == "lost"]
            ready = [r for r in rows if r["state"] == "ready"]
            return rows if lost and len(ready) == 2 else None

        rows = wait_until(replaced, 240, what="the lost cluster to be replaced")
        assert all(r["exit_code"] is None for r in rows if r["state"] == "ready")
        # The session goes on: its next query runs on a healthy cluster.
        assert spark.range(10).selectExpr("sum(id)").collect()[0][0] == 45

        # A broadcast too big for the driver: the cluster lives on; the query fails clearly, once.
        with pytest.raises(Exception) as raised:
            _broadcast_join(spark).count()
        message = str(raised.value)
        assert "Not enough memory to build and broadcast" in message and "not retried" in message, message
        broadcast = _relation_records(pool, spark)[-1]
        [attempt] = broadcast["attempts"]
        assert broadcast["state"] == "failed"
        assert f"ran cluster {attempt['cluster_id']} out of memory (driver: Not enough memory" in attempt["reason"]
        assert "no larger size class can be started" in attempt["reason"]
        alive = {r["id"]: r for r in pool.api("/api/clusters?history=0")}[attempt["cluster_id"]]
        assert alive["state"] == "ready" and alive["exit_code"] is None


def test_with_the_autoscaler_the_query_is_restarted_on_a_larger_cluster_and_the_next_run_goes_there(tmp_path):
    with (SparkfleetProcess(AUTOSCALED_POOL, name="sparkfleet-oom-recovery") as pool, spark_session(pool.url) as spark,
          spark_session(pool.url) as other):
        # Another session's query runs on the same (only) cluster, hanging until the cluster dies
        # (one partition: no result reaches its client before then).
        hang = hang_once_udf(str(tmp_path))
        victim_thread, victim = run_in_thread(lambda: other.range(0, 3, 1, 1).select(hang("id").alias("d")).collect())
        wait_until((tmp_path / "started").exists, 120, what="the other session's query to start")

        assert _one_big_group(spark).collect()[0]["n"] == ROWS
        [record] = _relation_records(pool, spark)
        assert record["state"] == "succeeded"
        first, second = record["attempts"]
        clusters = {c["id"]: c for c in pool.api("/api/clusters")}
        assert (clusters[first["cluster_id"]]["size"], first["outcome"]) == ("S", "out of memory")
        assert first["reason"].startswith("retried on a larger cluster (M)")
        assert (clusters[second["cluster_id"]]["size"], second["outcome"]) == ("M", "succeeded")
        # The M cluster was started for this query, and its history says why.
        assert clusters[second["cluster_id"]]["history"][0]["reason"].startswith(
            f"starting: autoscaler: query {record['id']} ran a 1,024 MB cluster out of memory")
        # The workload learned its size: the second run goes straight to M, with no OOM.
        assert _one_big_group(spark).collect()[0]["n"] == ROWS
        again = _relation_records(pool, spark)[-1]
        assert again["fingerprint"] == record["fingerprint"] and again["state"] == "succeeded"
        [only] = again["attempts"]
        assert clusters[only["cluster_id"]]["size"] == "M" and only["outcome"] == "succeeded"

        # The victim: its query died with the culprit's cluster and was re-run as a lost read, not
        # as an out-of-memory culprit (so on any cluster, not only larger ones), and completed.
        victim_thread.join(300)
        assert "result" in victim, victim.get("error")
        assert sorted(r["d"] for r in victim["result"]) == [0, 2, 4]
        [victim_record] = _relation_records(pool, other)
        lost, rerun = victim_record["attempts"]
        assert lost["cluster_id"] == first["cluster_id"] and lost["outcome"] == "cluster lost"
        assert rerun["outcome"] == "succeeded" and victim_record["state"] == "succeeded"
        assert "larger" not in lost["reason"], lost["reason"]


def test_a_live_clusters_out_of_memory_error_is_recovered_on_a_larger_cluster():
    with SparkfleetProcess(AUTOSCALED_POOL, name="sparkfleet-oom-live") as pool, spark_session(pool.url) as spark:
        assert _broadcast_join(spark).count() == 10
        [record] = _relation_records(pool, spark)
        first, second = record["attempts"]
        clusters = {c["id"]: c for c in pool.api("/api/clusters")}
        assert (clusters[first["cluster_id"]]["size"], first["outcome"]) == ("S", "out of memory")
        assert "Not enough memory to build and broadcast" in first["reason"]
        assert (clusters[second["cluster_id"]]["size"], second["outcome"]) == ("M", "succeeded")
        # The S cluster did not die of it: it was never lost. It still answers, unless Standard
        # mode has since stopped it for being idle (the M run can outlast its idle timeout).
        survivor = clusters[first["cluster_id"]]
        assert all(e["state"] not in ("lost", "failed") for e in survivor["history"]), survivor["history"]
        if survivor["state"] == "ready":
            assert survivor["exit_code"] is None
        else:
            assert survivor["state"] in ("draining", "stopping", "stopped"), survivor
            assert any(e["reason"].startswith("autoscaler: idle for") for e in survivor["history"]), survivor["history"]
