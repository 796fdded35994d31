"""Two real Spark versions side by side: pyspark 4.2.1 (installed by `sparkfleet runtimes add`,
from the package index) and the 4.3.0 installed with sparkfleet, one cluster each.

The stock 4.3 client works against both through the gateway; each workload runs on the runtime
its fingerprint is assigned to (half of them on the 4.2.1 canary here), every time; a session's
state follows its queries across versions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sparkfleet.policy.versions import canary_bucket
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session, sparkfleet_runtimes

pytestmark = pytest.mark.integration

OLD = "4.2.1"
CONFIG = f"""
[pool]
clusters = ["S@{OLD}", "S"]

[rollout]
canary_fraction = 0.5
promote_after_workloads = 0
""" + FIXED_FLEET


def _install_once() -> Path:
    """pyspark 4.2.1 installed by sparkfleet into a data dir kept between runs (~450 MB)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparkfleet" / "test-runtimes"
    if not (cache / "runtimes" / f"pyspark-{OLD}" / "pyspark" / "jars").is_dir():
        sparkfleet_runtimes(cache, "add", OLD)
    return cache / "runtimes" / f"pyspark-{OLD}"


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):  # type: ignore[no-untyped-def]
    installed = _install_once()
    data_dir = tmp_path_factory.mktemp("two-versions")
    (data_dir / "runtimes").mkdir()
    (data_dir / "runtimes" / installed.name).symlink_to(installed, target_is_directory=True)
    out = sparkfleet_runtimes(data_dir, "add", OLD)
    assert "already installed" in out and f"runtime {OLD}" in out
    with SparkfleetProcess(CONFIG, data_dir=data_dir, name="sparkfleet-two-versions") as proc:
        yield proc


# Workloads of different shapes (the fingerprint ignores literal values, not shapes).
WORKLOADS = [
    ("select count(*) as n from v", [(3,)]),
    ("select sum(a) as s from v", [(6,)]),
    ("select max(a) as m, min(a) as n from v", [(3, 1)]),
    ("select a from v order by a desc limit 1", [(3,)]),
    ("select a, b from v where a = 2", [(2, "y")]),
    ("select b, count(*) as n from v group by b order by b limit 1", [("x", 1)]),
    ("select upper(b) as u from v order by u limit 1", [("X",)]),
    ("select a * 2 as d from v order by d limit 1", [(2,)]),
    ("select concat(b, b) as bb from v order by bb limit 1", [("xx",)]),
    ("select avg(a) as m from v", [(2.0,)]),
    ("select count(distinct b) as n from v", [(3,)]),
    ("select a, row_number() over (order by a) as r from v order by a limit 1", [(1, 1)]),
]


def test_each_workload_runs_on_its_assigned_version_with_the_sessions_state_every_time(two_versions):
    runtimes = {r["name"]: r for r in two_versions.api("/api/runtimes")}
    assert runtimes[OLD]["version"] == OLD and runtimes[OLD]["clusters"] == 1
    with spark_session(two_versions.url) as spark:
        # Session state (a temp view) that every query below reads, on whichever version it runs.
        spark.createDataFrame([(1, "x"), (2, "y"), (3, "z")], "a int, b string").createOrReplaceTempView("v")
        ran_on: dict[str, str] = {}
        for run in range(2):
            for sql, expected in WORKLOADS:
                assert [tuple(r) for r in spark.sql(sql).collect()] == expected, sql
                record = [q for q in two_versions.api(f"/api/queries?session_id={spark.session_id}&limit=200")
                          if q["kind"] == "relation"]
                latest = max(record, key=lambda q: q["submitted_at"])
                [attempt] = latest["attempts"]
                assert attempt["outcome"] == "succeeded"
                expected_runtime = OLD if canary_bucket(latest["fingerprint"], OLD) < 0.5 else runtimes_general(two_versions)
                assert attempt["runtime"] == expected_runtime, (sql, latest["placement_reason"])
                if run == 1:
                    assert ran_on[sql] == attempt["runtime"]  # the same workload, the same version
                ran_on[sql] = attempt["runtime"]
        assert set(ran_on.values()) == {OLD, runtimes_general(two_versions)}


def runtimes_general(proc: SparkfleetProcess) -> str:
    [general] = [r["name"] for r in proc.api("/api/runtimes") if r["stage"] == "general"]
    return general
