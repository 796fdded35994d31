"""The 22 TPC-H query files ship with the package, parse as Spark SQL and read only TPC-H tables."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from sparkfleet.bench.tpch import QUERY_NAMES, SPEC_SF1_ROWS, TABLES, TPCH_QUERIES, load_queries


def test_all_22_queries_load_from_the_package():
    queries = load_queries()
    assert list(queries) == [f"q{n:02d}" for n in range(1, 23)]
    assert all(text.strip() for text in queries.values())
    assert dict(TPCH_QUERIES) == queries


def test_every_query_has_the_spec_row_count_at_sf1():
    assert set(SPEC_SF1_ROWS) == set(QUERY_NAMES)


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_query_is_one_spark_statement_over_tpch_tables_only(name):
    statements = sqlglot.parse(TPCH_QUERIES[name], dialect="spark")
    assert len([s for s in statements if s is not None]) == 1, "one statement per query"
    tree = statements[0]
    assert isinstance(tree, exp.Query)
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    read = {table.name for table in tree.find_all(exp.Table)} - ctes
    assert read, "reads at least one table"
    assert read <= set(TABLES), f"reads tables outside TPC-H: {sorted(read - set(TABLES))}"
