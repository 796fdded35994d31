"""gateway/input_sizes.py: bytes on disk of a plan's inputs, as Spark would list them, cached on the clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkfleet.clock import VirtualClock
from sparkfleet.gateway.input_sizes import InputSizer, expand_braces, path_bytes
from sparkfleet.plan.relations import Scan


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A partitioned parquet-like directory with the bookkeeping files Spark skips."""
    root = tmp_path / "events"
    write(root / "day=1" / "part-0.parquet", 100)
    write(root / "day=1" / "part-1.parquet", 50)
    write(root / "day=2" / "part-0.parquet", 25)
    write(root / "_col=3" / "part-0.parquet", 5)  # a partition directory, not a hidden one
    write(root / "_SUCCESS", 1000)
    write(root / "day=1" / ".part-0.parquet.crc", 1000)
    write(root / "_temporary" / "0" / "part-9.parquet", 1000)
    return root


@pytest.fixture
def sizer(tmp_path: Path, clock: VirtualClock) -> InputSizer:
    return InputSizer(warehouse=tmp_path / "warehouse", clock=clock, ttl_s=60)


def test_a_directory_is_summed_recursively_without_hidden_files(dataset: Path) -> None:
    assert path_bytes(str(dataset)) == 180
    assert path_bytes(f"file://{dataset}") == 180
    assert path_bytes(f"file:{dataset}/day=1/part-0.parquet") == 100


def test_globs_and_alternatives_are_expanded(dataset: Path) -> None:
    assert path_bytes(f"{dataset}/day=*") == 175
    assert path_bytes(f"{dataset}/day={{1,2}}/part-0.parquet") == 125
    assert path_bytes(f"{dataset}/day=9*") is None  # matches nothing: Spark would fail, size unknown
    assert sorted(expand_braces("/d/{a,b}/x{1,2}")) == ["/d/a/x1", "/d/a/x2", "/d/b/x1", "/d/b/x2"]


@pytest.mark.parametrize("name", ["s3a://bucket/events", "hdfs://nn/events", "relative/dir", "file://otherhost/x"])
def test_what_the_gateway_cannot_see_is_unknown(name: str) -> None:
    assert path_bytes(name) is None


def test_a_missing_path_is_unknown(tmp_path: Path) -> None:
    assert path_bytes(str(tmp_path / "nothing-here")) is None


def test_warehouse_tables_are_found_by_any_spelling(tmp_path: Path, sizer: InputSizer) -> None:
    warehouse = tmp_path / "warehouse"
    write(warehouse / "orders" / "part-0.parquet", 70)
    write(warehouse / "sales.db" / "customers" / "part-0.parquet", 30)
    for name in ("orders", "default.orders", "spark_catalog.default.ORDERS", "`default`.`orders`"):
        assert sizer.size_of(Scan("table", name)) == 70, name
    for name in ("sales.customers", "SPARK_CATALOG.Sales.Customers", "`sales`.`customers`"):
        assert sizer.size_of(Scan("table", name)) == 30, name
    assert sizer.size_of(Scan("table", "customers"), current_database="sales") == 30
    assert sizer.size_of(Scan("table", "customers")) is None  # no such table in `default`
    assert sizer.size_of(Scan("table", "a.b.c.d")) is None


def test_sources_and_tables_without_a_warehouse_are_unknown(tmp_path: Path, clock: VirtualClock) -> None:
    write(tmp_path / "orders" / "part-0.parquet", 70)
    no_warehouse = InputSizer(warehouse=None, clock=clock)
    assert no_warehouse.size_of(Scan("table", "orders")) is None
    assert no_warehouse.size_of(Scan("source", "jdbc", "jdbc")) is None


def test_sizes_maps_every_scan(dataset: Path, sizer: InputSizer) -> None:
    scans = [Scan("path", str(dataset), "parquet"), Scan("path", "s3a://b/x", "parquet")]
    assert sizer.sizes(scans) == {scans[0]: 180, scans[1]: None}


def test_sizes_are_cached_until_the_ttl_passes(dataset: Path, sizer: InputSizer, clock: VirtualClock) -> None:
    scan = Scan("path", str(dataset), "parquet")
    assert sizer.size_of(scan) == 180
    write(dataset / "day=3" / "part-0.parquet", 20)
    clock.advance(59)
    assert sizer.size_of(scan) == 180  # the cached walk
    clock.advance(2)
    assert sizer.size_of(scan) == 200  # expired: walked again


def test_an_unknown_is_cached_too(tmp_path: Path, sizer: InputSizer, clock: VirtualClock) -> None:
    scan = Scan("path", str(tmp_path / "later"), "csv")
    assert sizer.size_of(scan) is None
    write(tmp_path / "later" / "a.csv", 9)
    assert sizer.size_of(scan) is None
    clock.advance(61)
    assert sizer.size_of(scan) == 9


def test_a_huge_tree_is_a_lower_bound_after_max_files(tmp_path: Path, clock: VirtualClock) -> None:
    for i in range(30):
        write(tmp_path / "many" / f"d{i % 3}" / f"part-{i}.csv", 10)
    bounded = InputSizer(warehouse=None, clock=clock, max_files=12)
    size = bounded.size_of(Scan("path", str(tmp_path / "many"), "csv"))
    assert size == 120  # stopped after 12 files of 10 bytes: at least this much
    assert InputSizer(warehouse=None, clock=clock).size_of(Scan("path", str(tmp_path / "many"), "csv")) == 300


def test_the_cache_is_bounded(tmp_path: Path, clock: VirtualClock) -> None:
    small = InputSizer(warehouse=None, clock=clock, max_entries=2)
    files = [write(tmp_path / f"f{i}.csv", i + 1) for i in range(3)]
    for path in files:
        small.size_of(Scan("path", str(path), "csv"))
    files[0].write_bytes(b"x" * 50)
    # The oldest entry was evicted, so the first file is measured afresh; the newest is still cached.
    assert small.size_of(Scan("path", str(files[0]), "csv")) == 50
    files[2].write_bytes(b"x" * 50)
    assert small.size_of(Scan("path", str(files[2]), "csv")) == 3
