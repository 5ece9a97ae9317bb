"""``trioblock`` (the console script) and ``python -m trioblock``: the server process.

:mod:`trioblock._cli` parses the command line; this module runs it, as nbdkit's server/main.c:

* default: load the plugin, ``get_ready``, bind, fork into the background (the parent exits 0
  only when the child listens, has written the pidfile and ran ``after_fork``; if the child fails
  the parent exits with its status), serve until SIGINT/SIGTERM/SIGHUP/SIGQUIT;
* ``-f``: the same in the foreground; ``--run CMD``: foreground, run ``sh -c CMD`` with ``$uri``
  and friends set, exit with its status, then stop serving;
* ``-s``: one client on stdin/stdout;
* socket activation (``LISTEN_PID``/``LISTEN_FDS``, as ``nbdinfo -- [ CMD ]`` and systemd use).

A plugin's stdout never carries anything that matters: in the foreground modes fd 1 points at
stderr (and stdin at /dev/null) before the plugin is loaded; the protocol (``-s``) and the
``--run`` command use saved copies of the original descriptors; a daemon points all three at
/dev/null once ready (stderr is kept with ``-v``).  A signal stops accepting, lets requests in
flight finish, flushes and closes the plugin's handles, calls ``cleanup`` and exits 0; a second
signal drops the connections at once.  Any error is one ``trioblock: error:`` line, status 1.
"""

from __future__ import annotations

import ctypes
import errno
import io
import logging
import logging.handlers
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from ._cli import (
    DEFAULT_PORT,
    PROG,
    CommandLineError,
    ListOptions,
    Options,
    captive_script,
    describe_error,
    dump_plugin_lines,
    info_text,
    list_options,
    parse_command_line,
    server_config,
)
from ._connection import ServerConfig
from ._plugins import open_plugin
from ._plugins._backend import Plugin
from ._server import NBDServer, serve_nbd, serve_nbd_stream

log = logging.getLogger("trioblock.main")

QUIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PR_SET_PDEATHSIG = 1
FIRST_ACTIVATION_FD = 3


def main() -> int:
    """Console-script entry point: run ``sys.argv`` and return the exit status."""
    return run_command_line(sys.argv[1:])


def run_command_line(argv: Sequence[str]) -> int:
    """Run a command line; returns the exit status.  Errors are one ``trioblock: error:`` line."""
    verbose = False
    try:
        opts = parse_command_line(argv)
        verbose = opts.verbose
        return _run(opts)
    except ListOptions as exc:
        print(list_options(str(exc)), end="")
        return 0
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except SystemExit as exc:  # --exit-with-parent found the parent gone
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        if verbose:
            log.debug("fatal error", exc_info=exc)
        print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
        return 1


def _run(opts: Options) -> int:
    text = info_text(opts)
    if text is not None:
        print(text, end="")
        return 0
    assert opts.plugin is not None
    _setup_logging(opts)
    if opts.exit_with_parent:
        _set_exit_with_parent()
    if opts.dump_plugin:
        loaded = open_plugin(opts.plugin, opts.plugin_args, dump_only=True)
        print("\n".join(dump_plugin_lines(loaded)))
        return 0

    foreground = opts.foreground or opts.single or bool(opts.activation_fds)
    saved_stdio = _take_stdio() if foreground else None
    if saved_stdio is not None and opts.run is None and not opts.single:
        for fd in saved_stdio:  # plain -f: nobody needs the original stdin/stdout
            os.close(fd)
        saved_stdio = None
    plugin = open_plugin(opts.plugin, opts.plugin_args).plugin
    assert plugin is not None
    config = server_config(opts)
    if opts.single:
        assert saved_stdio is not None
        return trio.run(serve_single, plugin, config, *saved_stdio, opts.pidfile)

    trio.run(plugin.get_ready)
    endpoint = bind(opts)
    try:
        if not foreground:
            ready: Callable[[], None] = daemonize(opts)
        else:
            # Written once listening, with signals handled: whoever waits for the pidfile may
            # then signal us (--exit-with-parent's SIGTERM included) and get a clean shutdown.
            ready = partial(write_pidfile, opts.pidfile)
        return trio.run(
            partial(serve_endpoint, plugin, endpoint, config, opts, ready=ready,
                    captive_stdio=saved_stdio)
        )  # fmt: skip
    finally:
        _close_endpoint(endpoint)


# -- the process: logging, parent, stdio ------------------------------------------------------


def _setup_logging(opts: Options) -> None:
    handler: logging.Handler
    if opts.log_to == "null":
        handler = logging.NullHandler()
    elif opts.log_to == "syslog":
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
        except OSError as exc:
            raise CommandLineError(f"--log=syslog: /dev/log: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter(f"{PROG}[%(process)d]: %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if opts.verbose else logging.WARNING)


def _set_exit_with_parent() -> None:
    """Get SIGTERM (a clean shutdown) when the parent process exits: prctl(PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"--exit-with-parent: prctl: {os.strerror(err)}")
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(0)


def _take_stdio() -> tuple[int, int]:
    """Keep private copies of fds 0 and 1; point 0 at /dev/null and 1 at stderr.

    Afterwards nothing the plugin writes to stdout (``print()``, C code, child processes) can
    reach the original stdout, which carries the NBD stream (``-s``) or belongs to the ``--run``
    command.  The copies are close-on-exec.
    """
    sys.stdout.flush()
    saved_in, saved_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # print()s show up among the log lines
    return saved_in, saved_out


# -- listening sockets ----------------------------------------------------------------------


@dataclass
class Endpoint:
    """What the server listens on, for ``$uri`` and friends."""

    sockets: list[socket.socket]
    unix_path: str | None = None
    port: str | None = None
    temp_dir: str | None = None  # made for ``-U -``; removed at exit


def bind(opts: Options) -> Endpoint:
    """Bind and listen with the plain socket module (before any fork), as nbdkit does."""
    if opts.activation_fds:
        socks = [socket.socket(fileno=FIRST_ACTIVATION_FD + i) for i in range(opts.activation_fds)]
        for sock in socks:
            sock.set_inheritable(False)
        return Endpoint(socks)
    if opts.unix is not None:
        temp_dir = None
        path = opts.unix
        if path == "-":
            temp_dir = tempfile.mkdtemp(prefix=PROG)
            path = os.path.join(temp_dir, "socket")
        try:
            return Endpoint([_bind_unix(path)], unix_path=path, temp_dir=temp_dir)
        except BaseException:
            if temp_dir is not None:
                os.rmdir(temp_dir)
            raise
    port = opts.port or DEFAULT_PORT
    socks = _bind_tcp(opts.ipaddr, port, opts.family)
    if port.isdigit() and int(port) == 0:
        port = str(socks[0].getsockname()[1])
    return Endpoint(socks, port=port)


def _bind_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{path}: {exc.strerror}") from None
    return sock


def _bind_tcp(host: str | None, port: str, family: int) -> list[socket.socket]:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(
            exc.errno, f"getaddrinfo: {host or '<any>'}: {port}: {exc.strerror}"
        ) from None
    socks: list[socket.socket] = []
    skipped: OSError | None = None
    try:
        for fam, kind, proto, _, addr in infos:
            try:
                sock = socket.socket(fam, kind, proto)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:  # ipv6.disable=1: getaddrinfo still offers it
                    raise
                skipped = exc
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(socket.SOMAXCONN)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE or len(infos) == 1:
                    raise OSError(
                        exc.errno, f"bind {addr[0]} port {port}: {exc.strerror}"
                    ) from None
                skipped = exc  # nbdkit too serves on the addresses it could get
                continue
            socks.append(sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        reason = f": {skipped.strerror}" if skipped is not None else ""
        raise OSError(
            skipped.errno if skipped else errno.EADDRNOTAVAIL,
            f"unable to bind to any TCP/IP sockets on port {port}{reason}",
        )
    return socks


def _close_endpoint(endpoint: Endpoint) -> None:
    for sock in endpoint.sockets:
        sock.close()
    if endpoint.unix_path is not None:
        try:
            os.unlink(endpoint.unix_path)
        except FileNotFoundError:
            pass
    if endpoint.temp_dir is not None:
        try:
            os.rmdir(endpoint.temp_dir)
        except OSError:
            pass


def write_pidfile(path: str | None) -> None:
    if path is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


# -- serving --------------------------------------------------------------------------------


async def _watch_signals(signals: AsyncIterator[int], on_signal: Callable[[int], None]) -> None:
    async for signum in signals:
        log.debug("received signal %s", signal.Signals(signum).name)
        on_signal(signum)


async def serve_endpoint(
    plugin: Plugin,
    endpoint: Endpoint,
    config: ServerConfig,
    opts: Options,
    *,
    ready: Callable[[], None] = lambda: None,
    captive_stdio: tuple[int, int] | None = None,
) -> int:
    """Serve on ``endpoint``'s stdlib sockets until a signal, a plugin shutdown or ``--run`` ends.

    Calls the plugin's ``after_fork`` first and ``cleanup`` last; ``ready()`` runs once the
    listeners are up (the daemon tells its parent to exit there).  Returns the exit status.
    """
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in endpoint.sockets]
    endpoint.sockets = []  # owned by the listeners now
    status = 0
    try:
        await plugin.after_fork()
        with trio.open_signal_receiver(*QUIT_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                serve = partial(_serve_then_cancel, plugin, listeners, config, nursery.cancel_scope)
                server: NBDServer = await nursery.start(serve)
                log.debug("listening on %s", ", ".join(map(str, server.addresses)))
                ready()
                if opts.run is None:
                    nursery.start_soon(_watch_signals, signals, _stopper(server, nursery))
                else:
                    assert captive_stdio is not None
                    script = captive_script(
                        opts.run, opts, unix_path=endpoint.unix_path, port=endpoint.port
                    )
                    status = await _run_captive(script, captive_stdio, signals)
                    server.shutdown()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()
            await _cleanup(plugin)
    return status


async def _serve_then_cancel(
    plugin: Plugin,
    listeners: list[trio.SocketListener],
    config: ServerConfig,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[NBDServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await serve_nbd(
            plugin, listeners=listeners, config=config, lifecycle=False, task_status=task_status
        )
    finally:
        scope.cancel()  # the server is done: stop watching signals


def _stopper(server: NBDServer, nursery: trio.Nursery) -> Callable[[int], None]:
    """The first signal shuts the server down gracefully, a second one drops everything."""
    signalled = False

    def on_signal(signum: int) -> None:
        nonlocal signalled
        if signalled:
            log.warning("second signal: closing the connections without waiting")
            nursery.cancel_scope.cancel()
        signalled = True
        server.shutdown()

    return on_signal


async def _run_captive(script: str, stdio: tuple[int, int], signals: AsyncIterator[int]) -> int:
    """Run ``sh -c script``; signals we get are passed on to it.  Returns nbdkit's status."""
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, ["sh", "-c", script], check=False,
                    stdin=stdio[0], stdout=stdio[1])
        )  # fmt: skip
        nursery.start_soon(_watch_signals, signals, proc.send_signal)
        await proc.wait()
        nursery.cancel_scope.cancel()
    code = proc.returncode
    assert code is not None
    if code < 0:
        print(f"{PROG}: external command was killed by signal {-code}", file=sys.stderr)
        return 128 - code
    return code


async def _cleanup(plugin: Plugin) -> None:
    try:
        await plugin.cleanup()
    except Exception:
        log.exception("plugin cleanup failed")


async def serve_single(
    plugin: Plugin, config: ServerConfig, proto_in: int, proto_out: int, pidfile: str | None
) -> int:
    """``-s``: the whole server lifecycle for one client on the saved stdin/stdout."""
    stream = trio.StapledStream(trio.lowlevel.FdStream(proto_out), trio.lowlevel.FdStream(proto_in))
    try:
        await plugin.get_ready()
        write_pidfile(pidfile)
        await plugin.after_fork()
        with trio.open_signal_receiver(*QUIT_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                cancel = nursery.cancel_scope.cancel
                nursery.start_soon(_watch_signals, signals, lambda _: cancel())
                await serve_nbd_stream(plugin, stream, config=config, request_shutdown=cancel)
                cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
            await _cleanup(plugin)
    return 0


def daemonize(opts: Options) -> Callable[[], None]:
    """Fork; the parent exits 0 when the child calls the returned ``ready()``, else as the child.

    The child gets a new session, writes the pidfile, and at ``ready()`` points stdin, stdout
    and (unless ``-v``) stderr at /dev/null.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        try:
            if os.read(read_end, 1) == b"1":
                os._exit(0)
            os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) or 1)  # it reported why
        except KeyboardInterrupt:
            os._exit(1)
    os.close(read_end)
    os.setsid()
    write_pidfile(opts.pidfile)
    log.debug("forked into background (new pid = %d)", os.getpid())

    def ready() -> None:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1) if opts.verbose else (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        os.write(write_end, b"1")
        os.close(write_end)

    return ready


if __name__ == "__main__":
    sys.exit(main())
