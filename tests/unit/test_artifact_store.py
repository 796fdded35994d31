"""The artifact file store: uploads written, committed, aborted, read back, shared and deleted."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import StoreError
from sparkfleet.gateway.artifacts import (
    ArtifactStore,
    StoredUpload,
    artifact_key,
    stored_uploads,
)
from sparkfleet.gateway.journal import Entry
from sparkfleet.gateway.sessions import SessionRegistry
from sparkfleet.plan.state import Effect

USER, SESSION = "alice", "9b4b8f5e-3f57-4a59-9d3e-2f1e8c1e6a10"
Req = base_pb2.AddArtifactsRequest


def _chunk(data: bytes) -> Req.ArtifactChunk:
    return Req.ArtifactChunk(data=data, crc=zlib.crc32(data))


def batch(*artifacts: tuple[str, bytes]) -> bytes:
    request = Req(session_id=SESSION, user_context=base_pb2.UserContext(user_id=USER))
    for name, data in artifacts:
        request.batch.artifacts.add(name=name, data=_chunk(data))
    return request.SerializeToString()


def chunked(name: str, parts: list[bytes]) -> list[bytes]:
    first = Req(session_id=SESSION)
    first.begin_chunk.name = name
    first.begin_chunk.total_bytes = sum(map(len, parts))
    first.begin_chunk.num_chunks = len(parts)
    first.begin_chunk.initial_chunk.CopyFrom(_chunk(parts[0]))
    rest = [Req(session_id=SESSION, chunk=_chunk(p)).SerializeToString() for p in parts[1:]]
    return [first.SerializeToString(), *rest]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts").open()


def _upload(store: ArtifactStore, messages: list[bytes]) -> StoredUpload | None:
    upload = store.begin(USER, SESSION)
    for message in messages:
        upload.add(message)
    return upload.commit()


def _read_all(store: ArtifactStore, stored: StoredUpload, user: str = USER, session: str = SESSION) -> list[bytes]:
    with store.read(user, session, stored) as messages:
        return list(messages)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_committed_upload_reads_back_message_for_message(store: ArtifactStore) -> None:
    messages = [batch(("pyfiles/a.py", b"x = 1\n"), ("files/b.txt", b"hello")), *chunked("jars/big.jar", [b"1" * 10, b"2" * 7, b"3"])]
    stored = _upload(store, messages)
    assert stored is not None
    assert stored.names == ("pyfiles/a.py", "files/b.txt", "jars/big.jar")
    assert stored.messages == 4
    assert _read_all(store, stored) == messages
    # One final file in the session's own directory, nothing left in flight.
    assert _files(store.root) == [store.session_dir(USER, SESSION) / stored.file]
    assert stored.size == os.path.getsize(_files(store.root)[0])


def test_the_journal_payload_is_small_and_round_trips(store: ArtifactStore) -> None:
    stored = _upload(store, chunked("cache/" + "ab" * 32, [b"z" * 40_000, b"y" * 40_000]))
    assert stored is not None
    payload = stored.encode()
    assert len(payload) < 300
    assert StoredUpload.decode(payload) == stored


def test_an_aborted_upload_leaves_nothing(store: ArtifactStore) -> None:
    upload = store.begin(USER, SESSION)
    upload.add(batch(("pyfiles/a.py", b"x = 1\n")))
    assert _files(store.root)  # in flight under a temporary name
    upload.abort()
    upload.abort()  # twice is harmless (the client went away and the call failed)
    assert _files(store.root) == []


def test_forward_to_fs_uploads_are_not_kept(store: ArtifactStore) -> None:
    messages = chunked("forward_to_fs/tmp/dest.bin", [b"a" * 5, b"b" * 5]) + [batch(("forward_to_fs/tmp/x", b"1"))]
    assert _upload(store, messages) is None
    assert _files(store.root) == []


def test_forward_to_fs_parts_of_a_mixed_stream_are_dropped(store: ArtifactStore) -> None:
    messages = [
        batch(("forward_to_fs/tmp/x", b"1"), ("files/keep.txt", b"2")),
        *chunked("forward_to_fs/tmp/big", [b"a", b"b"]),
        *chunked("jars/keep.jar", [b"c", b"d"]),
    ]
    stored = _upload(store, messages)
    assert stored is not None
    assert stored.names == ("files/keep.txt", "jars/keep.jar")
    kept = [Req.FromString(m) for m in _read_all(store, stored)]
    assert [a.name for a in kept[0].batch.artifacts] == ["files/keep.txt"]
    assert kept[0].batch.artifacts[0].data.data == b"2"
    assert kept[0].session_id == SESSION
    assert kept[1].begin_chunk.name == "jars/keep.jar" and kept[2].chunk.data == b"d"
    assert len(kept) == 3


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pyfiles/", "files/", "jars/", "cache/", "archives/", "forward_to_fs/"]),
            st.text(min_size=1, max_size=12),
            st.binary(max_size=64),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_what_is_kept_is_exactly_the_replayable_artifacts(tmp_path_factory, artifacts) -> None:  # type: ignore[no-untyped-def]
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts")).open()
    named = [(prefix + name, data) for prefix, name, data in artifacts]
    stored = _upload(store, [batch(*named)])
    expected = [(n, d) for n, d in named if not n.startswith("forward_to_fs/")]
    if not expected:
        assert stored is None
        return
    assert stored is not None
    assert list(stored.names) == [n for n, _ in expected]
    (message,) = _read_all(store, stored)
    assert [(a.name, a.data.data) for a in Req.FromString(message).batch.artifacts] == expected


def test_keys_depend_on_the_set_of_names_only() -> None:
    assert artifact_key(["pyfiles/a.py"]) == "artifact:pyfiles/a.py"
    assert artifact_key(["b", "a", "a"]) == artifact_key(["a", "b"])
    assert artifact_key(["a", "b"]) != artifact_key(["a", "c"])
    assert artifact_key(["a", "b"]).startswith("artifact:a and 1 more #")


@pytest.mark.parametrize(
    "file", ["../../sparkfleet.db", "/etc/passwd", "a/b.bin", "..", "", "0" * 32 + ".bin/../x", "0" * 31 + ".bin"]
)
def test_file_names_that_could_leave_the_directory_are_refused(store: ArtifactStore, file: str) -> None:
    bad = StoredUpload(file, ("files/x",), 1, 10)
    with pytest.raises(StoreError):
        StoredUpload.decode(bad.encode())
    with pytest.raises(StoreError):
        store.read(USER, SESSION, bad)
    store.delete(USER, SESSION, bad)  # refused quietly: deletes nothing
    assert store.root.parent.joinpath("artifacts").is_dir()


def test_ids_never_become_paths(store: ArtifactStore) -> None:
    for user, session in [("../../etc", "x"), ("/abs", "../.."), ("a\0b", "c/d")]:
        directory = store.session_dir(user, session)
        assert directory.parent == store.root
        assert len(directory.name) == 32 and all(c in "0123456789abcdef" for c in directory.name)
    assert store.session_dir("u", "s") != store.session_dir("u", "t") != store.session_dir("v", "s")


def test_artifact_names_never_become_paths(store: ArtifactStore) -> None:
    stored = _upload(store, [batch(("../../../escape.txt", b"x"), ("/etc/passwd", b"y"))])
    assert stored is not None
    assert [p.parent for p in _files(store.root)] == [store.session_dir(USER, SESSION)]


def test_a_missing_or_truncated_file_is_reported(store: ArtifactStore) -> None:
    stored = _upload(store, chunked("jars/big.jar", [b"1" * 100, b"2" * 100]))
    assert stored is not None
    path = store.path(USER, SESSION, stored)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="damaged"):
        store.read(USER, SESSION, stored)
    path.unlink()
    with pytest.raises(StoreError, match="missing"):
        store.read(USER, SESSION, stored)


def test_a_damaged_record_is_reported_while_reading(store: ArtifactStore) -> None:
    stored = _upload(store, [batch(("files/a", b"1" * 50))])
    assert stored is not None
    # The file has the expected size, but the journal claims one message more than it holds.
    longer = StoredUpload(stored.file, stored.names, stored.messages + 1, stored.size)
    with pytest.raises(StoreError, match="ends inside"):
        _read_all(store, longer)
    # A length prefix that runs past the end of the file.
    path = store.path(USER, SESSION, stored)
    data = path.read_bytes()
    magic_end = data.index(b"\n") + 1
    path.write_bytes(data[:magic_end] + b"\x7f" + data[magic_end + 1 :])
    with pytest.raises(StoreError, match="ends inside a message"):
        _read_all(store, stored)


def test_a_failed_write_surfaces_at_commit_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.write_text("not a directory")
    upload = ArtifactStore(root).begin(USER, SESSION)
    upload.add(batch(("files/a", b"1")))  # never raises: the stream to the cluster goes on
    with pytest.raises(StoreError, match="could not keep a copy"):
        upload.commit()
    upload.abort()
    assert root.read_text() == "not a directory"


def test_superseded_uploads_can_be_deleted(store: ArtifactStore) -> None:
    first = _upload(store, [batch(("files/a", b"1"))])
    second = _upload(store, [batch(("files/a", b"1"))])
    assert first is not None and second is not None and first.file != second.file
    store.delete(USER, SESSION, first)
    store.delete(USER, SESSION, first)  # already gone: fine
    assert _files(store.root) == [store.path(USER, SESSION, second)]


def test_a_clone_keeps_its_files_when_the_source_is_released(store: ArtifactStore) -> None:
    stored = _upload(store, [batch(("pyfiles/m.py", b"v = 3\n"))])
    assert stored is not None
    entries = [
        Entry(1, "conf:x", False, "Config", b"\x01"),
        Entry(2, artifact_key(stored.names), False, "AddArtifacts", stored.encode()),
    ]
    assert stored_uploads(entries) == [stored]
    clone = (USER, "0c4b8f5e-3f57-4a59-9d3e-2f1e8c1e6a10")
    store.share((USER, SESSION), clone, stored_uploads(entries))
    store.delete_session(USER, SESSION)
    assert not store.session_dir(USER, SESSION).exists()
    assert _read_all(store, stored, *clone) == [batch(("pyfiles/m.py", b"v = 3\n"))]
    store.delete_session(*clone)
    assert _files(store.root) == []


def test_open_removes_uploads_a_previous_run_left_unfinished(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts").open()
    upload = store.begin(USER, SESSION)
    upload.add(batch(("files/a", b"1")))
    kept = _upload(store, [batch(("files/b", b"2"))])
    assert kept is not None
    ArtifactStore(store.root).open()  # a restart while the first upload was in flight
    assert _files(store.root) == [store.path(USER, SESSION, kept)]


def test_sessions_share_files_with_clones_and_delete_only_their_own(tmp_path: Path, db, clock) -> None:  # type: ignore[no-untyped-def]
    store = ArtifactStore(tmp_path / "artifacts").open()
    registry = SessionRegistry(db, clock, artifacts=store)
    source = registry.resolve(USER, SESSION, "_SPARK_CONNECT_PYTHON", "")
    message = batch(("pyfiles/m.py", b"v = 3\n"))
    stored = _upload(store, [message])
    assert stored is not None and source.journal is not None
    source.journal.record(Effect(artifact_key(stored.names)), "AddArtifacts", stored.encode())

    clone = registry.adopt_clone(source, "0c4b8f5e-3f57-4a59-9d3e-2f1e8c1e6a10", "c1", "backend-id")
    registry.close(source)
    assert not store.session_dir(USER, SESSION).exists()
    assert clone.journal is not None
    (copied,) = stored_uploads(clone.journal.entries)
    assert _read_all(store, copied, USER, clone.session_id) == [message]
    registry.close(clone, forget=True)
    assert _files(store.root) == []
