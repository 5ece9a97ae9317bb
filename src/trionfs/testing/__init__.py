"""Test trionfs (or any NFSv3 client) against a real, private nfs-ganesha server.

:class:`GaneshaServer` runs nfs-ganesha (NFSv3 over TCP, a VFS export of a fresh directory)
with its own rpcbind in a private network + mount namespace, so any number of servers can run
at once without disturbing each other or the host.  It needs root and the Debian packages
``nfs-ganesha nfs-ganesha-vfs rpcbind`` (``libnfs-utils`` for the cross-check helpers)::

    with GaneshaServer() as server, server.netns():
        async_or_sync_client_code(server.url)   # nfs://127.0.0.1/<export path>

The server listens on 127.0.0.1 *inside its namespace*: sockets must be created by a thread
that entered it with ``server.netns()``.  Under pytest-trio that is the main thread, which the
fixtures below enter for the test's duration.

The pytest plugin (entry point ``pytest11: trionfs``) adds three fixtures:

``nfs_server``
    a private server for one test, started and entered; for fault tests (restart with a new
    write verifier, kill, pause).
``nfs_server_factory``
    ``make(**GaneshaServer_options)`` starts more private servers (not entered), all stopped
    when the test ends: for special configurations or several servers.
``nfs_server_shared``
    one server for the whole session (not entered by itself).
``nfs_url``
    an empty directory, mode 0777, made through NFS on the shared server for this test, with
    the test's thread entered in its namespace: the cheap default.

The libnfs helpers (:func:`libnfs_ls`, :func:`libnfs_cat`, :func:`libnfs_cp`, their ``_async``
forms, :func:`libnfs_mkdir`, :class:`LibnfsMount`) check results with an independent client.
"""

from __future__ import annotations

from ._ganesha import (
    GaneshaServer as GaneshaServer,
    GaneshaUnavailable as GaneshaUnavailable,
    ganesha_unavailable_reason as ganesha_unavailable_reason,
    server_for_current_thread as server_for_current_thread,
)
from ._libnfs import (
    LibnfsError as LibnfsError,
    LibnfsMount as LibnfsMount,
    LsEntry as LsEntry,
    libnfs_cat as libnfs_cat,
    libnfs_cat_async as libnfs_cat_async,
    libnfs_cp as libnfs_cp,
    libnfs_cp_async as libnfs_cp_async,
    libnfs_ls as libnfs_ls,
    libnfs_ls_async as libnfs_ls_async,
    libnfs_mkdir as libnfs_mkdir,
    libnfs_unavailable_reason as libnfs_unavailable_reason,
)
from ._netns import current_netns_id as current_netns_id, entered_netns as entered_netns

__all__ = [
    "GaneshaServer",
    "GaneshaUnavailable",
    "LibnfsError",
    "LibnfsMount",
    "LsEntry",
    "current_netns_id",
    "entered_netns",
    "ganesha_unavailable_reason",
    "libnfs_cat",
    "libnfs_cat_async",
    "libnfs_cp",
    "libnfs_cp_async",
    "libnfs_ls",
    "libnfs_ls_async",
    "libnfs_mkdir",
    "libnfs_unavailable_reason",
    "server_for_current_thread",
]
