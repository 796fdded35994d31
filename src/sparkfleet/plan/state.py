"""Which session state a request changes, read shallowly: the input to the session journal.

Pure: request bytes in, effects out. Every effect has a compaction ``key`` (a later effect with
the same key supersedes an earlier one) and says whether it defines state or removes it. State
that cannot be replayed on another cluster (global temp views, cached tables, checkpoints,
streaming queries, ML objects) is reported as a pin, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparkfleet.errors import MalformedMessage
from sparkfleet.plan.eager import eager_statement, is_plain_compressed_query, sql_of_command
from sparkfleet.plan.inspect import inspect_plan, plan_body
from sparkfleet.plan.wire import as_message, as_str, iter_fields, read_fields

# ExecutePlanRequest.plan; Plan.command via plan_body
_EXEC_PLAN = 3
# Command oneof
_REGISTER_FUNCTION, _CREATE_VIEW, _SQL_COMMAND = 1, 3, 5
_WRITE_STREAM_START, _STREAMING_QUERY, _REGISTER_TABLE_FUNCTION = 6, 7, 10
_STREAMING_LISTENER_BUS = 11
_REGISTER_DATA_SOURCE, _CHECKPOINT, _REMOVE_CACHED_REMOTE_RELATION, _ML_COMMAND = 12, 14, 15, 17
# RemoveCachedRemoteRelationCommand.relation -> CachedRemoteRelation.relation_id
_REMOVED_RELATION, _RELATION_ID = 1, 1
# CreateDataFrameViewCommand
_VIEW_NAME, _VIEW_IS_GLOBAL = 2, 3


@dataclass(frozen=True, slots=True)
class Effect:
    """One change to a session's state. ``removes`` marks drops and unsets (tombstones)."""

    key: str
    removes: bool = False


@dataclass(frozen=True, slots=True)
class Pin:
    """State only the executing cluster will ever hold.

    ``scope`` "session": the whole session stays on that cluster while it lives (cached data,
    streaming queries, global temp views, ML models). "relation": only requests that reference
    the checkpointed DataFrame the command returns must run there.
    """

    reason: str
    scope: str = "session"


@dataclass(frozen=True, slots=True)
class ReleaseRelation:
    """A checkpointed DataFrame (CachedRemoteRelation) is released; nothing needs its cluster."""

    relation_id: str


Change = Effect | Pin | ReleaseRelation


def _ident(name: str) -> str:
    return name.strip().strip("`").lower()


# ---- SQL text -----------------------------------------------------------------------------------

_WS = r"\s+"
_NAME = r"(`[^`]+`|[\w.]+)"
_SQL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^create{_WS}(or{_WS}replace{_WS})?global{_WS}temp(orary)?{_WS}view", re.I), "pin:global temp view"),
    (re.compile(rf"^create{_WS}(or{_WS}replace{_WS})?temp(orary)?{_WS}view{_WS}(if{_WS}not{_WS}exists{_WS})?{_NAME}", re.I), "view"),
    (re.compile(rf"^drop{_WS}view{_WS}(if{_WS}exists{_WS})?{_NAME}", re.I), "drop-view"),
    (re.compile(rf"^create{_WS}(or{_WS}replace{_WS})?temp(orary)?{_WS}function{_WS}(if{_WS}not{_WS}exists{_WS})?{_NAME}", re.I), "function"),
    (re.compile(rf"^drop{_WS}temp(orary)?{_WS}function{_WS}(if{_WS}exists{_WS})?{_NAME}", re.I), "drop-function"),
    (re.compile(rf"^declare{_WS}or{_WS}replace{_WS}(variable{_WS}|var{_WS})?{_NAME}", re.I), "redeclare-variable"),
    (re.compile(rf"^declare{_WS}(variable{_WS}|var{_WS})?{_NAME}", re.I), "variable"),
    (re.compile(rf"^set{_WS}var(iable)?{_WS}\(?\s*{_NAME}", re.I), "set-variable"),
    (re.compile(rf"^drop{_WS}temp(orary)?{_WS}var(iable)?{_WS}(if{_WS}exists{_WS})?{_NAME}", re.I), "drop-variable"),
    (re.compile(rf"^use{_WS}(catalog{_WS})({_NAME})", re.I), "use-catalog"),
    (re.compile(rf"^use{_WS}(database{_WS}|schema{_WS}|namespace{_WS})?{_NAME}", re.I), "use"),
    (re.compile(r"^reset\s*;?\s*$", re.I), "reset-all"),
    (re.compile(rf"^reset{_WS}(\S+)", re.I), "reset"),
    (re.compile(r"^set\s+(-v\s*)?;?\s*$", re.I), "noop"),
    (re.compile(r"^set\s+([^=\s]+)\s*=\s*(.*)$", re.I | re.S), "set"),
    (re.compile(rf"^(cache{_WS}(lazy{_WS})?table|uncache{_WS}table|clear{_WS}cache)", re.I), "pin:cached table"),
    (re.compile(rf"^add{_WS}(jar|file|archive)s?{_WS}", re.I), "pin:ADD JAR/FILE/ARCHIVE"),
]
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*\n|/\*.*?\*/)+", re.S)


def sql_effects(sql: str) -> list[Change]:
    """Session-state effects of one SQL statement (only the leading statement is classified)."""
    text = _LEADING_COMMENTS.sub("", sql).strip()
    for pattern, kind in _SQL_RULES:
        match = pattern.match(text)
        if match is None:
            continue
        groups = [g for g in match.groups() if g]
        name = _ident(groups[-1]) if groups else ""
        if kind.startswith("pin:"):
            return [Pin(f"{kind[4:]}: {' '.join(text.split()[:4])}")]
        if kind == "view":
            return [Effect(f"view:{name}")]
        if kind == "drop-view":
            return [Effect(f"view:{name}", removes=True)]
        if kind == "function":
            return [Effect(f"function:{name}")]
        if kind == "drop-function":
            return [Effect(f"function:{name}", removes=True)]
        # A variable's declaration and its value are separate entries: an assignment must not
        # compact away the declaration it needs.
        if kind == "variable":
            return [Effect(f"variable:{name}")]
        if kind == "redeclare-variable":
            return [Effect(f"variable-value:{name}", removes=True), Effect(f"variable:{name}")]
        if kind == "set-variable":
            return [Effect(f"variable-value:{name}")]
        if kind == "drop-variable":
            return [Effect(f"variable-value:{name}", removes=True), Effect(f"variable:{name}", removes=True)]
        if kind == "use-catalog":
            return [Effect("current:catalog")]
        if kind == "use":
            return [Effect("current:namespace")]
        if kind == "reset-all":
            return [Effect("conf:*", removes=True)]
        if kind == "reset":
            return [Effect(f"conf:{match.group(1)}", removes=True)]
        if kind == "set":
            return [Effect(f"conf:{match.group(1).strip()}")]
        return []
    return []


# ---- requests -------------------------------------------------------------------------------------


def _name_field(message: memoryview, number: int = 1) -> str:
    return _ident(as_str(read_fields(message, frozenset({number})).get(number)))


def command_effects(command: bytes | memoryview) -> list[Change]:
    """Effects of a ``spark.connect.Command`` (the body of an ExecutePlan command plan)."""
    for field in iter_fields(command):
        body = as_message(field, "command")
        number = field.number
        if number == _CREATE_VIEW:
            view = read_fields(body, frozenset({_VIEW_NAME, _VIEW_IS_GLOBAL}))
            if _VIEW_IS_GLOBAL in view and view[_VIEW_IS_GLOBAL].value:
                return [Pin(f"global temp view {as_str(view.get(_VIEW_NAME))}")]
            return [Effect(f"view:{_ident(as_str(view.get(_VIEW_NAME)))}")]
        if number == _REGISTER_FUNCTION:
            return [Effect(f"function:{_name_field(body)}")]
        if number == _REGISTER_TABLE_FUNCTION:
            return [Effect(f"function:{_name_field(body)}")]
        if number == _REGISTER_DATA_SOURCE:
            return [Effect(f"data_source:{_name_field(body)}")]
        if number == _SQL_COMMAND:
            return sql_effects(sql_of_command(body))
        if number == _CHECKPOINT:
            return [Pin("checkpointed DataFrame (CachedRemoteRelation)", scope="relation")]
        if number == _REMOVE_CACHED_REMOTE_RELATION:
            relation = read_fields(body, frozenset({_REMOVED_RELATION})).get(_REMOVED_RELATION)
            if relation is None:
                return []
            relation_id = read_fields(as_message(relation, "relation"), frozenset({_RELATION_ID})).get(_RELATION_ID)
            return [ReleaseRelation(as_str(relation_id))] if relation_id is not None else []
        if number in (_WRITE_STREAM_START, _STREAMING_QUERY):
            return [Pin("streaming query")]
        if number == _STREAMING_LISTENER_BUS:
            return [Pin("streaming query listener")]
        # A streaming-query-manager command only reads: it follows the session's streaming pin.
        if number == _ML_COMMAND:
            return [Pin("ML model reference")]
        return []
    return []


def execute_plan_effects(request: bytes | memoryview) -> list[Change]:
    """Effects of an ExecutePlanRequest. Queries change no session state; relations that Spark
    runs eagerly (SQL text, ``spark.catalog`` calls such as ``setCurrentDatabase``) may."""
    plan = read_fields(request, frozenset({_EXEC_PLAN})).get(_EXEC_PLAN)
    if plan is None:
        raise MalformedMessage("ExecutePlan request has no plan")
    plan_bytes = as_message(plan, "plan")
    if inspect_plan(plan_bytes).kind == "relation":
        if is_plain_compressed_query(plan_bytes):
            return []
        eager = eager_statement(plan_body(plan_bytes))
        return [] if eager is None else sql_effects(eager[1])
    return command_effects(plan_body(plan_bytes))
