"""The query-cost listener's log: lines folded into per-operation costs, and the log read across segments."""

from __future__ import annotations

import json
from pathlib import Path

from sparkfleet.fleet.monitor import operation_job_tag
from sparkfleet.fleet.query_costs import CostLog, OperationCost, add_line, listener_conf, operation_of

SESSION, OP = "0f7a3c2e-1111-4222-8333-444455556666", "9b1d0e2f-aaaa-4bbb-8ccc-ddddeeeeffff"
TAG = operation_job_tag("alice_Session_x", SESSION, OP)  # a user id that looks like part of a tag


def job(n: int, start: int, end: int, **fields: int | bool) -> dict[str, object]:
    line: dict[str, object] = {"tag": TAG, "job": n, "failed": False, "start": start, "end": end, "stages": 1,
                               "tasks": 2, "run_ms": 100, "cpu_ms": 40, "peak": 10, "spill": 0, "shuffle": 5,
                               "input_bytes": 0, "input_records": 7}
    line.update(fields)
    return line


def test_an_operations_tag_names_its_session_and_operation_whatever_the_user_id() -> None:
    assert operation_of(TAG) == (SESSION, OP)
    assert operation_of("some_user_tag") is None


def test_jobs_of_one_operation_add_up_and_its_end_line_closes_it() -> None:
    costs: dict[tuple[str, str], OperationCost] = {}
    assert add_line(costs, job(0, 1_000, 1_300, peak=10)) == (SESSION, OP)
    add_line(costs, job(1, 1_200, 1_900, peak=30, failed=True, spill=4))
    cost = costs[(SESSION, OP)]
    assert not cost.ended
    m = cost.metrics
    assert (m.jobs, m.stages, m.tasks, m.failed_jobs) == (2, 2, 4, 1)
    assert (m.task_ms, m.cpu_ms, m.shuffle_bytes, m.spilled_bytes, m.input_records) == (200, 80, 10, 4, 14)
    assert m.peak_execution_memory == 30  # the largest, not the sum
    assert m.duration_ms == 900  # first job's start to last job's end
    add_line(costs, {"tag": TAG, "end": True})
    assert costs[(SESSION, OP)].ended and costs[(SESSION, OP)].metrics == m
    assert add_line(costs, {"tag": "not an operation", "end": True}) is None


def test_the_log_is_read_line_by_line_across_segments_and_finished_ones_are_deleted(tmp_path: Path) -> None:
    log = CostLog(tmp_path)
    assert log.read_new() == []  # nothing written yet
    first = tmp_path / "costs-000001.jsonl"
    one, two = json.dumps(job(0, 1, 2)), json.dumps(job(1, 2, 3))
    first.write_text(one + "\n" + two[:20])  # the listener is mid-line
    assert [line["job"] for line in log.read_new()] == [0]
    with first.open("a") as f:
        f.write(two[20:] + "\n")
    assert [line["job"] for line in log.read_new()] == [1]
    (tmp_path / "costs-000002.jsonl").write_text(json.dumps(job(2, 3, 4)) + "\n")
    assert [line["job"] for line in log.read_new()] == [2]
    assert not first.exists()  # read to its end, and the listener has moved on
    assert log.read_new() == []


def test_the_listener_is_added_beside_the_users_own_listeners_and_class_path() -> None:
    conf = listener_conf(Path("/opt/classes"), Path("/data/costs"),
                         {"spark.extraListeners": "com.acme.Audit", "spark.driver.extraClassPath": "/opt/acme.jar"})
    assert conf["spark.extraListeners"] == "com.acme.Audit,sparkfleet.QueryCostListener"
    assert conf["spark.driver.extraClassPath"].split(":") == ["/opt/acme.jar", "/opt/classes"]
    assert conf["spark.sparkfleet.costs.dir"] == "/data/costs"
