"""A short fuzz run of the real gateway (hypothesis over raw gRPC into each of the twelve RPCs): no crash, no unclear status, bounded memory.

The budget is ``SPARKFLEET_FUZZ_SECONDS`` (default 75) and the seed ``SPARKFLEET_FUZZ_SEED``
(default 7; printed, so a failure reproduces). The longer run is ``sparkfleet bench fuzz``.
"""

from __future__ import annotations

import os

from sparkfleet.testing.fuzz import GatewayFuzzer
from sparkfleet.testing.fuzz_inputs import RPCS

SECONDS = float(os.environ.get("SPARKFLEET_FUZZ_SECONDS", "75"))
SEED = int(os.environ.get("SPARKFLEET_FUZZ_SEED", "7"))
# How much the gateway's RSS may grow after the first quarter of the run (caches, the store's
# pages and the operation records it keeps have filled by then).
RSS_BOUND_KB = 128 * 1024


def test_fuzzing_every_rpc_finds_nothing(fleet):
    assert fleet.proc is not None
    fuzzer = GatewayFuzzer(fleet.port, fleet.proc.pid, SEED, fleet.admin)
    try:
        report = fuzzer.run(SECONDS)
    finally:
        fuzzer.close()
    print("\n".join(report.lines()))
    assert report.problems(RSS_BOUND_KB) == [], f"seed {SEED}: replay with SPARKFLEET_FUZZ_SEED={SEED}"
    for rpc in RPCS:  # every RPC was reached, and most inputs were refused before any cluster saw them
        assert sum(report.counts[rpc].values()) >= 20, rpc
        assert report.counts[rpc]["INVALID_ARGUMENT"] > 0, rpc
    assert sum(report.counts[rpc]["OK"] for rpc in RPCS) > 0
