"""The ``trioblock`` command line: nbdkit's options, parsed into :class:`Options`.

Options are spelled and parsed as nbdkit(1) spells them (GNU getopt: options may follow the
plugin, long options may be abbreviated, ``--`` ends them), so scripts written for
``nbdkit PLUGIN ...`` run unchanged.  This module turns a command line into :class:`Options`,
the texts of ``--help``, ``--version``, ``--dump-config`` and ``--dump-plugin``, a
:class:`ServerConfig`, and the shell prelude of ``--run``; :mod:`trioblock.__main__` runs the
process (sockets, fork, signals, stdio).
"""

from __future__ import annotations

import getopt
import importlib.metadata
import os
import shlex
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import trio

from ._connection import ServerConfig
from ._plugins import BUILTIN_PLUGINS, LoadedPlugin, PluginLoadError
from ._tls import TLSConfigError, default_certificates_dir, load_tls_context

PROG = "trioblock"
NBDKIT_VERSION = "1.32"
"""The nbdkit release whose command line, plugin API and protocol behaviour we follow."""
DEFAULT_PORT = "10809"
DEFAULT_THREADS = 16

SHORT_OPTIONS = "46D:e:fg:i:nop:P:rst:u:U:vV"
LONG_OPTIONS = [
    "debug=", "dump-config", "dump-plugin", "exit-with-parent", "exportname=", "filter=",
    "foreground", "group=", "help", "ipaddr=", "ipv4-only", "ipv6-only", "log=",
    "long-options", "mask-handshake=", "newstyle", "no-inline", "no-sr", "oldstyle", "pidfile=",
    "port=",
    "readonly", "run=", "selinux-label=", "short-options", "single", "swap", "threads=", "tls=",
    "tls-certificates=", "tls-psk=", "tls-verify-peer", "unix=", "user=", "verbose", "version",
    "vsock",
]  # fmt: skip
UNSUPPORTED = {
    "-g": "changing group", "--group": "changing group",
    "-u": "changing user", "--user": "changing user",
    "-o": "the oldstyle protocol", "--oldstyle": "the oldstyle protocol",
    "--filter": "filters", "--mask-handshake": "--mask-handshake",
    "--selinux-label": "SELinux labels", "--swap": "--swap", "--vsock": "AF_VSOCK",
    "--tls-psk": "TLS with pre-shared keys (use --tls-certificates)",
}  # fmt: skip

USAGE = f"""\
{PROG} [-4|--ipv4-only] [-6|--ipv6-only] [-D|--debug FLAG]
          [--exit-with-parent] [-e|--exportname EXPORTNAME] [-f|--foreground]
          [-i|--ipaddr IPADDR] [--log=stderr|syslog|null] [-n|--newstyle]
          [--no-inline] [--no-sr] [-P|--pidfile PIDFILE] [-p|--port PORT]
          [-r|--readonly]
          [--run 'COMMAND ARGS ...'] [-s|--single] [-t|--threads THREADS]
          [--tls=off|on|require] [--tls-certificates=/path/to/certificates]
          [--tls-verify-peer] [-U|--unix SOCKET|-] [-v|--verbose]
          PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]

{PROG} --dump-config

{PROG} PLUGIN --dump-plugin

{PROG} --help

{PROG} [-V|--version]

An NBD server on Trio with nbdkit's command line.  PLUGIN is one of the built-in
plugins ({", ".join(BUILTIN_PLUGINS)}), 'python SCRIPT.py' (an nbdkit Python plugin),
or a path to a .py file: an nbdkit Python plugin, or a Trio async plugin (a module
whose open and pread are 'async def'; see trioblock._plugins._async).  Bare values
go to the plugin's main parameter (size for memory and null, file for file).
Socket activation (LISTEN_PID/LISTEN_FDS) is used when present.

  -U, --unix SOCKET     listen on a Unix socket ('-' = a private one in a new temp dir)
  -p, --port PORT       listen on TCP PORT (default {DEFAULT_PORT}, all addresses)
  -i, --ipaddr IPADDR   listen on IPADDR only;  -4/-6: IPv4 or IPv6 only
  -s, --single          serve one client on stdin/stdout
  --run 'COMMAND'       run COMMAND with $uri, $nbd, $port, $unixsocket, $tls and
                        $exportname set; exit with its status (implies -f)
  -e, --exportname NAME the export name put in $uri for --run
  -f, --foreground      do not fork into the background
  -P, --pidfile FILE    write the server's pid to FILE once it is listening
  --exit-with-parent    exit when the parent process exits (implies -f)
  -r, --readonly        serve read-only
  -t, --threads N       requests in flight per connection (default {DEFAULT_THREADS})
  --no-sr               do not offer structured replies
  --no-inline           always call blocking plugins in worker threads, even once
                        their calls have proved quick (trioblock's own option)
  --tls=off|on|require  offer or require TLS;  --tls-certificates DIR holds
                        ca-cert.pem, server-cert.pem, server-key.pem
  --tls-verify-peer     require client certificates signed by ca-cert.pem
  -v, --verbose         debug messages on stderr;  --log=stderr|syslog|null
  -D, --debug FLAG      accepted for compatibility and ignored
"""


class CommandLineError(Exception):
    """A bad command line: the message is printed as ``trioblock: error: <message>``."""


@dataclass
class Options:
    plugin: str | None = None
    plugin_args: list[str] = field(default_factory=list)
    unix: str | None = None  # absolute path, or "-"
    port: str | None = None
    ipaddr: str | None = None
    family: int = socket.AF_UNSPEC
    readonly: bool = False
    exportname: str = ""
    foreground: bool = False
    verbose: bool = False
    log_to: str = "stderr"
    single: bool = False
    pidfile: str | None = None
    exit_with_parent: bool = False
    run: str | None = None
    threads: int = DEFAULT_THREADS
    tls: str | None = None  # None: not given on the command line
    tls_certificates: str | None = None
    tls_verify_peer: bool = False
    no_sr: bool = False
    no_inline: bool = False
    dump_plugin: bool = False
    dump_config: bool = False
    version: bool = False
    help: bool = False
    activation_fds: int = 0


# -- parsing --------------------------------------------------------------------------------


def parse_command_line(argv: Sequence[str]) -> Options:
    """Parse ``argv`` (without the program name) as nbdkit does; :class:`CommandLineError`."""
    try:
        pairs, rest = getopt.gnu_getopt(list(argv), SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as exc:
        raise CommandLineError(f"{exc.msg} (try '{PROG} --help')") from None
    opts = Options(activation_fds=_activation_fds())
    for name, value in pairs:
        _apply_option(opts, name, value)
    if rest:
        opts.plugin, opts.plugin_args = rest[0], rest[1:]
    _check(opts)
    return opts


def _apply_option(opts: Options, name: str, value: str) -> None:
    if name in UNSUPPORTED:
        raise CommandLineError(f"{name}: {PROG} does not support {UNSUPPORTED[name]}")
    if opts.activation_fds and name in ("-i", "--ipaddr", "-p", "--port", "-s", "--single",
                                        "-U", "--unix", "--run"):  # fmt: skip
        raise CommandLineError(f"cannot use socket activation with {name}")
    match name:
        case "--dump-config":
            opts.dump_config = True
        case "--dump-plugin":
            opts.dump_plugin = True
        case "--help":
            opts.help = True
        case "-V" | "--version":
            opts.version = True
        case "--long-options" | "--short-options":
            raise ListOptions(name)
        case "-4" | "--ipv4-only":
            opts.family = socket.AF_INET
        case "-6" | "--ipv6-only":
            opts.family = socket.AF_INET6
        case "-D" | "--debug":
            pass  # nbdkit's debug flags name C symbols; accepted so scripts keep working
        case "-e" | "--exportname":
            opts.exportname = value
        case "--exit-with-parent":
            opts.exit_with_parent = opts.foreground = True
        case "-f" | "--foreground":
            opts.foreground = True
        case "-i" | "--ipaddr":
            opts.ipaddr = value
        case "--log":
            if value not in ("stderr", "syslog", "null"):
                raise CommandLineError('--log must be "stderr", "syslog" or "null"')
            opts.log_to = value
        case "-n" | "--newstyle":
            pass  # the only protocol we speak
        case "--no-sr":
            opts.no_sr = True
        case "--no-inline":
            opts.no_inline = True
        case "-P" | "--pidfile":
            opts.pidfile = os.path.abspath(value)
        case "-p" | "--port":
            opts.port = value
        case "-r" | "--readonly":
            opts.readonly = True
        case "--run":
            opts.run = value
            opts.foreground = True
        case "-s" | "--single":
            opts.single = True
        case "-t" | "--threads":
            opts.threads = _parse_unsigned("threads", value) or DEFAULT_THREADS
        case "--tls":
            opts.tls = _parse_tls(value)
        case "--tls-certificates":
            opts.tls_certificates = value
        case "--tls-verify-peer":
            opts.tls_verify_peer = True
        case "-U" | "--unix":
            opts.unix = value if value == "-" else os.path.abspath(value)
        case "-v" | "--verbose":
            opts.verbose = True
        case _:  # pragma: no cover - getopt only returns the options listed above
            raise CommandLineError(f"option {name} not recognized")


class ListOptions(Exception):
    """``--long-options`` / ``--short-options`` (for shell completion): print and exit 0."""


def _parse_unsigned(what: str, value: str) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise CommandLineError(f"{what}: could not parse number: {value!r}")
    number = int(text)
    if number > 0xFFFF_FFFF:
        raise CommandLineError(f"{what}: number out of range: {value!r}")
    return number


def _parse_tls(value: str) -> str:
    from ._plugins._params import parse_bool

    if value.lower() in ("require", "required", "force"):
        return "require"
    try:
        return "on" if parse_bool(value) else "off"
    except ValueError:
        raise CommandLineError(f"--tls: expecting off, on or require, not {value!r}") from None


def _check(opts: Options) -> None:
    listen = [opts.port is not None, opts.unix is not None, opts.single]
    if sum(listen) > 1 or (opts.single and (opts.run is not None or opts.dump_plugin)):
        raise CommandLineError(
            "--dump-plugin, -p, --run, -s or -U options cannot be used in this combination"
        )
    if opts.tls_verify_peer and opts.tls == "off":
        raise CommandLineError("--tls-verify-peer needs TLS (--tls=on or --tls=require)")


def _activation_fds() -> int:
    """sd_listen_fds(): the number of sockets passed by socket activation (0 if none)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    try:
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the plugin's own children
    return max(count, 0)


# -- informational output -------------------------------------------------------------------


def version() -> str:
    try:
        return importlib.metadata.version("triokit")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def dump_config_lines() -> list[str]:
    from . import _plugins

    major, minor = [*version().split("."), "0", "0"][:2]
    binary = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else sys.executable
    lines = {
        "binary": binary,
        "builtin_plugins": ",".join(BUILTIN_PLUGINS),
        "exit_with_parent": "yes" if sys.platform == "linux" else "no",
        "host_os": sys.platform,
        "name": PROG,
        "nbdkit_compat_version": NBDKIT_VERSION,
        "plugindir": os.path.dirname(os.path.abspath(_plugins.__file__)),
        "python": sys.executable,
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "root_tls_certificates_dir": "/etc/pki/nbdkit",
        "selinux": "no",
        "tls": "yes",
        "trio_version": trio.__version__,
        "version": version(),
        "version_major": major,
        "version_minor": minor,
    }
    return [f"{key}={value}" for key, value in lines.items()]


def dump_plugin_lines(loaded: LoadedPlugin) -> list[str]:
    """nbdkit's ``--dump-plugin`` fields that mean something here, then the plugin's own lines."""
    model = loaded.plugin.thread_model if loaded.plugin is not None else loaded.cls.thread_model
    lines = [
        f"path={loaded.path}",
        f"name={loaded.name}",
        f"version={version()}",
        f"thread_model={model.name.lower()}",
    ]
    if loaded.plugin is not None:
        lines += loaded.plugin.dump_plugin()
    return lines


# -- configuration --------------------------------------------------------------------------


def server_config(opts: Options) -> ServerConfig:
    """The :class:`ServerConfig` for ``opts``, loading TLS certificates if TLS is wanted."""
    tls = opts.tls
    if tls is None:  # nbdkit: TLS is on when certificates are found, here only when given
        tls = "on" if opts.tls_certificates is not None else "off"
    context = None
    if tls != "off":
        certdir = opts.tls_certificates or default_certificates_dir()
        if certdir is None:
            raise TLSConfigError(
                f"--tls={tls} but no certificates: use --tls-certificates=/path/to/certificates "
                "(a directory with ca-cert.pem, server-cert.pem and server-key.pem)"
            )
        context = load_tls_context(certdir, opts.tls_verify_peer)
    return ServerConfig(
        readonly=opts.readonly,
        tls=tls,
        ssl_context=context,
        threads=opts.threads,
        structured_replies=not opts.no_sr,
        inline_quick_calls=not opts.no_inline,
        remove_socket=not opts.activation_fds,
    )


def captive_script(command: str, opts: Options, *, unix_path: str | None, port: str | None) -> str:
    """``COMMAND`` prefixed with the shell variables nbdkit's --run sets (server/captive.c)."""
    scheme = "nbds" if opts.tls == "require" else "nbd"
    export = "/" + quote(opts.exportname, safe="/") if opts.exportname else ""
    if unix_path is not None:
        uri = f"{scheme}+unix://{export}?socket={quote(unix_path, safe='/')}"
    else:
        host = opts.ipaddr or "localhost"  # nbdkit always says localhost, even with -i
        if ":" in host:
            host = f"[{host}]"
        uri = f"{scheme}://{host}:{port}{export}"
    lines = [f"uri={shlex.quote(uri)}", 'nbd="$uri"', f"exportname={shlex.quote(opts.exportname)}"]
    if opts.tls in ("on", "require") or (opts.tls is None and opts.tls_certificates):
        lines.append(f"tls={2 if opts.tls == 'require' else 1}")
    lines.append(f"port={shlex.quote(port or '')}")
    lines.append(f"unixsocket={shlex.quote(unix_path or '')}")
    return "\n".join(lines) + "\n" + command


def describe_error(exc: BaseException) -> str:
    """One line for the user: nested single-exception groups unwrapped, newlines squeezed."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, (CommandLineError, PluginLoadError, TLSConfigError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


def version_text() -> str:
    return (
        f"{PROG} {version()}\n"
        f"(an NBD server on Trio; its command line emulates nbdkit {NBDKIT_VERSION})\n"
    )


def info_text(opts: Options) -> str | None:
    """What ``--dump-config``, ``--help`` and ``--version`` print; None when serving is asked."""
    if opts.dump_config:
        return "\n".join(dump_config_lines()) + "\n"
    if opts.help:
        return USAGE
    if opts.version:
        return version_text()
    if opts.plugin is None:
        if opts.dump_plugin:
            raise CommandLineError(f"use '{PROG} PLUGIN --dump-plugin' (or --dump-config)")
        raise CommandLineError(f"no plugins given on the command line (try '{PROG} --help')")
    return None


def list_options(which: str) -> str:
    """``--long-options`` / ``--short-options`` (for shell completion, as nbdkit)."""
    if which == "--long-options":
        return "".join(f"--{name.rstrip('=')}\n" for name in LONG_OPTIONS)
    return "".join(f"-{c}\n" for c in SHORT_OPTIONS if c != ":")
