"""The sans-I/O message layer: eKuiper's commands, calls, rows and acks, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from triokuiper._messages import (
    ACK_OK,
    OK,
    Command,
    Control,
    FunctionCall,
    FunctionContext,
    LocalProtocolError,
    Meta,
    RemoteProtocolError,
    control_error_reply,
    encode_ack_error,
    encode_command,
    encode_function_call,
    encode_function_reply,
    encode_source_error,
    encode_source_message,
    parse_ack,
    parse_command,
    parse_function_call,
    parse_function_reply,
    parse_launch_args,
    parse_sink_payload,
    parse_source_message,
)

# eKuiper's plugin_ins_manager_test.go golden commands (v2: datasource inside config)
GOLDEN_SOURCE_START = (
    b'{"cmd":"start","arg":"{\\"symbolName\\":\\"pyjson\\",\\"meta\\":{\\"ruleId\\":\\"rule1\\",'
    b'\\"opId\\":\\"op1\\",\\"instanceId\\":0},\\"pluginType\\":\\"source\\",\\"config\\":'
    b'{\\"datasource\\":\\"demo\\",\\"interval\\":10}}"}'
)
GOLDEN_FUNC_START = (
    b'{"cmd":"start","arg":"{\\"symbolName\\":\\"revert\\",\\"meta\\":{\\"ruleId\\":\\"\\",'
    b'\\"opId\\":\\"\\",\\"instanceId\\":0},\\"pluginType\\":\\"func\\"}"}'
)

# text eKuiper can send: valid UTF-8, so no lone surrogates
texts = st.text(st.characters(codec="utf-8"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def test_golden_source_start_parses_with_datasource_from_config() -> None:
    command = parse_command(GOLDEN_SOURCE_START)
    assert command.cmd == "start"
    control = command.control
    assert (control.symbol_name, control.plugin_type) == ("pyjson", "source")
    assert control.meta == Meta("rule1", "op1", 0)
    assert control.meta.channel_stem == "rule1_op1_0"
    assert control.datasource == "demo"
    assert encode_command(command) == GOLDEN_SOURCE_START


def test_golden_function_start_has_zero_meta_and_round_trips() -> None:
    command = parse_command(GOLDEN_FUNC_START)
    assert command.control == Control("revert", Meta(), "func")
    assert encode_command(command) == GOLDEN_FUNC_START


def test_old_top_level_datasource_is_read_too() -> None:
    arg = json.dumps({"symbolName": "s", "meta": {}, "pluginType": "source",
                      "dataSource": "topic/a"})  # fmt: skip
    command = parse_command(json.dumps({"cmd": "start", "arg": arg}).encode())
    assert command.control.datasource == "topic/a"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"cmd":"restart","arg":"{}"}', "unknown cmd"),
        (b'{"cmd":"start","arg":{}}', "arg must be a JSON string"),
        (b'{"cmd":"start","arg":"nope"}', "not valid JSON"),
        (b'{"cmd":"start","arg":"{}"}', "symbolName"),
        (b'{"cmd":"start","arg":"{\\"symbolName\\":\\"x\\",\\"pluginType\\":\\"sources\\"}"}',
         "unknown pluginType"),
        (b'{"cmd":"stop","arg":"{\\"symbolName\\":\\"x\\",\\"pluginType\\":\\"sink\\",'
         b'\\"meta\\":{\\"ruleId\\":\\"../x\\"}}"}', "must not contain"),
        (b'{"cmd":"stop","arg":"{\\"symbolName\\":\\"x\\",\\"pluginType\\":\\"sink\\",'
         b'\\"meta\\":{\\"instanceId\\":\\"0\\"}}"}', "integer instanceId"),
        (b'{"cmd":"stop","arg":"{\\"symbolName\\":\\"x\\",\\"pluginType\\":\\"sink\\",'
         b'\\"config\\":[]}"}', "config must be an object"),
    ],
)  # fmt: skip
def test_malformed_commands_raise_with_an_error_reply(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why) as info:
        parse_command(data)
    assert info.value.reply not in (b"", OK)
    assert not info.value.reply.startswith(b"h")


def test_error_replies_never_look_like_ok_or_a_stale_handshake() -> None:
    assert control_error_reply("handler failed") == b"error: handler failed"
    assert control_error_reply("ok") == b"error: ok"
    assert control_error_reply("") == b"error: "
    assert len(control_error_reply("x" * 100_000)) <= 4096


def test_function_calls_parse_with_their_context() -> None:
    exec_call = parse_function_call(
        b'{"func":"Exec","arg":["twelve","{\\"ruleId\\":\\"r\\",\\"opId\\":\\"o\\",'
        b'\\"instanceId\\":0,\\"funcId\\":1}"]}'
    )
    assert exec_call == FunctionCall("Exec", ["twelve"], FunctionContext("r", "o", 0, 1))
    assert parse_function_call(b'{"func":"IsAggregate","arg":null}') == FunctionCall("IsAggregate")
    assert parse_function_call(b'{"func":"Validate","arg":[{"a":1}]}').args == [{"a": 1}]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"func":"Frobnicate","arg":[]}', "invalid func Frobnicate"),
        (b'{"func":"Exec","arg":[]}', "function context"),
        (b'{"func":"Exec","arg":["x", "{}"]}', "funcId are required"),
        (b'{"func":"Exec","arg":["x", "{"]}', "not valid JSON"),
        (b'{"func":"Validate","arg":"x"}', "not a list"),
        (b"\x00", "not valid JSON"),
    ],
)
def test_bad_function_calls_answer_state_false(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why) as info:
        parse_function_call(data)
    reply = parse_function_reply(info.value.reply)
    assert reply.state is False
    assert isinstance(reply.result, str)


def test_unencodable_function_result_becomes_an_error_reply() -> None:
    reply = parse_function_reply(encode_function_reply(True, {1, 2}))
    assert reply.state is False
    assert "cannot encode" in reply.result
    assert parse_function_reply(encode_function_reply(True, float("nan"))).state is False


def test_source_messages_must_be_objects() -> None:
    data = encode_source_message({"a": 1}, None)
    assert json.loads(data) == {"message": {"a": 1}, "meta": None}
    with pytest.raises(LocalProtocolError, match="must be a dict"):
        encode_source_message([1, 2])
    with pytest.raises(LocalProtocolError, match="meta"):
        encode_source_message({}, "meta")
    assert parse_source_message(encode_source_error("bad")).error == "bad"


def test_acks_and_sink_payloads() -> None:
    assert parse_ack(ACK_OK) is None
    assert parse_ack(encode_ack_error("refused")) == "refused"
    assert parse_sink_payload(b'[{"name":"hello","count":5}]') == [{"name": "hello", "count": 5}]
    with pytest.raises(RemoteProtocolError) as info:
        parse_sink_payload(b"\x89PNG")
    assert parse_ack(info.value.reply) == "sink payload is not valid JSON"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], 1000), (['{"sendTimeout":250}'], 250), (["junk"], 1000), (['{"sendTimeout":-1}'], 1000),
     (['{"sendTimeout":true}'], 1000), (["[]"], 1000)],
)  # fmt: skip
def test_launch_argument_gives_the_send_timeout(argv: list[str], expected: int) -> None:
    assert parse_launch_args(argv) == expected


names = st.text(st.characters(blacklist_characters="/\x00", codec="utf-8"), max_size=10)


@given(
    cmd=st.sampled_from(["start", "stop"]),
    symbol=names.filter(bool),
    rule=names,
    op=names,
    instance=st.integers(-(2**31), 2**31),
    ptype=st.sampled_from(["source", "sink", "func"]),
    config=st.dictionaries(texts, json_values, max_size=3),
)
def test_commands_round_trip(
    cmd: Any, symbol: str, rule: str, op: str, instance: int, ptype: Any, config: Any
) -> None:
    command = Command(cmd, Control(symbol, Meta(rule, op, instance), ptype, config))
    assert parse_command(encode_command(command)) == command


@given(args=st.lists(json_values, max_size=4), func_id=st.integers(0, 100))
def test_function_calls_round_trip(args: list[Any], func_id: int) -> None:
    call = FunctionCall("Exec", args, FunctionContext("r", "o", 1, func_id))
    assert parse_function_call(encode_function_call(call)) == call


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_give_a_value_or_a_protocol_error(data: bytes) -> None:
    for parse in (parse_command, parse_function_call, parse_sink_payload, parse_source_message,
                  parse_ack, parse_function_reply):  # fmt: skip
        try:
            parse(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=300)
@given(json_values, json_values)
def test_fuzzed_json_envelopes_give_a_value_or_a_protocol_error(cmd: Any, arg: Any) -> None:
    inner = json.dumps(arg) if isinstance(arg, dict) else arg
    for data in (json.dumps({"cmd": cmd, "arg": inner}), json.dumps({"func": cmd, "arg": arg}),
                 json.dumps({"cmd": "start", "arg": inner})):  # fmt: skip
        for parse in (parse_command, parse_function_call):
            try:
                parse(data.encode())
            except RemoteProtocolError:
                pass


def test_deeply_nested_json_is_a_protocol_error_not_a_crash() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_command(b"[" * 100_000 + b"]" * 100_000)
