"""What a plan will make a cluster do, read from its bytes: operators, scans, local data, limit, SQL.

The static half of workload-aware placement: ``summarize_plan`` walks the whole relation tree of
an encoded ``spark.connect.Plan`` (root relation, command input, SQL text, zstd-compressed or not)
at any depth, with no protobuf parse, and counts what makes a query expensive. Relations it cannot
weigh (catalog calls, extensions, checkpoints) are counted by name, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor
from pyspark.sql.connect.proto import commands_pb2, expressions_pb2, relations_pb2

from sparkfleet.plan.inspect import inspect_plan, plan_body
from sparkfleet.plan.sql_shape import (
    SqlShape, expression_generators_and_windows, range_row_count, read_sql,
)
from sparkfleet.plan.tree import Node, number_of, walk
from sparkfleet.plan.wire import as_int, as_message, as_str, iter_fields, read_fields, read_repeated

_R = relations_pb2
_E = expressions_pb2.Expression
RELATION = _R.Relation.DESCRIPTOR
COMMAND = commands_pb2.Command.DESCRIPTOR
LITERAL = _E.Literal.DESCRIPTOR.full_name

# Functions that turn one row into many. `flatten` is not one: it flattens an array within a row.
GENERATOR_FUNCTIONS = frozenset({
    "explode", "explode_outer", "posexplode", "posexplode_outer", "inline", "inline_outer", "stack",
})
# Relation types (Relation oneof names) this reader cannot weigh: their cost is not in the plan.
UNWEIGHED_RELATIONS = frozenset({
    "catalog", "extension", "unknown", "ml_relation", "cached_remote_relation",
    "common_inline_user_defined_data_source", "common_inline_user_defined_table_function",
    "unresolved_table_valued_function",
})


def _names(*messages: type) -> frozenset[str]:
    return frozenset(m.DESCRIPTOR.full_name for m in messages)


_JOINS = _names(_R.Join, _R.AsOfJoin, _R.LateralJoin, _R.NearestByJoin)
# Grouped operations, Python grouped UDFs and the DataFrame statistics functions all aggregate.
_AGGREGATES = _names(
    _R.Aggregate, _R.GroupMap, _R.CoGroupMap, _R.ApplyInPandasWithState, _R.StatSummary,
    _R.StatDescribe, _R.StatCrosstab, _R.StatCov, _R.StatCorr, _R.StatApproxQuantile, _R.StatFreqItems,
)
_SORT, _WINDOW = _R.Sort.DESCRIPTOR.full_name, _E.Window.DESCRIPTOR.full_name
_DEDUPLICATE, _SET_OPERATION = _R.Deduplicate.DESCRIPTOR.full_name, _R.SetOperation.DESCRIPTOR.full_name
_REPARTITION = _R.Repartition.DESCRIPTOR.full_name
_REPARTITION_SHUFFLE = number_of(_R.Repartition.DESCRIPTOR, "shuffle")
_REPARTITION_BY_EXPRESSION = _R.RepartitionByExpression.DESCRIPTOR.full_name
_UNPIVOT = _R.Unpivot.DESCRIPTOR.full_name
_FUNCTIONS = _names(_E.UnresolvedFunction, expressions_pb2.CallFunction)
_FUNCTION_NAME = number_of(_E.UnresolvedFunction.DESCRIPTOR, "function_name")
assert _FUNCTION_NAME == number_of(expressions_pb2.CallFunction.DESCRIPTOR, "function_name")
_EXPRESSION_STRING = _E.ExpressionString.DESCRIPTOR.full_name
_EXPRESSION_TEXT = number_of(_E.ExpressionString.DESCRIPTOR, "expression")
_NAMED_TABLE = _R.Read.NamedTable.DESCRIPTOR.full_name
_TABLE_NAME = number_of(_R.Read.NamedTable.DESCRIPTOR, "unparsed_identifier")
_DATA_SOURCE = _R.Read.DataSource.DESCRIPTOR
_SOURCE_FORMAT, _SOURCE_PATHS, _SOURCE_OPTIONS = (
    number_of(_DATA_SOURCE, name) for name in ("format", "paths", "options")
)
_RANGE = _R.Range.DESCRIPTOR
_RANGE_START, _RANGE_END, _RANGE_STEP = (number_of(_RANGE, name) for name in ("start", "end", "step"))
_LOCAL = _R.LocalRelation.DESCRIPTOR.full_name
_LOCAL_DATA = number_of(_R.LocalRelation.DESCRIPTOR, "data")
_CACHED_LOCAL = _R.CachedLocalRelation.DESCRIPTOR.full_name
_CACHED_HASH = number_of(_R.CachedLocalRelation.DESCRIPTOR, "hash")
_CHUNKED_LOCAL = _R.ChunkedCachedLocalRelation.DESCRIPTOR.full_name
_CHUNK_HASHES = number_of(_R.ChunkedCachedLocalRelation.DESCRIPTOR, "dataHashes")
_SQL = _R.SQL.DESCRIPTOR.full_name
_SQL_QUERY = number_of(_R.SQL.DESCRIPTOR, "query")
_SQL_COMMAND = commands_pb2.SqlCommand.DESCRIPTOR.full_name
_SQL_COMMAND_TEXT = number_of(commands_pb2.SqlCommand.DESCRIPTOR, "sql")
_WRITE_COMMANDS = frozenset({"write_operation", "write_operation_v2", "merge_into_table_command"})

# Limit analysis: relations that keep every row (and the row count) of their input, those that
# cap the rows a client receives (and the field holding the cap), and those Spark runs row by row
# so a cap above them stops the scan early.
_ROW_PRESERVING = frozenset({
    "project", "with_columns", "to_df", "subquery_alias", "drop", "with_columns_renamed", "hint",
    "to_schema", "collect_metrics", "with_watermark",
})
_CAPS = {"limit": "limit", "tail": "limit", "show_string": "num_rows", "html_string": "num_rows"}
_NARROW = _ROW_PRESERVING | {"filter", "sample", "offset", "limit", "parse"}
_LEAVES = frozenset({"read", "range", "local_relation", "cached_local_relation", "chunked_cached_local_relation"})
_MAX_CHAIN = 4096  # longer than any plan Spark accepts (1024 levels)


@dataclass(frozen=True, slots=True)
class Scan:
    """One input of a plan: a file ``path``, a catalog ``table``, or another ``source`` (jdbc...)."""

    kind: str  # "path" | "table" | "source"
    name: str  # the path, the table identifier as written, or the source's format
    format: str = ""  # "parquet", "csv"...; "" for a table (the catalog knows)


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """What a plan asks of a cluster. Operator counts include those of its SQL text."""

    kind: str  # "relation" or "command"
    command: str | None  # the command's type, e.g. "write_operation"
    compressed: bool
    joins: int
    aggregates: int
    sorts: int
    windows: int
    shuffles: int  # repartition (with shuffle), repartitionByRange/Expression, DISTRIBUTE/CLUSTER BY
    generators: int  # explode-like functions and unpivot: one row in, many out
    distincts: int  # distinct / dropDuplicates / SELECT DISTINCT
    set_operations: int  # union, intersect, except
    writes: int  # DataFrame writes, MERGE, INSERT / CTAS / UPDATE / DELETE in SQL
    scans: tuple[Scan, ...]
    range_rows: int  # rows generated by spark.range / SQL range(n), summed
    local_bytes: int  # Arrow bytes of local data carried in the plan (createDataFrame)
    local_artifacts: tuple[str, ...]  # hashes of cached local data, sized only by the artifact store
    limit: int | None  # rows that cap the whole result (top-level limit, tail, show)
    limit_stops_scan: bool  # the cap sits on row-by-row operators over a scan: Spark stops early
    sql: tuple[SqlShape, ...]
    relations: tuple[tuple[str, int], ...]  # every relation type in the plan, with its count
    unweighed: tuple[str, ...]  # relation types whose cost the plan cannot tell (catalog, extension...)

    @property
    def unreadable_sql(self) -> int:
        return sum(not shape.readable for shape in self.sql)

    @property
    def blocking_operators(self) -> int:
        """Operators that shuffle or hold their input in memory before producing a row."""
        return self.joins + self.aggregates + self.sorts + self.windows + self.distincts + self.shuffles


def summarize_plan(plan: bytes | memoryview) -> PlanSummary:
    """Summarise an encoded ``spark.connect.Plan``; raises MalformedMessage if it is not one."""
    shape = inspect_plan(plan)
    body = plan_body(plan)
    descriptor = RELATION if shape.kind == "relation" else COMMAND
    tally = _Tally()
    for node in walk(body, descriptor, opaque=frozenset({LITERAL})):
        tally.visit(node)
    if shape.kind == "relation":
        limit, stops = _result_cap(body)
    else:
        limit, stops = _command_cap(body)
    for text in tally.sql_texts:
        tally.sql.append(read_sql(text))
    return tally.summary(shape.kind, shape.command, shape.compressed, limit, stops)


class _Tally:
    """Counts gathered during one walk; turned into a frozen PlanSummary at the end."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.relations: Counter[str] = Counter()
        self.scans: list[Scan] = []
        self.range_rows = 0
        self.local_bytes = 0
        self.artifacts: list[str] = []
        self.sql_texts: list[str] = []
        self.sql: list[SqlShape] = []

    def visit(self, node: Node) -> None:
        name = node.descriptor.full_name
        field = node.field
        if field is not None and field.containing_type is RELATION and field.name != "common":
            self.relations[field.name] += 1
        if name in _JOINS:
            self.counts["joins"] += 1
        elif name in _AGGREGATES:
            self.counts["aggregates"] += 1
        elif name == _SORT:
            self.counts["sorts"] += 1
        elif name == _WINDOW:
            self.counts["windows"] += 1
        elif name == _DEDUPLICATE:
            self.counts["distincts"] += 1
        elif name == _SET_OPERATION:
            self.counts["set_operations"] += 1
        elif name == _REPARTITION_BY_EXPRESSION:
            self.counts["shuffles"] += 1
        elif name == _REPARTITION:
            shuffle = read_fields(node.data, frozenset({_REPARTITION_SHUFFLE})).get(_REPARTITION_SHUFFLE)
            self.counts["shuffles"] += bool(as_int(shuffle))  # coalesce() does not shuffle
        elif name == _UNPIVOT:
            self.counts["generators"] += 1
        elif name in _FUNCTIONS:
            function = as_str(read_fields(node.data, frozenset({_FUNCTION_NAME})).get(_FUNCTION_NAME))
            self.counts["generators"] += function.lower() in GENERATOR_FUNCTIONS
        elif name == _EXPRESSION_STRING:
            text = as_str(read_fields(node.data, frozenset({_EXPRESSION_TEXT})).get(_EXPRESSION_TEXT))
            generators, windows = expression_generators_and_windows(text)
            self.counts["generators"] += generators
            self.counts["windows"] += windows
        else:
            self._visit_input(name, node.data)

    def _visit_input(self, name: str, data: memoryview) -> None:
        if name == _NAMED_TABLE:
            table = as_str(read_fields(data, frozenset({_TABLE_NAME})).get(_TABLE_NAME))
            self._add_scan(Scan("table", table))
        elif name == _DATA_SOURCE.full_name:
            self._visit_data_source(data)
        elif name == _RANGE.full_name:
            fields = read_fields(data, frozenset({_RANGE_START, _RANGE_END, _RANGE_STEP}))
            step = _signed(as_int(fields.get(_RANGE_STEP))) if _RANGE_STEP in fields else 1
            start, end = (_signed(as_int(fields.get(n))) for n in (_RANGE_START, _RANGE_END))
            self.range_rows += range_row_count(start, end, step)
        elif name == _LOCAL:
            data_field = read_fields(data, frozenset({_LOCAL_DATA})).get(_LOCAL_DATA)
            self.local_bytes += 0 if data_field is None else len(as_message(data_field, "local data"))
        elif name == _CACHED_LOCAL:
            self.artifacts.append(as_str(read_fields(data, frozenset({_CACHED_HASH})).get(_CACHED_HASH)))
        elif name == _CHUNKED_LOCAL:
            self.artifacts.extend(as_str(chunk) for chunk in read_repeated(data, _CHUNK_HASHES))
        elif name == _SQL:
            self.sql_texts.append(as_str(read_fields(data, frozenset({_SQL_QUERY})).get(_SQL_QUERY)))
        elif name == _SQL_COMMAND:
            text = as_str(read_fields(data, frozenset({_SQL_COMMAND_TEXT})).get(_SQL_COMMAND_TEXT))
            if text:  # the deprecated form; pyspark 4 sends an input relation, walked on its own
                self.sql_texts.append(text)

    def _visit_data_source(self, data: memoryview) -> None:
        source_format = ""
        paths: list[str] = []
        for field in iter_fields(data):
            if field.number == _SOURCE_FORMAT:
                source_format = as_str(field).lower()
            elif field.number == _SOURCE_PATHS:
                paths.append(as_str(field))
            elif field.number == _SOURCE_OPTIONS:  # map entry {key: 1, value: 2}; load(path) sends "path"
                entry = read_fields(as_message(field, "option"), frozenset({1, 2}))
                if as_str(entry.get(1)).lower() == "path":
                    paths.append(as_str(entry.get(2)))
        for path in paths:
            self._add_scan(Scan("path", path, source_format))
        if not paths:
            self._add_scan(Scan("source", source_format, source_format))

    def _add_scan(self, scan: Scan) -> None:
        if scan not in self.scans:
            self.scans.append(scan)

    def summary(
        self, kind: str, command: str | None, compressed: bool, limit: int | None, stops: bool
    ) -> PlanSummary:
        totals = Counter(self.counts)
        scans = list(self.scans)
        range_rows = self.range_rows
        for shape in self.sql:
            for key in ("joins", "aggregates", "sorts", "windows", "generators", "distincts",
                        "set_operations", "shuffles", "writes"):
                totals[key] += getattr(shape, key)
            range_rows += shape.range_rows
            for sql_scan in shape.scans:
                scan = Scan(sql_scan.kind, sql_scan.name, sql_scan.format)
                if scan not in scans:
                    scans.append(scan)
        totals["writes"] += command in _WRITE_COMMANDS
        return PlanSummary(
            kind=kind, command=command, compressed=compressed,
            joins=totals["joins"], aggregates=totals["aggregates"], sorts=totals["sorts"],
            windows=totals["windows"], shuffles=totals["shuffles"], generators=totals["generators"],
            distincts=totals["distincts"], set_operations=totals["set_operations"], writes=totals["writes"],
            scans=tuple(scans), range_rows=range_rows, local_bytes=self.local_bytes,
            local_artifacts=tuple(self.artifacts), limit=limit, limit_stops_scan=stops and limit is not None,
            sql=tuple(self.sql), relations=tuple(sorted(self.relations.items())),
            unweighed=tuple(sorted(name for name in self.relations if name in UNWEIGHED_RELATIONS)),
        )


def _signed(value: int) -> int:
    """An int64 read as a varint (negative numbers arrive as 64-bit two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _relation_type(relation: bytes | memoryview) -> tuple[str, memoryview] | None:
    """The set oneof of a Relation: its name and its message (``common`` is not the type)."""
    for field in iter_fields(relation):
        descriptor = RELATION.fields_by_number.get(field.number)
        if descriptor is not None and descriptor.name != "common" and isinstance(field.value, memoryview):
            return descriptor.name, field.value
    return None


def _input(type_name: str, body: memoryview) -> memoryview | None:
    """The ``input`` relation of a single-input relation type, None for a leaf or an unknown."""
    descriptor: Descriptor = RELATION.fields_by_name[type_name].message_type
    input_field = descriptor.fields_by_name.get("input")
    if input_field is None:
        return None
    found = read_fields(body, frozenset({input_field.number})).get(input_field.number)
    return None if found is None else as_message(found, f"{type_name}.input")


def _result_cap(relation: bytes | memoryview) -> tuple[int | None, bool]:
    """The row cap on a relation's result, and whether Spark can stop scanning once it is reached."""
    current: bytes | memoryview | None = relation
    for _ in range(_MAX_CHAIN):
        typed = _relation_type(current) if current is not None else None
        if typed is None:
            return None, False
        type_name, body = typed
        if type_name in _CAPS:
            cap_number = number_of(RELATION.fields_by_name[type_name].message_type, _CAPS[type_name])
            cap = as_int(read_fields(body, frozenset({cap_number})).get(cap_number))
            # Tail must read everything to find the last rows; the others stop after `cap` rows.
            return cap, type_name != "tail" and _narrow_to_leaf(_input(type_name, body))
        if type_name == "sql":
            text = as_str(read_fields(body, frozenset({_SQL_QUERY})).get(_SQL_QUERY))
            shape = read_sql(text)
            return shape.limit, shape.limit_stops_scan
        if type_name not in _ROW_PRESERVING:
            return None, False
        current = _input(type_name, body)
    return None, False


def _narrow_to_leaf(relation: memoryview | None) -> bool:
    """Every relation from here down is row-by-row over a single scan (so a cap stops it early)."""
    for _ in range(_MAX_CHAIN):
        typed = _relation_type(relation) if relation is not None else None
        if typed is None:
            return False
        type_name, body = typed
        if type_name in _LEAVES:
            return True
        if type_name not in _NARROW:
            return False
        relation = _input(type_name, body)
    return False


def _command_cap(command: bytes | memoryview) -> tuple[int | None, bool]:
    """The cap of a command's input relation (a write or view of ``df.limit(n)``), if it has one."""
    first = next(iter_fields(command), None)
    descriptor = COMMAND.fields_by_number.get(first.number) if first is not None else None
    if first is None or descriptor is None or descriptor.message_type is None:
        return None, False
    input_field = descriptor.message_type.fields_by_name.get("input")
    if input_field is None or input_field.message_type is not RELATION:
        return None, False
    found = read_fields(as_message(first, descriptor.name), frozenset({input_field.number})).get(input_field.number)
    return (None, False) if found is None else _result_cap(as_message(found, "input"))
