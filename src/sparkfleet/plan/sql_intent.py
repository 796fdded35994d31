"""What running one SQL statement again would do: read, session state, write or command.

Pure: SQL text in, a :class:`QueryIntent` out. Statements are told apart by their first words
(after comments and any WITH clause); quoted text is never mistaken for a keyword. A script of
several statements, and any statement not recognised, is a command that is never re-run.
"""

from __future__ import annotations

import re

from sparkfleet.plan.intent import (
    APPLIES_TWICE, DUPLICATES_DATA, FAILS_IF_CREATED, FAILS_IF_DROPPED, READ, QueryIntent, command_intent,
    session_state_intent,
)
from sparkfleet.plan.state import Pin, sql_effects

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
# Catalog maintenance: brings metadata in line with the data; running it twice changes nothing more.
_MAINTENANCE = re.compile(
    r"^(refresh\b|analyze\s+tables?\b|msck\s+repair\s+table\b|alter\s+table\s+\S+\s+recover\s+partitions\b)", re.I
)
_TARGET_KINDS = {"schema": "schema", "database": "schema", "namespace": "schema", "function": "function"}


def _words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def _upper(keywords: str) -> str:
    return " ".join(keywords.split()).upper()


def classify_sql(sql: str) -> QueryIntent:
    """Intent of one SQL text; a script of several statements is a command (never retried)."""
    statements = _statements(sql)
    if not statements:
        return command_intent("empty SQL statement")
    if len(statements) > 1:
        return command_intent(f"SQL script of {len(statements)} statements")
    return _classify_statement(statements[0])


_OPENING_PARENS = re.compile(r"^[\s(]+")  # a parenthesised query is still a query


def _classify_statement(text: str) -> QueryIntent:
    text = _OPENING_PARENS.sub("", text)
    while _WITH.match(text):  # a loop, not recursion: the text decides how often this repeats
        body = _after_ctes(text)
        if not body:
            return command_intent(f"SQL statement {_words(text, 3)}")
        text = _OPENING_PARENS.sub("", body)
    if _READ.match(text):
        return READ
    if _FROM_FIRST.match(text):
        # FROM src INSERT ... is Hive's multi-table insert; a FROM that names no INSERT is a query.
        if re.search(r"\binsert\b", text, re.I):
            return command_intent("multi-table insert FROM ... INSERT")
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
        return session_state_intent(', '.join(keys))
    if _TEMP_CREATE.match(text):  # e.g. CREATE TEMPORARY TABLE ... USING, which the journal does not know
        return session_state_intent(_words(text, 4))
    if _SESSION_VERB.match(text):
        return session_state_intent(_upper(_words(text, 1)))
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
    if _MAINTENANCE.match(text):
        return QueryIntent("command", f"SQL statement {_words(text, 3)}", idempotent=True)
    return command_intent(f"SQL statement {_words(text, 3)}")
