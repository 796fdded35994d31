"""What running a request again would do outside the session: the vocabulary of ``plan/writes.py``.

A :class:`QueryIntent` is what the recovery policy (``policy/recovery.py``) decides from when a
query lost its cluster. ``plan/sql_intent.py`` derives it from SQL text, ``plan/writes.py`` from
whole requests; every doubt resolves to the answer that forbids a retry.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    ``kind`` is "read", "session_state", "write" or "command" (anything not understood, and
    catalog maintenance such as REFRESH, which is ``idempotent``).
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


def session_state_intent(change: str) -> QueryIntent:
    # One prefix for every session-state description: stored query records tell them by it.
    return QueryIntent("session_state", f"session state change: {change}", idempotent=True)


def command_intent(description: str) -> QueryIntent:
    """A request sparkfleet does not understand: never re-run."""
    return QueryIntent("command", description, rerun_risk=UNKNOWN_EFFECT)
