"""Outcomes of pyspark doctest runs and their comparison: plain data, no I/O except reading a record.

An example is identified by (module, doctest name, line of the example in its docstring), which
is the same in every run of the same wheel, so runs against different targets line up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "pyspark.sql.connect"
_DOCTEST_EXIT_FAILURES = 255  # _test() ends with sys.exit(-1) when any example failed


@dataclass(frozen=True, slots=True)
class DoctestModule:
    name: str  # pyspark.sql.connect.functions.builtin
    weight: int  # rough number of examples, to start the longest modules first

    @property
    def short(self) -> str:
        return self.name.removeprefix(PACKAGE + ".")


ExampleKey = tuple[str, str, int]  # (module, doctest name, line of the example in its docstring)


@dataclass(frozen=True, slots=True)
class ExampleResult:
    key: ExampleKey
    file_line: int
    source: str
    outcome: str  # passed | failed | error | timeout | crashed
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@dataclass
class ModuleRun:
    module: DoctestModule
    exit_code: int | None
    timed_out: bool
    seconds: float
    log_path: Path
    examples: dict[ExampleKey, ExampleResult] = field(default_factory=dict)
    finished_testmod: bool = False

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.examples.values())

    @property
    def failed(self) -> int:
        return len(self.examples) - self.passed

    @property
    def status(self) -> str:
        if self.timed_out:
            return "timeout"
        if self.exit_code == 0 and self.finished_testmod:
            return "ok"
        if self.exit_code == _DOCTEST_EXIT_FAILURES and self.finished_testmod:
            return "failures"
        if self.exit_code == 0 and not self.examples:
            return "skipped"  # _test() exited early, e.g. avro/protobuf jars are not in the wheel
        return f"crashed (exit {self.exit_code})"


def read_results(module: DoctestModule, path: Path, ended: str) -> tuple[dict[ExampleKey, ExampleResult], bool]:
    """Examples of one run from its JSON lines; one begun but never settled gets outcome ``ended``."""
    examples: dict[ExampleKey, ExampleResult] = {}
    trying: dict | None = None
    finished = False
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            event = record.get("event")
            if event == "summary":
                finished = True
                continue
            if event not in ("trying", "passed", "failed", "error"):
                continue
            if event == "trying":
                trying = record
                continue
            trying = None
            key = (module.name, record["test"], record["line"])
            examples[key] = ExampleResult(key, record["file_line"], record["source"], event, record.get("detail", ""))
    if trying is not None:
        key = (module.name, trying["test"], trying["line"])
        examples[key] = ExampleResult(key, trying["file_line"], trying["source"], ended, "")
    return examples, finished


@dataclass
class TargetRun:
    name: str
    modules: dict[str, ModuleRun] = field(default_factory=dict)
    seconds: float = 0.0

    def examples(self) -> dict[ExampleKey, ExampleResult]:
        merged: dict[ExampleKey, ExampleResult] = {}
        for run in self.modules.values():
            merged.update(run.examples)
        return merged

    @property
    def attempted(self) -> int:
        return sum(len(r.examples) for r in self.modules.values())

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.modules.values())

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.modules.values())


@dataclass(frozen=True, slots=True)
class ExtraFailure:
    direct: ExampleResult
    gateway: ExampleResult | None  # None: the gateway run never reached the example


def extra_failures(direct: TargetRun, gateway: TargetRun) -> list[ExtraFailure]:
    """Examples that passed directly but failed, or were not reached, through the gateway."""
    through_gateway = gateway.examples()
    extra = []
    for key, result in sorted(direct.examples().items()):
        if not result.passed:
            continue
        other = through_gateway.get(key)
        if other is None and key[0] not in gateway.modules:
            continue  # module not run through the gateway at all (interrupted before it)
        if other is None or not other.passed:
            extra.append(ExtraFailure(result, other))
    return extra


@dataclass(frozen=True, slots=True)
class PlacementSpread:
    """Where the gateway ran the doctests' queries, from (the newest of) its query records."""

    records: int
    per_cluster: dict[str, int]
    sessions: int
    sessions_on_several: int  # sessions whose queries ran on more than one cluster


def placement_spread(records: list[dict]) -> PlacementSpread:
    per_cluster: dict[str, int] = {}
    clusters_by_session: dict[str, set[str]] = {}
    for record in records:
        cluster = record.get("cluster_id") or "?"
        per_cluster[cluster] = per_cluster.get(cluster, 0) + 1
        clusters_by_session.setdefault(record.get("session_id") or "?", set()).add(cluster)
    several = sum(1 for clusters in clusters_by_session.values() if len(clusters) > 1)
    return PlacementSpread(len(records), dict(sorted(per_cluster.items())), len(clusters_by_session), several)
