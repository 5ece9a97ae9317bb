"""The sans-I/O handshake core, driven without sockets through the independent client codec.

Every conversation is fed whole (one buffer per client message), byte by byte, and with each
buffer carrying the start of the next message (``feeding`` fixture).
"""

from __future__ import annotations

import struct

import nbdclient as c
import pytest
from nbdclient import OptionReply, converse, parse_option_replies

from trioblock import _wire
from trioblock._handshake import MAX_BUFFERED_OPTION, MAX_OPTIONS
from trioblock.protocol import (
    NEED_DATA,
    Aborted,
    ExportDetails,
    ExportRequest,
    HandshakeComplete,
    ListExports,
    LocalProtocolError,
    RemoteProtocolError,
    ServerHandshake,
    StartTLS,
)

DISK = ExportDetails(
    size=1 << 20,
    tflags=c.SEND_FLUSH | c.SEND_FUA,
    name="disk",
    description="the test disk",
    block_size=(512, 4096, 1 << 25),
)
DEFAULT = ExportDetails(size=4096, tflags=c.READ_ONLY)  # no description, no block size
EXPORTS = {"disk": DISK, "": DEFAULT}
FLAGS = c.client_flags()
FIRST_REQUEST = c.request(c.CMD_READ, cookie=1, length=512)
BA = "base:allocation"


@pytest.fixture(params=c.FEEDINGS)
def feeding(request: pytest.FixtureRequest) -> str:
    how: str = request.param
    return how


class Session:
    """A ServerHandshake and a stand-in for the server shell, answering from EXPORTS."""

    def __init__(
        self,
        feeding: str,
        *,
        tls: str = "off",
        structured_replies: bool = True,
        tls_active: bool = False,
    ) -> None:
        self.hs = ServerHandshake(
            tls=tls, structured_replies=structured_replies, tls_active=tls_active
        )
        self.feeding = feeding
        self.greeting = self.hs.data_to_send()

    def answer(self, event: object) -> None:
        hs = self.hs
        if isinstance(event, ListExports):
            hs.reply_exports([(d.name, d.description) for d in EXPORTS.values()])
        elif isinstance(event, ExportRequest):
            details = EXPORTS.get(event.name)
            if details is None:
                hs.reply_error(c.REP_ERR_UNKNOWN, f"no export named {event.name!r}")
            else:
                hs.reply_export(details)
        elif isinstance(event, StartTLS):
            hs.tls_established()  # as if the TLS handshake ran here

    def send(self, *messages: bytes, trailer: bytes = b"") -> list[object]:
        return converse(self.hs, messages, self.feeding, self.answer, trailer)

    def replies(self) -> list[OptionReply]:
        return parse_option_replies(self.hs.data_to_send())


def kinds(replies: list[OptionReply]) -> list[tuple[int, int]]:
    return [(r.opt, r.type) for r in replies]


def complete(name: str, *, sr: bool = False, ba: bool = False) -> HandshakeComplete:
    return HandshakeComplete(name, structured_replies=sr, base_allocation=ba)


def leftover(feeding: str, trailer: bytes) -> bytes:
    """What ``trailing_data`` must hold: the trailer is only sent in the trailing feeding."""
    return trailer if feeding == "trailing" else b""


def buffered(hs: ServerHandshake) -> int:
    return len(hs._buf)  # ServerHandshake has no public counter; the tests need the bound


def fresh(tls: str = "off") -> ServerHandshake:
    hs = ServerHandshake(tls=tls)
    hs.data_to_send()
    return hs


# -- greeting and EXPORT_NAME ------------------------------------------------------------------


def test_greeting_offers_fixed_newstyle_and_no_zeroes() -> None:
    hs = ServerHandshake()
    assert c.parse_greeting(hs.data_to_send()) == c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES
    assert hs.data_to_send() == b""
    assert hs.next_event() is NEED_DATA


@pytest.mark.parametrize("no_zeroes", [False, True], ids=["padded", "no-zeroes"])
def test_export_name_replies_size_and_flags_padded_unless_no_zeroes(
    feeding: str, no_zeroes: bool
) -> None:
    s = Session(feeding)
    flags = c.client_flags(no_zeroes=no_zeroes)
    events = s.send(flags, c.export_name("disk"), trailer=FIRST_REQUEST)
    assert events == [ExportRequest("disk", "export_name"), complete("disk")]
    reply = c.parse_export_name_reply(s.hs.data_to_send(), no_zeroes=no_zeroes)
    assert reply == c.ExportInfo(DISK.size, c.HAS_FLAGS | c.SEND_FLUSH | c.SEND_FUA)
    assert s.hs.trailing_data() == leftover(feeding, FIRST_REQUEST)


def test_export_name_after_structured_replies_advertises_df(feeding: str) -> None:
    s = Session(feeding)
    s.send(FLAGS, c.option(c.OPT_STRUCTURED_REPLY))
    assert kinds(s.replies()) == [(c.OPT_STRUCTURED_REPLY, c.REP_ACK)]
    assert s.send(c.export_name("")) == [ExportRequest("", "export_name"), complete("", sr=True)]
    reply = c.parse_export_name_reply(s.hs.data_to_send(), no_zeroes=False)
    assert reply.tflags == c.HAS_FLAGS | c.READ_ONLY | c.SEND_DF


def test_export_name_for_an_unknown_export_closes_without_a_reply(feeding: str) -> None:
    s = Session(feeding)
    assert s.send(FLAGS, c.export_name("nope")) == [ExportRequest("nope", "export_name")]
    assert s.hs.closed
    assert s.hs.data_to_send() == b""


@pytest.mark.parametrize(
    "name",
    [b"\xff\xfe", b"\xc3", b"dis\0k", b"x" * 4097],
    ids=["invalid-utf8", "truncated-utf8", "nul", "over-4096-bytes"],
)
def test_export_name_that_is_not_an_nbd_string_drops_the_client(feeding: str, name: bytes) -> None:
    s = Session(feeding)
    with pytest.raises(RemoteProtocolError):
        s.send(FLAGS, c.export_name(name))
    assert s.hs.closed


def test_export_name_longer_than_the_option_buffer_drops_the_client_before_its_payload() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.option(c.OPT_EXPORT_NAME, length=MAX_BUFFERED_OPTION + 1))
    with pytest.raises(RemoteProtocolError):
        hs.next_event()


# -- ABORT and LIST ----------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"ignored"], ids=["plain", "with-data"])
def test_abort_is_acknowledged_and_ends_the_session(feeding: str, payload: bytes) -> None:
    s = Session(feeding)
    assert s.send(FLAGS, c.option(c.OPT_ABORT, payload)) == [Aborted()]
    assert s.replies() == [OptionReply(c.OPT_ABORT, c.REP_ACK, b"")]
    assert s.hs.closed
    s.hs.receive_data(b"")  # the client hanging up after ABORT is no protocol error
    assert s.hs.next_event() is NEED_DATA


def test_list_sends_a_server_reply_per_export_then_ack_and_negotiation_goes_on(
    feeding: str,
) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.option(c.OPT_LIST), c.go("disk"))
    assert events == [ListExports(), ExportRequest("disk", "go"), complete("disk")]
    replies = [r for r in s.replies() if r.opt == c.OPT_LIST]
    assert [r.type for r in replies] == [c.REP_SERVER, c.REP_SERVER, c.REP_ACK]
    assert [c.parse_server(r.data) for r in replies[:2]] == [("disk", "the test disk"), ("", "")]


def test_list_with_data_is_invalid(feeding: str) -> None:
    s = Session(feeding)
    assert s.send(FLAGS, c.option(c.OPT_LIST, b"x"), c.option(c.OPT_ABORT)) == [Aborted()]
    assert kinds(s.replies()) == [(c.OPT_LIST, c.REP_ERR_INVALID), (c.OPT_ABORT, c.REP_ACK)]


def test_list_refused_by_the_server_sends_the_error_and_negotiation_goes_on() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.option(c.OPT_LIST) + c.option(c.OPT_ABORT))
    assert hs.next_event() == ListExports()
    hs.reply_error(c.REP_ERR_SHUTDOWN, "going down")
    assert hs.next_event() == Aborted()
    assert parse_option_replies(hs.data_to_send()) == [
        OptionReply(c.OPT_LIST, c.REP_ERR_SHUTDOWN, b"going down"),
        OptionReply(c.OPT_ABORT, c.REP_ACK, b""),
    ]


# -- INFO and GO -------------------------------------------------------------------------------


def test_info_sends_info_export_then_ack_and_stays_in_negotiation(feeding: str) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.info("disk"), c.option(c.OPT_ABORT))
    assert events == [ExportRequest("disk", "info"), Aborted()]
    replies = s.replies()
    assert kinds(replies) == [
        (c.OPT_INFO, c.REP_INFO),
        (c.OPT_INFO, c.REP_ACK),
        (c.OPT_ABORT, c.REP_ACK),
    ]
    info = c.ExportInfo(DISK.size, c.HAS_FLAGS | c.SEND_FLUSH | c.SEND_FUA)
    assert c.parse_info(replies[0].data) == (c.INFO_EXPORT, info)


ALL_INFOS = (c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE)
DISK_EXPORT = c.ExportInfo(DISK.size, c.HAS_FLAGS | c.SEND_FLUSH | c.SEND_FUA)
DEFAULT_EXPORT = c.ExportInfo(DEFAULT.size, c.HAS_FLAGS | c.READ_ONLY)


@pytest.mark.parametrize("opt", [c.OPT_INFO, c.OPT_GO], ids=["info", "go"])
@pytest.mark.parametrize(
    ("export", "requests", "expected"),
    [
        ("disk", (), {c.INFO_EXPORT: DISK_EXPORT}),
        ("disk", (c.INFO_NAME,), {c.INFO_EXPORT: DISK_EXPORT, c.INFO_NAME: "disk"}),
        (
            "disk",
            (c.INFO_DESCRIPTION,),
            {c.INFO_EXPORT: DISK_EXPORT, c.INFO_DESCRIPTION: "the test disk"},
        ),
        (
            "disk",
            (c.INFO_BLOCK_SIZE,),
            {c.INFO_EXPORT: DISK_EXPORT, c.INFO_BLOCK_SIZE: (512, 4096, 1 << 25)},
        ),
        (
            "disk",
            ALL_INFOS,
            {
                c.INFO_EXPORT: DISK_EXPORT,
                c.INFO_NAME: "disk",
                c.INFO_DESCRIPTION: "the test disk",
                c.INFO_BLOCK_SIZE: (512, 4096, 1 << 25),
            },
        ),
        ("", ALL_INFOS, {c.INFO_EXPORT: DEFAULT_EXPORT, c.INFO_NAME: ""}),
        ("disk", (0x7777, c.INFO_NAME), {c.INFO_EXPORT: DISK_EXPORT, c.INFO_NAME: "disk"}),
        ("disk", (c.INFO_EXPORT,), {c.INFO_EXPORT: DISK_EXPORT}),
    ],
    ids=[
        "none-asked",
        "name",
        "description",
        "block-size",
        "all",
        "all-but-only-name-known",
        "unknown-request-ignored",
        "export-asked-sent-once",
    ],
)
def test_info_and_go_send_info_export_always_and_other_infos_only_when_asked_and_known(
    feeding: str,
    opt: int,
    export: str,
    requests: tuple[int, ...],
    expected: dict[int, c.InfoValue],
) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.option(opt, c.info_go_payload(export, requests)))
    kind = "go" if opt == c.OPT_GO else "info"
    assert events[0] == ExportRequest(export, kind, frozenset(requests))
    replies = s.replies()
    assert replies[-1] == OptionReply(opt, c.REP_ACK, b"")
    assert all(r.opt == opt and r.type == c.REP_INFO for r in replies[:-1])
    infos = [c.parse_info(r.data) for r in replies[:-1]]
    assert dict(infos) == expected
    assert len(infos) == len(expected)  # nothing sent twice


@pytest.mark.parametrize("no_zeroes", [False, True], ids=["padded", "no-zeroes"])
def test_go_enters_transmission_with_nothing_after_the_ack(feeding: str, no_zeroes: bool) -> None:
    s = Session(feeding)
    flags = c.client_flags(no_zeroes=no_zeroes)
    events = s.send(flags, c.go("disk"), trailer=FIRST_REQUEST)
    assert events == [ExportRequest("disk", "go"), complete("disk")]
    # parse_option_replies refuses any byte after the last reply, padding included.
    assert kinds(s.replies()) == [(c.OPT_GO, c.REP_INFO), (c.OPT_GO, c.REP_ACK)]
    assert s.hs.trailing_data() == leftover(feeding, FIRST_REQUEST)
    assert s.hs.next_event() is NEED_DATA


def test_go_for_an_unknown_export_is_refused_and_negotiation_goes_on(feeding: str) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.go("nope"), c.go("disk"))
    assert events == [ExportRequest("nope", "go"), ExportRequest("disk", "go"), complete("disk")]
    replies = s.replies()
    assert replies[0] == OptionReply(c.OPT_GO, c.REP_ERR_UNKNOWN, b"no export named 'nope'")
    assert kinds(replies[1:]) == [(c.OPT_GO, c.REP_INFO), (c.OPT_GO, c.REP_ACK)]


MALFORMED_INFO_GO = {
    "empty": b"",
    "short-name-length": b"\0\0\0",
    "no-request-count": struct.pack(">I", 4) + b"disk",
    "name-past-the-end": struct.pack(">I", 100) + b"disk\0\0",
    "count-past-the-end": c.info_go_payload("disk")[:-2] + struct.pack(">HH", 2, c.INFO_NAME),
    "odd-trailing-byte": c.info_go_payload("disk") + b"\0",
    "invalid-utf8-name": c.info_go_payload(b"\xff"),
    "nul-in-name": c.info_go_payload(b"a\0b"),
    "name-over-4096": c.info_go_payload(b"x" * 4097),
}


@pytest.mark.parametrize("opt", [c.OPT_INFO, c.OPT_GO], ids=["info", "go"])
@pytest.mark.parametrize(
    "payload", list(MALFORMED_INFO_GO.values()), ids=list(MALFORMED_INFO_GO.keys())
)
def test_malformed_info_or_go_is_invalid_and_negotiation_goes_on(
    feeding: str, opt: int, payload: bytes
) -> None:
    s = Session(feeding)
    assert s.send(FLAGS, c.option(opt, payload), c.option(c.OPT_ABORT)) == [Aborted()]
    assert kinds(s.replies()) == [(opt, c.REP_ERR_INVALID), (c.OPT_ABORT, c.REP_ACK)]


def test_go_refusal_message_is_cut_to_4096_bytes_of_valid_utf8() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.go("disk"))
    assert hs.next_event() == ExportRequest("disk", "go")
    hs.reply_error(c.REP_ERR_UNKNOWN, "x" + "é" * 3000)  # byte 4096 is half an "é"
    (reply,) = parse_option_replies(hs.data_to_send())
    assert reply.type == c.REP_ERR_UNKNOWN
    assert reply.data.decode() == "x" + "é" * 2047


def test_info_description_is_cut_to_4096_bytes_of_valid_utf8() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.info("disk", [c.INFO_DESCRIPTION]))
    assert isinstance(hs.next_event(), ExportRequest)
    hs.reply_export(ExportDetails(size=512, tflags=0, description="x" + "é" * 3000))
    replies = parse_option_replies(hs.data_to_send())
    kind, description = c.parse_info(replies[1].data)  # decoding checks the UTF-8
    assert kind == c.INFO_DESCRIPTION
    assert isinstance(description, str)
    assert description == "x" + "é" * 2047  # byte 4096 would have been half an "é"


# -- STRUCTURED_REPLY --------------------------------------------------------------------------


def test_structured_reply_is_acknowledged_and_reaches_transmission_with_df(feeding: str) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.option(c.OPT_STRUCTURED_REPLY), c.go("disk"))
    assert events[-1] == complete("disk", sr=True)
    replies = s.replies()
    assert kinds(replies) == [
        (c.OPT_STRUCTURED_REPLY, c.REP_ACK),
        (c.OPT_GO, c.REP_INFO),
        (c.OPT_GO, c.REP_ACK),
    ]
    _, export = c.parse_info(replies[1].data)
    assert export == c.ExportInfo(DISK.size, DISK_EXPORT.tflags | c.SEND_DF)


def test_structured_reply_with_data_is_invalid_and_not_negotiated(feeding: str) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.option(c.OPT_STRUCTURED_REPLY, b"\0"), c.go("disk"))
    assert events[-1] == complete("disk", sr=False)
    replies = s.replies()
    assert replies[0].type == c.REP_ERR_INVALID
    assert c.parse_info(replies[1].data) == (c.INFO_EXPORT, DISK_EXPORT)  # no DF


def test_structured_reply_is_unsupported_when_the_server_disables_it(feeding: str) -> None:
    s = Session(feeding, structured_replies=False)
    events = s.send(FLAGS, c.option(c.OPT_STRUCTURED_REPLY), c.go("disk"))
    assert events[-1] == complete("disk", sr=False)
    assert s.replies()[0] == OptionReply(
        c.OPT_STRUCTURED_REPLY, c.REP_ERR_UNSUP, b"structured replies are disabled"
    )


# -- meta contexts -----------------------------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True], ids=["plain", "after-sr"])
@pytest.mark.parametrize(
    ("queries", "listed"),
    [
        ([], [BA]),
        (["base:"], [BA]),
        ([BA], [BA]),
        (["qemu:dirty-bitmap:sda"], []),
        (["x-unknown:thing", BA, "base:"], [BA]),
    ],
    ids=["no-query", "base-wildcard", "base-allocation", "unknown", "mixed"],
)
def test_list_meta_context_offers_base_allocation_for_matching_queries(
    feeding: str, structured: bool, queries: list[str], listed: list[str]
) -> None:
    s = Session(feeding)
    sr = [c.option(c.OPT_STRUCTURED_REPLY)] if structured else []
    assert s.send(FLAGS, *sr, c.list_meta("disk", queries)) == []
    replies = [r for r in s.replies() if r.opt == c.OPT_LIST_META_CONTEXT]
    assert [r.type for r in replies] == [c.REP_META_CONTEXT] * len(listed) + [c.REP_ACK]
    # The id in LIST replies is reserved and SHOULD be zero.
    assert [c.parse_meta_context(r.data) for r in replies[:-1]] == [(0, n) for n in listed]


def test_set_meta_context_needs_structured_replies_first(feeding: str) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.set_meta("disk", [BA]), c.go("disk"))
    assert events[-1] == complete("disk")
    assert kinds(s.replies())[0] == (c.OPT_SET_META_CONTEXT, c.REP_ERR_INVALID)


def test_set_meta_context_selects_base_allocation_for_the_export_go_names(feeding: str) -> None:
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    events = s.send(FLAGS, sr, c.set_meta("disk", [BA]), c.go("disk"))
    assert events[-1] == complete("disk", sr=True, ba=True)
    replies = s.replies()
    assert kinds(replies[:3]) == [
        (c.OPT_STRUCTURED_REPLY, c.REP_ACK),
        (c.OPT_SET_META_CONTEXT, c.REP_META_CONTEXT),
        (c.OPT_SET_META_CONTEXT, c.REP_ACK),
    ]
    # The id is the one the server shell must put in its BLOCK_STATUS chunks.
    assert c.parse_meta_context(replies[1].data) == (_wire.BASE_ALLOCATION_ID, BA)


def test_meta_context_is_dropped_when_go_names_another_export(feeding: str) -> None:
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    events = s.send(FLAGS, sr, c.set_meta("disk", [BA]), c.go(""))
    assert events[-1] == complete("", sr=True, ba=False)


@pytest.mark.parametrize(
    "queries",
    [[], ["base:"], ["qemu:dirty-bitmap:sda"]],
    ids=["no-query", "wildcard-is-not-a-selection", "unknown"],
)
def test_set_meta_context_without_base_allocation_selects_nothing(
    feeding: str, queries: list[str]
) -> None:
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    events = s.send(FLAGS, sr, c.set_meta("disk", queries), c.go("disk"))
    assert events[-1] == complete("disk", sr=True, ba=False)
    set_replies = [r for r in s.replies() if r.opt == c.OPT_SET_META_CONTEXT]
    assert set_replies == [OptionReply(c.OPT_SET_META_CONTEXT, c.REP_ACK, b"")]


def test_a_later_set_meta_context_replaces_the_earlier_selection(feeding: str) -> None:
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    again = c.set_meta("disk", ["x-other:thing"])
    events = s.send(FLAGS, sr, c.set_meta("disk", [BA]), again, c.go("disk"))
    assert events[-1] == complete("disk", sr=True, ba=False)


def test_a_failed_set_meta_context_still_clears_the_earlier_selection(feeding: str) -> None:
    # proto.md: SET_META_CONTEXT replaces the selection "including when this command fails".
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    broken = c.option(c.OPT_SET_META_CONTEXT, b"\0")
    events = s.send(FLAGS, sr, c.set_meta("disk", [BA]), broken, c.go("disk"))
    assert events[-1] == complete("disk", sr=True, ba=False)
    assert (c.OPT_SET_META_CONTEXT, c.REP_ERR_INVALID) in kinds(s.replies())


MALFORMED_META = {
    "empty": b"",
    "too-short": bytes(7),
    "name-past-the-end": struct.pack(">I", 50) + b"disk" + struct.pack(">I", 0),
    "count-past-the-end": c.meta_payload("disk", [])[:-4] + struct.pack(">I", 1),
    "huge-count": c.meta_payload("disk", [])[:-4] + struct.pack(">I", 0xFFFFFFFF),
    "query-past-the-end": c.meta_payload("disk", [BA])[:-1],
    "query-length-past-the-end": c.meta_payload("disk", [])[:-4] + struct.pack(">III", 1, 99, 0),
    "trailing-byte": c.meta_payload("disk", [BA]) + b"\0",
    "invalid-utf8-query": c.meta_payload("disk", [b"base:\xff"]),
    "nul-in-query": c.meta_payload("disk", [b"base:\0"]),
    "invalid-utf8-export": c.meta_payload(b"\xc3", []),
    "nul-in-export": c.meta_payload(b"di\0sk", []),
    "query-over-4096": c.meta_payload("disk", [b"base:" + b"x" * 4092]),
}


@pytest.mark.parametrize(
    "opt", [c.OPT_LIST_META_CONTEXT, c.OPT_SET_META_CONTEXT], ids=["list", "set"]
)
@pytest.mark.parametrize("payload", list(MALFORMED_META.values()), ids=list(MALFORMED_META))
def test_malformed_meta_context_request_is_invalid(feeding: str, opt: int, payload: bytes) -> None:
    s = Session(feeding)
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    assert s.send(FLAGS, sr, c.option(opt, payload), c.option(c.OPT_ABORT)) == [Aborted()]
    assert kinds(s.replies()) == [
        (c.OPT_STRUCTURED_REPLY, c.REP_ACK),
        (opt, c.REP_ERR_INVALID),
        (c.OPT_ABORT, c.REP_ACK),
    ]


# -- STARTTLS ----------------------------------------------------------------------------------


def test_starttls_is_refused_by_policy_when_tls_is_off(feeding: str) -> None:
    s = Session(feeding, tls="off")
    events = s.send(FLAGS, c.option(c.OPT_STARTTLS), c.go("disk"))
    assert events == [ExportRequest("disk", "go"), complete("disk")]
    assert kinds(s.replies())[0] == (c.OPT_STARTTLS, c.REP_ERR_POLICY)
    assert not s.hs.tls_active


def test_starttls_upgrades_and_forgets_what_was_negotiated_in_clear_text(feeding: str) -> None:
    s = Session(feeding, tls="on")
    sr = c.option(c.OPT_STRUCTURED_REPLY)
    events = s.send(FLAGS, sr, c.set_meta("disk", [BA]), c.option(c.OPT_STARTTLS))
    assert events == [StartTLS()]
    assert kinds(s.replies())[-1] == (c.OPT_STARTTLS, c.REP_ACK)
    assert s.hs.tls_active
    assert s.send(c.go("disk"))[-1] == complete("disk", sr=False, ba=False)


def test_starttls_with_data_is_invalid(feeding: str) -> None:
    s = Session(feeding, tls="on")
    assert s.send(FLAGS, c.option(c.OPT_STARTTLS, b"x")) == []
    assert kinds(s.replies()) == [(c.OPT_STARTTLS, c.REP_ERR_INVALID)]
    assert not s.hs.tls_active


@pytest.mark.parametrize("tls", ["on", "require"])
def test_starttls_inside_tls_is_invalid(feeding: str, tls: str) -> None:
    s = Session(feeding, tls=tls, tls_active=True)
    events = s.send(FLAGS, c.option(c.OPT_STARTTLS), c.go("disk"))
    assert events == [ExportRequest("disk", "go"), complete("disk")]
    assert kinds(s.replies())[0] == (c.OPT_STARTTLS, c.REP_ERR_INVALID)


@pytest.mark.parametrize(
    "message",
    [
        c.option(c.OPT_LIST),
        c.info("disk"),
        c.go("disk"),
        c.option(c.OPT_STRUCTURED_REPLY),
        c.list_meta("disk", []),
        c.set_meta("disk", [BA]),
        c.option(0x7777),
    ],
    ids=["list", "info", "go", "structured-reply", "list-meta", "set-meta", "unknown"],
)
def test_tls_require_refuses_options_before_starttls_with_tls_reqd(
    feeding: str, message: bytes
) -> None:
    s = Session(feeding, tls="require")
    assert s.send(FLAGS, message) == []
    (reply,) = s.replies()
    assert reply.type == c.REP_ERR_TLS_REQD
    assert reply.opt == struct.unpack_from(">I", message, 8)[0]


def test_tls_require_drops_export_name_before_starttls(feeding: str) -> None:
    s = Session(feeding, tls="require")
    with pytest.raises(RemoteProtocolError):
        s.send(FLAGS, c.export_name("disk"))
    assert s.hs.closed


def test_tls_require_still_allows_abort_before_starttls(feeding: str) -> None:
    s = Session(feeding, tls="require")
    assert s.send(FLAGS, c.option(c.OPT_ABORT)) == [Aborted()]
    assert kinds(s.replies()) == [(c.OPT_ABORT, c.REP_ACK)]


def test_tls_require_allows_every_option_once_tls_is_up(feeding: str) -> None:
    s = Session(feeding, tls="require")
    assert s.send(FLAGS, c.option(c.OPT_STARTTLS)) == [StartTLS()]
    events = s.send(
        c.option(c.OPT_LIST),
        c.option(c.OPT_STRUCTURED_REPLY),
        c.set_meta("disk", [BA]),
        c.export_name("disk"),
    )
    assert events == [
        ListExports(),
        ExportRequest("disk", "export_name"),
        complete("disk", sr=True, ba=True),
    ]


@pytest.mark.parametrize("tls", ["on", "require"])
@pytest.mark.parametrize(
    "injected", [c.go("disk"), b"\x16"], ids=["same-buffer-option", "one-later-byte"]
)
def test_plaintext_sent_after_starttls_is_refused_before_the_tls_handshake(
    tls: str, injected: bytes
) -> None:
    hs = fresh(tls=tls)
    hs.receive_data(FLAGS + c.option(c.OPT_STARTTLS))
    assert hs.next_event() == StartTLS()
    assert parse_option_replies(hs.data_to_send()) == [OptionReply(c.OPT_STARTTLS, c.REP_ACK, b"")]
    hs.receive_data(injected)
    with pytest.raises(RemoteProtocolError):
        hs.tls_established()
    assert hs.closed
    assert not hs.tls_active


# -- unknown and oversized options, limits -----------------------------------------------------


@pytest.mark.parametrize(
    "opt",
    [0, c.OPT_PEEK_EXPORT, c.OPT_EXTENDED_HEADERS, 12, 0xFFFF, 0xFFFFFFFF],
    ids=["zero", "peek-export", "extended-headers", "twelve", "u16-max", "u32-max"],
)
def test_unknown_option_is_unsupported_and_negotiation_goes_on(feeding: str, opt: int) -> None:
    s = Session(feeding)
    events = s.send(FLAGS, c.option(opt, b"some data"), c.go("disk"))
    assert events == [ExportRequest("disk", "go"), complete("disk")]
    assert kinds(s.replies())[0] == (opt, c.REP_ERR_UNSUP)


def test_the_last_allowed_option_may_still_be_go(feeding: str) -> None:
    s = Session(feeding)
    unknown = [c.option(0x7777)] * (MAX_OPTIONS - 1)
    assert s.send(FLAGS, *unknown, c.go("disk"))[-1] == complete("disk")


def test_options_beyond_the_limit_drop_the_client(feeding: str) -> None:
    s = Session(feeding)
    assert s.send(FLAGS, *[c.option(0x7777)] * MAX_OPTIONS) == []
    assert len(s.replies()) == MAX_OPTIONS
    with pytest.raises(RemoteProtocolError):
        s.send(c.go("disk"))
    assert s.hs.closed


@pytest.mark.parametrize(
    ("opt", "rep"),
    [
        (c.OPT_LIST, c.REP_ERR_TOO_BIG),
        (c.OPT_GO, c.REP_ERR_TOO_BIG),
        (c.OPT_SET_META_CONTEXT, c.REP_ERR_TOO_BIG),
        (0x7777, c.REP_ERR_UNSUP),
    ],
    ids=["list", "go", "set-meta", "unknown"],
)
def test_oversized_option_payload_is_drained_in_small_steps_then_refused(
    opt: int, rep: int
) -> None:
    hs = fresh()
    length = 4 * MAX_BUFFERED_OPTION + 3
    hs.receive_data(FLAGS + c.option(opt, length=length))
    step = bytes(4096)
    left = length
    while left:
        piece = step[:left]
        left -= len(piece)
        hs.receive_data(piece)
        assert hs.next_event() is NEED_DATA
        assert buffered(hs) == 0  # drained as it arrives, never stored
    hs.receive_data(c.go("disk"))
    assert hs.next_event() == ExportRequest("disk", "go")
    assert parse_option_replies(hs.data_to_send())[0].type == rep


def test_option_just_over_the_buffer_limit_is_refused_too_big(feeding: str) -> None:
    s = Session(feeding)
    big = c.option(c.OPT_LIST, bytes(MAX_BUFFERED_OPTION + 1))
    assert s.send(FLAGS, big, c.option(c.OPT_ABORT)) == [Aborted()]
    assert kinds(s.replies()) == [(c.OPT_LIST, c.REP_ERR_TOO_BIG), (c.OPT_ABORT, c.REP_ACK)]


def test_option_length_over_64_mib_drops_the_client() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.option(0x7777, length=64 * 1024 * 1024 + 1))
    with pytest.raises(RemoteProtocolError):
        hs.next_event()
    assert hs.closed


def test_option_length_of_exactly_64_mib_is_drained_not_dropped() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.option(0x7777, length=64 * 1024 * 1024))
    assert hs.next_event() is NEED_DATA
    assert not hs.closed


# -- client flags, magic, EOF ------------------------------------------------------------------


@pytest.mark.parametrize("no_zeroes", [False, True], ids=["padded", "no-zeroes"])
def test_non_fixed_client_may_send_export_name(feeding: str, no_zeroes: bool) -> None:
    s = Session(feeding)
    flags = c.client_flags(fixed=False, no_zeroes=no_zeroes)
    events = s.send(flags, c.export_name("disk"))
    assert events == [ExportRequest("disk", "export_name"), complete("disk")]
    assert c.parse_export_name_reply(s.hs.data_to_send(), no_zeroes=no_zeroes).size == DISK.size


@pytest.mark.parametrize(
    "message",
    [c.go("disk"), c.option(c.OPT_LIST), c.option(c.OPT_ABORT), c.option(0x7777)],
    ids=["go", "list", "abort", "unknown"],
)
def test_non_fixed_client_sending_another_option_is_dropped(feeding: str, message: bytes) -> None:
    s = Session(feeding)
    with pytest.raises(RemoteProtocolError):
        s.send(c.client_flags(fixed=False), message)
    assert s.hs.data_to_send() == b""


@pytest.mark.parametrize("extra", [1 << 2, 1 << 31], ids=["bit2", "bit31"])
def test_unknown_client_flags_drop_the_client(feeding: str, extra: int) -> None:
    s = Session(feeding)
    with pytest.raises(RemoteProtocolError):
        s.send(c.client_flags(extra=extra), c.go("disk"))
    assert s.hs.closed


@pytest.mark.parametrize(
    "magic",
    [0, c.IHAVEOPT ^ 1, c.NBDMAGIC, c.REPLY_MAGIC],
    ids=["zero", "one-bit-off", "nbdmagic", "reply-magic"],
)
def test_bad_option_magic_drops_the_client(feeding: str, magic: int) -> None:
    s = Session(feeding)
    with pytest.raises(RemoteProtocolError):
        s.send(FLAGS, c.option(c.OPT_GO, c.info_go_payload("disk"), magic=magic))
    assert s.hs.closed


@pytest.mark.parametrize(
    "sent",
    [FLAGS[:2], FLAGS, FLAGS + c.go("disk")[:10], FLAGS + c.go("disk")[:-1]],
    ids=["half-flags", "flags", "half-header", "most-of-payload"],
)
def test_eof_during_the_handshake_is_a_remote_protocol_error(sent: bytes) -> None:
    hs = fresh()
    hs.receive_data(sent)
    assert hs.next_event() is NEED_DATA
    with pytest.raises(RemoteProtocolError):
        hs.receive_data(b"")
    assert hs.closed


def test_eof_before_the_client_flags_is_a_remote_protocol_error() -> None:
    hs = fresh()
    with pytest.raises(RemoteProtocolError):
        hs.receive_data(b"")
    assert hs.closed


def test_eof_after_go_is_left_to_the_transmission_phase() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.go("disk"))
    assert isinstance(hs.next_event(), ExportRequest)
    hs.reply_export(DISK)
    assert hs.next_event() == complete("disk")
    hs.receive_data(b"")
    assert hs.next_event() is NEED_DATA
    assert hs.trailing_data() == b""


# -- misuse by the server code -----------------------------------------------------------------


def test_unknown_tls_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="tls"):
        ServerHandshake(tls="maybe")


def test_parsing_on_before_answering_is_a_local_error() -> None:
    hs = fresh()
    hs.receive_data(FLAGS + c.go("disk") + c.option(c.OPT_ABORT))
    assert isinstance(hs.next_event(), ExportRequest)
    with pytest.raises(LocalProtocolError):
        hs.next_event()


def test_answers_without_a_matching_question_are_local_errors() -> None:
    hs = fresh()
    with pytest.raises(LocalProtocolError):
        hs.reply_export(DISK)
    with pytest.raises(LocalProtocolError):
        hs.reply_error(c.REP_ERR_UNKNOWN)
    hs.receive_data(FLAGS + c.go("disk"))
    assert isinstance(hs.next_event(), ExportRequest)
    with pytest.raises(LocalProtocolError):
        hs.reply_exports([])
    with pytest.raises(LocalProtocolError):
        hs.reply_error(c.REP_ACK)  # not an error reply
    hs.reply_export(DISK)  # the pending question survived the misuse
    assert hs.next_event() == complete("disk")


def test_starttls_state_errors_are_local() -> None:
    hs = fresh(tls="on")
    with pytest.raises(LocalProtocolError):
        hs.tls_established()
    hs.receive_data(FLAGS + c.option(c.OPT_STARTTLS))
    assert hs.next_event() == StartTLS()
    with pytest.raises(LocalProtocolError):
        hs.next_event()  # the TLS handshake comes first
    hs.tls_established()
    assert hs.tls_active
    with pytest.raises(LocalProtocolError):
        hs.tls_established()
