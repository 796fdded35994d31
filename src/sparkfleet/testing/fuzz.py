"""Fuzzing a live gateway over raw gRPC: every input ends in OK or a clear status, and the gateway stays up in bounded memory.

``GatewayFuzzer(port, pid, seed).run(seconds)`` throws hypothesis-generated requests
(``testing/fuzz_inputs.py``) at each of the twelve RPCs, round by round, with a per-round seed
derived from ``seed`` so that a run reproduces. It first cuts every seed request at every offset.
A *finding* is a call that did not end in time, or ended with a status whose message is empty or
one that explains nothing (our "internal gateway error", grpc's or Spark's bare application
errors). The gateway process's RSS is read after a warm-up and at the end; after the run the
process must be alive, ``/api/health`` must answer and a stock client must still count a range.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.testing.fuzz_inputs import RPC_KINDS, RPCS, artifact_stream, mutated_request, seed_requests
from sparkfleet.testing.process import pid_alive, spark_session

SERVICE = "/spark.connect.SparkConnectService/"
# Status messages that explain nothing: our own bug marker, and what grpc or Spark say when a
# handler failed without a message of its own.
UNCLEAR = (
    "internal gateway error", "Application error processing RPC", "Exception calling application",
    "Exception iterating responses", "Exception deserializing", "Unexpected <class",
)
_STREAM_READ = 20  # responses read from a stream before it is cancelled
_EXAMPLES_PER_ROUND = 10
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 200 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 200 * 1024 * 1024)]


def rss_kb(pid: int) -> int | None:
    """The resident set size of process ``pid`` in KiB (VmRSS), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Finding:
    rpc: str
    what: str  # the mutation that made the input
    code: str
    details: str
    request: bytes  # the stream's first message

    def describe(self) -> str:
        return (f"{self.rpc} [{self.what}] -> {self.code}: {self.details[:300]!r}; "
                f"request of {len(self.request)} bytes starting {self.request[:80].hex()}")


@dataclass
class FuzzReport:
    seed: int
    seconds: float = 0.0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {rpc: Counter() for rpc in RPCS})
    findings: list[Finding] = field(default_factory=list)
    rss_start_kb: int | None = None
    rss_warm_kb: int | None = None
    rss_end_kb: int | None = None
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, KiB)
    alive: bool = True
    health: str = ""
    client_count: int | None = None

    @property
    def inputs(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def rss_growth_kb(self) -> int | None:
        if self.rss_warm_kb is None or self.rss_end_kb is None:
            return None
        return self.rss_end_kb - self.rss_warm_kb

    def problems(self, max_growth_kb: int) -> list[str]:
        """Everything that makes this run a failure, in words (empty: the gateway held)."""
        found = [f.describe() for f in self.findings]
        if not self.alive:
            found.append("the gateway process died")
        if self.health != "ok":
            found.append(f"/api/health did not answer ok: {self.health}")
        if self.client_count != 5:
            found.append(f"a stock client counted {self.client_count} rows of spark.range(5)")
        growth = self.rss_growth_kb
        if growth is None or growth > max_growth_kb:
            found.append(f"gateway RSS grew by {growth} KiB after warm-up (bound {max_growth_kb} KiB)")
        return found

    def lines(self) -> list[str]:
        codes = sorted({code for counter in self.counts.values() for code in counter})
        out = [f"seed {self.seed}: {self.inputs} inputs in {self.seconds:.0f} s, {len(self.findings)} findings",
               "rpc".ljust(18) + "".join(code[:16].rjust(18) for code in codes) + "total".rjust(8)]
        for rpc, counter in self.counts.items():
            out.append(rpc.ljust(18) + "".join(str(counter.get(c, 0)).rjust(18) for c in codes)
                       + str(sum(counter.values())).rjust(8))
        out.append(f"gateway RSS: {self.rss_start_kb} KiB at start, {self.rss_warm_kb} KiB after warm-up, "
                   f"{self.rss_end_kb} KiB at the end (growth {self.rss_growth_kb} KiB)")
        if self.rss_samples:
            step = max(1, len(self.rss_samples) // 10)
            out.append("RSS over the run: " + ", ".join(
                f"{t:.0f}s {kb // 1024} MiB" for t, kb in self.rss_samples[::step]))
        out.append(f"after the run: process alive {self.alive}, health {self.health!r}, "
                   f"spark.range(5).count() = {self.client_count}")
        return out + [f.describe() for f in self.findings]


class GatewayFuzzer:
    """Hostile input for one gateway at ``port``; ``pid`` is its process, for RSS and liveness."""

    def __init__(self, port: int, pid: int | None, fuzz_seed: int, admin: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.port = port
        self.pid = pid
        self.admin = admin
        self.timeout_s = timeout_s
        self.report = FuzzReport(fuzz_seed)
        self._channel = grpc.insecure_channel(f"localhost:{port}", options=_CHANNEL_OPTIONS)
        # A few sessions of two users are reused, so that most inputs reach a session with state.
        self._sessions = [(str(uuid.UUID(bytes=hashlib.sha256(f"{fuzz_seed}/{user}/{i}".encode()).digest()[:16])), user)
                          for i in range(4) for user in ("fuzz-a", "fuzz-b")]
        self.samples: dict[tuple[str, str], str] = {}  # (rpc, code) -> the first details seen

    def close(self) -> None:
        self._channel.close()

    # ---- one call ------------------------------------------------------------------------------

    def call(self, rpc: str, messages: list[bytes]) -> tuple[str, str, bytes]:
        """(status code name, details, the unary response or b"") of one call."""
        kind = RPC_KINDS[rpc]
        stub = getattr(self._channel, kind)(SERVICE + rpc)
        try:
            if kind == "unary_stream":
                stream = stub(messages[0], timeout=self.timeout_s)
                for count, _ in enumerate(stream, 1):
                    if count >= _STREAM_READ:
                        stream.cancel()
                        break
                return "OK", "", b""
            if kind == "stream_unary":
                return "OK", "", stub(iter(messages), timeout=self.timeout_s)
            return "OK", "", stub(messages[0], timeout=self.timeout_s)
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", b""

    def record(self, rpc: str, what: str, messages: list[bytes]) -> None:
        code, details, response = self.call(rpc, messages)
        self.report.counts[rpc][code] += 1
        self.samples.setdefault((rpc, code), f"[{what}] {details[:200]}")
        unclear = code == "DEADLINE_EXCEEDED" or (code != "OK" and (
            not details.strip() or code == "UNKNOWN" or any(marker in details for marker in UNCLEAR)))
        if unclear:
            self.report.findings.append(Finding(rpc, what, code, details, messages[0]))
        if rpc == "CloneSession" and response:
            self._release_clone(response, messages[0])

    def _release_clone(self, response: bytes, request: bytes) -> None:
        """Clones live on the cluster until released: release each one at once."""
        try:
            clone = base_pb2.CloneSessionResponse.FromString(response)
            user = base_pb2.CloneSessionRequest.FromString(request).user_context.user_id
        except Exception:  # noqa: BLE001 - not ours to judge here; the call itself was recorded
            return
        release = base_pb2.ReleaseSessionRequest(session_id=clone.new_session_id)
        release.user_context.user_id = user
        self.call("ReleaseSession", [release.SerializeToString()])

    # ---- phases --------------------------------------------------------------------------------

    def truncations(self) -> None:
        """Every seed request of every RPC cut at every offset."""
        session_id, user = self._sessions[0]
        for rpc, seeds in seed_requests(session_id, user).items():
            if rpc == "ReleaseSession":
                continue  # cut short it still names the session; a whole one would close it
            first = seeds[0]
            for cut in range(len(first)):
                self.record(rpc, f"truncate@{cut}", [first[:cut]] + seeds[1:2] if rpc == "AddArtifacts" else [first[:cut]])

    def round(self, rpc: str, round_seed: int, examples: int = _EXAMPLES_PER_ROUND) -> None:
        """``examples`` hypothesis-generated inputs to ``rpc``."""

        @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=False)
        @seed(round_seed)
        @given(data=st.data())
        def one(data: Any) -> None:
            session_id, user = data.draw(st.sampled_from(self._sessions))
            if rpc == "ReleaseSession":  # a session of its own: the shared ones stay open
                session_id = str(data.draw(st.uuids()))
            seeds = seed_requests(session_id, user)
            if rpc == "AddArtifacts":
                what, messages = data.draw(artifact_stream(seeds[rpc]))
            elif data.draw(st.integers(0, 9)) == 0:
                what, messages = "valid", [data.draw(st.sampled_from(seeds[rpc]))]
            else:
                what, message = data.draw(mutated_request(data.draw(st.sampled_from(seeds[rpc])), rpc))
                messages = [message]
            self.record(rpc, what, messages)

        one()

    def run(self, seconds: float, warm_up_fraction: float = 0.25) -> FuzzReport:
        """Truncations, then rounds over the twelve RPCs until ``seconds`` have passed; then the
        checks that the gateway still serves. RSS is read after ``warm_up_fraction`` of the time."""
        report = self.report
        start = time.monotonic()
        report.rss_start_kb = rss_kb(self.pid) if self.pid else None
        self.truncations()
        warm_at = start + seconds * warm_up_fraction
        index = 0
        while time.monotonic() - start < seconds:
            if report.rss_warm_kb is None and time.monotonic() >= warm_at:
                report.rss_warm_kb = rss_kb(self.pid) if self.pid else None
            round_seed = int.from_bytes(hashlib.sha256(f"{report.seed}/{index}".encode()).digest()[:4], "big")
            self.round(RPCS[index % len(RPCS)], round_seed)
            index += 1
            if self.pid and index % len(RPCS) == 0 and (kb := rss_kb(self.pid)) is not None:
                report.rss_samples.append((time.monotonic() - start, kb))
        report.seconds = time.monotonic() - start
        if report.rss_warm_kb is None:
            report.rss_warm_kb = rss_kb(self.pid) if self.pid else None
        report.rss_end_kb = rss_kb(self.pid) if self.pid else None
        self.check_still_serving()
        return report

    def check_still_serving(self) -> None:
        report = self.report
        report.alive = self.pid is None or pid_alive(self.pid)
        if self.admin:
            try:
                with urllib.request.urlopen(f"{self.admin}/api/health", timeout=30) as answer:
                    report.health = str(json.load(answer).get("status"))
            except OSError as exc:
                report.health = f"unreachable: {exc}"
        else:
            report.health = "ok"
        try:
            with spark_session(f"sc://localhost:{self.port}") as spark:
                report.client_count = spark.range(5).count()
        except Exception as exc:  # noqa: BLE001 - recorded as the failure it is
            report.client_count = None
            report.findings.append(Finding("client", "spark.range(5).count()", type(exc).__name__, str(exc), b""))
