"""AddArtifacts uploads kept on disk, so a session's artifacts can be replayed onto any cluster.

Each upload (one client stream) is teed into its own file while it is forwarded, and the journal
entry for it holds only a small reference (:class:`StoredUpload`). Layout under the data dir::

    artifacts/<sha256(user_id NUL session_id)[:32]>/<32 hex>.bin       one committed upload
    artifacts/<sha256(user_id NUL session_id)[:32]>/<32 hex>.bin.tmp   an upload in flight

A file is ``MAGIC`` followed by the stream's request messages, exactly as received, each
preceded by its length as a protobuf varint (what Java's ``writeDelimitedTo`` writes). Only the
digest directory and a random hex name ever reach the filesystem; artifact names never do.

A clone gets hard links to its source's files (same file names in its own directory), so every
session owns what its journal references and releasing one never touches another's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator

from sparkfleet.errors import MalformedMessage, StoreError
from sparkfleet.plan.wire import (
    LENGTH_DELIMITED,
    as_message,
    as_str,
    encode_varint,
    read_fields,
    read_repeated,
    remove_field,
)

if TYPE_CHECKING:
    from sparkfleet.gateway.journal import Entry

log = logging.getLogger(__name__)

MAGIC = b"sparkfleet-artifacts-v1\n"
# copyFromLocalToFs: a write to an external filesystem, done once, never replayed.
FORWARD_TO_FS_PREFIX = "forward_to_fs/"
# AddArtifactsRequest oneof payload; Batch.artifacts; SingleChunkArtifact/BeginChunkedArtifact.name
_BATCH, _BEGIN_CHUNK, _CHUNK = 3, 4, 5
_BATCH_ARTIFACTS = 1
_ARTIFACT_NAME = 1
_FILE_NAME = re.compile(r"[0-9a-f]{32}\.bin")
_TMP_SUFFIX = ".tmp"
# Defaults of gateway.max_artifact_upload_bytes and gateway.max_artifact_session_bytes.
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
DEFAULT_MAX_SESSION_BYTES = 10 * 1024**3


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """The journal payload of an AddArtifacts entry: which file holds the stream, and what it adds."""

    file: str  # a name inside the session's directory
    names: tuple[str, ...]
    messages: int
    size: int  # bytes of the file, MAGIC included: a shorter file is truncated
    # cache/ artifacts Spark could not read as Arrow, and why (gateway/local_data.py)
    unreadable: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        raw: dict[str, object] = {"file": self.file, "names": list(self.names), "messages": self.messages,
                                  "size": self.size}
        if self.unreadable:
            raw["unreadable"] = self.unreadable
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "StoredUpload":
        try:
            raw = json.loads(payload)
            unreadable = {str(name): str(why) for name, why in raw.get("unreadable", {}).items()}
            stored = cls(str(raw["file"]), tuple(str(n) for n in raw["names"]), int(raw["messages"]), int(raw["size"]),
                         unreadable)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"an artifact journal entry is unreadable ({exc}); the store is damaged") from None
        _check_file_name(stored.file)
        return stored


def stored_uploads(entries: Iterable["Entry"]) -> list[StoredUpload]:
    """The uploads that AddArtifacts journal entries refer to (unreadable ones are logged, skipped)."""
    found = []
    for entry in entries:
        if entry.rpc != "AddArtifacts":
            continue
        try:
            found.append(StoredUpload.decode(entry.payload))
        except StoreError as exc:
            log.warning("skipping journal entry %s: %s", entry.key, exc.message)
    return found


def artifact_key(names: Iterable[str]) -> str:
    """The journal key of an upload: re-adding the same names supersedes the earlier upload.
    Several names show the first and a digest of all (keys are shown in REPLAY_FAILED errors)."""
    unique = sorted(set(names))
    if len(unique) == 1:
        return f"artifact:{unique[0]}"
    digest = hashlib.sha256("\0".join(unique).encode()).hexdigest()[:16]
    return f"artifact:{unique[0]} and {len(unique) - 1} more #{digest}"


def _check_file_name(name: str) -> None:
    # Names come back from the store (SQLite); refuse anything that could leave the directory.
    if not _FILE_NAME.fullmatch(name):
        raise StoreError(f"refusing artifact file name {name!r}: not one the gateway writes")


def _encode_message_field(number: int, payload: bytes) -> bytes:
    return encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


class ArtifactUpload:
    """One AddArtifacts stream being written to disk; ``commit`` or ``abort`` ends it."""

    def __init__(self, directory: Path, file_name: str) -> None:
        self._final = directory / file_name
        self._tmp = directory / (file_name + _TMP_SUFFIX)
        self.names: list[str] = []
        self.messages = 0
        self.size = len(MAGIC)
        # Why the copy could not be kept, if it could not; the stream to the cluster goes on.
        self.failure: StoreError | None = None
        self._skipping_chunks = False
        self._file: BinaryIO | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "xb")
            self._file.write(MAGIC)
        except OSError as exc:
            self._fail(exc)

    def add(self, request: bytes) -> None:
        """Keep one request message (minus forward_to_fs artifacts). Never raises: a failure to
        write is remembered in ``failure`` and the upload can no longer be committed."""
        if self._file is None:
            return
        try:
            kept = self._replayable(request)
        except MalformedMessage as exc:
            # The cluster will judge the message; the gateway just cannot replay it.
            self.failure = StoreError(f"an AddArtifacts message could not be read: {exc.message}")
            self._discard()
            return
        if kept is None:
            return
        try:
            self._file.write(encode_varint(len(kept)))
            self._file.write(kept)
        except OSError as exc:
            self._fail(exc)
            return
        self.messages += 1
        self.size += len(encode_varint(len(kept))) + len(kept)

    def _replayable(self, request: bytes) -> bytes | None:
        """``request`` without its forward_to_fs artifacts, or None if nothing is left."""
        fields = read_fields(request, frozenset({_BATCH, _BEGIN_CHUNK, _CHUNK}))
        if _BEGIN_CHUNK in fields:
            begin = as_message(fields[_BEGIN_CHUNK], "begin_chunk")
            name = as_str(read_fields(begin, frozenset({_ARTIFACT_NAME})).get(_ARTIFACT_NAME))
            self._skipping_chunks = name.startswith(FORWARD_TO_FS_PREFIX)
            if self._skipping_chunks:
                return None
            self.names.append(name)
            return request
        if _CHUNK in fields:
            return None if self._skipping_chunks else request
        if _BATCH in fields:
            self._skipping_chunks = False
            artifacts = read_repeated(as_message(fields[_BATCH], "batch"), _BATCH_ARTIFACTS)
            kept = []
            for artifact in artifacts:
                body = as_message(artifact, "artifacts")
                name = as_str(read_fields(body, frozenset({_ARTIFACT_NAME})).get(_ARTIFACT_NAME))
                if not name.startswith(FORWARD_TO_FS_PREFIX):
                    kept.append(bytes(body))
                    self.names.append(name)
            if len(kept) == len(artifacts):
                return request
            if not kept:
                return None
            batch = b"".join(_encode_message_field(_BATCH_ARTIFACTS, body) for body in kept)
            return remove_field(request, _BATCH) + _encode_message_field(_BATCH, batch)
        return request

    def commit(self, unreadable: dict[str, str] | None = None) -> StoredUpload | None:
        """Give the upload its final name; None if it adds nothing replayable. Not fsynced: a
        file damaged by a crash is caught by its size when it is replayed. ``unreadable``: its
        cache/ artifacts Spark could not read, kept with it."""
        if self.failure is not None:
            raise self.failure
        if self._file is None or not self.names:
            self.abort()
            return None
        file, self._file = self._file, None
        try:
            file.close()
            os.replace(self._tmp, self._final)
        except OSError as exc:
            self._fail(exc)
            raise self.failure from None  # type: ignore[misc]
        return StoredUpload(self._final.name, tuple(self.names), self.messages, self.size, dict(unreadable or {}))

    def abort(self) -> None:
        """Forget the upload (the cluster refused it or the client went away). Safe to repeat."""
        self._discard()

    def _fail(self, exc: OSError) -> None:
        self.failure = StoreError(
            f"the gateway could not keep a copy of uploaded artifacts in {self._tmp.parent}: "
            f"{exc.strerror or exc}; without it they cannot follow the session to other clusters. "
            "Free space in the data directory and add the artifacts again."
        )
        self._discard()

    def _discard(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass  # the data is being thrown away anyway
        finally:
            self._file = None
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the unfinished upload %s: %s", self._tmp, exc)


class ArtifactStore:
    """The artifact files of every session, under ``root`` (``<data_dir>/artifacts``)."""

    def __init__(
        self, root: Path, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES
    ) -> None:
        self.root = root
        # Bytes one AddArtifacts stream may carry, and a session's stored uploads may take together.
        self.max_upload_bytes = max_upload_bytes
        self.max_session_bytes = max_session_bytes

    def open(self) -> "ArtifactStore":
        """Create the root and remove uploads a previous run left unfinished."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for leftover in self.root.glob(f"*/*{_TMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot prepare the artifact store in {self.root}: {exc}") from exc
        return self

    def session_dir(self, user_id: str, session_id: str) -> Path:
        digest = hashlib.sha256(f"{user_id}\0{session_id}".encode()).hexdigest()[:32]
        return self.root / digest

    def begin(self, user_id: str, session_id: str) -> ArtifactUpload:
        """Start keeping one AddArtifacts stream of this session."""
        return ArtifactUpload(self.session_dir(user_id, session_id), f"{uuid.uuid4().hex}.bin")

    def path(self, user_id: str, session_id: str, stored: StoredUpload) -> Path:
        _check_file_name(stored.file)
        return self.session_dir(user_id, session_id) / stored.file

    def read(self, user_id: str, session_id: str, stored: StoredUpload) -> "StoredMessages":
        """The stored request messages, one at a time. The file is opened and checked now
        (missing or truncated: StoreError); a damaged record raises StoreError while iterating."""
        return StoredMessages(self.path(user_id, session_id, stored), stored)

    def delete(self, user_id: str, session_id: str, stored: StoredUpload) -> None:
        """Remove one upload's file (its journal entry was superseded). Never raises."""
        try:
            path = self.path(user_id, session_id, stored)
            path.unlink(missing_ok=True)
        except (OSError, StoreError) as exc:
            log.warning("could not delete artifact file %s: %s", stored.file, exc)

    def share(self, source: tuple[str, str], clone: tuple[str, str], uploads: Iterable[StoredUpload]) -> None:
        """Give a cloned session its own links to the source's files (copies where links fail)."""
        target = self.session_dir(*clone)
        for stored in uploads:
            src = self.path(*source, stored)
            dst = target / stored.file
            try:
                target.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except FileExistsError:
                    pass
                except OSError:
                    shutil.copyfile(src, dst)
            except OSError as exc:
                # Replaying that entry for the clone will fail and say so; the clone still works
                # on the cluster it was cloned on.
                log.warning("could not share artifact file %s with a cloned session: %s", src, exc)

    def delete_session(self, user_id: str, session_id: str) -> None:
        """Remove every artifact file of a released session. Never raises."""
        directory = self.session_dir(user_id, session_id)
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            log.warning("could not delete every artifact file in %s", directory)


class StoredMessages:
    """An open upload file, read one message at a time; close it when done (or use ``with``)."""

    def __init__(self, path: Path, stored: StoredUpload) -> None:
        self.path = path
        self._count = stored.messages
        try:
            self._file: BinaryIO = open(path, "rb")
        except FileNotFoundError:
            raise StoreError(f"the artifact file {path} is missing") from None
        except OSError as exc:
            raise StoreError(f"cannot read the artifact file {path}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size != stored.size or self._file.read(len(MAGIC)) != MAGIC:
                raise StoreError(f"the artifact file {path} is damaged ({size} bytes, expected {stored.size})")
        except BaseException:
            self._file.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self._count):
            length = _read_varint(self._file, self.path)
            message = self._file.read(length)
            if len(message) != length:
                raise StoreError(f"the artifact file {self.path} ends inside a message")
            yield message

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "StoredMessages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_varint(f: BinaryIO, path: Path) -> int:
    result = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            raise StoreError(f"the artifact file {path} ends inside a length prefix")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
    raise StoreError(f"the artifact file {path} has a length prefix longer than 10 bytes")
