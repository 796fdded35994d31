"""How a query waiting in the gateway's queue looks to a client: GetStatus, and Interrupt.

The operation is not on any cluster yet, so the gateway answers for it: state RUNNING (it exists
and has not ended, as Spark reports a submitted operation) with one extension, a
``google.protobuf.Struct`` ``{"sparkfleet": {"queued": true, "position": N, "reason": "..."}}``
that any client can unpack without sparkfleet's own protos.
"""

from __future__ import annotations

from google.protobuf import any_pb2, struct_pb2
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.gateway.routing import Router

_Status = base_pb2.GetStatusResponse.OperationStatus
_INTERRUPT_ALL, _INTERRUPT_OPERATION = 1, 3  # InterruptRequest.InterruptType


def queued_status(operation_id: str, position: int, reason: str) -> _Status:
    info = struct_pb2.Struct()
    info.update({"sparkfleet": {"queued": True, "position": position, "reason": reason}})
    extension = any_pb2.Any()
    extension.Pack(info)
    return _Status(operation_id=operation_id, state=_Status.OPERATION_STATE_RUNNING, extensions=[extension])


def queue_info(status: _Status) -> dict[str, object] | None:
    """The queue position and reason a status carries, if the gateway queued the operation."""
    for extension in status.extensions:
        info = struct_pb2.Struct()
        if extension.Unpack(info) and "sparkfleet" in info:
            return dict(info["sparkfleet"])
    return None


def stop_queued(router: Router, session_key: tuple[str, str], interrupt_type: int, operation_id: str) -> list[str]:
    """Cancel the session's queued operations an Interrupt names (all, or one by id); their ids.

    Interrupts by tag are left to the clusters: a queued query has reached none, and its tags are
    not read by the gateway.
    """
    if interrupt_type not in (_INTERRUPT_ALL, _INTERRUPT_OPERATION):
        return []
    stopped = []
    for op in router.operations.running():
        if op.session_key != session_key or router.admission.position(op.id) is None:
            continue
        if interrupt_type == _INTERRUPT_OPERATION and op.id != operation_id:
            continue
        if router.admission.cancel(op.id, "interrupted by the client"):
            stopped.append(op.id)
    return stopped
