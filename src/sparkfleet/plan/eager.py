"""Relations that act when they run, read as the SQL statement each one equals.

Most relations are queries, but Spark runs two kinds eagerly: SQL text (``Relation.sql``, which a
client may send for a command) and ``spark.catalog`` calls (``Relation.catalog``): ``setCurrentDatabase``,
``dropTempView``, ``cacheTable``, ``createTable``, ``dropTable``... Both the session journal
(``plan/state.py``) and the retry rules (``plan/writes.py``) must see these, and both already read
SQL text, so a catalog call is translated to the statement with the same effect
(``dropTable("t", ifExists=True)`` is ``DROP TABLE IF EXISTS t``). Catalog calls that only look
(``listTables``, ``tableExists``...) have no statement: they are queries.

Pure and shallow like the rest of ``plan/``.
"""

from __future__ import annotations

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.inspect import decompress
from sparkfleet.plan.wire import (
    LENGTH_DELIMITED, as_int, as_message, as_str, iter_fields, read_fields, read_varint,
)

# Plan.compressed_operation{data, compression_codec}; Relation.common
_PLAN_COMPRESSED, _CO_DATA, _CO_CODEC = 3, 1, 3
_RELATION_COMMON = 1
# Enough decompressed bytes to pass a relation's `common` (plan id, call site) and reach its type.
_RELATION_HEAD_BYTES = 16 * 1024
# Relation.sql: SQL{query}; spark.sql() with DataFrame arguments wraps it in
# Relation{with_relations: WithRelations{root, references}}. Relation.catalog: Catalog{oneof}.
_RELATION_SQL, _SQL_QUERY = 10, 1
_RELATION_WITH_RELATIONS, _WITH_RELATIONS_ROOT = 41, 1
_RELATION_CATALOG = 200
_EAGER_RELATION_TYPES = (_RELATION_SQL, _RELATION_WITH_RELATIONS, _RELATION_CATALOG)
# SqlCommand: sql (deprecated) or input Relation{sql: SQL{query}}
_SQL_TEXT, _SQL_INPUT = 1, 6


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Catalog oneof numbers of the calls that change something -> (their name in pyspark, the SQL with
# the same effect). In each call, field 1 is what it acts on (a table, view, database, catalog or
# path: {name}, or {quoted} as a string) and field 2, where there is one, the call's flag: {if_exists},
# {if_not_exists} or {noscan}. Creating a table over a path writes no data but fails if the table
# exists, like CREATE TABLE; dropTempView answers whether it dropped a view, so a second run is harmless.
_CATALOG_CALLS = {
    2: ("setCurrentDatabase", "USE {name}"),
    13: ("createExternalTable", "CREATE TABLE {name}"),
    14: ("createTable", "CREATE TABLE {name}"),
    15: ("dropTempView", "DROP VIEW IF EXISTS {name}"),
    16: ("dropGlobalTempView", "DROP VIEW IF EXISTS global_temp.{name}"),
    17: ("recoverPartitions", "ALTER TABLE {name} RECOVER PARTITIONS"),
    19: ("cacheTable", "CACHE TABLE {name}"),
    20: ("uncacheTable", "UNCACHE TABLE {name}"),
    21: ("clearCache", "CLEAR CACHE"),
    22: ("refreshTable", "REFRESH TABLE {name}"),
    23: ("refreshByPath", "REFRESH {quoted}"),
    25: ("setCurrentCatalog", "USE CATALOG {name}"),
    27: ("dropTable", "DROP TABLE {if_exists}{name}"),
    28: ("dropView", "DROP VIEW {if_exists}{name}"),
    29: ("createDatabase", "CREATE DATABASE {if_not_exists}{name}"),
    30: ("dropDatabase", "DROP DATABASE {if_exists}{name}"),
    35: ("truncateTable", "TRUNCATE TABLE {name}"),
    36: ("analyzeTable", "ANALYZE TABLE {name} COMPUTE STATISTICS{noscan}"),
}


def catalog_call(catalog: bytes | memoryview) -> tuple[str, str] | None:
    """``(call name, equivalent SQL)`` of a Catalog message that changes something; None for a look-up."""
    field = next(iter_fields(catalog), None)
    if field is None or field.number not in _CATALOG_CALLS:
        return None
    name, template = _CATALOG_CALLS[field.number]
    fields = read_fields(as_message(field, "catalog call"), frozenset({1, 2}))
    # Field 2 is a flag only where the statement has one (createTable's field 2 is its path).
    has_flag = any(f"{{{flag}}}" in template for flag in ("if_exists", "if_not_exists", "noscan"))
    target, flag = as_str(fields.get(1)), has_flag and bool(as_int(fields.get(2)))
    return name, template.format(
        name=target, quoted=_quoted(target), if_exists="IF EXISTS " if flag else "",
        if_not_exists="IF NOT EXISTS " if flag else "", noscan=" NOSCAN" if flag else "",
    )


def relation_sql(relation: bytes | memoryview) -> str | None:
    """The SQL text of a SQL relation (bare or under with_relations), None for any other relation."""
    while True:  # a loop, not recursion: wrappers may nest as deep as a client likes
        fields = read_fields(relation, frozenset({_RELATION_SQL, _RELATION_WITH_RELATIONS}))
        if _RELATION_SQL in fields:
            sql = as_message(fields[_RELATION_SQL], "sql")
            return as_str(read_fields(sql, frozenset({_SQL_QUERY})).get(_SQL_QUERY))
        if _RELATION_WITH_RELATIONS not in fields:
            return None
        wrapper = as_message(fields[_RELATION_WITH_RELATIONS], "with_relations")
        root = read_fields(wrapper, frozenset({_WITH_RELATIONS_ROOT})).get(_WITH_RELATIONS_ROOT)
        if root is None:
            return None
        relation = as_message(root, "with_relations.root")


def eager_statement(relation: bytes | memoryview) -> tuple[str, str] | None:
    """``(what the client called, the SQL it equals)`` for a relation Spark runs eagerly, else None.

    Only the top relation is looked at: pyspark sends a command's SQL as a SqlCommand and wraps its
    result in a local relation, so SQL nested deeper in a query is a query.
    """
    catalog = read_fields(relation, frozenset({_RELATION_CATALOG})).get(_RELATION_CATALOG)
    if catalog is not None:
        call = catalog_call(as_message(catalog, "catalog"))
        return None if call is None else (f"spark.catalog.{call[0]}", call[1])
    sql = relation_sql(relation)
    return None if sql is None else ("SQL", sql)


def sql_of_command(sql_command: bytes | memoryview) -> str:
    """The SQL text of a SqlCommand, from its input relation or its deprecated text field."""
    fields = read_fields(sql_command, frozenset({_SQL_TEXT, _SQL_INPUT}))
    if _SQL_INPUT in fields:
        sql = relation_sql(as_message(fields[_SQL_INPUT], "sql_command.input"))
        if sql is not None:
            return sql
    return as_str(fields.get(_SQL_TEXT))


def _relation_type(head: bytes) -> int | None:
    """The type field's number of a Relation from its first bytes; None if they do not reach it."""
    pos = 0
    try:
        while pos < len(head):
            key, pos = read_varint(head, pos)
            if key >> 3 != _RELATION_COMMON:
                return key >> 3
            if key & 7 != LENGTH_DELIMITED:
                return None
            length, pos = read_varint(head, pos)
            pos += length
    except MalformedMessage:
        return None
    return None


def is_plain_compressed_query(plan: bytes | memoryview) -> bool:
    """A compressed relation that Spark does not run eagerly, told from its first 16 KB.

    Every request is read, and a compressed plan is one above the client's size threshold:
    inflating it whole for a query would cost what ``inspect_plan`` avoids. Clients write a
    relation's single type field right after ``common``, so the head shows it.
    """
    compressed = read_fields(plan, frozenset({_PLAN_COMPRESSED})).get(_PLAN_COMPRESSED)
    if compressed is None:
        return False
    parts = read_fields(as_message(compressed, "compressed_operation"), frozenset({_CO_DATA, _CO_CODEC}))
    data = as_message(parts[_CO_DATA], "data") if _CO_DATA in parts else memoryview(b"")
    relation_type = _relation_type(decompress(data, as_int(parts.get(_CO_CODEC)), limit=_RELATION_HEAD_BYTES))
    return relation_type is not None and relation_type not in _EAGER_RELATION_TYPES
