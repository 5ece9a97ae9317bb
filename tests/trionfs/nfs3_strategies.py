"""Hypothesis strategies for every trionfs codec structure."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from trionfs import _mount3 as m3, _nfs3 as n3, _portmap as pm
from trionfs._nfs3_types import (
    SERVER_TIME,
    CreateMode,
    Fattr3,
    FType3,
    NFSTime3,
    Sattr3,
    StableHow,
    WccAttr,
    WccData,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
fh = st.binary(max_size=64)
verf8 = st.binary(min_size=8, max_size=8)
# Names come back as str (fsdecode); generate ones that round-trip exactly.
name = st.text(max_size=40)  # the default alphabet has no surrogates

nfstime = st.builds(NFSTime3, u32, u32)
fattr = st.builds(
    Fattr3,
    st.sampled_from(FType3),
    st.integers(0, 0o7777),
    u32,
    u32,
    u32,
    u64,
    u64,
    st.tuples(u32, u32),
    u64,
    u64,
    nfstime,
    nfstime,
    nfstime,
)
post_op = st.none() | fattr
wcc = st.builds(WccData, st.none() | st.builds(WccAttr, u64, nfstime, nfstime), post_op)
settime = st.none() | st.just(SERVER_TIME) | nfstime
sattr = st.builds(
    Sattr3,
    st.none() | u32,
    st.none() | u32,
    st.none() | u32,
    st.none() | u64,
    settime,
    settime,
)

dir_entry = st.builds(n3.DirEntry, u64, name, u64)
dir_entry_plus = st.builds(n3.DirEntryPlus, u64, name, u64, post_op, st.none() | fh)


def _mknod(d: bytes, nm: str, t: FType3, a: Sattr3, rdev: tuple[int, int]) -> n3.MknodArgs:
    # What the wire carries depends on the type: normalise so equality holds after decode.
    if t in (FType3.CHR, FType3.BLK):
        return n3.MknodArgs(d, nm, t, a, rdev)
    if t in (FType3.SOCK, FType3.FIFO):
        return n3.MknodArgs(d, nm, t, a)
    return n3.MknodArgs(d, nm, t)


def _create(d: bytes, nm: str, mode: CreateMode, a: Sattr3, v: bytes) -> n3.CreateArgs:
    if mode == CreateMode.EXCLUSIVE:
        return n3.CreateArgs(d, nm, mode, verf=v)
    return n3.CreateArgs(d, nm, mode, a)


ARGS: dict[n3.Proc, st.SearchStrategy[Any]] = {
    n3.Proc.GETATTR: fh,
    n3.Proc.SETATTR: st.builds(n3.SetattrArgs, fh, sattr, st.none() | nfstime),
    n3.Proc.LOOKUP: st.builds(n3.DirOpArgs, fh, name),
    n3.Proc.ACCESS: st.builds(n3.AccessArgs, fh, u32),
    n3.Proc.READ: st.builds(n3.ReadArgs, fh, u64, u32),
    n3.Proc.WRITE: st.builds(
        n3.WriteArgs, fh, u64, st.binary(max_size=300), st.sampled_from(StableHow)
    ),
    n3.Proc.CREATE: st.builds(_create, fh, name, st.sampled_from(CreateMode), sattr, verf8),
    n3.Proc.MKDIR: st.builds(n3.MkdirArgs, fh, name, sattr),
    n3.Proc.SYMLINK: st.builds(n3.SymlinkArgs, fh, name, name, sattr),
    n3.Proc.MKNOD: st.builds(_mknod, fh, name, st.sampled_from(FType3), sattr, st.tuples(u32, u32)),
    n3.Proc.REMOVE: st.builds(n3.DirOpArgs, fh, name),
    n3.Proc.RENAME: st.builds(n3.RenameArgs, fh, name, fh, name),
    n3.Proc.LINK: st.builds(n3.LinkArgs, fh, fh, name),
    n3.Proc.READDIR: st.builds(n3.ReaddirArgs, fh, u64, verf8, u32),
    n3.Proc.READDIRPLUS: st.builds(n3.ReaddirplusArgs, fh, u64, verf8, u32, u32),
    n3.Proc.COMMIT: st.builds(n3.CommitArgs, fh, u64, u32),
}

_create_res = st.builds(n3.CreateResult, st.none() | fh, post_op, wcc)


def _read_result(attrs: Fattr3 | None, eof: bool, data: bytes) -> n3.ReadResult:
    return n3.ReadResult(attrs, len(data), eof, memoryview(data))


RESULTS: dict[n3.Proc, st.SearchStrategy[Any]] = {
    n3.Proc.NULL: st.none(),
    n3.Proc.GETATTR: fattr,
    n3.Proc.SETATTR: wcc,
    n3.Proc.LOOKUP: st.builds(n3.LookupResult, fh, post_op, post_op),
    n3.Proc.ACCESS: st.builds(n3.AccessResult, post_op, u32),
    n3.Proc.READLINK: st.builds(n3.ReadlinkResult, post_op, name),
    n3.Proc.READ: st.builds(_read_result, post_op, st.booleans(), st.binary(max_size=300)),
    n3.Proc.WRITE: st.builds(n3.WriteResult, wcc, u32, st.sampled_from(StableHow), verf8),
    n3.Proc.CREATE: _create_res,
    n3.Proc.MKDIR: _create_res,
    n3.Proc.SYMLINK: _create_res,
    n3.Proc.MKNOD: _create_res,
    n3.Proc.REMOVE: wcc,
    n3.Proc.RMDIR: wcc,
    n3.Proc.RENAME: st.builds(n3.RenameResult, wcc, wcc),
    n3.Proc.LINK: st.builds(n3.LinkResult, post_op, wcc),
    n3.Proc.READDIR: st.builds(
        n3.ReaddirResult,
        post_op,
        verf8,
        st.lists(dir_entry, max_size=5).map(tuple),
        st.booleans(),
    ),
    n3.Proc.READDIRPLUS: st.builds(
        n3.ReaddirplusResult,
        post_op,
        verf8,
        st.lists(dir_entry_plus, max_size=4).map(tuple),
        st.booleans(),
    ),
    n3.Proc.FSSTAT: st.builds(n3.FSStatResult, post_op, u64, u64, u64, u64, u64, u64, u32),
    n3.Proc.FSINFO: st.builds(
        n3.FSInfoResult, post_op, u32, u32, u32, u32, u32, u32, u32, u64, nfstime, u32
    ),
    n3.Proc.PATHCONF: st.builds(
        n3.PathConfResult,
        post_op,
        u32,
        u32,
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    n3.Proc.COMMIT: st.builds(n3.CommitResult, wcc, verf8),
}

mount_result = st.builds(m3.MountResult, fh, st.lists(u32, max_size=8).map(tuple))
mount_list = st.lists(st.builds(m3.MountEntry, name, name), max_size=5).map(tuple)
exports = st.lists(
    st.builds(m3.ExportEntry, name, st.lists(name, max_size=3).map(tuple)), max_size=5
).map(tuple)
mapping = st.builds(pm.Mapping, u32, u32, u32, u32)
rpcb = st.builds(pm.Rpcb, u32, u32, name, name, name)
