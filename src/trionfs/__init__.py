"""trionfs: a pure-Python ONC-RPC + NFSv3 client on Trio.

::

    async with trionfs.mount("nfs://server/export?uid=1000&gid=1000") as nfs:
        async with await nfs.open("/dir/file.bin", "wb") as f:
            await f.write(data)          # pipelined UNSTABLE WRITEs
        # closed: COMMITted, and rewritten if the server restarted in between
        for entry in await nfs.scandir("/dir"):
            print(entry.name, entry.stat().st_size)

    f = await trionfs.open("nfs://server/export/dir/file.txt")   # context-free

:mod:`trionfs.sync` is the same API for threads and scripts; ``trionfs`` (the console script)
is a command line in the manner of libnfs-utils.  The protocol clients (``NFS3Client``,
``MountClient``, ``PortmapClient``) are public too, one async method per procedure.
"""

from ._clients import (
    MountClient as MountClient,
    NFS3Client as NFS3Client,
    PortmapClient as PortmapClient,
)
from ._context import NFS as NFS
from ._dirent import NFSDirEntry as NFSDirEntry
from ._errors import (
    AuthError as AuthError,
    MountError as MountError,
    MountStat3 as MountStat3,
    NFSError as NFSError,
    NFSStat3 as NFSStat3,
    ProtocolError as ProtocolError,
    RemoteProtocolError as RemoteProtocolError,
    RPCError as RPCError,
    RPCTimeoutError as RPCTimeoutError,
)
from ._file import NFSFile as NFSFile
from ._mount import (
    mount as mount,
    open as open,
)
from ._mountsession import list_exports as list_exports
from ._textfile import NFSTextFile as NFSTextFile
from ._url import NFSURL as NFSURL, parse_url as parse_url
from ._writeback import WriteBackTracker as WriteBackTracker

__all__ = [
    "NFS",
    "NFSURL",
    "AuthError",
    "MountClient",
    "MountError",
    "MountStat3",
    "NFS3Client",
    "NFSDirEntry",
    "NFSError",
    "NFSFile",
    "NFSStat3",
    "NFSTextFile",
    "PortmapClient",
    "ProtocolError",
    "RPCError",
    "RPCTimeoutError",
    "RemoteProtocolError",
    "WriteBackTracker",
    "list_exports",
    "mount",
    "open",
    "parse_url",
]
