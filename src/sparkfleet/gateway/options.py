"""The user's knobs: session confs in the ``sparkfleet.*`` namespace, consumed by the gateway.

``spark.conf.set("sparkfleet.profile", "batch")`` (or the builder's ``.config(...)``) reaches the
gateway as a Config RPC. Keys under ``sparkfleet.`` are validated, kept on the session (and in the
store, so they survive a gateway restart) and answered by the gateway; every other key goes to
Spark as before. A request mixing both is split, and the answers are merged in the client's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyspark.sql.connect.proto import base_pb2

from sparkfleet.errors import InvalidArgument
from sparkfleet.policy.profile import PROFILE_CONF, parse_profile
from sparkfleet.policy.scaling import MODE_CONF, parse_mode
from sparkfleet.policy.watchdog import MAX_DURATION_CONF, parse_duration_s

PREFIX = "sparkfleet."
# Every knob: how its value is checked, and what a get answers while it is unset.
KNOBS: dict[str, tuple[Callable[[str], object], str]] = {
    PROFILE_CONF: (parse_profile, "auto"),
    MAX_DURATION_CONF: (parse_duration_s, "none"),
    MODE_CONF: (parse_mode, "default"),
}


def is_option(key: str) -> bool:
    return key.startswith(PREFIX)


def _check(key: str, value: str) -> None:
    knob = KNOBS.get(key)
    if knob is None:
        raise InvalidArgument(f"{key} is not a sparkfleet setting; known: {', '.join(sorted(KNOBS))}")
    try:
        knob[0](value)
    except ValueError as error:
        raise InvalidArgument(str(error)) from None


@dataclass
class ConfigSplit:
    """A Config request with its sparkfleet.* part handled: what (if anything) goes to Spark, and
    how the client's answer is built from Spark's."""

    forward: bytes | None
    answer: Callable[[bytes | None], bytes]
    untouched: bool = False  # nothing of sparkfleet's in it: forward as is, answer as Spark does


def _untouched(request: bytes) -> ConfigSplit:
    return ConfigSplit(request, lambda answer: answer or b"", untouched=True)


def split_config(request: bytes, options: dict[str, str], session_id: str, server_side_session_id: str) -> ConfigSplit:
    """Apply and answer the ``sparkfleet.*`` part of ``request``; ``options`` is changed in place.

    A request with no such key is forwarded unchanged (the common case costs one parse).
    """
    parsed = base_pb2.ConfigRequest.FromString(request)
    operation = parsed.operation
    kind = operation.WhichOneof("op_type")

    def reply(pairs: list[base_pb2.KeyValue], spark_answer: bytes | None) -> bytes:
        response = base_pb2.ConfigResponse(session_id=session_id, server_side_session_id=server_side_session_id)
        if spark_answer is not None:
            from_spark = base_pb2.ConfigResponse.FromString(spark_answer)
            response.warnings.extend(from_spark.warnings)
        response.pairs.extend(pairs)
        return response.SerializeToString()

    def forwarded(strip: Callable[[base_pb2.ConfigRequest], None]) -> bytes:
        copy = base_pb2.ConfigRequest()
        copy.CopyFrom(parsed)
        strip(copy)
        return copy.SerializeToString()

    if kind == "set":
        mine = [p for p in operation.set.pairs if is_option(p.key)]
        if not mine:
            return _untouched(request)
        for pair in mine:
            _check(pair.key, pair.value)
        for pair in mine:
            options[pair.key] = pair.value
        rest = [p for p in operation.set.pairs if not is_option(p.key)]

        def keep_rest(copy: base_pb2.ConfigRequest) -> None:
            del copy.operation.set.pairs[:]
            copy.operation.set.pairs.extend(rest)

        return ConfigSplit(forwarded(keep_rest) if rest else None, lambda answer: reply([], answer))
    if kind == "unset":
        mine_keys = [k for k in operation.unset.keys if is_option(k)]
        if not mine_keys:
            return _untouched(request)
        for key in mine_keys:
            options.pop(key, None)
        rest_keys = [k for k in operation.unset.keys if not is_option(k)]

        def keep_rest_keys(copy: base_pb2.ConfigRequest) -> None:
            del copy.operation.unset.keys[:]
            copy.operation.unset.keys.extend(rest_keys)

        return ConfigSplit(forwarded(keep_rest_keys) if rest_keys else None, lambda answer: reply([], answer))
    if kind in ("get", "get_option", "is_modifiable"):
        keys = list(getattr(operation, kind).keys)
        if not any(is_option(k) for k in keys):
            return _untouched(request)

        def local(key: str) -> base_pb2.KeyValue:
            if kind == "is_modifiable":
                return base_pb2.KeyValue(key=key, value="true")
            if key in options:
                return base_pb2.KeyValue(key=key, value=options[key])
            if kind == "get":
                if key not in KNOBS:
                    raise InvalidArgument(f"{key} is not a sparkfleet setting; known: {', '.join(sorted(KNOBS))}")
                return base_pb2.KeyValue(key=key, value=KNOBS[key][1])
            return base_pb2.KeyValue(key=key)  # get_option: absent

        answers = {k: local(k) for k in keys if is_option(k)}
        rest_keys = [k for k in keys if not is_option(k)]

        def keep_keys(copy: base_pb2.ConfigRequest) -> None:
            field = getattr(copy.operation, kind).keys
            del field[:]
            field.extend(rest_keys)

        def merge(answer: bytes | None) -> bytes:
            from_spark = iter(base_pb2.ConfigResponse.FromString(answer).pairs) if answer else iter(())
            return reply([answers[k] if k in answers else next(from_spark) for k in keys], answer)

        return ConfigSplit(forwarded(keep_keys) if rest_keys else None, merge)
    if kind == "get_with_default":
        pairs = list(operation.get_with_default.pairs)
        if not any(is_option(p.key) for p in pairs):
            return _untouched(request)
        defaults = {p.key: base_pb2.KeyValue(key=p.key, value=options.get(p.key, p.value)) for p in pairs if is_option(p.key)}
        rest = [p for p in pairs if not is_option(p.key)]

        def keep_pairs(copy: base_pb2.ConfigRequest) -> None:
            del copy.operation.get_with_default.pairs[:]
            copy.operation.get_with_default.pairs.extend(rest)

        def merge_defaults(answer: bytes | None) -> bytes:
            from_spark = iter(base_pb2.ConfigResponse.FromString(answer).pairs) if answer else iter(())
            return reply([defaults[p.key] if p.key in defaults else next(from_spark) for p in pairs], answer)

        return ConfigSplit(forwarded(keep_pairs) if rest else None, merge_defaults)
    if kind == "get_all":
        prefix = operation.get_all.prefix if operation.get_all.HasField("prefix") else ""
        mine = sorted((k, v) for k, v in options.items() if k.startswith(prefix))
        if not mine:
            return _untouched(request)

        def merge_all(answer: bytes | None) -> bytes:
            theirs = list(base_pb2.ConfigResponse.FromString(answer).pairs) if answer else []
            return reply(theirs + [base_pb2.KeyValue(key=k, value=v) for k, v in mine], answer)

        return ConfigSplit(request, merge_all)
    return _untouched(request)
