"""``sparkfleet bench config-rpc``: Config RPCs/s and latency with many concurrent clients.

Each client is its own Spark Connect session on its own gRPC channel (its own TCP connection),
sending ``Config(get spark.sql.shuffle.partitions)`` back to back. The client side is raw
``grpc.aio`` with pre-encoded requests and undecoded responses, so on a small machine the load
generator costs as little CPU as possible. The same load runs through the gateway of the default
fleet (what ``./scripts/up`` starts) and against a plain Spark Connect server started the way a
user starts one, in alternating rounds, and both are printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field

import grpc
from pyspark.sql.connect.proto import base_pb2
from rich.console import Console
from rich.table import Table

from sparkfleet.bench.harness import (
    Contenders,
    CpuMeter,
    default_fleet_and_plain_server,
    exit_now,
    measured,
    median,
    percentile,
)

SIDES = ("gateway", "plain")
_METHOD = "/spark.connect.SparkConnectService/Config"
_CONF_KEY = "spark.sql.shuffle.partitions"
_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)  # one TCP connection per client


@dataclass
class PhaseResult:
    rpcs: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: "PhaseResult") -> None:
        self.rpcs += other.rpcs
        self.seconds += other.seconds
        self.latencies += other.latencies
        for part, value in other.cpu.items():
            self.cpu[part] = self.cpu.get(part, 0.0) + value

    @property
    def rate(self) -> float:
        return self.rpcs / self.seconds if self.seconds else 0.0


def config_request(session_id: str, observed_server_side_id: str = "") -> bytes:
    request = base_pb2.ConfigRequest(
        session_id=session_id,
        client_type="sparkfleet-bench",
        operation=base_pb2.ConfigRequest.Operation(get=base_pb2.ConfigRequest.Get(keys=[_CONF_KEY])),
    )
    request.user_context.user_id = "bench"
    if observed_server_side_id:
        request.client_observed_server_side_session_id = observed_server_side_id
    return request.SerializeToString()


class Client:
    """One session on one channel; its request is encoded once, as the stock client would send it."""

    def __init__(self, address: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._call = self._channel.unary_unary(_METHOD)  # bytes in, bytes out: no codec cost here
        self._metadata = metadata
        self._request = b""

    async def open_session(self) -> None:
        session_id = str(uuid.uuid4())
        answer = base_pb2.ConfigResponse.FromString(
            await self._call(config_request(session_id), metadata=self._metadata, timeout=60)
        )
        if not answer.pairs:
            raise RuntimeError(f"Config get {_CONF_KEY} returned no value")
        self._request = config_request(session_id, answer.server_side_session_id)

    async def run_until(self, deadline: float, latencies: list[float] | None) -> int:
        call, request, metadata, clock = self._call, self._request, self._metadata, time.perf_counter
        done = 0
        while clock() < deadline:
            start = clock()
            await call(request, metadata=metadata)
            if latencies is not None:
                latencies.append(clock() - start)
            done += 1
        return done

    async def close(self) -> None:
        await self._channel.close()


async def run_phase(clients: list[Client], seconds: float, meter: CpuMeter | None) -> PhaseResult:
    result = PhaseResult()
    before = meter.read() if meter else {}
    start = time.perf_counter()
    counts = await asyncio.gather(*(c.run_until(start + seconds, result.latencies) for c in clients))
    result.seconds = time.perf_counter() - start  # includes the calls in flight at the deadline
    result.rpcs = sum(counts)
    if meter:
        result.cpu = CpuMeter.used(before, meter.read())
    return result


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkfleet bench config-rpc", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--clients", type=int, default=32, help="concurrent clients, each its own session")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per side")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the measured seconds are split into")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per side first")
    args = p.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1:
        p.error("--clients, --seconds and --rounds must be positive")
    return args


async def measure(contenders: Contenders, args: argparse.Namespace, out: Console) -> dict[str, PhaseResult]:
    plain = contenders.plain
    addresses = {
        "gateway": (contenders.fleet.url.removeprefix("sc://"), ()),
        "plain": (plain.address, (("authorization", f"Bearer {plain.token}"),)),
    }
    clients = {side: [Client(*addresses[side]) for _ in range(args.clients)] for side in SIDES}
    try:
        for side in SIDES:
            await asyncio.gather(*(c.open_session() for c in clients[side]))
        out.print(f"[dim]{args.clients} sessions open on each side; warming up {args.warmup:g}s per side...[/dim]")
        for side in SIDES:
            await run_phase(clients[side], args.warmup, None)
        meter = CpuMeter(contenders.cpu_parts())
        results = {side: PhaseResult() for side in SIDES}
        per_round = args.seconds / args.rounds
        out.print(f"[dim]measuring {args.rounds} alternating rounds of {per_round:g}s per side...[/dim]")
        for i in range(args.rounds):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                results[side].add(await run_phase(clients[side], per_round, meter))
        return results
    finally:
        await asyncio.gather(*(c.close() for side in SIDES for c in clients[side]), return_exceptions=True)


def report(out: Console, results: dict[str, PhaseResult], clients: int) -> None:
    table = Table(title=f"Config RPC, {clients} concurrent clients (latency in ms)")
    for column in ("side", "RPCs", "RPC/s", "p50", "p90", "p99", "max",
                   "CPU ms/RPC client", "gateway", "clusters", "metastore", "plain", "other"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for side in ("plain", "gateway"):
        r = results[side]
        lat = r.latencies
        per_rpc = {part: (seconds * 1000.0 / r.rpcs if r.rpcs else 0.0) for part, seconds in r.cpu.items()}
        table.add_row(
            side, str(r.rpcs), f"{r.rate:,.0f}",
            f"{median(lat) * 1e3:.2f}", f"{percentile(lat, 90) * 1e3:.2f}",
            f"{percentile(lat, 99) * 1e3:.2f}", f"{max(lat) * 1e3:.2f}",
            *(f"{per_rpc.get(part, 0.0):.3f}" for part in ("client", "gateway", "clusters", "metastore", "plain", "other")),
        )
    out.print(table)
    for side in ("plain", "gateway"):
        out.print(f"{side}: {CpuMeter.describe(results[side].cpu, results[side].seconds)}")
    g, p = results["gateway"], results["plain"]
    g99, p99 = percentile(g.latencies, 99) * 1e3, percentile(p.latencies, 99) * 1e3
    out.print(
        f"RPC/s gateway {g.rate:,.0f} vs plain {p.rate:,.0f}: ratio gateway/plain {g.rate / p.rate:.3f}   "
        f"p99 gateway {g99:.2f} vs plain {p99:.2f} ms: ratio {g99 / p99:.3f}"
    )


def run(argv: list[str]) -> int:
    args = _parse(argv)
    out = Console(highlight=False, width=max(Console().width, 140))

    def measure_both() -> dict[str, PhaseResult]:
        with default_fleet_and_plain_server(out) as contenders:
            return asyncio.run(measure(contenders, args, out))

    results = measured(out, "config-rpc", measure_both)
    report(out, results, args.clients)
    exit_now(0)
