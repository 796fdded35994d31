"""Reattachable execution through the gateway, with servers that cut every stream short."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session

# Every response stream ends after 1 s or 123 bytes: clients must reattach constantly.
CONFIG = """
[pool]
clusters = ["S"]

[pool.spark_conf]
"spark.connect.execute.reattachable.senderMaxStreamDuration" = "1s"
"spark.connect.execute.reattachable.senderMaxStreamSize" = "123"
""" + FIXED_FLEET


@pytest.fixture(scope="module")
def short_streams():
    with SparkfleetProcess(CONFIG, name="sparkfleet-reattach") as proc:
        yield proc


@pytest.fixture
def session(short_streams):
    with spark_session(short_streams.url) as spark:
        yield spark


def _rpc_count(proc, method):
    total = 0.0
    for line in proc.text("/metrics").splitlines():
        if line.startswith("sparkfleet_rpc_total{") and f'method="{method}"' in line and 'code="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_many_small_responses_reattach_and_complete(short_streams, session):
    before = _rpc_count(short_streams, "ReattachExecute")
    rows = session.range(0, 50_000, 1, 8).selectExpr("id", "id % 7 as m").collect()
    assert len(rows) == 50_000
    assert sum(r.id for r in rows) == 50_000 * 49_999 // 2
    assert _rpc_count(short_streams, "ReattachExecute") > before


def test_query_slower_than_the_stream_limit(short_streams, session):
    before = _rpc_count(short_streams, "ReattachExecute")
    row = session.sql("select reflect('java.lang.Thread', 'sleep', bigint(3500)) as s, 42 as answer").collect()[0]
    assert row.answer == 42
    # The first stream ended after 1 s with no result; at least two reattaches carried it on.
    assert _rpc_count(short_streams, "ReattachExecute") >= before + 2


def test_arrow_result_across_reattaches(short_streams, session):
    table = session.range(0, 2_000_000).selectExpr("id", "id * 3 as t").toArrow()
    assert table.num_rows == 2_000_000
    assert pc.sum(table.column("t")).as_py() == 3 * 2_000_000 * 1_999_999 // 2


def test_reattached_query_is_recorded_once_as_succeeded(short_streams, session):
    session.range(0, 20_000).collect()
    records = short_streams.api(f"/api/queries?session_id={session.session_id}")
    assert records and all(q["state"] == "succeeded" for q in records)
    assert len({q["id"] for q in records}) == len(records)
    # Releases reach the owning cluster too.
    assert _rpc_count(short_streams, "ReleaseExecute") > 0
