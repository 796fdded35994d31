"""The autoscaler with real clusters: Standard mode scales an idle fleet to zero, starts a cluster
for the first query that finds none, adds one when a query queues, stops idle ones, and never
stops a cluster while a query runs on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkfleet.testing.process import (
    SparkfleetProcess,
    run_in_thread,
    spark_session,
    wait_until,
    wait_until_running_on_cluster,
)

pytestmark = pytest.mark.integration

# Timings shortened from Standard's defaults (60 s idle, 5 s queueing) so the test runs in seconds.
POOL = """
[sizes.S]
cores = 1
memory_mb = 1024

[pool]
clusters = ["S"]

[autoscaler]
enabled = true
mode = "standard"
idle_before_stop_s = 4
min_lifetime_s = 2
scale_out_after_s = 0

# The default keeps one of two clusters free of batch work: the cluster started for a queued
# batch query would then wait for interactive work, and a third be started. This test is about
# scaling out for the query that waits, so the cluster started for it takes it.
[placement]
interactive_reserve_clusters = 0
"""


def _clusters(proc: SparkfleetProcess) -> list[dict]:
    return proc.api("/api/clusters")


def _sleeping(spark, ms: int):  # type: ignore[no-untyped-def]
    """A query that sleeps ``ms`` in the JVM: its length does not depend on the machine's speed."""
    return spark.range(1).selectExpr(f"reflect('java.lang.Thread', 'sleep', cast({ms} as bigint)) as slept", "id")


def _held_until(spark, release: Path):  # type: ignore[no-untyped-def]
    """A query that runs until ``release`` exists: it holds its cluster for as long as the test
    needs, however fast a cluster starts (a Python UDF that looks for the file)."""
    from pyspark.sql.functions import udf

    path = str(release)

    @udf("long")
    def wait_for_release(x):  # type: ignore[no-untyped-def]
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.1)
        return x

    return spark.range(1).select(wait_for_release("id").alias("id"))


def _relations(proc: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    return [q for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=100") if q["kind"] == "relation"]


def _scaled_to_zero(proc: SparkfleetProcess) -> list[dict] | None:
    rows = _clusters(proc)
    alive = [c for c in rows if c["state"] in ("starting", "ready", "draining", "stopping")]
    return rows if rows and not alive else None


def test_standard_mode_scales_to_zero_and_back_and_never_stops_a_busy_cluster(tmp_path):
    with SparkfleetProcess(POOL, name="sparkfleet-autoscaling") as pool:
        # Idle: the configured cluster is stopped, and its history says why.
        rows = wait_until(lambda: _scaled_to_zero(pool), 120, what="the idle fleet to scale to zero")
        [first] = rows
        assert first["state"] == "stopped"
        assert any(e["reason"].startswith("autoscaler: idle for") for e in first["history"])
        # Started ahead of any query, it was warmed up before it was ready.
        assert any("answered Spark Connect and warmed up" in e["reason"] for e in first["history"])

        with spark_session(pool.url) as spark:
            # The first request finds no cluster: one is started for it (a cold start).
            assert spark.range(5).selectExpr("sum(id)").collect()[0][0] == 10
            started = [c for c in _clusters(pool) if c["id"] != first["id"]]
            assert len(started) == 1
            assert "autoscaler: 1 query waiting" in started[0]["history"][0]["reason"]
            # A query was waiting for it: it took the query at once, without a warm-up.
            [ready] = [e for e in started[0]["history"] if e["state"] == "ready"]
            assert ready["reason"].startswith("answered Spark Connect after")

            # Scale-out under queueing: a batch query takes the only cluster (a cluster runs one
            # batch query at a time) and holds it, so another session's batch query queues, a
            # cluster is started for it, and it runs there.
            with spark_session(pool.url) as other:
                for session in (spark, other):
                    session.conf.set("sparkfleet.profile", "batch")
                release = tmp_path / "release"
                long_one, long_box = run_in_thread(lambda: _held_until(spark, release).collect())
                try:
                    [long_id] = wait_until_running_on_cluster(pool, spark)
                    busy = next(q for q in _relations(pool, spark) if q["id"] == long_id)["cluster_id"]
                    queued_one, queued_box = run_in_thread(lambda: _sleeping(other, 2000).collect())
                    queued_one.join(300)
                finally:
                    release.touch()
                long_one.join(300)
                assert long_box.get("result") and queued_box.get("result"), (long_box, queued_box)
                [queued] = _relations(pool, other)
                assert queued["cluster_id"] != busy
                added = {c["id"]: c for c in _clusters(pool)}[queued["cluster_id"]]
                assert "autoscaler: 1 query waiting" in added["history"][0]["reason"]
                assert "standard mode scales out after 0s" in added["history"][0]["reason"]
                spark.conf.unset("sparkfleet.profile")

            # A query running longer than the idle timeout keeps its cluster. It sleeps in the JVM,
            # so its length does not depend on how fast the machine is.
            slow = _sleeping(spark, 10_000)
            thread, box = run_in_thread(lambda: slow.collect())
            thread.join(300)
            assert box.get("result") is not None, box.get("error")
            assert box["result"][0]["id"] == 0
            slow_record = max(_relations(pool, spark), key=lambda q: q["submitted_at"])
            # Its cluster was not stopped under it: nothing was lost and re-run, though the query
            # outlasted the idle timeout.
            assert len(slow_record["attempts"]) == 1 and slow_record["state"] == "succeeded"
            assert slow_record["duration_ms"] >= 10_000

        # And once idle again, back to zero.
        rows = wait_until(lambda: _scaled_to_zero(pool), 120, what="the fleet to scale to zero again")

        # /metrics counts the actions and the compute: three clusters stopped, two started by the
        # autoscaler; a stopped cluster's core-seconds stay what they were when it stopped.
        assert pool.metric("sparkfleet_scaling_actions_total", action="stop", size="S") == 3
        assert pool.metric("sparkfleet_scaling_actions_total", action="start", size="S") == 2
        assert pool.metric("sparkfleet_clusters", size="S", state="stopped") == 3
        used = pool.metric("sparkfleet_cluster_core_seconds_total", size="S")
        assert used == pytest.approx(sum(c["core_seconds"] for c in rows), abs=0.2)
        # The cluster that ran the 10 s query lived through it and the idle timeout after it.
        assert next(c for c in rows if c["id"] == slow_record["cluster_id"])["core_seconds"] > 10 + 4
        assert pool.metric("sparkfleet_cluster_core_seconds_total", size="S") == used
