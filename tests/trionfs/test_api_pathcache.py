"""Path resolution without a server: a dict stands in for LOOKUP/READLINK, so every symlink
rule (relative, absolute, ``..``, loops, the last component) is checked exactly."""

from __future__ import annotations

import errno

import pytest

from trionfs._nfs3_types import FType3
from trionfs._pathcache import MAX_SYMLINKS, PathCache

# A tree: handle -> (type, {name: handle}) ; symlink handle -> target
TREE: dict[bytes, tuple[FType3, dict[str, bytes]]] = {
    b"root": (FType3.DIR, {"a": b"a", "f": b"f", "abs": b"abs", "up": b"up", "self": b"self"}),
    b"a": (FType3.DIR, {"b": b"b", "rel": b"rel", "dot": b"dot"}),
    b"b": (FType3.DIR, {"file": b"file"}),
    b"file": (FType3.REG, {}),
    b"f": (FType3.REG, {}),
    b"rel": (FType3.LNK, {}),
    b"abs": (FType3.LNK, {}),
    b"up": (FType3.LNK, {}),
    b"self": (FType3.LNK, {}),
    b"dot": (FType3.LNK, {}),
}
LINKS = {b"rel": "b/file", b"abs": "/a/b", b"up": "../../../a", b"self": "self", b"dot": "."}


class Server:
    def __init__(self) -> None:
        self.lookups = 0

    async def lookup(self, parent: bytes, name: str) -> tuple[bytes, FType3]:
        self.lookups += 1
        entries = TREE[parent][1]
        if name not in entries:
            raise FileNotFoundError(errno.ENOENT, "no such entry", name)
        fh = entries[name]
        return fh, TREE[fh][0]

    async def readlink(self, fh: bytes) -> str:
        return LINKS[fh]


@pytest.mark.parametrize(
    ("path", "follow", "expected"),
    [
        ("/", True, b"root"),
        ("a/b/file", True, b"file"),
        ("/a/./b//file/", True, b"file"),
        ("/a/rel", True, b"file"),
        ("/a/rel", False, b"rel"),
        ("/abs/file", True, b"file"),
        ("/abs", False, b"abs"),
        ("/up/b", True, b"b"),  # ".." never climbs above the root
        ("/a/b/../b/file", True, b"file"),
        ("/a/dot/b", True, b"b"),
        ("/a/dot", True, b"a"),
        ("/..", True, b"root"),
    ],
)
async def test_resolution_follows_symlinks_like_a_local_filesystem(
    path: str, follow: bool, expected: bytes
) -> None:
    server = Server()
    resolved = await PathCache(b"root").resolve(path, server.lookup, server.readlink, follow=follow)
    assert resolved.fh == expected


async def test_symlink_loop_is_eloop() -> None:
    server = Server()
    with pytest.raises(OSError, match="symbolic links") as info:
        await PathCache(b"root").resolve("/self", server.lookup, server.readlink)
    assert info.value.errno == errno.ELOOP
    assert server.lookups <= MAX_SYMLINKS + 2


async def test_file_in_the_middle_is_enotdir() -> None:
    server = Server()
    with pytest.raises(NotADirectoryError):
        await PathCache(b"root").resolve("/f/x", server.lookup, server.readlink)


async def test_cache_serves_repeated_lookups_and_forgets_on_request() -> None:
    server = Server()
    cache = PathCache(b"root")
    await cache.resolve("/a/b/file", server.lookup, server.readlink)
    assert server.lookups == 3
    await cache.resolve("/a/b/file", server.lookup, server.readlink)
    assert server.lookups == 3
    cache.forget(b"b", "file")
    await cache.resolve("/a/b/file", server.lookup, server.readlink)
    assert server.lookups == 4
    parent, name = await cache.resolve_parent("/a/b/new", server.lookup, server.readlink)
    assert (parent, name) == (b"b", "new")


async def test_entries_expire_after_the_ttl() -> None:
    server = Server()
    cache = PathCache(b"root", ttl=0)  # no caching at all
    await cache.resolve("/a", server.lookup, server.readlink)
    await cache.resolve("/a", server.lookup, server.readlink)
    assert server.lookups == 2
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    cache = PathCache(b"root", max_entries=3)
    for i in range(10):
        cache.put(b"root", f"n{i}", bytes([i]), FType3.REG)
    assert len(cache) == 3
    assert cache.get(b"root", "n9") == (bytes([9]), FType3.REG)
    assert cache.get(b"root", "n0") is None
