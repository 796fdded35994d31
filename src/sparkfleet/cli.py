"""Command line: ``sparkfleet up | status | bench | compat | runtimes | tls``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from sparkfleet.config import DEFAULT_ADMIN_PORT, load_settings
from sparkfleet.errors import ConfigError, SparkfleetError

err = Console(stderr=True, highlight=False)


def _progress_printer():  # type: ignore[no-untyped-def]
    start = time.monotonic()

    def show(cluster_id: str, message: str) -> None:
        err.print(f"[dim]{time.monotonic() - start:6.1f}s[/dim] [bold cyan]{cluster_id}[/bold cyan] {message}")

    return show


async def _run_up(args: argparse.Namespace) -> int:
    from sparkfleet.app import Sparkfleet

    settings = load_settings(
        args.config,
        **{
            "gateway.port": args.port,
            "gateway.host": args.host,
            "admin.port": args.admin_port,
            "data_dir": args.data_dir,
        },
    )
    app = Sparkfleet(settings, progress=_progress_printer())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    err.print(
        f"sparkfleet: starting {len(settings.pool.clusters)} cluster(s) "
        f"({', '.join(settings.pool.clusters)}), data in {settings.data_dir}"
    )
    starting = loop.create_task(app.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        err.print("sparkfleet: interrupted while starting; stopping clusters")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return 130
    starting.result()  # raises the start error, after start() cleaned up
    print(app.ready_line, flush=True)
    if settings.tls.enabled:
        err.print(f"sparkfleet: TLS on; clients connect with sc://HOST:{app.port}/;use_ssl=true")
    await stopping
    err.print("sparkfleet: stopping")
    await app.stop()
    err.print("sparkfleet: stopped")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    return asyncio.run(_run_up(args))


def _trusting(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca_file`` besides the system's CAs."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use {ca_file} as a CA file: {exc}") from exc
    return context


def _cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, **{"admin.port": args.admin_port}) if args.config else None
    port = settings.admin.port if settings else args.admin_port or DEFAULT_ADMIN_PORT
    ca_file = args.ca_file or (settings.tls.cert_file if settings and settings.tls.enabled else None)
    tls = _trusting(ca_file) if ca_file is not None else None
    base = f"{'https' if tls else 'http'}://localhost:{port}"
    token = args.token or os.environ.get("SPARKFLEET_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(f"{base}/api/health", timeout=5, context=tls) as r:
            health = json.load(r)
        request = urllib.request.Request(f"{base}/api/clusters?history=0", headers=headers)
        with urllib.request.urlopen(request, timeout=5, context=tls) as r:
            clusters = json.load(r)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            err.print("sparkfleet runs with [auth]: give a token with --token or SPARKFLEET_TOKEN")
            return 1
        err.print(f"sparkfleet answered {exc.code} at {base}: {exc.read().decode(errors='replace')[:500]}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        err.print(f"sparkfleet is not answering at {base}: {exc}")
        return 1
    from rich.table import Table

    out = Console()
    out.print(f"gateway {health['gateway']}  status [bold]{health['status']}[/bold]  sessions {health['sessions']}")
    table = Table("id", "size", "runtime", "state", "address", "pid", "cores", "memory_mb", "running")
    for c in clusters:
        if c["state"] in ("stopped", "lost", "failed") and not args.all:
            continue
        table.add_row(c["id"], c["size"], c["runtime"], c["state"], c["address"] or "", str(c["pid"] or ""),
                      str(c["cores"]), str(c["memory_mb"]), str(c["running_queries"]))
    out.print(table)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from sparkfleet.bench import run_benchmark

    return run_benchmark(args.name, args.bench_args)


def _cmd_compat(args: argparse.Namespace) -> int:
    from sparkfleet.bench.doctests import run_compat

    return run_compat(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparkfleet", description="Self-hosted serverless Apache Spark")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what every part is doing")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the gateway, the admin server and the pool (foreground)")
    up.add_argument("--config", type=Path, help="TOML configuration file")
    up.add_argument("--host", help="gateway bind address (default localhost)")
    up.add_argument("--port", type=int, help="gateway port (default 15002; 0 picks a free port)")
    up.add_argument("--admin-port", type=int, help="admin HTTP port (default 15080; 0 picks a free port)")
    up.add_argument("--data-dir", type=Path, help="where state lives (default ./.sparkfleet)")
    up.set_defaults(func=_cmd_up)

    status = sub.add_parser("status", help="show the health and clusters of a running sparkfleet")
    status.add_argument("--admin-port", type=int, help=f"admin port (default: the config's, else {DEFAULT_ADMIN_PORT})")
    status.add_argument("--config", type=Path, help="the TOML file sparkfleet runs with (admin port, [tls])")
    status.add_argument("--ca-file", type=Path, help="the admin server is https: trust this certificate (PEM)")
    status.add_argument("--all", action="store_true", help="include stopped and lost clusters")
    status.add_argument("--token", help="bearer token when sparkfleet runs with [auth] (or env SPARKFLEET_TOKEN)")
    status.set_defaults(func=_cmd_status)

    bench = sub.add_parser("bench", help="run a benchmark (overhead, config-rpc, faults)")
    bench.add_argument("name")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)

    compat = sub.add_parser(
        "compat", help="run pyspark's own Spark Connect doctests directly and through the gateway"
    )
    compat.add_argument("--modules", help="comma-separated pyspark.sql.connect modules (default: all)")
    compat.add_argument("--jobs", type=int, default=2, help="doctest modules run at once")
    compat.add_argument(
        "--placement", choices=("workload", "alternate"), default="workload",
        help="gateway side: one cluster (workload placement, default) or two with every request of a session "
             "moved to the other one (alternate)",
    )
    compat.add_argument("--timeout", type=float, default=2700, help="seconds one module may run (default 2700)")
    compat.add_argument("--out", type=Path, help="where logs and summary.json go (default: a new temp dir)")
    compat.set_defaults(func=_cmd_compat)

    from sparkfleet.cli_runtimes import add_runtime_commands

    add_runtime_commands(sub)
    from sparkfleet.cli_auth import add_auth_commands

    add_auth_commands(sub)
    from sparkfleet.cli_tls import add_tls_commands

    add_tls_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except SparkfleetError as exc:
        err.print(f"[bold red]sparkfleet: {exc.message}[/bold red]")
        return 2
    except KeyboardInterrupt:
        return 130
