"""The plan readers stay bounded on hostile plans: any depth, any width, any SQL length; no recursion."""

from __future__ import annotations

import uuid

import pytest
from pyspark.sql.connect.proto import base_pb2, relations_pb2

from sparkfleet.errors import PlanTooLarge, QuotaExceeded
from sparkfleet.gateway.operations import OperationRegistry
from sparkfleet.plan.fingerprint import fingerprint, normalize_sql, normalize_sql_expression
from sparkfleet.plan.inspect import inspect_plan
from sparkfleet.plan.relations import RELATION, summarize_plan
from sparkfleet.plan.sql_shape import MAX_SQL_CHARS, expression_generators_and_windows, read_sql
from sparkfleet.plan.state import execute_plan_effects
from sparkfleet.plan.tree import MAX_NODES, walk
from sparkfleet.plan.wire import encode_varint
from sparkfleet.plan.writes import classify_execute_plan
from sparkfleet.testing.fuzz_inputs import deep_relation


def _plan(relation: bytes) -> bytes:
    return b"\x0a" + encode_varint(len(relation)) + relation  # Plan.root


def _request(relation: bytes) -> bytes:
    plan = _plan(relation)
    return b"\x1a" + encode_varint(len(plan)) + plan  # ExecutePlanRequest.plan


@pytest.mark.parametrize("levels", [5_000, 100_000])
def test_plans_thousands_deep_are_read_without_recursion(levels: int) -> None:
    relation = deep_relation(levels)
    assert inspect_plan(_plan(relation)).kind == "relation"
    assert classify_execute_plan(_request(relation)).kind == "read"
    assert execute_plan_effects(_request(relation)) == []
    if 2 * levels + 2 <= MAX_NODES:
        summary = summarize_plan(_plan(relation))
        assert summary.range_rows == 3 and dict(summary.relations)["project"] == levels
        assert len(fingerprint(_plan(relation))) == 16
        return
    for read in (summarize_plan, fingerprint):
        with pytest.raises(PlanTooLarge, match=f"more than {MAX_NODES:,} messages"):
            read(_plan(relation))


def test_a_plan_too_wide_stops_the_walk_before_it_holds_every_child() -> None:
    project = relations_pb2.Relation()
    project.project.input.range.end = 3
    head = project.SerializeToString()
    body = b"\x1a\x00" * (3 * MAX_NODES)  # Project.expressions: empty Expressions, two bytes each
    inner = head[2:] + body  # the Project message: its input, then the expressions
    relation = b"\x1a" + encode_varint(len(inner)) + inner
    walked = 0
    with pytest.raises(PlanTooLarge):
        for _ in walk(relation, RELATION):
            walked += 1
    assert walked <= 2  # refused while reading the Project's children, not after holding them all


def test_long_sql_is_not_parsed() -> None:
    dense = "SELECT " + "1+" * MAX_SQL_CHARS + "1"
    shape = read_sql(dense)
    assert not shape.readable and "longer than the 65,536" in shape.error
    assert normalize_sql(dense).startswith("unreadable:")
    assert normalize_sql_expression("1+" * MAX_SQL_CHARS).startswith("unreadable:")
    assert expression_generators_and_windows("explode(x)+" * MAX_SQL_CHARS) == (0, 0)
    assert read_sql("SELECT 1 + 1").readable


def _start(registry: OperationRegistry, user: str, operation_id: str | None = None):  # type: ignore[no-untyped-def]
    return registry.started(operation_id or str(uuid.uuid4()), (user, "s"), "relation")


def test_operations_per_user_are_limited(db, clock) -> None:  # type: ignore[no-untyped-def]
    registry = OperationRegistry(db, clock, max_per_user=3)
    ops = [_start(registry, "alice") for _ in range(3)]
    with pytest.raises(QuotaExceeded) as info:
        _start(registry, "alice")
    assert info.value.quota == "gateway.max_operations_per_user"
    assert "already has 3 operations" in info.value.message and info.value.grpc_code.name == "RESOURCE_EXHAUSTED"
    _start(registry, "bob")  # another user is not held back
    registry.finished(ops[0], "succeeded", "4.3.0")
    registry.finished(ops[0], "succeeded", "4.3.0")  # settling twice frees one slot, once
    _start(registry, "alice")
    with pytest.raises(QuotaExceeded):
        _start(registry, "alice")


def test_an_operation_sent_again_with_its_id_takes_one_slot(db, clock) -> None:  # type: ignore[no-untyped-def]
    registry = OperationRegistry(db, clock, max_per_user=2)
    op_id = str(uuid.uuid4())
    first = _start(registry, "alice", op_id)
    second = _start(registry, "alice", op_id)
    registry.finished(first, "cancelled", "")  # the superseded stream ends later: no effect
    assert registry.active(("alice", "s"), op_id) is second
    _start(registry, "alice")
    with pytest.raises(QuotaExceeded):
        _start(registry, "alice")


def test_get_status_request_of_many_ids_parses() -> None:
    request = base_pb2.GetStatusRequest(session_id=str(uuid.uuid4()))
    request.operation_status.operation_ids.extend(str(uuid.uuid4()) for _ in range(10_000))
    assert len(base_pb2.GetStatusRequest.FromString(request.SerializeToString()).operation_status.operation_ids) == 10_000
