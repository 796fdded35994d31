"""``sparkfleet runtimes list | add | stage``: the Spark runtimes of a data dir.

They work on the data dir's store directly, so they need no running sparkfleet; a running one
picks the change up at its next decision (fleet/runtime_registry.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

from sparkfleet.clock import SystemClock
from sparkfleet.config import load_settings
from sparkfleet.errors import ConfigError
from sparkfleet.fleet.runtime_registry import RuntimeRegistry
from sparkfleet.policy.versions import Stage
from sparkfleet.store import runtimes as rows
from sparkfleet.store.db import Database

err = Console(stderr=True, highlight=False)


def add_runtime_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    runtimes = sub.add_parser("runtimes", help="list, add and stage the Spark runtimes clusters run")
    commands = runtimes.add_subparsers(dest="runtimes_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML configuration file (for data_dir)")
        p.add_argument("--data-dir", type=Path, help="where state lives (default ./.sparkfleet)")

    listing = commands.add_parser("list", help="the runtimes, their stage and the workloads pinned to them")
    common(listing)
    listing.set_defaults(func=_cmd_list)

    add = commands.add_parser("add", help="install a pyspark version into the data dir and register it")
    common(add)
    add.add_argument("version", help="pyspark version, e.g. 4.2.1")
    add.add_argument("--name", help="runtime name (default: the version); e.g. 4.3.0-strict for a variant")
    add.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                     help="a default Spark conf of the runtime's clusters (repeatable)")
    add.add_argument("--stage", choices=(Stage.CANARY.value, Stage.GENERAL.value), default=Stage.CANARY.value,
                     help="canary (default): a share of workloads first; general: every unpinned workload")
    add.add_argument("--index-url", help="package index to install from (default: pip's)")
    add.set_defaults(func=_cmd_add)

    stage = commands.add_parser("stage", help="move a runtime to a rollout stage (an operator's decision)")
    common(stage)
    stage.add_argument("name")
    stage.add_argument("stage", choices=[s.value for s in Stage])
    stage.set_defaults(func=_cmd_stage)


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[tuple[Database, RuntimeRegistry, Path]]:
    """The data dir's store and runtime registry, closed afterwards."""
    settings = load_settings(args.config, data_dir=args.data_dir)
    data_dir = Path(settings.data_dir)
    db = Database(data_dir / "sparkfleet.db").open()
    try:
        registry = RuntimeRegistry(db, SystemClock())
        registry.ensure_default()
        yield db, registry, data_dir
    finally:
        db.close()


def _parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--conf takes KEY=VALUE, not {pair!r}")
        conf[key.strip()] = value
    return conf


def _cmd_add(args: argparse.Namespace) -> int:
    from sparkfleet.fleet.runtime_install import install_pyspark

    conf = _parse_conf(args.conf)
    with _opened(args) as (_db, registry, data_dir):
        name = args.name or args.version
        if name in {f.name for f in registry.facts()}:
            raise ConfigError(f"a runtime named {name!r} is already registered")
        home = install_pyspark(args.version, data_dir, lambda line: err.print(f"[dim]{line}[/dim]"),
                               index_url=args.index_url)
        registry.add(name, args.version, home, conf, Stage(args.stage), "added by `sparkfleet runtimes add`")
        err.print(f"runtime [bold]{name}[/bold] (pyspark {args.version}) registered as {args.stage}")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    with _opened(args) as (_db, registry, _dir):
        registry.set_stage(args.name, Stage(args.stage), "set by `sparkfleet runtimes stage`")
        err.print(f"runtime [bold]{args.name}[/bold] is now {args.stage}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _opened(args) as (db, registry, _dir):
        pinned: dict[str, int] = {}
        for runtime in rows.pins(db).values():
            pinned[runtime] = pinned.get(runtime, 0) + 1
        table = Table("name", "version", "stage", "since", "why", "pinned workloads", "confs")
        for r in registry.records():
            since = datetime.datetime.fromtimestamp(r["stage_changed_at"]).strftime("%Y-%m-%d %H:%M")
            confs = ", ".join(f"{k}={v}" for k, v in r["conf"].items())
            table.add_row(r["name"], r["version"], r["stage"], since, r["stage_reason"],
                          str(pinned.get(r["name"], 0)), confs)
        Console().print(table)
    return 0
