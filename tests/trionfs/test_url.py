"""nfs:// URLs: libnfs's spelling, our own arguments, and clear errors for everything else."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from trionfs import NFSURL, parse_url
from trionfs._url import DEFAULT_RSIZE, DEFAULT_WSIZE, normalize_path


def test_minimal_url_has_libnfs_defaults() -> None:
    url = parse_url("nfs://server/export")
    assert url == NFSURL(host="server", path="/export")
    assert url.timeo == 600
    assert url.timeout == 60.0
    assert url.retrans == 2
    assert url.total_timeout == 180.0
    assert url.autoreconnect == -1
    assert (url.rsize, url.wsize) == (DEFAULT_RSIZE, DEFAULT_WSIZE) == (4 << 20, 1 << 20)
    assert url.uid is None
    assert url.gid is None


def test_every_libnfs_argument_is_understood() -> None:
    url = parse_url(
        "nfs://alice@fs.example:2050/srv/data?uid=1000&gid=100&nfsport=2050&mountport=635"
        "&version=3&timeo=15&retrans=0&autoreconnect=0&rsize=65536&wsize=32768&readonly"
    )
    assert (url.user, url.host, url.path) == ("alice", "fs.example", "/srv/data")
    assert (url.uid, url.gid, url.nfsport, url.mountport) == (1000, 100, 2050, 635)
    assert (url.timeo, url.retrans, url.autoreconnect) == (15, 0, 0)
    assert url.timeout == 1.5
    assert (url.rsize, url.wsize, url.readonly) == (65536, 32768, True)


def test_our_own_arguments() -> None:
    url = parse_url("nfs://h/e?auxgids=4,24,27&privport=1&window=8&sync=1&readdir-buffer=8192")
    assert url.readdir_buffer == 8192
    assert url.auxgids == (4, 24, 27)
    assert url.privport
    assert url.sync
    assert url.window == 8


def test_ipv6_host_and_percent_encoded_path() -> None:
    url = parse_url("nfs://[::1]/my%20export/f%C3%BC")
    assert url.host == "::1"
    assert url.path == "/my export/fü"


def test_port_in_authority_is_the_nfs_port() -> None:
    assert parse_url("nfs://h:2049/e").nfsport == 2049


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nfs://h/e?wsise=4096", "unknown argument 'wsise'"),
        ("nfs://h/e?version=4", "version=4 is not supported"),
        ("nfs://h/e?uid=root", "uid='root' is not an integer"),
        ("nfs://h/e?rsize=1", "out of range"),
        ("nfs://h/e?readonly=maybe", "not a boolean"),
        ("nfs://h/e?uid=1&uid=2", "given twice"),
        ("nfs://h/e?auxgids=" + ",".join(["1"] * 17), "at most 16"),
        ("http://h/e", "not an nfs:// URL"),
        ("nfs:///e", "no server"),
        ("nfs://h:99999/e", "bad server or port"),
        ("nfs://h:2049/e?nfsport=2050", "differ"),
        ("nfs://h/e#frag", "fragment"),
    ],
)
def test_bad_urls_are_clear_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_url(b"nfs://h/e")  # type: ignore[arg-type]


def test_geturl_round_trips_non_default_arguments() -> None:
    text = "nfs://h/e?uid=5&timeo=20&readonly=1&auxgids=1,2&readdir-buffer=2048"
    url = parse_url(text)
    assert parse_url(url.geturl()) == url


@given(
    st.builds(
        NFSURL,
        host=st.sampled_from(["h", "10.0.0.1", "::1", "srv.example"]),
        path=st.text(st.characters(blacklist_categories=["Cs"]), max_size=20).map(
            lambda s: "/" + s
        ),
        uid=st.none() | st.integers(0, 2**32 - 1),
        timeo=st.integers(1, 10**6),
        rsize=st.integers(512, 64 << 20),
        readonly=st.booleans(),
        auxgids=st.lists(st.integers(0, 2**32 - 1), max_size=16).map(tuple),
    )
)
def test_any_url_survives_geturl(url: NFSURL) -> None:
    assert parse_url(url.geturl()) == url


@given(st.text(max_size=60))
def test_parse_url_raises_only_value_error(text: str) -> None:
    try:
        parse_url("nfs://" + text)
    except ValueError:
        pass


def test_normalize_path_drops_dots_and_slashes() -> None:
    assert normalize_path("a//b/./c/") == "/a/b/c"
    assert normalize_path("") == "/"
    assert normalize_path("/x/../y") == "/x/../y"
