"""The 22 TPC-H queries return through the gateway exactly what a Spark Connect server returns directly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from sparkfleet.bench.tpch import (
    COMPLETE_MARKER,
    QUERY_NAMES,
    TABLES,
    TPCH_QUERIES,
    describe_tables,
    ensure_tpch_data,
    register_tpch,
    run_query,
)
from sparkfleet.testing.direct import DirectServer
from sparkfleet.testing.process import spark_session

SCALE_FACTOR = 0.01
SF001_ROWS = {"region": 5, "nation": 25, "supplier": 100, "customer": 1_500, "part": 2_000,
              "partsupp": 8_000, "orders": 15_000, "lineitem": 60_175}

# A few MB of data: 4 shuffle partitions instead of 200 halve the time of the 22 queries.
# Set the same way on both sides, so it changes nothing about what is compared.
SESSION_CONFS = {"spark.sql.shuffle.partitions": "4"}

# Queries whose ORDER BY leaves ties possible (a sum or value first, not a key): compared as sorted
# lists of rows. Every other query's ORDER BY orders all rows, so it is compared row by row.
ORDER_NOT_TOTAL = {"q03", "q05", "q10", "q11", "q18"}


def prepare(spark: Any, data_dir: Path) -> None:
    for key, value in SESSION_CONFS.items():
        spark.conf.set(key, value)
    register_tpch(spark, data_dir)


@pytest.fixture(scope="module")
def tpch_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tpch_data(tmp_path_factory.mktemp("tpch"), SCALE_FACTOR)


@pytest.fixture(scope="module")
def direct_answer(tpch_data: Path) -> Iterator[Callable[[str], list[tuple[Any, ...]]]]:
    """A query's rows from one Spark Connect server started directly (no gateway) for this module."""
    server = DirectServer()
    try:
        server.start()
        with spark_session(server.url) as spark:
            prepare(spark, tpch_data)
            answers: dict[str, list[tuple[Any, ...]]] = {}

            def answer(name: str) -> list[tuple[Any, ...]]:
                if name not in answers:
                    answers[name] = [tuple(row) for row in spark.sql(TPCH_QUERIES[name]).collect()]
                return answers[name]

            yield answer
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway_session(fleet, tpch_data: Path) -> Iterator[Any]:
    """One stock session through the shared gateway for the 22 queries: registering the tables
    costs a second or more per session, which 22 fresh ``spark`` sessions would pay 22 times."""
    with spark_session(fleet.url) as spark:
        prepare(spark, tpch_data)
        yield spark


def _same_value(got: Any, expected: Any) -> bool:
    if isinstance(got, float) or isinstance(expected, float):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    return bool(got == expected)  # decimals are exact in Spark: compared exactly


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # Floats rounded so that last-bit noise cannot swap two rows; None sorts last.
    return tuple((v is None, round(v, 6) if isinstance(v, float) else (v if v is not None else 0)) for v in row)


def assert_same_rows(name: str, got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(expected), f"{name}: gateway returned {len(got)} rows, direct {len(expected)}"
    if name in ORDER_NOT_TOTAL:
        got, expected = sorted(got, key=_sort_key), sorted(expected, key=_sort_key)
    for index, (g, e) in enumerate(zip(got, expected)):
        assert len(g) == len(e) and all(_same_value(a, b) for a, b in zip(g, e)), (
            f"{name} row {index}: gateway {g} != direct {e}"
        )


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_query_matches_direct_server(gateway_session, direct_answer, name):
    expected = direct_answer(name)
    assert expected, f"{name} returns no rows at SF {SCALE_FACTOR}: the comparison would prove nothing"
    got = [tuple(row) for row in gateway_session.sql(TPCH_QUERIES[name]).collect()]
    assert_same_rows(name, got, expected)


def test_registered_tables_follow_a_fresh_session(spark, tpch_data, direct_answer):
    prepare(spark, tpch_data)
    run = run_query(spark, "q15")  # a CTE over lineitem, joined with supplier
    assert (run.name, run.rows) == ("q15", len(direct_answer("q15")))
    assert run.seconds > 0


def test_data_has_every_table_at_its_spec_size(tpch_data):
    assert (tpch_data / COMPLETE_MARKER).is_file()
    assert {t.name: t.rows for t in describe_tables(tpch_data)} == SF001_ROWS
    assert set(SF001_ROWS) == set(TABLES)


def test_generation_happens_once_and_an_interrupted_one_is_redone(tmp_path):
    scale_factor = 0.001
    # What an interrupted run leaves: a half-written .partial, and a directory without the marker.
    (tmp_path / "sf0.001.partial" / "lineitem").mkdir(parents=True)
    (tmp_path / "sf0.001.partial" / "lineitem" / "lineitem.1.parquet").write_bytes(b"half")
    (tmp_path / "sf0.001" / "orders").mkdir(parents=True)
    (tmp_path / "sf0.001" / "orders" / "stale.parquet").write_bytes(b"stale")

    data = ensure_tpch_data(tmp_path, scale_factor)

    assert data == tmp_path / "sf0.001"
    assert not (tmp_path / "sf0.001.partial").exists()
    assert not (data / "orders" / "stale.parquet").exists()
    assert [t.name for t in describe_tables(data)] == list(TABLES)
    marker = (data / COMPLETE_MARKER).stat().st_mtime_ns
    assert ensure_tpch_data(tmp_path, scale_factor) == data
    assert (data / COMPLETE_MARKER).stat().st_mtime_ns == marker, "complete data must not be generated again"
