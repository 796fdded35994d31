"""A query that runs its cluster out of memory, through the gateway, with real clusters.

In local mode a task's OutOfMemoryError stops the SparkContext and exits the JVM (status 52). The
gateway reads the cluster's log for the session whose task ran out: that query is not repeated on
a cluster of the same size (it would take that one down too); the cluster is replaced.
"""

from __future__ import annotations

import pytest

from sparkfleet.testing.process import SparkfleetProcess, spark_session, wait_until

pytestmark = pytest.mark.integration

# Two small clusters of 1 GiB heap: one group of 40 M longs collected into one list does not fit.
POOL = """
[sizes.S]
cores = 1
memory_mb = 1024

[pool]
clusters = ["S", "S"]
"""


@pytest.fixture(scope="module")
def pool():
    with SparkfleetProcess(POOL, name="sparkfleet-oom") as proc:
        yield proc


def test_the_query_that_ran_its_cluster_out_of_memory_fails_clearly_and_is_not_repeated(pool):
    with spark_session(pool.url) as spark:
        oom = (spark.range(0, 40_000_000, 1, 4).selectExpr("0 as k", "id")
               .groupBy("k").agg({"id": "collect_list"}).selectExpr("size(`collect_list(id)`)"))
        with pytest.raises(Exception) as raised:
            oom.collect()
        message = str(raised.value)
        assert "out of memory" in message and "not retried" in message, message
        [record] = [q for q in pool.api(f"/api/queries?session_id={spark.session_id}&limit=100")
                    if q["kind"] == "relation"]
        assert record["state"] == "failed"
        assert len(record["attempts"]) == 1  # never sent to the other cluster
        lost_id = record["attempts"][0]["cluster_id"]
        assert "ran cluster " + lost_id + " out of memory" in record["attempts"][0]["reason"]

        def replaced():
            rows = pool.api("/api/clusters?history=0")
            lost = [r for r in rows if r["id"] == lost_id and r["state"] == "lost"]
            ready = [r for r in rows if r["state"] == "ready"]
            return rows if lost and len(ready) == 2 else None

        rows = wait_until(replaced, 240, what="the lost cluster to be replaced")
        assert all(r["exit_code"] is None for r in rows if r["state"] == "ready")
        # The session goes on: its next query runs on a healthy cluster.
        assert spark.range(10).selectExpr("sum(id)").collect()[0][0] == 45
