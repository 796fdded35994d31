"""Typed settings: defaults derived from the machine, a TOML file, then command-line flags.

A typo in the file is an error, not a silently ignored key: every model forbids extra fields.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparkfleet.config_security import AuthSettings, TenantQuota, TlsSettings
from sparkfleet.errors import ConfigError

DEFAULT_GATEWAY_PORT = 15002
DEFAULT_ADMIN_PORT = 15080
DEFAULT_DATA_DIR = ".sparkfleet"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SizeClassSettings(_Strict):
    """One cluster size (the "VM size"): driver cores (``local[N]``) and heap."""

    cores: int = Field(ge=1)
    memory_mb: int = Field(ge=512)


def default_sizes(machine_cores: int | None = None) -> dict[str, SizeClassSettings]:
    """S/M/L/XL by heap and cores, with cores capped to what this machine has."""
    cores = machine_cores or len(os.sched_getaffinity(0))
    return {
        "S": SizeClassSettings(cores=1, memory_mb=1024),
        "M": SizeClassSettings(cores=min(2, cores), memory_mb=2048),
        "L": SizeClassSettings(cores=min(4, cores), memory_mb=4096),
        "XL": SizeClassSettings(cores=min(8, cores), memory_mb=8192),
    }


class GatewaySettings(_Strict):
    host: str = "localhost"
    port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=0, le=65535)
    # Seconds a client may take to stop a stream politely before the gateway cancels it on shutdown.
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    # Seconds a request waits for a ready cluster (while the pool starts, or replaces lost
    # clusters) before the client is told to retry later.
    capacity_wait_s: float = Field(default=120.0, ge=0)
    # Queries waiting for a cluster that admits them, at most (beyond: RESOURCE_EXHAUSTED, retry).
    max_queued: int = Field(default=1000, ge=0)
    # Seconds a query may wait in that queue before the client is told to retry later.
    queue_wait_s: float = Field(default=3600.0, ge=0)
    # Open sessions one user may hold at once (beyond: RESOURCE_EXHAUSTED naming this limit).
    max_sessions_per_user: int = Field(default=1000, ge=1)
    # Operations (ExecutePlan) one user may have queued, running or not yet released at once.
    max_operations_per_user: int = Field(default=1000, ge=1)
    # Bytes one AddArtifacts upload may carry, and one session's stored uploads may take together.
    max_artifact_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_artifact_session_bytes: int = Field(default=10 * 1024**3, ge=1)
    # RPCs the gateway serves at once (streams included); more are refused RESOURCE_EXHAUSTED by
    # gRPC. Each may hold one received message of up to 128 MiB, so this bounds that memory too.
    max_concurrent_rpcs: int = Field(default=2000, ge=1)


class PlacementSettings(_Strict):
    """Workload-aware placement (policy/placement.py) and the runaway-query watchdog."""

    # Ready clusters kept free of batch work while the pool has more clusters than this.
    interactive_reserve_clusters: int = Field(default=1, ge=0)
    # Concurrent batch queries per cluster.
    batch_per_cluster: int = Field(default=1, ge=1)
    # Concurrent interactive queries per core before a cluster counts as full.
    interactive_per_core: int = Field(default=4, ge=1)
    # Share of a cluster's heap its queries' estimated execution memory may add up to.
    memory_fraction: float = Field(default=0.6, gt=0, le=1)
    # A cluster load reading older than this is unknown, not idle (seconds).
    stale_after_s: float = Field(default=5.0, gt=0)
    # Seconds after batch work ended on a cluster during which it still counts as a pipeline's:
    # interactive work keeps off it, and it keeps its batch CPU share.
    batch_linger_s: float = Field(default=10.0, ge=0)
    # How often each cluster's Spark REST API is read for its load (seconds).
    load_poll_s: float = Field(default=1.0, gt=0)
    # Watchdog: an interactive query still running after this many seconds makes its workload batch.
    interactive_budget_s: float = Field(default=30.0, gt=0)
    # Watchdog: a query this many times slower than expected (after runaway_min_s) is a runaway.
    runaway_factor: float = Field(default=10.0, gt=1)
    runaway_min_s: float = Field(default=10.0, ge=0)
    # Local clusters running only batch work get only CPU time nothing else wants (the idle class
    # of their control group, policy/cpu_share.py); every other cluster competes by the weight of
    # its cores. Needs writable control groups (root); off unless placement is "workload".
    cpu_sharing: bool = True


class AutoscalerSettings(_Strict):
    """How many clusters of which size run (policy/scaling.py). On (the default): clusters are
    started and stopped from demand, within the budget; ``pool.clusters`` is only what runs at
    start. Off: the pool is fixed (a lost cluster is replaced)."""

    enabled: bool = True
    # "performance": warm idle capacity, scale out sooner; "standard": least compute, scale to zero.
    mode: str = Field(default="performance", pattern="^(standard|performance)$")
    # What all clusters together may use; default: every CPU, and 3/4 of the machine's memory.
    max_cores: int | None = Field(default=None, ge=1)
    max_memory_mb: int | None = Field(default=None, ge=512)
    # Override the mode's timing (seconds): how long queries wait before a cluster is added, how
    # long a cluster is idle before it is stopped, and how long a new cluster lives at least.
    scale_out_after_s: float | None = Field(default=None, ge=0)
    idle_before_stop_s: float | None = Field(default=None, ge=0)
    min_lifetime_s: float | None = Field(default=None, ge=0)


class RolloutSettings(_Strict):
    """How new runtimes roll out (policy/versions.py; runtimes are added with `sparkfleet runtimes add`)."""

    # Share of workloads a canary runtime runs.
    canary_fraction: float = Field(default=0.1, ge=0, le=1)
    # A canary becomes general after this many distinct workloads ran on it, with at most this
    # share of them regressed; the runtime before a general one is retired once the general one
    # ran as many and nothing is pinned to it. 0 turns the automatic stage changes off.
    promote_after_workloads: int = Field(default=20, ge=0)
    max_regression_rate: float = Field(default=0.05, ge=0, le=1)
    # A workload this many times slower on a runtime than on the one before it (medians of at
    # least min_runs_for_slowdown runs on each, on comparable input) is a performance regression.
    slowdown_ratio: float = Field(default=2.0, gt=1)
    min_runs_for_slowdown: int = Field(default=3, ge=1)


class AdminSettings(_Strict):
    host: str = "localhost"
    port: int = Field(default=DEFAULT_ADMIN_PORT, ge=0, le=65535)


class PoolSettings(_Strict):
    """The pool of clusters and how they are made real."""

    provisioner: str = "local"
    # Clusters started with sparkfleet, by size class name (a lost cluster is replaced by one of
    # its size). With the autoscaler off these are the whole pool.
    clusters: list[str] = Field(default_factory=lambda: ["S"])
    # Extra Spark confs for every cluster of the pool (server-wide confs such as reattach limits).
    spark_conf: dict[str, str] = Field(default_factory=dict)
    # How queries are placed: "workload" (default) decides per query from its estimated size, its
    # latency profile and the clusters' load (policy/placement.py); "session-affinity" pins each
    # session to one cluster, spread round robin (what a plain Spark Connect proxy does; a
    # baseline for benchmarks); "alternate" moves every request of a session to the next cluster
    # (a test setting that proves any query of a session runs on any cluster).
    placement: str = Field(default="workload", pattern="^(workload|session-affinity|alternate)$")
    # "shared": one catalog (a Hive metastore service) and one warehouse for the whole pool, so
    # permanent tables are the same on every cluster and outlive them. "per-cluster": each
    # cluster keeps its own in-memory catalog (tables live and die with their cluster).
    catalog: str = Field(default="shared", pattern="^(shared|per-cluster)$")
    # Seconds to wait for a cluster to accept Spark Connect calls before giving up on it.
    start_timeout_s: float = Field(default=180.0, gt=0)
    # Seconds to wait after SIGTERM before a cluster's processes are killed.
    stop_timeout_s: float = Field(default=10.0, gt=0)
    # Run a few small queries on a new cluster before it takes work (not when queries already
    # wait for it): its JVM's first query costs seconds of class loading and JIT otherwise.
    warm_up: bool = True


class Settings(_Strict):
    gateway: GatewaySettings = GatewaySettings()
    admin: AdminSettings = AdminSettings()
    pool: PoolSettings = PoolSettings()
    placement: PlacementSettings = PlacementSettings()
    autoscaler: AutoscalerSettings = AutoscalerSettings()
    rollout: RolloutSettings = RolloutSettings()
    sizes: dict[str, SizeClassSettings] = Field(default_factory=default_sizes)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    # Quotas per tenant name; "default" applies to tenants without their own.
    tenants: dict[str, TenantQuota] = Field(default_factory=dict)

    @field_validator("sizes")
    @classmethod
    def _sizes_not_empty(cls, sizes: dict[str, SizeClassSettings]) -> dict[str, SizeClassSettings]:
        if not sizes:
            raise ValueError("at least one size class is required")
        return sizes

    @model_validator(mode="after")
    def _pool_sizes_exist(self) -> "Settings":
        unknown = [name for name in self.pool.clusters if pool_member(name)[0] not in self.sizes]
        if unknown:
            raise ValueError(
                f"pool.clusters names unknown size class(es) {unknown}; known: {sorted(self.sizes)}"
            )
        for tenant, quota in self.tenants.items():
            if quota.max_size_class is not None and quota.max_size_class not in self.sizes:
                raise ValueError(
                    f"tenants.{tenant}.max_size_class {quota.max_size_class!r} is not a size class; "
                    f"known: {sorted(self.sizes)}"
                )
        return self


def pool_member(entry: str) -> tuple[str, str | None]:
    """A ``pool.clusters`` entry: ``"S"`` (the general runtime) or ``"S@4.2.1"`` (size@runtime)."""
    size, _, runtime = entry.partition("@")
    return size, runtime or None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, an optional TOML file and flag overrides (None = not given).

    Overrides use dotted names: ``{"gateway.port": 0, "data_dir": "/tmp/x"}``.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {config_file} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} cannot be read as UTF-8 text: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        if isinstance(raw.get("sizes"), dict):  # anything else is reported by validation below
            # A file that names only some sizes keeps the machine defaults for the others.
            merged = {k: v.model_dump() for k, v in default_sizes().items()}
            merged.update(raw["sizes"])
            raw["sizes"] = merged
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted}: {part} in {config_file} is not a table")
        node[leaf] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        source = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from exc
