"""The workloads of ``sparkfleet bench upgrade``: over 200 distinct plan shapes, a known subset of
which the new runtime breaks.

The old runtime runs with ANSI mode off (Spark 3's behaviour), the new one with ANSI mode on
(Spark 4's default): the same kind of default change an upgrade brings. Each workload is SQL over
a small temp view ``t(a int, s string, d string)``, or a TPC-H query, or the same statement through
the DataFrame API (which gives another plan shape):

- ``safe``: the same result on both runtimes (the bulk: string, math, date, aggregate, window
  and TPC-H workloads);
- ``injected``: an edge-case value that ANSI mode rejects (a string that is no number, a division
  by zero, an int overflow, an array index out of bounds, a date that does not parse): it fails on
  the new runtime and passes on the old one, so it must be pinned and counted as a regression;
- ``users``: an error on both runtimes (a missing column, a failing assert): the client must get
  it, and nothing may be pinned.

Pure: names and SQL only; the shell (``bench/upgrade.py``) runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

SAFE, INJECTED, USERS = "safe", "injected", "users"

VIEW_ROWS = "(1, 'x', '2024-01-31'), (2, 'yy', '2024-02-29'), (3, 'zzz', '2024-03-15')"

# Scalar expressions over t's columns that give the same result with ANSI mode on and off.
SAFE_EXPRESSIONS = (
    "a + 1", "a * 2", "a - 3", "a % 2", "abs(a - 2)", "pow(a, 2)", "sqrt(a)", "ln(a)", "exp(a)", "round(a / 3, 2)",
    "floor(a / 2)", "ceil(a / 2)", "greatest(a, 2)", "least(a, 2)", "sign(a - 2)", "cast(a as string)",
    "cast(a as double)", "cast(a as bigint) * 1000000", "upper(s)", "lower(s)", "length(s)", "reverse(s)",
    "concat(s, '-', a)", "substr(s, 1, 1)", "lpad(s, 4, '.')", "rpad(s, 4, '.')", "repeat(s, 2)", "trim(s)",
    "instr(s, 'y')", "replace(s, 'z', 'q')", "initcap(s)", "md5(s)", "sha1(s)", "crc32(s)", "hex(a)",
    "to_date(d)", "year(to_date(d))", "month(to_date(d))", "dayofweek(to_date(d))",
    "date_add(to_date(d), 1)", "datediff(to_date(d), to_date('2024-01-01'))", "last_day(to_date(d))",
    "date_format(to_date(d), 'yyyy/MM')", "array(a, a + 1)", "size(array(a, 2, 3))", "map(s, a)['x']",
    "struct(a, s).a", "coalesce(null, a)", "nvl(null, s)", "if(a > 1, 'big', 'small')",
    "case when a = 1 then 'one' else 'more' end", "a between 1 and 2", "s like 'y%'", "s rlike 'z+'",
    "split(s, '')[0]", "element_at(array(a, 2, 3), 1)", "try_cast(s as int)", "try_divide(a, 0)",
    "base64(s)", "ascii(s)",
)

# Expressions ANSI mode rejects and legacy mode answers (with NULL or a wrapped value).
INJECTED_EXPRESSIONS = (
    "cast(concat('n', a) as int)",           # CAST_INVALID_INPUT
    "cast(s as double)",                     # CAST_INVALID_INPUT
    "a / (a - a)",                           # DIVIDE_BY_ZERO
    "a % (a - a)",                           # DIVIDE_BY_ZERO (remainder)
    "2147483647 + a",                        # ARITHMETIC_OVERFLOW
    "element_at(array(a), a + 5)",           # INVALID_ARRAY_INDEX_IN_ELEMENT_AT
    "array(a, 2)[a + 5]",                    # INVALID_ARRAY_INDEX
    "to_date(concat(d, 'x'), 'yyyy-MM-dd')",  # CANNOT_PARSE_TIMESTAMP
)

USERS_EXPRESSIONS = (
    "no_such_column + 1",                    # UNRESOLVED_COLUMN
    "assert_true(a < 0, 'a must be negative')",  # USER_RAISED_EXCEPTION
)

# Query shapes an expression is placed in: each gives the same expression another plan shape.
SHAPES = (
    "SELECT {e} AS v FROM t ORDER BY a",
    "SELECT a, {e} AS v FROM t WHERE a >= 1 ORDER BY a",
    "SELECT max(v) AS m FROM (SELECT {e} AS v FROM t)",
)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    kind: str  # SAFE, INJECTED or USERS
    sql: str
    tpch: bool = False  # reads the TPC-H views instead of t


def workloads(tpch_queries: dict[str, str] | None = None) -> list[Workload]:
    """Every workload, in a fixed order: expressions in each shape, then TPC-H queries."""
    found: list[Workload] = []
    for kind, expressions in ((SAFE, SAFE_EXPRESSIONS), (INJECTED, INJECTED_EXPRESSIONS), (USERS, USERS_EXPRESSIONS)):
        for e_index, expression in enumerate(expressions):
            for s_index, shape in enumerate(SHAPES):
                if kind == SAFE and s_index == 2 and e_index % 2:
                    continue  # keeps the suite's size reasonable; the other shapes cover them
                found.append(Workload(f"{kind}-{e_index:02d}-{s_index}", kind, shape.format(e=expression)))
    for name, sql in sorted((tpch_queries or {}).items()):
        found.append(Workload(f"tpch-{name}", SAFE, sql, tpch=True))
    return found
