"""Sans-I/O messages of eKuiper's portable-plugin protocol (v2.4 line, Go runtime).

nng delivers whole messages, so there is no framing here: every function takes or returns one
message's bytes.  Parsers accept exactly what eKuiper's Go runtime sends and raise
:class:`RemoteProtocolError` for anything else; the error carries the bytes the plugin should
answer with, so a malformed command gets an error reply instead of killing the plugin.  This
module never imports trio or pynng.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeGuard

HANDSHAKE: Final = b"handshake"
"""First request on the control and function channels, and the keepalive re-sent after idling."""
OK: Final = b"ok"
"""The control channel's success answer; anything else is shown to the user as an error."""
ACK_OK: Final = b"{}"

PluginType = Literal["source", "sink", "func"]
PLUGIN_TYPES: Final[tuple[PluginType, ...]] = ("source", "sink", "func")
FUNCTION_CALLS: Final = ("Validate", "Exec", "IsAggregate")
MAX_ERROR_TEXT: Final = 4096
"""Error texts we put on the wire are cut to this many characters (tracebacks can be huge)."""


class ProtocolError(Exception):
    """A message broke the portable-plugin protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The server sent something malformed; :attr:`reply` is what to answer it with."""

    def __init__(self, message: str, reply: bytes) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Meta:
    """Where a symbol instance sits in a rule; names its data-channel ipc files."""

    rule_id: str = ""
    op_id: str = ""
    instance_id: int = 0

    @property
    def channel_stem(self) -> str:
        """``{ruleId}_{opId}_{instanceId}``: the data channel's ipc file name without suffix."""
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}"

    def to_json(self) -> dict[str, Any]:
        return {"ruleId": self.rule_id, "opId": self.op_id, "instanceId": self.instance_id}


@dataclass(frozen=True, slots=True)
class Control:
    """The argument of a start/stop command: which symbol, for which rule, with which config."""

    symbol_name: str
    meta: Meta
    plugin_type: PluginType
    config: dict[str, Any] = field(default_factory=dict)
    data_source: str = ""
    """Top-level ``dataSource`` (servers before v2); v2 sends ``config["datasource"]``."""

    @property
    def datasource(self) -> str:
        """The source's datasource wherever the server put it (v2 config, or the old field)."""
        value = self.config.get("datasource")
        return value if isinstance(value, str) and value else self.data_source


@dataclass(frozen=True, slots=True)
class Command:
    """One control-channel command (it travels as a Rep *reply* to our last request)."""

    cmd: Literal["start", "stop"]
    control: Control


@dataclass(frozen=True, slots=True)
class FunctionContext:
    """The JSON-string context eKuiper appends to an Exec call's arguments."""

    rule_id: str
    op_id: str
    instance_id: int
    func_id: int

    @property
    def key(self) -> str:
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}_{self.func_id}"


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A request on a function channel: Validate(args), Exec(args, ctx) or IsAggregate()."""

    func: Literal["Validate", "Exec", "IsAggregate"]
    args: list[Any] = field(default_factory=list)
    context: FunctionContext | None = None  # Exec only


@dataclass(frozen=True, slots=True)
class FunctionReply:
    """``{"state": bool, "result": any}``; with state false the result is the error text."""

    state: bool
    result: Any


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """What a source pushes: a row with its metadata, or an error text."""

    message: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    error: str | None = None


# -- helpers ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# one decoder and one encoder for the process: json.loads/dumps with options build new ones
_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _load_json(data: bytes, what: str, reply: bytes) -> Any:
    try:
        # JSON is UTF-8 here; bytes are decoded strictly so invalid text is an error, not mojibake
        return _DECODE(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"{what} is not valid JSON: {_short(exc)}", reply) from None


def _short(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else str(exc) or type(exc).__name__
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def dumps(value: Any) -> bytes:
    """Compact JSON as eKuiper's Go side writes it; raises LocalProtocolError if not encodable."""
    try:
        return _ENCODE(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {_short(exc)}") from None


# -- control channel ----------------------------------------------------------------------------


def control_error_reply(text: str) -> bytes:
    """A control answer that is not "ok": eKuiper shows it as ``receive error: <text>``."""
    reply = _short(text).encode("utf-8", "replace")
    if not reply or reply == OK or reply[:1] == b"h":
        # eKuiper >= 2.2 takes any reply starting with "h" for a stale keepalive and resends
        return b"error: " + reply
    return reply


def parse_command(data: bytes) -> Command:
    """Parse ``{"cmd": "start"|"stop", "arg": "<Control JSON string>"}``."""

    def fail(why: str) -> RemoteProtocolError:
        return RemoteProtocolError(why, control_error_reply(f"invalid command: {why}"))

    envelope = _load_json(data, "command", _BAD_COMMAND_JSON)
    if not isinstance(envelope, dict):
        raise fail("not a JSON object")
    cmd = envelope.get("cmd")
    if cmd not in ("start", "stop"):
        raise fail(f"unknown cmd {cmd!r}")
    arg = envelope.get("arg")
    if not isinstance(arg, str):
        raise fail("arg must be a JSON string")
    ctrl = _load_json(
        arg.encode("utf-8", "surrogatepass"),
        "control",
        _BAD_CONTROL_JSON,
    )
    return Command(cmd, _control_from_json(ctrl, fail))


def _control_from_json(ctrl: Any, fail: Any) -> Control:
    if not isinstance(ctrl, dict):
        raise fail("control is not a JSON object")
    symbol = ctrl.get("symbolName")
    if not isinstance(symbol, str) or not symbol:
        raise fail("symbolName must be a non-empty string")
    ptype = ctrl.get("pluginType")
    if ptype not in PLUGIN_TYPES:
        raise fail(f"unknown pluginType {ptype!r}")
    raw_meta = ctrl.get("meta", {})
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, dict):
        raise fail("meta must be an object")
    rule_id, op_id = raw_meta.get("ruleId", ""), raw_meta.get("opId", "")
    instance_id = raw_meta.get("instanceId", 0)
    if not isinstance(rule_id, str) or not isinstance(op_id, str) or not _is_int(instance_id):
        raise fail("meta needs string ruleId/opId and integer instanceId")
    if "/" in rule_id + op_id or "\x00" in rule_id + op_id:
        raise fail("ruleId/opId must not contain '/' or NUL")  # they name ipc files
    config = ctrl.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise fail("config must be an object")
    data_source = ctrl.get("dataSource", ctrl.get("datasource", ""))  # Go tag vs Python SDK key
    if data_source is None:
        data_source = ""
    if not isinstance(data_source, str):
        raise fail("dataSource must be a string")
    return Control(symbol, Meta(rule_id, op_id, instance_id), ptype, config, data_source)


def encode_control(control: Control) -> str:
    """The Control JSON string, in the Go runtime's field order (for emulators and tests)."""
    obj: dict[str, Any] = {
        "symbolName": control.symbol_name,
        "meta": control.meta.to_json(),
        "pluginType": control.plugin_type,
    }
    if control.data_source:
        obj["dataSource"] = control.data_source
    if control.config:
        obj["config"] = control.config
    return dumps(obj).decode()


def encode_command(command: Command) -> bytes:
    return dumps({"cmd": command.cmd, "arg": encode_control(command.control)})


# -- function channel ---------------------------------------------------------------------------


def encode_function_reply(state: bool, result: Any) -> bytes:
    """``{"state":..,"result":..}``; a result JSON cannot carry becomes a state-false error."""
    if not state and isinstance(result, str):
        result = _short(result)
    try:
        return dumps({"state": state, "result": result})
    except LocalProtocolError as exc:
        return dumps({"state": False, "result": f"function result: {exc}"})


def parse_function_call(data: bytes) -> FunctionCall:
    """Parse a function request; malformed ones raise with a state-false reply ready."""

    def fail(why: str) -> RemoteProtocolError:
        return RemoteProtocolError(why, encode_function_reply(False, why))

    req = _load_json(data, "function call", _BAD_CALL_JSON)
    if not isinstance(req, dict):
        raise fail("function call is not a JSON object")
    func = req.get("func")
    if func not in FUNCTION_CALLS:
        raise fail(f"invalid func {func}")
    arg = req.get("arg")
    if func == "IsAggregate":
        return FunctionCall("IsAggregate")
    if arg is None:
        arg = []
    if not isinstance(arg, list):
        raise fail("invalid arg: not a list")
    if func == "Validate":
        return FunctionCall("Validate", arg)
    if not arg or not isinstance(arg[-1], str):
        raise fail("invalid arg: Exec needs the function context as its last argument")
    return FunctionCall("Exec", arg[:-1], _function_context(arg[-1]))


@functools.lru_cache(maxsize=1024)
def _function_context(text: str) -> FunctionContext:
    """The context of an Exec call.  Cached: a rule sends the same string with every call
    (parsing it again cost ~10% of a round trip); failures raise and are not cached."""

    def fail(why: str) -> RemoteProtocolError:
        return RemoteProtocolError(why, encode_function_reply(False, why))

    raw = _load_json(text.encode("utf-8", "surrogatepass"), "function context", _BAD_CONTEXT_JSON)
    if not isinstance(raw, dict):
        raise fail("invalid arg: function context is not an object")
    rule_id, op_id = raw.get("ruleId"), raw.get("opId")
    instance_id, func_id = raw.get("instanceId"), raw.get("funcId")
    if not (isinstance(rule_id, str) and isinstance(op_id, str)) or not (
        _is_int(instance_id) and _is_int(func_id)
    ):
        raise fail("invalid arg: ruleId, opId, instanceId and funcId are required")
    return FunctionContext(rule_id, op_id, instance_id, func_id)


def encode_function_call(call: FunctionCall) -> bytes:
    """The server's side of a call (for emulators and tests)."""
    if call.func == "IsAggregate":
        return dumps({"func": "IsAggregate", "arg": None})
    args = list(call.args)
    if call.func == "Exec":
        ctx = call.context or FunctionContext("", "", 0, 0)
        args.append(
            dumps(
                {"ruleId": ctx.rule_id, "opId": ctx.op_id, "instanceId": ctx.instance_id,
                 "funcId": ctx.func_id}
            ).decode()
        )  # fmt: skip
    return dumps({"func": call.func, "arg": args})


def parse_function_reply(data: bytes) -> FunctionReply:
    """The server's reading of our reply (for emulators and tests)."""
    obj = _load_json(data, "function reply", b"")
    if not isinstance(obj, dict) or not isinstance(obj.get("state"), bool):
        raise RemoteProtocolError("function reply needs a boolean state", b"")
    return FunctionReply(obj["state"], obj.get("result"))


# -- source and sink data -----------------------------------------------------------------------


def encode_source_message(message: Any, meta: Any = None) -> bytes:
    """``{"message":{...},"meta":{...}}``.  eKuiper only accepts an object as the message."""
    if not isinstance(message, dict):
        raise LocalProtocolError(f"a source message must be a dict, not {type(message).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise LocalProtocolError(f"source meta must be a dict or None, not {type(meta).__name__}")
    return dumps({"message": message, "meta": meta})


def encode_source_error(text: str) -> bytes:
    return dumps({"error": _short(str(text))})


def parse_source_message(data: bytes) -> SourceMessage:
    """The server's reading of a source push (for emulators and tests)."""
    obj = _load_json(data, "source message", b"")
    if not isinstance(obj, dict):
        raise RemoteProtocolError("source message is not an object", b"")
    if "error" in obj:
        return SourceMessage(error=str(obj["error"]))
    message, meta = obj.get("message"), obj.get("meta")
    if not isinstance(message, dict) or not (meta is None or isinstance(meta, dict)):
        raise RemoteProtocolError("source message needs an object message", b"")
    return SourceMessage(message, meta)


def encode_ack_error(text: str) -> bytes:
    return dumps({"error": _short(str(text)) or "error"})


def parse_sink_payload(data: bytes) -> Any:
    """A sink payload as JSON: a list of rows (``sendSingle`` off) or one row.

    Payloads made with a ``dataTemplate`` may be any bytes; sinks that want them declare
    ``raw = True`` and never come here.
    """
    value = _load_json(data, "sink payload", _BAD_PAYLOAD_JSON)
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - rejected above
        raise RemoteProtocolError("sink payload is not finite", b"")
    return value


def parse_launch_args(argv: list[str]) -> int:
    """eKuiper starts plugins as ``exe '{"sendTimeout":1000}'``; return sendTimeout in ms.

    A missing or unreadable argument gives the default of 1000 ms rather than failing: the
    plugin can still work, and a plugin started by hand needs no argument.
    """
    if not argv:
        return 1000
    try:
        obj = json.loads(argv[0])
    except ValueError:
        return 1000
    value = obj.get("sendTimeout") if isinstance(obj, dict) else None
    return value if _is_int(value) and value > 0 else 1000


def parse_ack(data: bytes) -> str | None:
    """The server's reading of an ack: None for ok, else the error text (for emulators)."""
    obj = _load_json(data, "ack", b"")
    if not isinstance(obj, dict):
        raise RemoteProtocolError("ack is not an object", b"")
    error = obj.get("error")
    return str(error) if error else None


# error replies built once (computing them per message cost more than parsing it)
_BAD_COMMAND_JSON: Final = control_error_reply("invalid command: not JSON")
_BAD_CONTROL_JSON: Final = control_error_reply("invalid command: control is not JSON")
_BAD_CALL_JSON: Final = encode_function_reply(False, "invalid JSON")
_BAD_CONTEXT_JSON: Final = encode_function_reply(False, "invalid arg: function context is not JSON")
_BAD_PAYLOAD_JSON: Final = encode_ack_error("sink payload is not valid JSON")
