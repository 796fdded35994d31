"""The runtimes a fleet may run, their rollout stages, and the workloads pinned to them.

Kept in the store, so that `sparkfleet runtimes ...` commands (another process) and the running
gateway see the same thing: the gateway re-reads the table when asked for a decision that depends
on it (`refresh`), which is cheap (a handful of rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from sparkfleet.clock import Clock
from sparkfleet.errors import ConfigError
from sparkfleet.fleet.runtimes import Runtime, installed_pyspark_runtime
from sparkfleet.policy.versions import RuntimeFacts, Stage
from sparkfleet.store import runtimes as rows
from sparkfleet.store.db import Database


class RuntimeRegistry:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._runtimes: dict[str, Runtime] = {}
        self._facts: dict[str, RuntimeFacts] = {}
        self._records: dict[str, dict[str, Any]] = {}

    def ensure_default(self) -> None:
        """With no runtime registered yet, the pyspark installed with sparkfleet is the general one."""
        if not rows.list_runtimes(self._db):
            installed = installed_pyspark_runtime()
            self.add(installed.name, installed.version, installed.spark_home, {}, Stage.GENERAL,
                     "the pyspark installed with sparkfleet")
        self.refresh()

    def refresh(self) -> None:
        records = rows.list_runtimes(self._db)
        self._records = {r["name"]: r for r in records}
        self._runtimes = {r["name"]: Runtime(r["name"], Path(r["spark_home"]), r["version"], dict(r["conf"]))
                          for r in records}
        # Release order: by Spark version, then (variants of one version) by when they were added.
        ranked = sorted(records, key=lambda r: (_version(r["version"]), r["ord"]))
        self._facts = {r["name"]: RuntimeFacts(r["name"], Stage(r["stage"]), rank) for rank, r in enumerate(ranked, 1)}

    def add(self, name: str, version: str, spark_home: Path, conf: dict[str, str], stage: Stage, reason: str) -> None:
        self.refresh()
        if name in self._records:
            raise ConfigError(f"a runtime named {name!r} is already registered")
        if stage not in (Stage.CANARY, Stage.GENERAL):
            raise ConfigError(f"a new runtime starts as canary or general, not {stage.value}")
        if not (spark_home / "bin" / "spark-submit").exists():
            raise ConfigError(f"{spark_home} is not a Spark home (no bin/spark-submit)")
        now = self._clock.now()
        if stage is Stage.GENERAL:
            for other in self._facts.values():
                if other.stage is Stage.GENERAL:
                    rows.set_stage(self._db, other.name, Stage.PREVIOUS.value, now, f"{name} was added as general")
        rows.add_runtime(self._db, name, version, str(spark_home), conf, stage.value, now, reason)
        self.refresh()

    def set_stage(self, name: str, stage: Stage, reason: str) -> None:
        """An operator's (or the rollout policy's) stage change; promoting to general demotes the
        general runtime to previous."""
        self.refresh()
        if name not in self._facts:
            raise ConfigError(f"no runtime named {name!r}; registered: {', '.join(self._facts) or 'none'}")
        now = self._clock.now()
        if stage is Stage.GENERAL:
            for other in self._facts.values():
                if other.stage is Stage.GENERAL and other.name != name:
                    rows.set_stage(self._db, other.name, Stage.PREVIOUS.value, now, f"{name} became general")
        elif self._facts[name].stage is Stage.GENERAL:
            raise ConfigError(f"{name} is the general runtime: promote another one first")
        rows.set_stage(self._db, name, stage.value, now, reason)
        self.refresh()

    def get(self, name: str) -> Runtime:
        try:
            return self._runtimes[name]
        except KeyError:
            raise ConfigError(f"no runtime named {name!r}; registered: {', '.join(self._runtimes)}") from None

    def general(self) -> Runtime:
        [name] = [f.name for f in self._facts.values() if f.stage is Stage.GENERAL] or [None]
        if name is None:
            raise ConfigError("no runtime is in the general stage")
        return self._runtimes[name]

    def facts(self) -> list[RuntimeFacts]:
        return sorted(self._facts.values(), key=lambda f: f.order)

    def records(self) -> list[dict[str, Any]]:
        """The runtimes' rows, oldest release first."""
        order = {f.name: f.order for f in self._facts.values()}
        return [dict(r) for r in sorted(self._records.values(), key=lambda r: order[r["name"]])]


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")
