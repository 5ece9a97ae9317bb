"""The bytes eKuiper's Go runtime puts on the wire and how it reads the plugin's bytes (sans-I/O).

eKuiper marshals with Go's ``encoding/json``: struct fields in declaration order, map keys
sorted, ``<``/``>``/``&`` and U+2028/U+2029 escaped, floats in Go's shortest format, no spaces.
It unmarshals with the same package: field names match case-insensitively, every JSON number
becomes a ``float64``, ``null`` leaves a field at its zero value, and a type mismatch fails the
whole message.  Golden tests compare the emulator's commands byte for byte with the strings in
eKuiper's own ``plugin_ins_manager_test.go``, so this module reproduces those rules instead of
calling :func:`json.dumps`.  It never imports trio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "CMD_START",
    "CMD_STOP",
    "TYPE_FUNC",
    "TYPE_SINK",
    "TYPE_SOURCE",
    "AstNode",
    "Control",
    "FuncReply",
    "GoDecodeError",
    "Meta",
    "SourceTuple",
    "ast_field",
    "ast_literal",
    "decode_ack",
    "decode_func_reply",
    "decode_source_message",
    "encode_command",
    "encode_func_meta",
    "encode_func_request",
    "go_json",
    "go_unmarshal",
]

CMD_START = "start"
CMD_STOP = "stop"
TYPE_SOURCE = "source"
TYPE_SINK = "sink"
TYPE_FUNC = "func"

_HEX = "0123456789abcdef"
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Go >= 1.22 writes \b and \f short; eKuiper 2.x is built with a newer Go.
_SHORT_ESCAPES |= {"\b": "\\b", "\f": "\\f"}
_HTML_UNSAFE = {"<", ">", "&", "\u2028", "\u2029"}


class GoDecodeError(ValueError):
    """Bytes from the plugin that Go's ``json.Unmarshal`` would reject for the target type."""


class _GoStruct:
    """Fields of a Go struct in declaration order (a map would be sorted)."""

    __slots__ = ("fields",)

    def __init__(self, *fields: tuple[str, Any]) -> None:
        self.fields = fields


def _go_string(s: str, out: list[str]) -> None:
    out.append('"')
    for ch in s:
        short = _SHORT_ESCAPES.get(ch)
        if short is not None:
            out.append(short)
        elif ch < " " or ch in _HTML_UNSAFE:
            code = ord(ch)
            out.append("\\u" + "".join(_HEX[(code >> shift) & 0xF] for shift in (12, 8, 4, 0)))
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")  # a lone surrogate is invalid UTF-8 to Go
        else:
            out.append(ch)
    out.append('"')


def _go_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {f!r}")
    a = abs(f)
    text = repr(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # Python's shortest repr is already exponential here; Go trims "e-07" to "e-7".
        if text[-4:-2] == "e-" and text[-2] == "0":
            text = text[:-2] + text[-1]
        return text
    fixed = format(Decimal(text), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, str):
        _go_string(value, out)
    elif isinstance(value, _GoStruct):
        out.append("{")
        for i, (name, field) in enumerate(value.fields):
            if i:
                out.append(",")
            _go_string(name, out)
            out.append(":")
            _encode(field, out)
        out.append("}")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value)):  # Go sorts map keys
            if not isinstance(key, str):
                raise TypeError(f"json: unsupported map key {key!r}")
            if i:
                out.append(",")
            _go_string(key, out)
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def go_json(value: Any) -> str:
    """``json.Marshal(value)`` as Go writes it, for ``map[string]any``/``[]any`` shaped values."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Meta:
    """eKuiper's ``runtime.Meta``: the key of the server's replay map."""

    rule_id: str = ""
    op_id: str = ""
    instance_id: int = 0

    def _struct(self) -> _GoStruct:
        return _GoStruct(
            ("ruleId", self.rule_id), ("opId", self.op_id), ("instanceId", self.instance_id)
        )


@dataclass(frozen=True, slots=True)
class Control:
    """eKuiper's ``runtime.Control``, the argument of a start or stop command."""

    symbol_name: str
    plugin_type: str
    meta: Meta = Meta()
    data_source: str = ""
    config: Mapping[str, Any] | None = None

    def to_json(self) -> str:
        fields: list[tuple[str, Any]] = [
            ("symbolName", self.symbol_name),
            ("meta", self.meta._struct()),
            ("pluginType", self.plugin_type),
        ]
        if self.data_source:  # omitempty
            fields.append(("dataSource", self.data_source))
        if self.config:  # omitempty: nil and empty maps are both left out
            fields.append(("config", self.config))
        return go_json(_GoStruct(*fields))


def encode_command(cmd: str, control: Control) -> bytes:
    """A control-channel command: ``{"cmd":..,"arg":"<Control JSON as a string>"}``."""
    return go_json(_GoStruct(("cmd", cmd), ("arg", control.to_json()))).encode()


def encode_func_meta(rule_id: str, op_id: str, instance_id: int, func_id: int) -> str:
    """The JSON string eKuiper appends as the last Exec argument (``FuncMeta``)."""
    return go_json(
        _GoStruct(
            ("ruleId", rule_id), ("opId", op_id), ("instanceId", instance_id), ("funcId", func_id)
        )
    )


def encode_func_request(func: str, arg: Any) -> bytes:
    """A function-channel request: ``{"func":"Validate"|"Exec"|"IsAggregate","arg":...}``."""
    return go_json(_GoStruct(("func", func), ("arg", arg))).encode()


# -- Validate arguments: eKuiper passes its parsed SQL arguments (pkg/ast nodes) as Go JSON -----


class AstNode(_GoStruct):
    """A ``pkg/ast`` expression as ``json.Marshal`` writes it, for ``FunctionHandle.validate``."""

    __slots__ = ()


def ast_literal(value: str | bool | int | float) -> AstNode:
    """``StringLiteral``/``BooleanLiteral``/``IntegerLiteral``/``NumberLiteral``: ``{"Val":v}``."""
    return AstNode(("Val", value))


def ast_field(name: str, stream: str = "", *, index: int = 0, source_index: int = 0) -> AstNode:
    """``FieldRef`` (a column): ``{"StreamName":..,"Name":..,"HasIndex":..,"SourceIndex":..,
    "Index":..}``; the planner's index fields are rarely meaningful to a plugin."""
    return AstNode(
        ("StreamName", stream),
        ("Name", name),
        ("HasIndex", False),
        ("SourceIndex", source_index),
        ("Index", index),
    )


# -- decoding, as Go's json.Unmarshal into eKuiper's structs ------------------------------------


def _reject_constant(name: str) -> Any:
    raise GoDecodeError(f"invalid character {name[0]!r} looking for beginning of value")


def go_unmarshal(raw: bytes) -> Any:
    """``json.Unmarshal`` into ``any``: numbers become floats, invalid UTF-8 becomes U+FFFD."""
    text = bytes(raw).decode("utf-8", errors="replace")
    try:
        return json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except GoDecodeError:
        raise
    except json.JSONDecodeError as exc:
        raise GoDecodeError(f"invalid JSON: {exc.msg} at offset {exc.pos}") from None
    except RecursionError:
        raise GoDecodeError("exceeded max depth") from None


def _struct_fields(value: Any, struct: str, fields: Sequence[str]) -> dict[str, Any]:
    """Match a decoded object's keys to Go struct fields (exact or case-insensitive)."""
    if value is None:
        return {}  # null into a struct is a no-op
    if not isinstance(value, dict):
        raise GoDecodeError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {struct}"
        )
    found: dict[str, Any] = {}
    for key, item in value.items():
        for name in fields:
            if key == name or key.lower() == name.lower():
                found.setdefault(name, [])
                found[name].append(item)
                break
    return found


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass(frozen=True, slots=True)
class SourceTuple:
    """One source message as eKuiper ingests it (``message``/``meta`` are ``None`` when absent)."""

    message: dict[str, Any] | None
    meta: dict[str, Any] | None
    raw: bytes


def _go_map(values: list[Any], where: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = None
    for item in values:
        if item is None:
            result = None
        elif isinstance(item, dict):
            # Go decodes into the existing map, so repeated keys merge.
            result = {**(result or {}), **item}
        else:
            raise GoDecodeError(
                f"json: cannot unmarshal {_json_kind(item)} into Go struct field {where} "
                "of type map[string]interface {}"
            )
    return result


def decode_source_message(raw: bytes) -> SourceTuple:
    """Decode a source payload like ``PortableSource.Subscribe`` (``messageWrapper``).

    ``{"error": "x"}`` decodes to an empty tuple, exactly as eKuiper v2 ingests it.
    """
    fields = _struct_fields(go_unmarshal(raw), "runtime.messageWrapper", ("message", "meta"))
    message = _go_map(fields.get("message", []), "messageWrapper.message")
    meta = _go_map(fields.get("meta", []), "messageWrapper.meta")
    return SourceTuple(message=message, meta=meta, raw=bytes(raw))


@dataclass(frozen=True, slots=True)
class FuncReply:
    """``runtime.FuncReply``: ``state`` false means ``result`` is the error text."""

    state: bool
    result: Any
    raw: bytes = b""


def decode_func_reply(raw: bytes) -> FuncReply:
    fields = _struct_fields(go_unmarshal(raw), "runtime.FuncReply", ("state", "result"))
    state = False
    for item in fields.get("state", []):
        if item is None:
            continue
        if not isinstance(item, bool):
            raise GoDecodeError(
                f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                "FuncReply.state of type bool"
            )
        state = item
    results = fields.get("result", [])
    return FuncReply(state=state, result=results[-1] if results else None, raw=bytes(raw))


def decode_ack(raw: bytes) -> str:
    """A sink ack (``ackResponse``): returns the error text, ``""`` for success (``{}``)."""
    fields = _struct_fields(go_unmarshal(raw), "runtime.ackResponse", ("error",))
    error = ""
    for item in fields.get("error", []):
        if item is None:
            continue
        if not isinstance(item, str):
            raise GoDecodeError(
                f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                "ackResponse.error of type string"
            )
        error = item
    return error
