"""The workload fingerprint of a plan: the same query shape hashes the same, whatever its parameters.

Past runs of a workload predict its next run only if they can be found again. A client re-sends
the same query with other literal values, fresh plan ids, another call site or its columns in
another order; none of that changes what the cluster must do. The fingerprint is a hash of the
plan's tree with those parts left out, literals (and SQL literals, via sqlglot) as placeholders,
and projection lists order-insensitive. Operators, tables, paths, formats, columns, functions,
join types and grouping all count. Depth-safe: the tree is hashed bottom-up from an explicit walk.
"""

from __future__ import annotations

import hashlib

import sqlglot
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pyspark.sql.connect.proto import commands_pb2, expressions_pb2, relations_pb2

from sparkfleet.plan.inspect import inspect_plan, plan_body
from sparkfleet.plan.relations import COMMAND, LITERAL, RELATION
from sparkfleet.plan.sql_shape import DIALECT, check_sql_length, parse_statements, short_text_cache
from sparkfleet.plan.tree import message_fields, walk
from sparkfleet.plan.wire import LENGTH_DELIMITED, VARINT, iter_fields

FINGERPRINT_BYTES = 8  # 16 hex digits: collisions among one installation's workloads are negligible

_R = relations_pb2
_E = expressions_pb2.Expression
# Messages whose content is not part of the workload: relation/expression metadata (plan id, call
# site) and literal values. They are not walked; a literal hashes as a placeholder.
_METADATA = frozenset({_R.RelationCommon.DESCRIPTOR.full_name, expressions_pb2.ExpressionCommon.DESCRIPTOR.full_name})
_OPAQUE = _METADATA | {LITERAL}
# Fields left out of the hash, by (message, field): ids that change every run and the data that
# createDataFrame carries (its schema stays: data, like a literal, is a parameter of the workload).
_IGNORED_FIELDS = frozenset({
    (_R.Relation.DESCRIPTOR.full_name, "common"),
    (_E.DESCRIPTOR.full_name, "common"),
    (_E.UnresolvedAttribute.DESCRIPTOR.full_name, "plan_id"),
    (_E.UnresolvedStar.DESCRIPTOR.full_name, "plan_id"),
    (_E.UnresolvedRegex.DESCRIPTOR.full_name, "plan_id"),
    (expressions_pb2.SubqueryExpression.DESCRIPTOR.full_name, "plan_id"),
    (_R.CachedRemoteRelation.DESCRIPTOR.full_name, "relation_id"),
    (_R.CachedLocalRelation.DESCRIPTOR.full_name, "hash"),
    (_R.ChunkedCachedLocalRelation.DESCRIPTOR.full_name, "dataHashes"),
    (_R.LocalRelation.DESCRIPTOR.full_name, "data"),
    (_R.CollectMetrics.DESCRIPTOR.full_name, "name"),  # Observation() names itself with a uuid
    (_R.MapPartitions.DESCRIPTOR.full_name, "profile_id"),
})
# Lists whose order does not change the work: projected columns and aggregate outputs.
_UNORDERED_FIELDS = frozenset({
    (_R.Project.DESCRIPTOR.full_name, "expressions"),
    (_R.Aggregate.DESCRIPTOR.full_name, "aggregate_expressions"),
})
# String fields holding SQL text (whole statements) or one SQL expression.
_SQL_TEXT_FIELDS = frozenset({
    (_R.SQL.DESCRIPTOR.full_name, "query"),
    (commands_pb2.SqlCommand.DESCRIPTOR.full_name, "sql"),
})
_SQL_EXPRESSION_FIELDS = frozenset({(_E.ExpressionString.DESCRIPTOR.full_name, "expression")})
_PLACEHOLDER = b"?"
_EXPRESSION = _E.DESCRIPTOR.full_name


def fingerprint(plan: bytes | memoryview) -> str:
    """A short hex id of the workload an encoded ``spark.connect.Plan`` runs (compressed or not)."""
    shape = inspect_plan(plan)
    descriptor = RELATION if shape.kind == "relation" else COMMAND
    tree = tree_digest(plan_body(plan), descriptor)
    return hashlib.blake2b(shape.kind.encode() + tree, digest_size=FINGERPRINT_BYTES).hexdigest()


def tree_digest(message: bytes | memoryview, descriptor: Descriptor) -> bytes:
    """The normalised hash of one message tree, computed children first (no recursion)."""
    nodes = list(walk(message, descriptor, opaque=_OPAQUE))
    children: list[list[tuple[FieldDescriptor, bytes]]] = [[] for _ in nodes]
    digest = b""
    for node in reversed(nodes):  # pre-order reversed: every child is done before its parent
        name = node.descriptor.full_name
        if name == LITERAL:
            digest = _PLACEHOLDER
        elif name in _METADATA:
            digest = b""
        elif name == _EXPRESSION and _is_literal_only(children[node.index]):
            digest = _PLACEHOLDER  # an Expression wrapping a literal is that literal (for collapsing runs)
        else:
            digest = _node_digest(name, node.descriptor, node.data, children[node.index][::-1])
        if node.parent >= 0 and node.field is not None:
            if (node.field.containing_type.full_name, node.field.name) not in _IGNORED_FIELDS:
                children[node.parent].append((node.field, digest))
        children[node.index] = []  # its digests are folded into its own: free them
    return digest


def _is_literal_only(nested: list[tuple[FieldDescriptor, bytes]]) -> bool:
    return len(nested) == 1 and nested[0][1] == _PLACEHOLDER and nested[0][0].name == "literal"


def _node_digest(
    name: str, descriptor: Descriptor, data: memoryview, nested: list[tuple[FieldDescriptor, bytes]]
) -> bytes:
    """Hash of a message from its scalar fields and its children's digests, grouped per field."""
    by_field: dict[int, list[bytes]] = {}
    messages = message_fields(descriptor)
    for field in iter_fields(data):
        described = descriptor.fields_by_number.get(field.number)
        if field.number in messages and field.wire_type == LENGTH_DELIMITED:
            continue  # hashed as a child node
        key = (name, described.name if described is not None else str(field.number))
        if key in _IGNORED_FIELDS:
            continue
        by_field.setdefault(field.number, []).append(_scalar_token(key, field.wire_type, field.value))
    for child_field, digest in nested:
        by_field.setdefault(child_field.number, []).append(digest)
    hasher = hashlib.blake2b(name.encode(), digest_size=16)
    for number in sorted(by_field):
        described = descriptor.fields_by_number.get(number)
        tokens = by_field[number]
        if described is not None and (
            (name, described.name) in _UNORDERED_FIELDS
            or (described.message_type is not None and described.message_type.GetOptions().map_entry)
        ):
            tokens = sorted(tokens)
        tokens = _collapse_placeholders(tokens)
        hasher.update(b"#%d[" % number)
        for token in tokens:
            hasher.update(b"%d:" % len(token))
            hasher.update(token)
        hasher.update(b"]")
    return hasher.digest()


def _scalar_token(key: tuple[str, str], wire_type: int, value: int | memoryview) -> bytes:
    if wire_type != LENGTH_DELIMITED:
        return b"%d/%d" % (wire_type, value) if wire_type != VARINT else b"v%d" % value
    assert isinstance(value, memoryview)
    if key in _SQL_TEXT_FIELDS:
        return b"sql:" + normalize_sql(bytes(value).decode("utf-8", "replace")).encode()
    if key in _SQL_EXPRESSION_FIELDS:
        return b"expr:" + normalize_sql_expression(bytes(value).decode("utf-8", "replace")).encode()
    if len(value) > 64:  # a pickled UDF, a schema: hashed, not copied into the parent's hash input
        return b"h:" + hashlib.blake2b(value, digest_size=16).digest()
    return b"s:" + bytes(value)


def _collapse_placeholders(tokens: list[bytes]) -> list[bytes]:
    """``isin(1, 2, 3)`` and ``isin(4, 5)`` are one workload: a run of literals counts as one."""
    out: list[bytes] = []
    for token in tokens:
        if token == _PLACEHOLDER and out and out[-1] == _PLACEHOLDER:
            continue
        out.append(token)
    return out


# --- SQL -------------------------------------------------------------------------------------------

# Literals that are shape, not parameters: LIMIT/OFFSET counts (like DataFrame.limit(n)), ordinals
# in GROUP BY / ORDER BY (they name a column), and table-function arguments (range(n), like spark.range).
_STRUCTURAL_PARENTS = (
    sqlglot.exp.Limit, sqlglot.exp.Offset, sqlglot.exp.Fetch, sqlglot.exp.Group, sqlglot.exp.Ordered,
)


@short_text_cache(maxsize=2048)
def normalize_sql(text: str) -> str:
    """SQL text with literals as placeholders, select lists sorted, identifiers lower-cased."""
    try:
        return ";\n".join(_normalized(statement) for statement in parse_statements(text))
    except Exception:  # noqa: BLE001 - unreadable SQL is still a workload: fall back to its words
        return "unreadable:" + " ".join(text.lower().split())


@short_text_cache(maxsize=4096)
def normalize_sql_expression(text: str) -> str:
    """One SQL expression (``filter("x > 3")``, ``selectExpr``) normalised like ``normalize_sql``."""
    try:
        check_sql_length(text)
        return _normalized(sqlglot.parse_one(text, dialect=DIALECT))
    except Exception:  # noqa: BLE001 - as above
        return "unreadable:" + " ".join(text.lower().split())


def _normalized(tree: sqlglot.exp.Expression) -> str:
    tree = tree.transform(_parameterize)
    for select in tree.find_all(sqlglot.exp.Select):
        select.set("expressions", sorted(select.expressions, key=lambda e: e.sql(dialect=DIALECT, normalize=True)))
    return tree.sql(dialect=DIALECT, normalize=True, comments=False)


def _parameterize(node: sqlglot.exp.Expression) -> sqlglot.exp.Expression:
    exp = sqlglot.exp
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        node = node.this  # -1 is the literal 1 negated: the same parameter
    if isinstance(node, (exp.Literal, exp.Boolean)):
        parent = node.parent
        if isinstance(parent, _STRUCTURAL_PARENTS):
            return node
        if isinstance(parent, exp.Anonymous) and isinstance(parent.parent, exp.Table):
            return node
        return exp.Placeholder()
    if isinstance(node, exp.In) and node.expressions:
        literals = [e for e in node.expressions if _is_literal(e)]
        if len(literals) > 1:  # `x IN (1, 2, 3)` and `x IN (4, 5)` are one workload
            node.set("expressions", [e for e in node.expressions if not _is_literal(e)] + literals[:1])
    return node


def _is_literal(node: sqlglot.exp.Expression) -> bool:
    return isinstance(node, (sqlglot.exp.Literal, sqlglot.exp.Boolean, sqlglot.exp.Placeholder))
