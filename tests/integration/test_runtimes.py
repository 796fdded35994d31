"""Runtimes side by side with real clusters: "blink twice", pins and regressions.

Two runtimes of the same Spark build whose default confs differ, registered with the real
`sparkfleet runtimes add` command: `lenient` (ANSI mode off, as Spark 3 had it) and, newer and
general, `ansi` (Spark 4's default). A cast of a non-number fails under ANSI and gives NULL
without it: exactly what an upgrade that changes a default does to a workload.
"""

from __future__ import annotations

import pytest

from sparkfleet.testing.process import SparkfleetProcess, spark_session, sparkfleet_runtimes, wait_until

pytestmark = pytest.mark.integration

# One cluster of each runtime to begin with; the autoscaler starts clusters of any other runtime a
# query needs (a third core in the budget leaves room for one), and stops nothing during the tests.
CONFIG = """
[pool]
clusters = ["S@lenient", "S@ansi"]

[autoscaler]
enabled = true
mode = "standard"
max_cores = 3
scale_out_after_s = 0
idle_before_stop_s = 3600

[rollout]
canary_fraction = 0
promote_after_workloads = 0
"""


@pytest.fixture(scope="module")
def two_runtimes(tmp_path_factory):  # type: ignore[no-untyped-def]
    import pyspark

    data_dir = tmp_path_factory.mktemp("versions")
    version = pyspark.__version__
    sparkfleet_runtimes(data_dir, "add", version, "--name", "lenient", "--conf", "spark.sql.ansi.enabled=false",
              "--stage", "general")
    sparkfleet_runtimes(data_dir, "add", version, "--name", "ansi", "--conf", "spark.sql.ansi.enabled=true",
              "--stage", "general")
    listing = sparkfleet_runtimes(data_dir, "list")
    assert "lenient" in listing and "previous" in listing and "ansi" in listing
    with SparkfleetProcess(CONFIG, data_dir=data_dir, name="sparkfleet-versions") as proc:
        yield proc


def _records(proc: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    records = [q for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=100") if q["kind"] == "relation"]
    return sorted(records, key=lambda q: q["submitted_at"])


def test_a_workload_the_new_runtime_breaks_runs_on_the_previous_one_and_is_pinned_there(two_runtimes):
    with spark_session(two_runtimes.url) as spark:
        broken = spark.range(3).selectExpr("cast(concat('x', id) as int) as v")
        assert [r["v"] for r in broken.collect()] == [None, None, None]
        [record] = _records(two_runtimes, spark)
        failed, passed = record["attempts"]
        assert (failed["runtime"], failed["outcome"], failed["error_class"]) == ("ansi", "failed", "CAST_INVALID_INPUT")
        assert "run again on lenient" in failed["reason"]
        assert (passed["runtime"], passed["outcome"]) == ("lenient", "succeeded")

        # Pinned, and a regression recorded with both runs.
        runtimes = {r["name"]: r for r in two_runtimes.api("/api/runtimes")}
        assert [p["fingerprint"] for p in runtimes["lenient"]["pinned_workloads"]] == [record["fingerprint"]]
        assert runtimes["ansi"]["stage"] == "general" and runtimes["lenient"]["stage"] == "previous"
        [regression] = [g for g in two_runtimes.api("/api/regressions") if g["error_class"] == "CAST_INVALID_INPUT"]
        assert (regression["broken_on"], regression["passed_on"], regression["affected_workloads"]) == ("ansi", "lenient", 1)
        [workload] = regression["workloads"]
        assert workload["failed_run"]["query_id"] == record["id"] and workload["passed_run"]["runtime"] == "lenient"
        assert "CAST_INVALID_INPUT" in workload["message"] or "cannot be cast" in workload["message"]

        # The next run of the workload goes straight to its pinned runtime.
        assert [r["v"] for r in broken.collect()] == [None, None, None]
        [only] = _records(two_runtimes, spark)[-1]["attempts"]
        assert (only["runtime"], only["outcome"]) == ("lenient", "succeeded")
        assert "pinned to lenient" in _records(two_runtimes, spark)[-1]["placement_reason"]


def test_an_error_on_both_runtimes_is_the_users_and_nothing_is_pinned(two_runtimes):
    with spark_session(two_runtimes.url) as spark:
        with pytest.raises(Exception) as raised:
            spark.range(3).selectExpr("assert_true(id < 0, 'negative ids only')").collect()
        assert "negative ids only" in str(raised.value)
        record = _records(two_runtimes, spark)[-1]
        assert record["state"] == "failed"
        assert [(a["runtime"], a["outcome"]) for a in record["attempts"]] == [("ansi", "failed"), ("lenient", "failed")]
        assert "the workload's own error" in record["attempts"][-1]["reason"]
        pinned = [p["fingerprint"] for r in two_runtimes.api("/api/runtimes") for p in r["pinned_workloads"]]
        assert record["fingerprint"] not in pinned


def test_a_write_that_fails_on_the_new_runtime_is_not_run_twice(two_runtimes, tmp_path):
    with spark_session(two_runtimes.url) as spark:
        target = str(tmp_path / "appended")
        with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
            spark.range(3).selectExpr("cast(concat('x', id) as int) as v").write.mode("append").parquet(target)
        record = [q for q in two_runtimes.api(f"/api/queries?session_id={spark.session_id}&limit=100")
                  if q["kind"] != "relation"][-1]
        assert record["state"] == "failed" and len(record["attempts"]) == 1
        assert record["attempts"][0]["runtime"] == "ansi"


def test_a_workload_that_passes_stays_on_the_general_runtime(two_runtimes):
    with spark_session(two_runtimes.url) as spark:
        assert spark.range(10).selectExpr("sum(id) as s").collect()[0]["s"] == 45
        [only] = _records(two_runtimes, spark)[-1]["attempts"]
        assert (only["runtime"], only["outcome"]) == ("ansi", "succeeded")


def test_a_pinned_read_is_probed_on_a_newer_runtime_and_unpinned_when_it_passes(two_runtimes):
    import pyspark

    with spark_session(two_runtimes.url) as spark:
        broken = spark.range(2).selectExpr("cast(concat('y', id) as bigint) as w")
        assert [r["w"] for r in broken.collect()] == [None, None]
        fingerprint = _records(two_runtimes, spark)[-1]["fingerprint"]
        pinned = {p["fingerprint"]: r["name"] for r in two_runtimes.api("/api/runtimes") for p in r["pinned_workloads"]}
        assert pinned[fingerprint] == "lenient"

        # A newer runtime arrives (as a canary that takes no workload of its own share).
        sparkfleet_runtimes(two_runtimes.data_dir, "add", pyspark.__version__, "--name", "fixed",
                  "--conf", "spark.sql.ansi.enabled=false")
        wait_until(lambda: any(r["name"] == "fixed" for r in two_runtimes.api("/api/runtimes")), 30,
                   what="the gateway to see the new runtime")
        # The pinned read's next run tries it (a cluster of it is started), passes, and is unpinned.
        assert [r["w"] for r in broken.collect()] == [None, None]
        probe = _records(two_runtimes, spark)[-1]
        [only] = probe["attempts"]
        assert (only["runtime"], only["outcome"]) == ("fixed", "succeeded")
        assert "probing it, with lenient to fall back on" in probe["placement_reason"]
        pinned = {p["fingerprint"] for r in two_runtimes.api("/api/runtimes") for p in r["pinned_workloads"]}
        assert fingerprint not in pinned
