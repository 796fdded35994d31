"""What running a request again would do outside the session: read, session state, write or command.

Pure and shallow like ``plan/state.py``: request bytes in, a :class:`QueryIntent` out, reading only
the top levels of the plan. The recovery policy (``policy/recovery.py``) decides from the intent
whether a query that lost its cluster may run again elsewhere, so every doubt here resolves to the
answer that forbids a retry: an unknown statement is a non-idempotent command, never a read.
SQL text is read by ``plan/sql_intent.py``; relations Spark runs eagerly by ``plan/eager.py``.
"""

from __future__ import annotations

from dataclasses import replace

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.eager import eager_statement, is_plain_compressed_query, sql_of_command
from sparkfleet.plan.inspect import COMMAND_NAMES, inspect_plan, plan_body
from sparkfleet.plan.intent import (
    APPLIES_TWICE, DUPLICATES_DATA, FAILS_IF_CREATED, READ, SKIPS_IF_CREATED, UNKNOWN_EFFECT, QueryIntent,
    command_intent, session_state_intent,
)
from sparkfleet.plan.sql_intent import classify_sql
from sparkfleet.plan.wire import as_int, as_message, as_str, iter_fields, read_fields, read_repeated

# ExecutePlanRequest.plan
_EXEC_PLAN = 3
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
    mode = _SAVE_MODES.get(as_int(fields.get(_W_MODE)) or 3)
    source = as_str(fields.get(_W_SOURCE))
    method = ""
    if _W_TABLE in fields:
        table = read_fields(as_message(fields[_W_TABLE], "table"), frozenset({_SAVE_TABLE_NAME, _SAVE_TABLE_METHOD}))
        target, target_kind = as_str(table.get(_SAVE_TABLE_NAME)), "table"
        if as_int(table.get(_SAVE_TABLE_METHOD)) != _SAVE_AS_TABLE:
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
    known = _V2_MODES.get(as_int(fields.get(_W2_MODE)))
    if known is None:
        return QueryIntent("write", f"write with an unknown mode to table {target}", target=target,
                           target_kind="table", rerun_risk=UNKNOWN_EFFECT)
    words, idempotent, needs_absent = known
    risk = "" if idempotent else FAILS_IF_CREATED if needs_absent else DUPLICATES_DATA
    return QueryIntent("write", f"{words} write to table {target}", idempotent=idempotent,
                       needs_absent_target=needs_absent, target=target, target_kind="table", rerun_risk=risk)


def _name(message: memoryview, number: int = 1) -> str:
    return as_str(read_fields(message, frozenset({number})).get(number))


def classify_command(command: bytes | memoryview) -> QueryIntent:
    """Intent of a ``spark.connect.Command`` (the body of an ExecutePlan command plan)."""
    field = next(iter_fields(command), None)
    if field is None:
        return command_intent("empty command")
    body = as_message(field, "command")
    number = field.number
    if number == _WRITE:
        return _write_operation(body)
    if number == _WRITE_V2:
        return _write_operation_v2(body)
    if number == _SQL_COMMAND:
        return classify_sql(sql_of_command(body))
    if number == _MERGE_INTO:
        target = _name(body, _MERGE_TARGET)
        return QueryIntent("write", f"merge into table {target}", target=target, target_kind="table",
                           rerun_risk=APPLIES_TWICE)
    if number == _CREATE_VIEW:
        view = read_fields(body, frozenset({_VIEW_NAME, _VIEW_IS_GLOBAL}))
        is_global = _VIEW_IS_GLOBAL in view and bool(view[_VIEW_IS_GLOBAL].value)
        return session_state_intent(f"create {'global ' if is_global else ''}temp view {as_str(view.get(_VIEW_NAME))}")
    if number == _REGISTER_FUNCTION:
        return session_state_intent(f"register function {_name(body)}")
    if number == _REGISTER_TABLE_FUNCTION:
        return session_state_intent(f"register table function {_name(body)}")
    if number == _REGISTER_DATA_SOURCE:
        return session_state_intent(f"register data source {_name(body)}")
    return command_intent(f"{COMMAND_NAMES.get(number, f'command_{number}')} command")


def _classify_relation(relation: bytes | memoryview) -> QueryIntent:
    """A relation is a read, unless Spark runs it eagerly: SQL text of a command, a catalog call."""
    eager = eager_statement(relation)
    if eager is None:
        return READ
    called, sql = eager
    intent = classify_sql(sql)
    if called == "SQL":
        return intent
    # Named as the user called it; a session-state description keeps its prefix.
    what = intent.description.split(": ", 1)[0] + ": " if intent.kind == "session_state" else ""
    return replace(intent, description=f"{what}{called} ({sql})")


def classify_execute_plan(request: bytes | memoryview) -> QueryIntent:
    """Intent of an ExecutePlanRequest; MalformedMessage if its plan cannot be read."""
    plan = read_fields(request, frozenset({_EXEC_PLAN})).get(_EXEC_PLAN)
    if plan is None:
        raise MalformedMessage("ExecutePlan request has no plan")
    plan_bytes = as_message(plan, "plan")
    if inspect_plan(plan_bytes).kind == "relation":
        if is_plain_compressed_query(plan_bytes):
            return READ
        return _classify_relation(plan_body(plan_bytes))
    return classify_command(plan_body(plan_bytes))
