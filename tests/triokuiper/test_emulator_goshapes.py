"""The sans-I/O Go shapes: Go's json.Marshal output and json.Unmarshal acceptance, no sockets."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, strategies as st

from triokuiper.testing._goshapes import (
    GoDecodeError,
    decode_ack,
    decode_func_reply,
    decode_source_message,
    encode_func_meta,
    encode_func_request,
    go_json,
    go_unmarshal,
)

# strconv.AppendFloat(.., 'f'|'e', -1, 64) as encoding/json uses it (values checked against Go's
# documented rules: exponent form below 1e-6 and from 1e21 on, "e-07" trimmed to "e-7").
GO_FLOATS = [
    (1.0, "1"),
    (-0.0, "-0"),
    (1.5, "1.5"),
    (123456789.0, "123456789"),
    (1e16, "10000000000000000"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (0.000001, "0.000001"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (0.1, "0.1"),
]


@pytest.mark.parametrize(("value", "text"), GO_FLOATS)
def test_floats_are_written_in_go_format(value: float, text: str) -> None:
    assert go_json(value) == text


def test_strings_are_escaped_like_go_with_html_escaping() -> None:
    assert go_json('a<b>&c\u2028\u2029\x01\x1f\b\f\n\r\t"\\é😀') == (
        '"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\\u0001\\u001f\\b\\f\\n\\r\\t\\"\\\\é😀"'
    )
    assert go_json("\ud800") == '"\ufffd"'  # invalid UTF-8 for Go


def test_maps_are_sorted_and_compact() -> None:
    assert go_json({"b": [1, None, True], "a": {"z": 1, "y": "x"}}) == (
        '{"a":{"y":"x","z":1},"b":[1,null,true]}'
    )


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported value"):
        go_json(math.nan)
    with pytest.raises(TypeError):
        go_json({1: "x"})
    with pytest.raises(TypeError):
        go_json(b"bytes")


def test_function_requests_and_context() -> None:
    meta = encode_func_meta("rule1", "op1", 0, 1)
    assert meta == '{"ruleId":"rule1","opId":"op1","instanceId":0,"funcId":1}'
    assert encode_func_request("Exec", ["twelve", meta]) == (
        b'{"func":"Exec","arg":["twelve","{\\"ruleId\\":\\"rule1\\",\\"opId\\":\\"op1\\",'
        b'\\"instanceId\\":0,\\"funcId\\":1}"]}'
    )
    assert encode_func_request("IsAggregate", None) == b'{"func":"IsAggregate","arg":null}'


def test_validate_arguments_are_go_ast_nodes() -> None:
    from triokuiper.testing import ast_field, ast_literal

    assert encode_func_request("Validate", [ast_field("name", "demo"), ast_literal("x")]) == (
        b'{"func":"Validate","arg":[{"StreamName":"demo","Name":"name","HasIndex":false,'
        b'"SourceIndex":0,"Index":0},{"Val":"x"}]}'
    )


# Strings never hold ", " or ": " themselves, so finding one in the text means a loose separator.
compact_text = st.text().filter(lambda s: ", " not in s and ": " not in s)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | compact_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(compact_text, inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_go_json_round_trips_through_any_json_parser(value: Any) -> None:
    text = go_json(value)
    assert json.loads(text, parse_int=float) == value  # Go writes 1e16 as "10000000000000000"
    assert ", " not in text
    assert ": " not in text


@given(st.binary(max_size=300))
def test_decoders_accept_or_raise_go_decode_error_only(raw: bytes) -> None:
    for decode in (go_unmarshal, decode_source_message, decode_func_reply, decode_ack):
        try:
            decode(raw)
        except GoDecodeError:
            pass


@given(json_values)
def test_decoders_on_any_json_value_accept_or_raise_go_decode_error(value: Any) -> None:
    raw = json.dumps(value).encode()
    for decode in (decode_source_message, decode_func_reply, decode_ack):
        try:
            decode(raw)
        except GoDecodeError:
            pass


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(GoDecodeError, match="depth"):
        go_unmarshal(b"[" * 100_000 + b"]" * 100_000)


def test_source_message_decoding_follows_go() -> None:
    row = decode_source_message(b'{"MESSAGE":{"n":1},"meta":{"m":"x"},"extra":[1]}')
    assert (row.message, row.meta) == ({"n": 1.0}, {"m": "x"})
    assert isinstance(row.message and row.message["n"], float)  # Go's float64
    merged = decode_source_message(b'{"message":{"a":1},"Message":{"b":2}}')
    assert merged.message == {"a": 1.0, "b": 2.0}  # Go decodes into the same map
    assert decode_source_message(b'{"message":null}').message is None
    for bad in (b'{"message":"x"}', b"[]", b"1", b"NaN", b'{"message":{"a":Infinity}}'):
        with pytest.raises(GoDecodeError):
            decode_source_message(bad)


def test_func_reply_and_ack_decoding_follows_go() -> None:
    reply = decode_func_reply(b'{"State":true,"result":{"x":[1,"a"]}}')
    assert (reply.state, reply.result) == (True, {"x": [1.0, "a"]})
    assert decode_func_reply(b"null").state is False
    with pytest.raises(GoDecodeError):
        decode_func_reply(b'{"state":"yes"}')
    assert decode_ack(b"{}") == ""
    assert decode_ack(b'{"error":null}') == ""
    assert decode_ack(b'{"Error":"bad"}') == "bad"
    with pytest.raises(GoDecodeError):
        decode_ack(b'{"error":1}')
    with pytest.raises(GoDecodeError):
        decode_ack(b"")
