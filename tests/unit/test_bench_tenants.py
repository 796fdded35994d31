"""bench tenants: its fleet config, the pooling of windows, verdicts and exit code (no Spark)."""

from __future__ import annotations

import math
import tomllib
from collections import Counter

from sparkfleet.bench.mixed_results import Timing
from sparkfleet.bench.tenants import PHASES, fleet_toml, parse
from sparkfleet.bench.tenants_results import QUOTA_ERROR, PhaseRun, exit_code, pool_windows, tenant_of_records, verdicts
from sparkfleet.config import Settings

ALONE, FLOOD = PHASES["flood"]
ALONE_2, UNLIMITED = PHASES["unlimited"]


def _t(client: str, seconds: float, error: str | None = None, warm_up: bool = False) -> Timing:
    return Timing(client, "q", 0.0, seconds, error, "", warm_up)


def test_the_fleet_config_is_valid_and_names_the_quotas() -> None:
    args = parse(["--quotas", "max_cores=1,max_queued=3,max_size_class=S,requests_per_s=5"])
    text = fleet_toml({"quiet": "a", "flood": "b", "ops": "c"}, args.quotas)
    settings = Settings(**tomllib.loads(text))
    flood = settings.tenants["flood"]
    assert (flood.max_cores, flood.max_queued, flood.max_size_class, flood.requests_per_s) == (1, 3, "S", 5.0)
    assert settings.auth.mode == "token" and [t.tenant for t in settings.auth.tokens] == ["quiet", "flood", "ops"]
    assert not settings.autoscaler.enabled
    assert "tenants" not in tomllib.loads(fleet_toml({"quiet": "a"}, None))


def test_windows_of_a_phase_are_pooled_and_the_verdict_compares_with_its_own_fleets_baseline() -> None:
    windows = [
        PhaseRun(ALONE, 10.0, [_t("quiet-1", 1.0)] * 20, cpu={"gateway": 1.0}),
        PhaseRun(FLOOD, 10.0, [_t("quiet-1", 1.2)] * 20 + [_t("flood-1", 5.0, QUOTA_ERROR)],
                 {("flood", "max_queued"): 1.0}, {"flood": Counter({"c1": 2})}),
        PhaseRun(ALONE, 10.0, [_t("quiet-1", 1.0)] * 20, cpu={"gateway": 2.0}),
        PhaseRun(FLOOD, 10.0, [_t("quiet-1", 1.4)] * 20, {("flood", "max_queued"): 2.0},
                 {"flood": Counter({"c1": 1, "c2": 1})}),
        PhaseRun(ALONE_2, 10.0, [_t("quiet-1", 2.0)] * 20),
        PhaseRun(UNLIMITED, 10.0, [_t("quiet-1", 8.0)] * 20),
    ]
    runs = pool_windows(windows)
    assert [r.phase.key for r in runs] == ["alone", "flood", "alone-2", "unlimited"]
    alone, flood = runs[0], runs[1]
    assert (alone.windows, alone.seconds, alone.cpu) == (2, 20.0, {"gateway": 3.0})
    assert flood.refusals == {("flood", "max_queued"): 3.0} and flood.placed["flood"] == Counter({"c1": 3, "c2": 1})
    [with_quotas, without] = verdicts(runs)
    assert with_quotas.value == 1.4 and with_quotas.met is True
    assert without.value == 4.0 and without.met is None  # no goal without quotas
    assert exit_code(runs) == 0  # a quota refusal of the flooding tenant is expected


def test_any_quiet_error_or_an_unexpected_flood_error_fails_the_run() -> None:
    quiet_refused = PhaseRun(FLOOD, 1.0, [_t("quiet-1", 1.0, QUOTA_ERROR)])
    flood_broke = PhaseRun(FLOOD, 1.0, [_t("flood-1", 1.0, "SPARKFLEET.CLUSTER_LOST")])
    assert exit_code([quiet_refused]) == 1 and exit_code([flood_broke]) == 1
    assert math.isnan(verdicts([PhaseRun(FLOOD, 1.0)])[0].value)


def test_records_are_counted_per_tenant_and_cluster() -> None:
    records = [
        {"session_id": "s1", "kind": "relation", "cluster_id": "a"},
        {"session_id": "s1", "kind": "command", "cluster_id": "a"},
        {"session_id": "s2", "kind": "relation", "cluster_id": "b"},
        {"session_id": "s3", "kind": "relation", "cluster_id": "b"},  # not a client of this run
        {"session_id": "s2", "kind": "relation", "cluster_id": None},  # refused: never placed
    ]
    assert tenant_of_records(records, {"s1": "quiet", "s2": "flood"}) == {
        "quiet": Counter({"a": 1}), "flood": Counter({"b": 1})}
