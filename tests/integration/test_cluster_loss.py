"""kill -9 of a session's cluster: state moves on, reads re-run unseen, writes re-run only when safe."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from pyspark.errors import PySparkException

from sparkfleet.fleet.cgroups import SYSFS_CGROUP
from sparkfleet.testing.process import (
    FIXED_FLEET,
    SparkfleetProcess,
    hang_once_udf,
    run_in_thread,
    spark_session,
    wait_until,
)

CONFIG = '[pool]\nclusters = ["S", "S"]\n' + FIXED_FLEET


@pytest.fixture(scope="module")
def pool():
    with SparkfleetProcess(CONFIG, name="sparkfleet-loss") as proc:
        yield proc


@pytest.fixture
def spark(pool):
    # Every test starts with the whole pool up (earlier tests kill clusters).
    wait_until(lambda: len(pool.ready_clusters()) == 2, 240, what="both clusters ready")
    with spark_session(pool.url) as session:
        yield session


def _records(proc: SparkfleetProcess, spark) -> list[dict]:
    return proc.api(f"/api/queries?session_id={spark.session_id}&limit=1000")


def _kill(proc: SparkfleetProcess, cluster_id: str) -> None:
    cluster = next(c for c in proc.api("/api/clusters?history=0") if c["id"] == cluster_id)
    os.kill(cluster["pid"], signal.SIGKILL)


def _kill_when(pool, spark, marker: Path, action) -> tuple[dict, dict]:
    """Run ``action`` in a thread; once ``marker`` appears, kill the cluster running it; wait."""
    thread, box = run_in_thread(action)
    wait_until(marker.exists, 120, what=f"{marker.name} to appear")
    running = next(q for q in _records(pool, spark) if q["state"] == "running")
    _kill(pool, running["cluster_id"])
    thread.join(300)
    assert not thread.is_alive()
    return running, box


def test_next_query_after_a_kill_runs_elsewhere_with_the_session_state(pool, spark):
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    spark.range(10).createOrReplaceTempView("survivors")
    spark.udf.register("triple", lambda x: x * 3, "long")
    spark.sql("DECLARE VARIABLE offset_by INT DEFAULT 100")
    assert spark.sql("select sum(triple(id)) s from survivors").collect()[0].s == 135
    home = _records(pool, spark)[0]["cluster_id"]
    group = None
    if pool.api("/api/health")["cpu_isolation"].startswith("control groups"):
        group = wait_until(lambda: (next(c for c in pool.api("/api/clusters?history=0") if c["id"] == home)
                                    ["cpu_share"] or {}).get("group"), 30, what="the cluster's control group")

    _kill(pool, home)

    rows = spark.sql("select sum(triple(id)) + offset_by s from survivors").collect()
    assert rows[0].s == 235
    assert spark.conf.get("spark.sql.shuffle.partitions") == "5"
    latest = _records(pool, spark)[0]
    assert latest["state"] == "succeeded" and latest["cluster_id"] != home
    # The dead cluster is replaced, with the same size.
    wait_until(lambda: len(pool.ready_clusters()) == 2, 240, what="a replacement cluster")
    lost = next(c for c in pool.api("/api/clusters") if c["id"] == home)
    assert lost["state"] == "lost"
    # Its control group went with it, though its Python workers were still exiting when the JVM
    # was reaped (the group is removed at the next change at the latest: the replacement's start).
    if group is not None:
        assert not any((SYSFS_CGROUP / hierarchy / group.lstrip("/")).exists() for hierarchy in ("cpu", "cpuset", ""))


def test_a_read_running_when_its_cluster_dies_is_re_run_without_an_error(pool, spark, tmp_path):
    slow_double = hang_once_udf(str(tmp_path))
    spark.range(5).createOrReplaceTempView("inputs")
    running, box = _kill_when(
        pool, spark, tmp_path / "started",
        lambda: spark.table("inputs").select(slow_double("id").alias("d")).orderBy("d").collect(),
    )
    assert "error" not in box, box.get("error")
    assert [r.d for r in box["result"]] == [0, 2, 4, 6, 8]

    record = next(q for q in _records(pool, spark) if q["id"] == running["id"])
    assert record["state"] == "succeeded"
    first, second = record["attempts"]
    assert first["cluster_id"] == running["cluster_id"] and first["outcome"] == "cluster lost"
    assert first["error_class"] == "SPARKFLEET.CLUSTER_LOST" and "retried" in first["reason"]
    assert second["cluster_id"] != running["cluster_id"] and second["outcome"] == "succeeded"


def _register_hanging_sink(spark, directory: Path) -> None:
    """A Python data source whose commit records the rows, then hangs the first time it commits."""
    from dataclasses import dataclass

    from pyspark.sql.datasource import DataSource, DataSourceWriter, WriterCommitMessage

    folder = str(directory)

    @dataclass
    class Rows(WriterCommitMessage):
        ids: list

    class HangingWriter(DataSourceWriter):
        def __init__(self, overwrite: bool) -> None:
            self.overwrite = overwrite

        def write(self, iterator):
            return Rows([row.id for row in iterator])

        def commit(self, messages):
            import json
            import os
            import time

            ids = sorted(i for m in messages for i in m.ids)
            target = os.path.join(folder, "rows.jsonl")
            with open(target, "w" if self.overwrite else "a") as out:
                out.write(json.dumps(ids) + "\n")
            marker = os.path.join(folder, "committed")
            if not os.path.exists(marker):
                open(marker, "w").close()
                time.sleep(600)

    class HangingSink(DataSource):
        @classmethod
        def name(cls):
            return "hanging_sink"

        def schema(self):
            return "id long"

        def writer(self, schema, overwrite):
            return HangingWriter(overwrite)

    spark.dataSource.register(HangingSink)


def _commits(directory: Path) -> list[list[int]]:
    return [json.loads(line) for line in (directory / "rows.jsonl").read_text().splitlines()]


def _kill_after_commit(pool, spark, directory: Path, rows: int, mode: str) -> tuple[dict, dict]:
    """Write ``rows`` rows to the hanging sink; kill the cluster once the write has committed."""
    _register_hanging_sink(spark, directory)
    return _kill_when(
        pool, spark, directory / "committed", lambda: spark.range(rows).write.format("hanging_sink").mode(mode).save()
    )


def test_an_append_that_fails_after_its_commit_is_not_re_run(pool, spark, tmp_path):
    running, box = _kill_after_commit(pool, spark, tmp_path, 3, "append")
    error = box.get("error")
    assert isinstance(error, PySparkException), box
    assert "was lost" in str(error) and "not retried" in str(error) and "append" in str(error)
    # Committed once, never again.
    assert _commits(tmp_path) == [[0, 1, 2]]
    record = next(q for q in _records(pool, spark) if q["id"] == running["id"])
    assert record["state"] == "failed" and record["error_class"] == "SPARKFLEET.CLUSTER_LOST"
    [attempt] = record["attempts"]
    assert attempt["cluster_id"] == running["cluster_id"] and "not retried" in attempt["reason"]


def test_an_overwrite_is_re_run_on_another_cluster(pool, spark, tmp_path):
    running, box = _kill_after_commit(pool, spark, tmp_path, 4, "overwrite")
    assert "error" not in box, box.get("error")
    # The re-run replaced what the first attempt wrote: the same rows, once.
    assert _commits(tmp_path) == [[0, 1, 2, 3]]
    record = next(q for q in _records(pool, spark) if q["id"] == running["id"])
    assert [a["outcome"] for a in record["attempts"]] == ["cluster lost", "succeeded"]
    assert "overwrite" in record["attempts"][0]["reason"]


def test_tables_outlive_the_cluster_that_wrote_them(pool, spark):
    table = f"kept_{spark.session_id[:8]}"
    spark.range(6).write.saveAsTable(table)
    writer = _records(pool, spark)[0]["cluster_id"]
    _kill(pool, writer)
    # The pool shares one catalog and warehouse: another cluster reads the table.
    assert spark.table(table).count() == 6
    assert _records(pool, spark)[0]["cluster_id"] != writer
    spark.sql(f"DROP TABLE {table}")


def test_a_create_of_a_table_that_does_not_exist_yet_is_re_run(pool, spark, tmp_path):
    table = f"created_{spark.session_id[:8]}"
    slow_double = hang_once_udf(str(tmp_path))
    running, box = _kill_when(
        pool, spark, tmp_path / "started",
        lambda: spark.range(3).select(slow_double("id").alias("d")).write.saveAsTable(table),
    )
    assert "error" not in box, box.get("error")
    assert sorted(r.d for r in spark.table(table).collect()) == [0, 2, 4]
    record = next(q for q in _records(pool, spark) if q["id"] == running["id"])
    first, second = record["attempts"]
    assert "errorifexists" in first["reason"] and second["outcome"] == "succeeded"
    spark.sql(f"DROP TABLE {table}")
