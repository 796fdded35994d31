"""gateway/targets.py: where a write's target is, and clearing what a failed write left there."""

from __future__ import annotations

from pathlib import Path

from sparkfleet.gateway.targets import clear_uncommitted_location, local_path_exists, managed_table_location


def test_local_paths_are_checked_on_disk_and_other_filesystems_are_unknown(tmp_path: Path) -> None:
    assert local_path_exists(str(tmp_path)) is True
    assert local_path_exists(f"file://{tmp_path}/missing") is False
    assert local_path_exists("relative/out") is None
    assert local_path_exists("s3a://bucket/out") is None
    assert local_path_exists("") is None


def test_managed_table_locations_follow_the_warehouse_layout(tmp_path: Path) -> None:
    assert managed_table_location(tmp_path, "t") == tmp_path / "t"
    assert managed_table_location(tmp_path, "`Sales`.`T`") == tmp_path / "sales.db" / "t"
    assert managed_table_location(tmp_path, "spark_catalog.default.t") == tmp_path / "t"
    # After USE the gateway does not know the current database: unknown, not guessed.
    assert managed_table_location(tmp_path, "t", current_database="") is None
    assert managed_table_location(tmp_path, "a.b.c.d") is None


def test_only_uncommitted_output_is_cleared(tmp_path: Path) -> None:
    staging = tmp_path / "staged"
    (staging / "_temporary" / "0").mkdir(parents=True)
    (staging / "_temporary" / "0" / "part-0.parquet").write_bytes(b"x")
    assert clear_uncommitted_location(staging) is True and not staging.exists()

    committed = tmp_path / "committed"
    committed.mkdir()
    (committed / "part-0.parquet").write_bytes(b"x")
    (committed / "_temporary").mkdir()
    assert clear_uncommitted_location(committed) is False
    assert (committed / "part-0.parquet").exists()

    assert clear_uncommitted_location(tmp_path / "absent") is True
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert clear_uncommitted_location(a_file) is False
