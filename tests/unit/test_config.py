"""config.py: defaults, then a TOML file, then flags; every mistake is a ConfigError naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sparkfleet.config import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_GATEWAY_PORT,
    SizeClassSettings,
    default_sizes,
    load_settings,
)
from sparkfleet.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "sparkfleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.gateway.host == "localhost"
    assert settings.gateway.port == DEFAULT_GATEWAY_PORT == 15002
    assert settings.admin.port == DEFAULT_ADMIN_PORT == 15080
    assert settings.pool.provisioner == "local"
    # The embedded default: one small cluster to start with, then the autoscaler in Performance mode.
    assert settings.pool.clusters == ["S"]
    assert settings.autoscaler.enabled and settings.autoscaler.mode == "performance"
    assert settings.data_dir == Path(".sparkfleet")
    assert settings.sizes == default_sizes()
    machine = len(os.sched_getaffinity(0))
    assert all(1 <= size.cores <= max(machine, 1) for size in settings.sizes.values())


@pytest.mark.parametrize(
    ("machine", "cores"),
    [(1, [1, 1, 1, 1]), (2, [1, 2, 2, 2]), (6, [1, 2, 4, 6]), (64, [1, 2, 4, 8])],
)
def test_default_sizes_are_capped_by_the_machine(machine: int, cores: list[int]) -> None:
    sizes = default_sizes(machine_cores=machine)
    assert list(sizes) == ["S", "M", "L", "XL"]
    assert [s.cores for s in sizes.values()] == cores
    assert [s.memory_mb for s in sizes.values()] == [1024, 2048, 4096, 8192]


def test_a_file_sets_values_and_keeps_defaults_elsewhere(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "/var/lib/sparkfleet"

[gateway]
port = 16002
shutdown_grace_s = 1.5

[pool]
clusters = ["S", "S", "XXL"]
spark_conf = { "spark.sql.shuffle.partitions" = "4" }

[sizes.XXL]
cores = 16
memory_mb = 32768
""",
    )
    settings = load_settings(path)
    assert settings.gateway.port == 16002
    assert settings.gateway.shutdown_grace_s == 1.5
    assert settings.gateway.host == "localhost"
    assert settings.admin.port == DEFAULT_ADMIN_PORT
    assert settings.data_dir == Path("/var/lib/sparkfleet")
    assert settings.pool.clusters == ["S", "S", "XXL"]
    assert settings.pool.spark_conf == {"spark.sql.shuffle.partitions": "4"}
    # Naming one size keeps the machine's defaults for the others.
    assert settings.sizes["XXL"] == SizeClassSettings(cores=16, memory_mb=32768)
    assert {k: v for k, v in settings.sizes.items() if k != "XXL"} == default_sizes()


def test_a_file_may_redefine_a_default_size(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[sizes.M]\ncores = 1\nmemory_mb = 768\n"))
    assert settings.sizes["M"] == SizeClassSettings(cores=1, memory_mb=768)
    assert settings.sizes["L"] == default_sizes()["L"]


def test_dotted_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nport = 16002\nhost = "0.0.0.0"\n')
    settings = load_settings(path, **{"gateway.port": 0, "admin.port": 9999, "data_dir": "/tmp/x"})
    assert settings.gateway.port == 0
    assert settings.gateway.host == "0.0.0.0"  # untouched by the overrides
    assert settings.admin.port == 9999
    assert settings.data_dir == Path("/tmp/x")


def test_none_overrides_mean_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\nport = 16002\n")
    settings = load_settings(path, **{"gateway.port": None, "data_dir": None})
    assert settings.gateway.port == 16002
    assert settings.data_dir == Path(".sparkfleet")


def test_overrides_work_without_a_file() -> None:
    settings = load_settings(None, **{"pool.clusters": ["S", "L"], "pool.provisioner": "local"})
    assert settings.pool.clusters == ["S", "L"]


@given(st.integers(0, 65535))
def test_any_valid_port_is_accepted(port: int) -> None:
    assert load_settings(**{"gateway.port": port}).gateway.port == port


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_ports_out_of_range_name_the_setting(port: int) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.port"):
        load_settings(**{"gateway.port": port})


# ---- mistakes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("colour = 'blue'\n", "colour"),
        ("[gateway]\nprot = 1\n", "gateway.prot"),
        ("[pool]\nclusterz = ['S']\n", "pool.clusterz"),
        ("[sizes.S]\ncores = 1\nmemory_mb = 1024\nvcpus = 2\n", "sizes.S.vcpus"),
        ("[admin.extra]\nx = 1\n", "admin.extra"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(tmp_path: Path, toml: str, named: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert named in raised.value.message
    assert str(path) in raised.value.message
    assert raised.value.error_class == "SPARKFLEET.CONFIG"


def test_unknown_override_keys_are_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"pool\.nope"):
        load_settings(**{"pool.nope": 1})


def test_unknown_size_names_in_the_pool_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, "[pool]\nclusters = ['M', 'HUGE']\n"))
    assert "pool.clusters" in raised.value.message
    assert "'HUGE'" in raised.value.message
    assert "known: ['L', 'M', 'S', 'XL']" in raised.value.message


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[sizes.S]\ncores = 0\nmemory_mb = 1024\n", "sizes.S.cores"),
        ("[sizes.S]\ncores = 1\nmemory_mb = 100\n", "sizes.S.memory_mb"),
        ("[sizes.S]\ncores = 1\n", "sizes.S.memory_mb"),  # a redefined size is whole
        ("[pool]\nstart_timeout_s = 0\n", "pool.start_timeout_s"),
        ("[gateway]\nport = 'high'\n", "gateway.port"),
        ("sizes = 5\n", "sizes"),
        ("sizes = ['S']\n", "sizes"),
        ("[sizes]\nS = 5\n", "sizes.S"),
        ("gateway = 5\n", "gateway"),
    ],
)
def test_invalid_values_are_errors_naming_the_setting(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, toml))
    assert f"{named}:" in raised.value.message


def test_an_override_into_a_value_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.port.*gateway.*not a table"):
        load_settings(write(tmp_path, "gateway = 5\n"), **{"gateway.port": 1})


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_settings(missing)


def test_invalid_toml_is_an_error_with_the_parser_position(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid TOML: .*line 1"):
        load_settings(path)


def test_a_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00port")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path)  # a directory


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.gateway.port = 1  # type: ignore[misc]
