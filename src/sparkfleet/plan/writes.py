"""What running a request again would do outside the session: read, session state, write or command.

Pure and shallow like ``plan/state.py``: request bytes in, a :class:`QueryIntent` out, reading only
the top levels of the plan. The recovery policy (``policy/recovery.py``) decides from the intent
whether a query that lost its cluster may run again elsewhere, so every doubt here resolves to the
answer that forbids a retry: an unknown statement is a non-idempotent command, never a read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.inspect import COMMAND_NAMES, decompress, inspect_plan, plan_body
from sparkfleet.plan.state import Pin, sql_effects
from sparkfleet.plan.wire import (
    LENGTH_DELIMITED, VARINT, Field, as_message, as_str, iter_fields, read_fields, read_repeated, read_varint,
)

# ExecutePlanRequest.plan; Plan.compressed_operation{data, compression_codec}; Relation.common
_EXEC_PLAN = 3
_PLAN_COMPRESSED, _CO_DATA, _CO_CODEC = 3, 1, 3
_RELATION_COMMON = 1
# Enough decompressed bytes to pass a relation's `common` (plan id, call site) and reach its type.
_RELATION_HEAD_BYTES = 16 * 1024
# Command oneof
_REGISTER_FUNCTION, _WRITE, _CREATE_VIEW, _WRITE_V2, _SQL_COMMAND = 1, 2, 3, 4, 5
_REGISTER_TABLE_FUNCTION, _REGISTER_DATA_SOURCE, _MERGE_INTO = 10, 12, 16
# WriteOperation, its SaveTable and its options map entries
_W_SOURCE, _W_PATH, _W_TABLE, _W_MODE, _W_OPTIONS = 2, 3, 4, 5, 9
_SAVE_TABLE_NAME, _SAVE_TABLE_METHOD = 1, 2
_SAVE_AS_TABLE = 1
_MAP_KEY, _MAP_VALUE = 1, 2
# WriteOperationV2
_W2_TABLE_NAME, _W2_MODE = 2, 7
# CreateDataFrameViewCommand; the name of a UDF, UDTF or data source is field 1 of each
_VIEW_NAME, _VIEW_IS_GLOBAL = 2, 3
# MergeIntoTableCommand
_MERGE_TARGET = 1
# SqlCommand: sql (deprecated) or input Relation{sql: SQL{query}}; spark.sql() with DataFrame
# arguments wraps that relation in Relation{with_relations: WithRelations{root, references}}.
_SQL_TEXT, _SQL_INPUT, _RELATION_SQL, _SQL_QUERY = 1, 6, 10, 1
_RELATION_WITH_RELATIONS, _WITH_RELATIONS_ROOT = 41, 1

# What a second run could do, in words for the user.
DUPLICATES_DATA = "re-running it could duplicate data"
APPLIES_TWICE = "re-running it could apply its changes twice"
FAILS_IF_CREATED = "re-running it would fail if the first attempt created the target, hiding that it succeeded"
FAILS_IF_DROPPED = "re-running it would fail if the first attempt already dropped the target"
UNKNOWN_EFFECT = "sparkfleet cannot tell what re-running it would change"
SKIPS_IF_CREATED = (
    "re-running it would skip the write if the first attempt left the target behind, "
    "so its data could silently be missing"
)


@dataclass(frozen=True, slots=True)
class QueryIntent:
    """What a request does beyond the session, as far as re-running it is concerned.

    ``kind`` is "read", "session_state", "write" or "command" (anything not understood).
    ``idempotent``: a second run leaves the outside world as one run does.
    ``needs_absent_target``: safe to re-run only while ``target`` does not exist (errorifexists,
    CREATE without IF NOT EXISTS). ``target_kind`` says which catalog ``target`` lives in: "table"
    (tables and views), "path", "schema", "function", or "" when the target is unknown.
    ``rerun_risk`` says what a second run could do when it is not safe; "" when it is.
    """

    kind: str
    description: str
    idempotent: bool = False
    needs_absent_target: bool = False
    target: str = ""
    target_kind: str = ""
    rerun_risk: str = ""


READ = QueryIntent("read", "read", idempotent=True)


def _session_state(change: str) -> QueryIntent:
    # One prefix for every session-state description: stored query records tell them by it.
    return QueryIntent("session_state", f"session state change: {change}", idempotent=True)


def _command(description: str) -> QueryIntent:
    return QueryIntent("command", description, rerun_risk=UNKNOWN_EFFECT)


# ---- SQL text -------------------------------------------------------------------------------------

_SPECIAL = re.compile(r"['\"`;]|--|/\*")


# The rest of a quoted text after its opening quote (backslash escapes in strings, as in Spark).
_QUOTE_REST = {
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*'", re.S),
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S),
    "`": re.compile(r"[^`]*`"),
}
_COMMENT_MARK = re.compile(r"/\*|\*/")


def _quote_end(sql: str, start: int) -> int:
    """Index just past the string or identifier quoted at ``start`` (the end if it never closes)."""
    rest = _QUOTE_REST[sql[start]].match(sql, start + 1)
    return len(sql) if rest is None else rest.end()


def _comment_end(sql: str, start: int) -> int:
    """Index just past the /* comment */ at ``start``; Spark lets these nest."""
    depth = 0
    for mark in _COMMENT_MARK.finditer(sql, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return len(sql)


def _statements(sql: str) -> list[str]:
    """The statements of ``sql``: comments blanked, quoted text kept, split at semicolons."""
    statements: list[str] = []
    pieces: list[str] = []
    pos = 0
    while (found := _SPECIAL.search(sql, pos)) is not None:
        start = found.start()
        pieces.append(sql[pos:start])
        token = found.group()
        if token == ";":
            statements.append("".join(pieces))
            pieces, pos = [], start + 1
        elif token == "--":
            newline = sql.find("\n", start)
            pieces.append(" ")
            pos = len(sql) if newline < 0 else newline + 1
        elif token == "/*":
            pieces.append(" ")
            pos = _comment_end(sql, start)
        else:
            pos = _quote_end(sql, start)
            pieces.append(sql[start:pos])
    pieces.append(sql[pos:])
    statements.append("".join(pieces))
    return [text.strip() for text in statements if text.strip()]


_PAREN_OR_QUOTE = re.compile(r"[()'\"`]")


def _paren_end(text: str, start: int) -> int | None:
    """Index just past the parenthesis opened at ``start``, skipping quoted text; None if unclosed."""
    depth, pos = 0, start
    while (found := _PAREN_OR_QUOTE.search(text, pos)) is not None:
        char = found.group()
        if char in "'\"`":
            pos = _quote_end(text, found.start())
            continue
        depth += 1 if char == "(" else -1
        pos = found.end()
        if depth == 0:
            return pos
    return None


_NAME = r"((?:`[^`]*`|[\w.])+)"  # db.t, `my db`.`t`, parquet.`/data/x`
_CTE_NAME = re.compile(r"\s*(?:`[^`]*`|\w)+\s*")
_CTE_AS = re.compile(r"\s*(as\b)?\s*", re.I)  # AS is optional before a CTE's body
_WITH = re.compile(r"^with\s+(recursive\s+)?", re.I)


def _after_ctes(text: str) -> str | None:
    """The statement a WITH clause leads to (an INSERT as well as a SELECT); None if unreadable."""
    match = _WITH.match(text)
    pos = match.end() if match else 0
    while True:
        name = _CTE_NAME.match(text, pos)
        if name is None:
            return None
        pos = name.end()
        if text.startswith("(", pos):  # column aliases: name (a, b) AS (...)
            aliases_end = _paren_end(text, pos)
            if aliases_end is None:
                return None
            pos = aliases_end
        optional_as = _CTE_AS.match(text, pos)
        pos = optional_as.end() if optional_as else pos
        body_end = _paren_end(text, pos) if text.startswith("(", pos) else None
        if body_end is None:
            return None
        rest = text[body_end:].lstrip()
        if not rest.startswith(","):
            return rest
        pos = len(text) - len(rest) + 1


_READ = re.compile(r"^(select|show|describe|desc|explain|values|table|list)\b", re.I)
_FROM_FIRST = re.compile(r"^from\b", re.I)
_TEMP_CREATE = re.compile(r"^create\s+(or\s+replace\s+)?(global\s+)?temp(orary)?\s", re.I)
_SESSION_VERB = re.compile(r"^(set|reset|use|declare)\b", re.I)
_DROP = re.compile(
    rf"^drop\s+(table|view|materialized\s+view|schema|database|namespace|function)\s+(if\s+exists\s+)?{_NAME}",
    re.I,
)
_CREATE = re.compile(
    r"^(create\s+or\s+replace|create|replace)\s+(external\s+)?"
    rf"(table|view|materialized\s+view|schema|database|namespace|function)\s+(if\s+not\s+exists\s+)?{_NAME}",
    re.I,
)
_CTAS = re.compile(r"\bas\s*\(?\s*(select|with|from|values|table)\b", re.I)
_INSERT_DIRECTORY = re.compile(
    r"^insert\s+overwrite\s+(local\s+)?directory\b\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")?", re.I
)
_INSERT = re.compile(rf"^insert\s+(into|overwrite)\s+(table\s+)?{_NAME}(\s+replace\s+where\b)?", re.I)
_MERGE = re.compile(rf"^merge\s+(with\s+schema\s+evolution\s+)?into\s+{_NAME}", re.I)
_UPDATE = re.compile(rf"^update\s+{_NAME}", re.I)
_DELETE = re.compile(rf"^delete\s+from\s+{_NAME}", re.I)
_TRUNCATE = re.compile(rf"^truncate\s+table\s+{_NAME}", re.I)
_TARGET_KINDS = {"schema": "schema", "database": "schema", "namespace": "schema", "function": "function"}


def _words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def _upper(keywords: str) -> str:
    return " ".join(keywords.split()).upper()


def classify_sql(sql: str) -> QueryIntent:
    """Intent of one SQL text; a script of several statements is a command (never retried)."""
    statements = _statements(sql)
    if not statements:
        return _command("empty SQL statement")
    if len(statements) > 1:
        return _command(f"SQL script of {len(statements)} statements")
    return _classify_statement(statements[0])


_OPENING_PARENS = re.compile(r"^[\s(]+")  # a parenthesised query is still a query


def _classify_statement(text: str) -> QueryIntent:
    text = _OPENING_PARENS.sub("", text)
    while _WITH.match(text):  # a loop, not recursion: the text decides how often this repeats
        body = _after_ctes(text)
        if not body:
            return _command(f"SQL statement {_words(text, 3)}")
        text = _OPENING_PARENS.sub("", body)
    if _READ.match(text):
        return READ
    if _FROM_FIRST.match(text):
        # FROM src INSERT ... is Hive's multi-table insert; a FROM that names no INSERT is a query.
        if re.search(r"\binsert\b", text, re.I):
            return _command("multi-table insert FROM ... INSERT")
        return READ
    if (match := _DROP.match(text)) is not None:
        # Before the session-state rules: DROP VIEW may drop a permanent view from the catalog.
        kind, if_exists, name = match.groups()
        return QueryIntent(
            "write", f"DROP {_upper(kind)} {'IF EXISTS ' if if_exists else ''}{name}",
            idempotent=bool(if_exists), target=name, target_kind=_TARGET_KINDS.get(kind.lower(), "table"),
            rerun_risk="" if if_exists else FAILS_IF_DROPPED,
        )
    if effects := sql_effects(text):
        # Keys, not text: a SET's value may be a secret and reasons end up in logs.
        keys = [change.reason if isinstance(change, Pin) else change.key for change in effects]
        return _session_state(', '.join(keys))
    if _TEMP_CREATE.match(text):  # e.g. CREATE TEMPORARY TABLE ... USING, which the journal does not know
        return _session_state(_words(text, 4))
    if _SESSION_VERB.match(text):
        return _session_state(_upper(_words(text, 1)))
    return _classify_sql_write(text)


def _classify_sql_write(text: str) -> QueryIntent:
    if (match := _CREATE.match(text)) is not None:
        verb, external, kind, if_not_exists, name = match.groups()
        safe = bool(if_not_exists) or verb.lower() != "create"  # IF NOT EXISTS, OR REPLACE, REPLACE
        keywords = " ".join(part for part in (verb, external, kind, if_not_exists) if part)
        as_select = " AS SELECT" if _CTAS.search(text, match.end()) else ""
        return QueryIntent(
            "write", f"{_upper(keywords)} {name}{as_select}", idempotent=safe, needs_absent_target=not safe,
            target=name, target_kind=_TARGET_KINDS.get(kind.lower(), "table"),
            rerun_risk="" if safe else FAILS_IF_CREATED,
        )
    if (match := _INSERT_DIRECTORY.match(text)) is not None:
        local, path = match.groups()
        target = path[1:-1] if path else ""
        where = f"{'local ' if local else ''}directory {target}".rstrip()
        return QueryIntent("write", f"INSERT OVERWRITE {where}", idempotent=True, target=target,
                           target_kind="path" if target else "")
    if (match := _INSERT.match(text)) is not None:
        mode, _, name, replace_where = match.groups()
        # INSERT INTO t REPLACE WHERE ... overwrites the rows it selects, like INSERT OVERWRITE.
        overwrite = mode.lower() == "overwrite" or bool(replace_where)
        label = "INSERT OVERWRITE" if mode.lower() == "overwrite" else "INSERT INTO"
        return QueryIntent(
            "write", f"{label} {name}{' REPLACE WHERE' if replace_where else ''}", idempotent=overwrite,
            target=name, target_kind="table", rerun_risk="" if overwrite else DUPLICATES_DATA,
        )
    for pattern, label in ((_MERGE, "MERGE INTO"), (_UPDATE, "UPDATE"), (_DELETE, "DELETE FROM")):
        if (match := pattern.match(text)) is not None:
            name = match.groups()[-1]
            return QueryIntent("write", f"{label} {name}", target=name, target_kind="table",
                               rerun_risk=APPLIES_TWICE)
    if (match := _TRUNCATE.match(text)) is not None:
        name = match.group(1)
        return QueryIntent("write", f"TRUNCATE TABLE {name}", idempotent=True, target=name, target_kind="table")
    return _command(f"SQL statement {_words(text, 3)}")


# ---- requests -------------------------------------------------------------------------------------

_SAVE_MODES = {1: "append", 2: "overwrite", 3: "errorifexists", 4: "ignore"}
# WriteOperationV2.Mode -> (words, idempotent, needs an absent target)
_V2_MODES = {
    1: ("create", False, True),
    2: ("overwrite", True, False),
    3: ("overwrite-partitions", True, False),
    4: ("append", False, False),
    5: ("replace", True, False),
    6: ("create-or-replace", True, False),
}


def _enum(fields: dict[int, Field], number: int) -> int:
    field = fields.get(number)
    if field is None:
        return 0
    if field.wire_type != VARINT or not isinstance(field.value, int):
        raise MalformedMessage(f"enum field {number} has wire type {field.wire_type}")
    return field.value


def _path_option(write: memoryview) -> str:
    """The ``path`` option, which ``save()`` without an argument writes to; option keys ignore case."""
    for entry in read_repeated(write, _W_OPTIONS):
        pair = read_fields(as_message(entry, "options"), frozenset({_MAP_KEY, _MAP_VALUE}))
        if as_str(pair.get(_MAP_KEY)).lower() == "path":
            return as_str(pair.get(_MAP_VALUE))
    return ""


def _write_operation(write: memoryview) -> QueryIntent:
    """DataFrameWriter: save / saveAsTable / insertInto with a save mode."""
    fields = read_fields(write, frozenset({_W_SOURCE, _W_PATH, _W_TABLE, _W_MODE}))
    # A client that names no mode gets Spark's default, errorifexists.
    mode = _SAVE_MODES.get(_enum(fields, _W_MODE) or 3)
    source = as_str(fields.get(_W_SOURCE))
    method = ""
    if _W_TABLE in fields:
        table = read_fields(as_message(fields[_W_TABLE], "table"), frozenset({_SAVE_TABLE_NAME, _SAVE_TABLE_METHOD}))
        target, target_kind = as_str(table.get(_SAVE_TABLE_NAME)), "table"
        if _enum(table, _SAVE_TABLE_METHOD) != _SAVE_AS_TABLE:
            # insertInto overwrites in overwrite mode and appends in every other one.
            method = "insertInto"
            mode = "overwrite" if mode == "overwrite" else "append"
    else:
        target = as_str(fields.get(_W_PATH)) or _path_option(write)
        target_kind = "path" if target else ""
    how = ", ".join(part for part in (method, source) if part)
    where = f"{target_kind} {target}" if target else "an unnamed target"
    if mode is None:
        return QueryIntent("write", f"write with an unknown save mode to {where}", target=target,
                           target_kind=target_kind, rerun_risk=UNKNOWN_EFFECT)
    description = f"{mode} write{f' ({how})' if how else ''} to {where}"
    if mode == "overwrite":
        return QueryIntent("write", description, idempotent=True, target=target, target_kind=target_kind)
    if mode == "ignore":
        # Ignore skips the write when the target exists, and a failed attempt may have created it
        # without committing: re-run only while the target is still absent.
        return QueryIntent("write", description, needs_absent_target=True, target=target,
                           target_kind=target_kind, rerun_risk=SKIPS_IF_CREATED)
    if mode == "errorifexists":
        return QueryIntent("write", description, needs_absent_target=True, target=target,
                           target_kind=target_kind, rerun_risk=FAILS_IF_CREATED)
    return QueryIntent("write", description, target=target, target_kind=target_kind, rerun_risk=DUPLICATES_DATA)


def _write_operation_v2(write: memoryview) -> QueryIntent:
    """DataFrameWriterV2: df.writeTo(table).append() / .create() / .overwrite(...) / ..."""
    fields = read_fields(write, frozenset({_W2_TABLE_NAME, _W2_MODE}))
    target = as_str(fields.get(_W2_TABLE_NAME))
    known = _V2_MODES.get(_enum(fields, _W2_MODE))
    if known is None:
        return QueryIntent("write", f"write with an unknown mode to table {target}", target=target,
                           target_kind="table", rerun_risk=UNKNOWN_EFFECT)
    words, idempotent, needs_absent = known
    risk = "" if idempotent else FAILS_IF_CREATED if needs_absent else DUPLICATES_DATA
    return QueryIntent("write", f"{words} write to table {target}", idempotent=idempotent,
                       needs_absent_target=needs_absent, target=target, target_kind="table", rerun_risk=risk)


def _relation_sql(relation: bytes | memoryview) -> str | None:
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


def _sql_of_command(sql_command: memoryview) -> str:
    fields = read_fields(sql_command, frozenset({_SQL_TEXT, _SQL_INPUT}))
    if _SQL_INPUT in fields:
        sql = _relation_sql(as_message(fields[_SQL_INPUT], "sql_command.input"))
        if sql is not None:
            return sql
    return as_str(fields.get(_SQL_TEXT))


def _name(message: memoryview, number: int = 1) -> str:
    return as_str(read_fields(message, frozenset({number})).get(number))


def classify_command(command: bytes | memoryview) -> QueryIntent:
    """Intent of a ``spark.connect.Command`` (the body of an ExecutePlan command plan)."""
    field = next(iter_fields(command), None)
    if field is None:
        return _command("empty command")
    body = as_message(field, "command")
    number = field.number
    if number == _WRITE:
        return _write_operation(body)
    if number == _WRITE_V2:
        return _write_operation_v2(body)
    if number == _SQL_COMMAND:
        return classify_sql(_sql_of_command(body))
    if number == _MERGE_INTO:
        target = _name(body, _MERGE_TARGET)
        return QueryIntent("write", f"merge into table {target}", target=target, target_kind="table",
                           rerun_risk=APPLIES_TWICE)
    if number == _CREATE_VIEW:
        view = read_fields(body, frozenset({_VIEW_NAME, _VIEW_IS_GLOBAL}))
        is_global = _VIEW_IS_GLOBAL in view and bool(view[_VIEW_IS_GLOBAL].value)
        return _session_state(f"create {'global ' if is_global else ''}temp view {as_str(view.get(_VIEW_NAME))}")
    if number == _REGISTER_FUNCTION:
        return _session_state(f"register function {_name(body)}")
    if number == _REGISTER_TABLE_FUNCTION:
        return _session_state(f"register table function {_name(body)}")
    if number == _REGISTER_DATA_SOURCE:
        return _session_state(f"register data source {_name(body)}")
    return _command(f"{COMMAND_NAMES.get(number, f'command_{number}')} command")


def _classify_relation(relation: bytes | memoryview) -> QueryIntent:
    """A relation is a read, unless it is SQL text that Spark runs eagerly (``spark.sql`` of a command).

    Only the top relation is looked at: pyspark sends a command's SQL as a SqlCommand and wraps its
    result in a local relation, so SQL nested deeper in a query is a query.
    """
    sql = _relation_sql(relation)
    return READ if sql is None else classify_sql(sql)


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


def _is_plain_compressed_query(plan: memoryview) -> bool:
    """A compressed relation whose type is not SQL text, told from its first 16 KB.

    Every request is classified, and a compressed plan is one above the client's size threshold:
    inflating it whole for a read would cost what ``inspect_plan`` avoids. Clients write a
    relation's single type field right after ``common``, so the head shows it.
    """
    compressed = read_fields(plan, frozenset({_PLAN_COMPRESSED})).get(_PLAN_COMPRESSED)
    if compressed is None:
        return False
    parts = read_fields(as_message(compressed, "compressed_operation"), frozenset({_CO_DATA, _CO_CODEC}))
    data = as_message(parts[_CO_DATA], "data") if _CO_DATA in parts else memoryview(b"")
    codec = _enum(parts, _CO_CODEC)
    relation_type = _relation_type(decompress(data, codec, limit=_RELATION_HEAD_BYTES))
    return relation_type not in (None, _RELATION_SQL, _RELATION_WITH_RELATIONS)


def classify_execute_plan(request: bytes | memoryview) -> QueryIntent:
    """Intent of an ExecutePlanRequest; MalformedMessage if its plan cannot be read."""
    plan = read_fields(request, frozenset({_EXEC_PLAN})).get(_EXEC_PLAN)
    if plan is None:
        raise MalformedMessage("ExecutePlan request has no plan")
    plan_bytes = as_message(plan, "plan")
    if inspect_plan(plan_bytes).kind == "relation":
        if _is_plain_compressed_query(plan_bytes):
            return READ
        return _classify_relation(plan_body(plan_bytes))
    return classify_command(plan_body(plan_bytes))
