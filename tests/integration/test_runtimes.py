"""Runtimes side by side with real clusters: "blink twice", pins and regressions.

Two runtimes of the same Spark build whose default confs differ, registered with the real
`sparkfleet runtimes add` command: `lenient` (ANSI mode off, as Spark 3 had it) and, newer and
general, `ansi` (Spark 4's default). A cast of a non-number fails under ANSI and gives NULL
without it: exactly what an upgrade that changes a default does to a workload.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session

pytestmark = pytest.mark.integration

CONFIG = '[pool]\nclusters = ["S@lenient", "S@ansi"]\n' + FIXED_FLEET


def _runtimes(data_dir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sparkfleet", "runtimes", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):  # type: ignore[no-untyped-def]
    import pyspark

    data_dir = tmp_path_factory.mktemp("versions")
    version = pyspark.__version__
    _runtimes(data_dir, "add", version, "--name", "lenient", "--conf", "spark.sql.ansi.enabled=false",
              "--stage", "general")
    _runtimes(data_dir, "add", version, "--name", "ansi", "--conf", "spark.sql.ansi.enabled=true",
              "--stage", "general")
    listing = _runtimes(data_dir, "list")
    assert "lenient" in listing and "previous" in listing and "ansi" in listing
    with SparkfleetProcess(CONFIG, data_dir=data_dir, name="sparkfleet-versions") as proc:
        yield proc


def _records(proc: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    records = [q for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=100") if q["kind"] == "relation"]
    return sorted(records, key=lambda q: q["submitted_at"])


def test_a_workload_the_new_runtime_breaks_runs_on_the_previous_one_and_is_pinned_there(fleet):
    with spark_session(fleet.url) as spark:
        broken = spark.range(3).selectExpr("cast(concat('x', id) as int) as v")
        assert [r["v"] for r in broken.collect()] == [None, None, None]
        [record] = _records(fleet, spark)
        failed, passed = record["attempts"]
        assert (failed["runtime"], failed["outcome"], failed["error_class"]) == ("ansi", "failed", "CAST_INVALID_INPUT")
        assert "run again on lenient" in failed["reason"]
        assert (passed["runtime"], passed["outcome"]) == ("lenient", "succeeded")

        # Pinned, and a regression recorded with both runs.
        runtimes = {r["name"]: r for r in fleet.api("/api/runtimes")}
        assert [p["fingerprint"] for p in runtimes["lenient"]["pinned_workloads"]] == [record["fingerprint"]]
        assert runtimes["ansi"]["stage"] == "general" and runtimes["lenient"]["stage"] == "previous"
        [regression] = [g for g in fleet.api("/api/regressions") if g["error_class"] == "CAST_INVALID_INPUT"]
        assert (regression["broken_on"], regression["passed_on"], regression["affected_workloads"]) == ("ansi", "lenient", 1)
        [workload] = regression["workloads"]
        assert workload["failed_run"]["query_id"] == record["id"] and workload["passed_run"]["runtime"] == "lenient"
        assert "CAST_INVALID_INPUT" in workload["message"] or "cannot be cast" in workload["message"]

        # The next run of the workload goes straight to its pinned runtime.
        assert [r["v"] for r in broken.collect()] == [None, None, None]
        [only] = _records(fleet, spark)[-1]["attempts"]
        assert (only["runtime"], only["outcome"]) == ("lenient", "succeeded")
        assert "pinned to lenient" in _records(fleet, spark)[-1]["placement_reason"]


def test_an_error_on_both_runtimes_is_the_users_and_nothing_is_pinned(fleet):
    with spark_session(fleet.url) as spark:
        with pytest.raises(Exception) as raised:
            spark.range(3).selectExpr("assert_true(id < 0, 'negative ids only')").collect()
        assert "negative ids only" in str(raised.value)
        record = _records(fleet, spark)[-1]
        assert record["state"] == "failed"
        assert [(a["runtime"], a["outcome"]) for a in record["attempts"]] == [("ansi", "failed"), ("lenient", "failed")]
        assert "the workload's own error" in record["attempts"][-1]["reason"]
        pinned = [p["fingerprint"] for r in fleet.api("/api/runtimes") for p in r["pinned_workloads"]]
        assert record["fingerprint"] not in pinned


def test_a_write_that_fails_on_the_new_runtime_is_not_run_twice(fleet, tmp_path):
    with spark_session(fleet.url) as spark:
        target = str(tmp_path / "appended")
        with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
            spark.range(3).selectExpr("cast(concat('x', id) as int) as v").write.mode("append").parquet(target)
        record = [q for q in fleet.api(f"/api/queries?session_id={spark.session_id}&limit=100")
                  if q["kind"] != "relation"][-1]
        assert record["state"] == "failed" and len(record["attempts"]) == 1
        assert record["attempts"][0]["runtime"] == "ansi"


def test_a_workload_that_passes_stays_on_the_general_runtime(fleet):
    with spark_session(fleet.url) as spark:
        assert spark.range(10).selectExpr("sum(id) as s").collect()[0]["s"] == 45
        [only] = _records(fleet, spark)[-1]["attempts"]
        assert (only["runtime"], only["outcome"]) == ("ansi", "succeeded")
