"""What one SQL text does, read with sqlglot: tables it scans, joins, aggregates, sorts, windows, limit.

The plan summary counts the operators of SQL text (``spark.sql``, ``Relation.sql``) like those of
a DataFrame plan. SQL is untrusted text and sqlglot a third-party parser: any failure to read it
yields a shape that says so (``readable=False``), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Callable, TypeVar

import sqlglot
from sqlglot import exp

DIALECT = "spark"
# `SELECT * FROM parquet.`/data/x`` reads a path: the "database" names the file format.
FILE_FORMATS = frozenset({"parquet", "csv", "json", "orc", "text", "avro", "binaryfile", "delta"})
# Functions that turn one row into many (a generator); `flatten` is left out: it flattens an
# array inside one row and does not multiply rows.
GENERATORS = (exp.Explode, exp.Inline, exp.Stack, exp.Unnest)
_WRITES = (exp.Insert, exp.Merge, exp.Update, exp.Delete)
# SQL text longer than this is not parsed: sqlglot takes seconds and hundreds of MB per 100 KB of
# dense text (measured: 2 MB of `1+1+...` took 95 s and 2.3 GB), and any client may send it.
MAX_SQL_CHARS = 64 * 1024
# Results are cached only for texts up to this long: a cache key holds its text.
_CACHED_CHARS = 4096
T = TypeVar("T")


class SqlTooLong(ValueError):
    """SQL text the gateway does not parse (callers read it as unreadable SQL)."""


def check_sql_length(text: str) -> None:
    if len(text) > MAX_SQL_CHARS:
        raise SqlTooLong(f"SQL text of {len(text):,} characters is longer than the {MAX_SQL_CHARS:,} the gateway reads")


def short_text_cache(maxsize: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """``lru_cache`` of a function of one text that keeps only results of short texts."""

    def decorate(fn: Callable[[str], T]) -> Callable[[str], T]:
        cached = lru_cache(maxsize=maxsize)(fn)

        @wraps(fn)
        def call(text: str) -> T:
            return cached(text) if len(text) <= _CACHED_CHARS else fn(text)

        return call

    return decorate


@dataclass(frozen=True, slots=True)
class SqlScan:
    """A table or file path one SQL text reads (``format`` is set for ``parquet.`path```)."""

    kind: str  # "table" or "path"
    name: str
    format: str = ""


@dataclass(frozen=True, slots=True)
class SqlShape:
    """The operators of one SQL text; ``readable`` is False when sqlglot could not parse it."""

    text: str
    readable: bool
    scans: tuple[SqlScan, ...] = ()
    ctes: tuple[str, ...] = ()
    joins: int = 0
    aggregates: int = 0
    sorts: int = 0
    windows: int = 0
    generators: int = 0
    distincts: int = 0
    set_operations: int = 0
    shuffles: int = 0
    writes: int = 0
    range_rows: int = 0
    limit: int | None = None  # LIMIT of the last statement's outermost query
    limit_stops_scan: bool = False  # that LIMIT sits on a plain scan: Spark stops reading early
    error: str = ""


def parse_statements(text: str) -> list[exp.Expression]:
    """The statements of ``text``; raises SqlTooLong or whatever sqlglot raises (callers decide
    what that means)."""
    check_sql_length(text)
    return [statement for statement in sqlglot.parse(text, dialect=DIALECT) if statement is not None]


@short_text_cache(maxsize=1024)
def read_sql(text: str) -> SqlShape:
    """The shape of SQL text; unreadable SQL gives ``readable=False`` and the parser's complaint."""
    try:
        statements = parse_statements(text)
        return _shape(text, statements)
    except Exception as exc:  # noqa: BLE001 - any parser failure (syntax, recursion) means "could not read"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SqlShape(text=text, readable=False, error=first_line[:200])


@short_text_cache(maxsize=4096)
def expression_generators_and_windows(text: str) -> tuple[int, int]:
    """(generators, windows) in one SQL expression string (``selectExpr``, ``expr``); (0, 0) if unreadable."""
    try:
        check_sql_length(text)
        tree = sqlglot.parse_one(text, dialect=DIALECT)
    except Exception:  # noqa: BLE001 - an unreadable expression string just adds nothing
        return 0, 0
    return len(list(tree.find_all(*GENERATORS))), len(list(tree.find_all(exp.Window)))


def _shape(text: str, statements: list[exp.Expression]) -> SqlShape:
    ctes = tuple(sorted({cte.alias_or_name.lower() for s in statements for cte in s.find_all(exp.CTE)}))
    scans: list[SqlScan] = []
    range_rows = 0
    for statement in statements:
        for table in statement.find_all(exp.Table):
            if table.find_ancestor(exp.From, exp.Join) is None:
                continue  # a write target, a DROP, a DESCRIBE: named, not read
            if isinstance(table.this, exp.Anonymous):
                range_rows += _range_rows(table.this)
                continue
            scan = _scan_of(table, ctes)
            if scan is not None and scan not in scans:
                scans.append(scan)
    last = statements[-1] if statements else None
    limit = _limit_of(last)
    counts = {
        "joins": _count(statements, exp.Join),
        "aggregates": sum(_is_aggregate(select) for s in statements for select in s.find_all(exp.Select)),
        "sorts": sum(not isinstance(o.parent, exp.Window) for s in statements for o in s.find_all(exp.Order))
        + _count(statements, exp.Sort),
        "windows": _count(statements, exp.Window),
        "generators": _count(statements, *GENERATORS),
        "distincts": sum(bool(sel.args.get("distinct")) for s in statements for sel in s.find_all(exp.Select)),
        "set_operations": _count(statements, exp.SetOperation),
        "shuffles": _count(statements, exp.Distribute, exp.Cluster),
        "writes": sum(_is_write(s) for s in statements),
    }
    plain = counts["joins"] + counts["aggregates"] + counts["sorts"] + counts["windows"] == 0
    plain = plain and counts["distincts"] + counts["set_operations"] + counts["shuffles"] == 0
    return SqlShape(
        text=text, readable=True, scans=tuple(scans), ctes=ctes, range_rows=range_rows, limit=limit,
        limit_stops_scan=limit is not None and plain and len(statements) == 1, **counts,
    )


def _count(statements: list[exp.Expression], *kinds: type[exp.Expression]) -> int:
    return sum(1 for statement in statements for _ in statement.find_all(*kinds))


def _is_write(statement: exp.Expression) -> bool:
    if isinstance(statement, _WRITES):
        return True
    return isinstance(statement, exp.Create) and statement.args.get("expression") is not None


def _is_aggregate(select: exp.Select) -> bool:
    """GROUP BY, or an aggregate function of this SELECT's own list outside any window."""
    if select.args.get("group"):
        return True
    for projection in select.expressions:
        for agg in projection.find_all(exp.AggFunc):
            if agg.find_ancestor(exp.Window, exp.Select) is select:
                return True
    return False


def _scan_of(table: exp.Table, ctes: tuple[str, ...]) -> SqlScan | None:
    parts = [part for part in (table.catalog, table.db, table.name) if part]
    if not parts:
        return None
    if len(parts) == 1 and parts[0].lower() in ctes:
        return None  # a CTE: its tables are counted where it is defined
    if len(parts) == 2 and parts[0].lower() in FILE_FORMATS:
        return SqlScan("path", parts[1], parts[0].lower())
    return SqlScan("table", ".".join(parts))


def _range_rows(function: exp.Anonymous) -> int:
    """Rows of ``range(end)``, ``range(start, end[, step])`` with literal bounds; 0 otherwise."""
    if str(function.this).lower() != "range":
        return 0
    try:
        bounds = [int(arg.this) for arg in function.expressions if isinstance(arg, exp.Literal)]
    except ValueError:
        return 0
    if len(bounds) != len(function.expressions) or not 1 <= len(bounds) <= 4:
        return 0
    start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (bounds[0], bounds[1], 1)
    if len(bounds) >= 3:
        step = bounds[2]
    return range_row_count(start, end, step)


def range_row_count(start: int, end: int, step: int) -> int:
    """Rows ``range(start, end, step)`` yields (0 for an empty or invalid range)."""
    if step == 0:
        return 0
    return max(0, -((start - end) // step))  # ceil((end - start) / step), for either sign of step


def _limit_of(statement: exp.Expression | None) -> int | None:
    if statement is None or not isinstance(statement, exp.Query):
        return None
    limit = statement.args.get("limit")
    value = limit.expression if isinstance(limit, exp.Limit) else None
    if isinstance(value, exp.Literal) and not value.is_string:
        try:
            return int(value.this)
        except ValueError:
            return None
    return None
