"""gateway/request_checks.py and gateway/uploads.py: artifact names, operation ids, upload sizes, bounded messages."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import InvalidArgument, InvalidHandle, MalformedMessage, QuotaExceeded, SparkfleetError
from sparkfleet.gateway.request_checks import ARTIFACT_PREFIXES, check_artifact_name, check_operation_id
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.gateway.status import MAX_MESSAGE_BYTES, status_for
from sparkfleet.gateway.uploads import UploadGuard

GOOD_NAMES = [
    "jars/udf.jar", "pyfiles/helpers.py", "archives/env.tar.gz#env", "files/data.txt",
    "cache/" + "ab" * 32, "classes/com/example/A.class", "forward_to_fs/tmp/dest.txt",
]
BAD_NAMES = {
    "../evil.txt": "'..' part",
    "files/../../evil": "'..' part",
    "files/./x": "'.' or '..' part",
    "files//x": "empty",
    "files/": "empty",
    "/etc/passwd": "absolute path",
    "files/a\\..\\..\\b": "backslash",
    "files/a\x00b": "control character",
    "files/a\nb": "control character",
    "unknown/x.txt": "not under a directory",
    "x.jar": "not under a directory",
    "": "empty",
    "files/" + "x" * 5000: "longer than 4096 bytes",
}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_the_client_sends_pass(name: str) -> None:
    check_artifact_name(name)


@pytest.mark.parametrize(("name", "why"), BAD_NAMES.items())
def test_unsafe_names_are_refused_naming_the_artifact(name: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_artifact_name(name)
    assert why in info.value.message
    assert repr(name[:64]) in info.value.message
    assert info.value.grpc_code.name == "INVALID_ARGUMENT"


@given(st.text(max_size=80))
def test_an_accepted_name_stays_inside_its_directory(name: str) -> None:
    try:
        check_artifact_name(name)
    except InvalidArgument:
        return
    parts = name.split("/")
    assert name.startswith(ARTIFACT_PREFIXES)
    assert ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in name and not any(ord(c) < 0x20 for c in name)


@given(st.sampled_from(ARTIFACT_PREFIXES),
       st.lists(st.text(st.characters(blacklist_characters="/\\", blacklist_categories=("Cs",), min_codepoint=0x20), min_size=1), min_size=1, max_size=4))
def test_safe_parts_under_a_prefix_pass(prefix: str, parts: list[str]) -> None:
    if any(part in (".", "..") or "\x7f" in part for part in parts):
        return
    check_artifact_name(prefix + "/".join(parts))


def test_operation_ids_must_be_uuids_like_spark_says() -> None:
    check_operation_id(str(uuid.uuid4()))
    for bad in ("not-a-uuid", "", "x" * 1_000_000, str(uuid.uuid4()).upper() + "0"):
        with pytest.raises(InvalidHandle) as info:
            check_operation_id(bad)
        assert info.value.error_class == "INVALID_HANDLE.FORMAT"
        assert len(info.value.message) < 300


def test_status_messages_stay_within_grpc_trailers() -> None:
    for char in ("x", "é", "\U0001f600"):
        code, details, trailers = status_for(InvalidArgument(f"the value {char * 1_000_000} is wrong"))
        assert len(details.encode()) < MAX_MESSAGE_BYTES + 100
        assert details.startswith("the value") and "message cut at 2048" in details
        assert sum(len(value) for _, value in trailers) < 8192


def _session() -> VirtualSession:
    return VirtualSession("alice", str(uuid.uuid4()), str(uuid.uuid4()), 0.0, 0.0)


def _batch(*names: str, data: bytes = b"x") -> bytes:
    request = base_pb2.AddArtifactsRequest(session_id=str(uuid.uuid4()))
    for name in names:
        request.batch.artifacts.add(name=name).data.data = data
    return request.SerializeToString()


def test_upload_guard_refuses_a_bad_name_anywhere_in_a_batch() -> None:
    guard = UploadGuard(_session(), 10**6, 10**7)
    guard.check(_batch("files/a.txt", "jars/b.jar"))
    with pytest.raises(InvalidArgument, match="'files/../x'"):
        guard.check(_batch("files/a.txt", "files/../x"))


def test_upload_guard_refuses_a_huge_declared_size_before_any_data() -> None:
    request = base_pb2.AddArtifactsRequest(session_id=str(uuid.uuid4()))
    request.begin_chunk.name, request.begin_chunk.total_bytes, request.begin_chunk.num_chunks = "jars/x.jar", 2**62, 1
    with pytest.raises(QuotaExceeded) as info:
        UploadGuard(_session(), 10**6, 10**7).check(request.SerializeToString())
    assert info.value.quota == "gateway.max_artifact_upload_bytes"
    assert "'jars/x.jar' declares 4,611,686,018,427,387,904 bytes" in info.value.message


def test_upload_guard_counts_every_message_of_the_stream() -> None:
    guard = UploadGuard(_session(), 10_000, 10**7)
    chunk = base_pb2.AddArtifactsRequest(session_id=str(uuid.uuid4()))
    chunk.chunk.data = b"z" * 900
    with pytest.raises(QuotaExceeded) as info:
        for _ in range(100):
            guard.check(chunk.SerializeToString())
    assert info.value.quota == "gateway.max_artifact_upload_bytes"
    assert 10_000 < guard.received < 11_000


def test_upload_guard_refuses_a_malformed_message() -> None:
    with pytest.raises(MalformedMessage):
        UploadGuard(_session(), 10**6, 10**7).check(b"\x1a\xff\xff")


def test_every_refusal_is_one_of_ours() -> None:
    guard = UploadGuard(_session(), 100, 1000)
    for request in (_batch("files/" + "x" * 200), _batch("/abs"), b"\xff"):
        with pytest.raises(SparkfleetError):
            guard.check(request)
