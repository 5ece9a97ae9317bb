"""The ``trioblock`` command line, run as a real process and driven by real NBD clients."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import nbd
import pytest
import trio

from realpeers import need, run
from trioblock._cli import captive_script, describe_error, parse_command_line
from trioblock._plugins import PluginLoadError, load_plugin, split_params
from trioblock._plugins._async import AsyncPlugin
from trioblock._plugins._memory import MemoryPlugin
from trioblock._plugins._nbdkit_host import NbdkitPythonPlugin
from trioblock._tls import TLSConfigError, load_tls_context

ROOT = Path(__file__).resolve().parents[2]
RAMDISK = ROOT / "examples" / "ramdisk.py"
TRIOBLOCK = [sys.executable, "-m", "trioblock"]
PR_SET_CHILD_SUBREAPER = 36
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # fast to make

pytestmark = pytest.mark.interop


async def trioblock(
    *args: str, env: dict[str, str] | None = None, limit: float = 60
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(limit):
        return await trio.run_process(
            [*TRIOBLOCK, *args], capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


async def wait_for_path(path: Path, limit: float = 30) -> None:
    """Another process creates ``path``: poll for it, within a time limit."""
    with trio.fail_after(limit):
        while not await trio.Path(path).exists():  # noqa: ASYNC110 - nothing to wait on
            await trio.sleep(0.01)


def write_script(tmp_path: Path, body: str, name: str = "plugin.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


MINIMAL = """\
API_VERSION = 2
def open(readonly): return 1
def get_size(h): return 1024 * 1024
def pread(h, buf, offset, flags): buf[:] = bytes(len(buf))
"""


# -- errors: one line, exit status 1 --------------------------------------------------------

BAD_COMMAND_LINES = {
    "no plugin": [],
    "unknown option": ["--bogus", "memory", "1M"],
    "missing option argument": ["memory", "1M", "--port"],
    "unknown plugin": ["bogus"],
    "bad size": ["memory", "size=xyz"],
    "unknown parameter": ["null", "colour=blue"],
    "missing script": ["python", "/nonexistent/plugin.py"],
    "python without script": ["python"],
    "conflicting listeners": ["-p", "10809", "-U", "/tmp/x.sock", "memory", "1M"],
    "single with run": ["-s", "--run", "true", "memory", "1M"],
    "bad threads": ["-t", "many", "memory", "1M"],
    "bad tls": ["--tls=maybe", "memory", "1M"],
    "tls without certificates": ["--tls=require", "memory", "1M"],
    "tls certificates missing": ["--tls-certificates", "/nonexistent", "memory", "1M"],
    "unsupported option": ["--filter=delay", "memory", "1M"],
    "bad log": ["--log=file", "memory", "1M"],
    "unix path in a missing dir": ["-f", "-U", "/nonexistent/dir/sock", "memory", "1M"],
}


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES.values(), ids=BAD_COMMAND_LINES.keys())
async def test_bad_command_line_is_one_error_line_and_status_1(argv: list[str]) -> None:
    result = await trioblock(*argv)
    assert result.returncode == 1
    assert result.stdout == b""
    (line,) = lines(result.stderr)
    assert line.startswith("trioblock: error: ")


PLUGIN_FAILURES = {
    "syntax error": "def open(:\n",
    "raises at load": "raise RuntimeError('no backend\\nconfigured')\n",
    "config raises": MINIMAL + "def config(k, v): raise ValueError(f'bad {k}')\n",
    "config_complete raises": MINIMAL + "def config_complete(): raise KeyError('size')\n",
    "missing pread": "def open(readonly): return 1\ndef get_size(h): return 1\n",
    "no config": MINIMAL,
}


@pytest.mark.parametrize("body", PLUGIN_FAILURES.values(), ids=PLUGIN_FAILURES.keys())
async def test_plugin_load_failure_is_one_error_line_without_traceback(
    tmp_path: Path, body: str
) -> None:
    script = write_script(tmp_path, body)
    result = await trioblock("-f", "-U", str(tmp_path / "sock"), "python", str(script), "k=v")
    assert result.returncode == 1
    (line,) = lines(result.stderr)
    assert line.startswith(f"trioblock: error: {script}")
    assert b"Traceback" not in result.stderr


async def test_bare_argument_after_the_script_is_rejected(tmp_path: Path) -> None:
    script = write_script(tmp_path, MINIMAL + "def config(k, v): pass\n")
    result = await trioblock("python", str(script), "k=v", "bare")
    assert result.returncode == 1
    assert lines(result.stderr) == [
        "trioblock: error: expecting key=value on the command line but got: bare"
    ]


# -- information ----------------------------------------------------------------------------


async def test_version_names_the_program_and_nbdkit_emulation() -> None:
    result = await trioblock("--version")
    assert result.returncode == 0
    first, second = lines(result.stdout)
    assert re.fullmatch(r"trioblock \d+\.\d+\.\d+\S*", first)
    assert "nbdkit" in second


async def test_help_shows_the_synopsis() -> None:
    result = await trioblock("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]" in out
    for option in ("--run", "--unix", "--single", "--tls-certificates", "--dump-plugin"):
        assert option in out


async def test_dump_config_has_nbdkit_style_keys() -> None:
    result = await trioblock("--dump-config")
    assert result.returncode == 0
    config = dict(line.split("=", 1) for line in lines(result.stdout))
    assert config["name"] == "trioblock"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", config["version"])
    assert config["version_major"] == config["version"].split(".")[0]
    assert await trio.Path(config["plugindir"]).is_dir()
    assert config["binary"]
    assert config["tls"] == "yes"


async def test_dump_plugin_of_an_nbdkit_script() -> None:
    result = await trioblock("python", str(RAMDISK), "--dump-plugin")
    assert result.returncode == 0
    out = lines(result.stdout)
    assert out[:2] == [f"path={RAMDISK}", "name=python"]
    assert "thread_model=parallel" in out
    assert any(line.startswith("python_version=") for line in out)


async def test_dump_plugin_includes_the_scripts_own_lines_and_skips_config_complete(
    tmp_path: Path,
) -> None:
    body = MINIMAL + (
        "def config(k, v): pass\n"
        "def config_complete(): raise ValueError('needs more parameters')\n"
        "def thread_model(): return 2\n"
        "def dump_plugin(): print('colour=blue')\n"
    )
    result = await trioblock(str(write_script(tmp_path, body)), "k=v", "--dump-plugin")
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert "thread_model=serialize_requests" in out
    assert out[-1] == "colour=blue"


@pytest.mark.parametrize("name", ["memory", "null", "file"])
async def test_dump_plugin_of_a_builtin_needs_no_parameters(name: str) -> None:
    result = await trioblock(name, "--dump-plugin")
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out[1] == f"name={name}"
    assert await trio.Path(out[0].removeprefix("path=")).is_file()
    assert "thread_model=parallel" in out


# -- captive mode (--run) -------------------------------------------------------------------


async def test_run_memory_reports_its_size_through_nbdinfo() -> None:
    need("nbdinfo")
    result = await trioblock("-U", "-", "memory", "16M", "--run", 'nbdinfo --size "$uri"')
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["16777216"]


async def test_run_python_ramdisk_reports_its_size_through_nbdinfo() -> None:
    need("nbdinfo")
    result = await trioblock(
        "-U", "-", "python", str(RAMDISK), "size=32M", "--run", 'nbdinfo --size "$uri"'
    )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["33554432"]


async def test_run_sets_nbdkits_variables_for_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "my sock"
    show = 'printf "%s\\n" "$uri" "$nbd" "$exportname" "$port" "$unixsocket" "${tls-unset}"'
    result = await trioblock("-U", str(sock), "-e", "disk 1", "memory", "1M", "--run", show)
    assert result.returncode == 0, result.stderr
    uri = f"nbd+unix:///disk%201?socket={str(sock).replace(' ', '%20')}"
    assert lines(result.stdout) == [uri, uri, "disk 1", "", str(sock), "unset"]
    assert not sock.exists()


async def test_run_sets_nbdkits_variables_for_tcp() -> None:
    show = 'printf "%s\\n" "$uri" "$port" "$unixsocket"'
    result = await trioblock("-i", "127.0.0.1", "-p", "0", "null", "--run", show)
    assert result.returncode == 0, result.stderr
    uri, port, unixsocket = lines(result.stdout)
    assert int(port) > 0
    assert uri == f"nbd://127.0.0.1:{port}"
    assert unixsocket == ""


async def test_run_private_socket_directory_is_removed_afterwards() -> None:
    result = await trioblock("-U", "-", "memory", "1M", "--run", 'echo "$unixsocket"')
    assert result.returncode == 0, result.stderr
    path = Path(lines(result.stdout)[0])
    assert path.name == "socket"
    assert not path.parent.exists()


async def test_readonly_and_no_sr_reach_the_client() -> None:
    result = await trioblock("-r", "--no-sr", "-U", "-", "memory", "1M", "--run", 'nbdinfo "$uri"')
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "using simple packets" in out
    assert "is_read_only: true" in out


@pytest.mark.parametrize(("command", "status"), [("exit 0", 0), ("exit 7", 7), ("kill $$", 143)])
async def test_run_exits_with_the_commands_status(command: str, status: int) -> None:
    result = await trioblock("-U", "-", "memory", "1M", "--run", command)
    assert result.returncode == status


async def test_run_commands_stdout_carries_no_plugin_output(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "import os\nprint('loading')\n"
        + MINIMAL.replace("return 1\n", "print('open'); os.write(1, b'raw\\n'); return 1\n", 1),
    )
    result = await trioblock(
        "-U", "-", "python", str(script), "--run", 'nbdinfo --size "$uri"; echo done'
    )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["1048576", "done"]
    assert {"loading", "open", "raw"} <= set(lines(result.stderr))


async def test_tls_require_with_certificates(tls_dir: Path) -> None:
    result = await trioblock(
        "--tls=require", "--tls-certificates", str(tls_dir), "-U", "-", "memory", "1M",
        "--run", f'nbdinfo --size "$uri&tls-certificates={tls_dir}"; echo "$tls"',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["1048576", "2"]


async def test_tls_verify_peer_refuses_a_client_without_certificate(tls_dir: Path) -> None:
    """The client directory has the CA but no client-cert.pem: the handshake must fail."""
    client_dir = tls_dir / "client-without-cert"
    client_dir.mkdir()
    (client_dir / "ca-cert.pem").write_bytes((tls_dir / "ca-cert.pem").read_bytes())
    result = await trioblock(
        "--tls=require", "--tls-certificates", str(tls_dir), "--tls-verify-peer",
        "-U", "-", "memory", "1M",
        "--run", f'nbdinfo --size "$uri&tls-certificates={client_dir}"',
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stdout == b""


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A CA, a server certificate for localhost, and a client certificate, made by openssl."""
    need("openssl")
    d = tmp_path / "pki"
    d.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", *EC_KEY, "-keyout", "ca-key.pem",
            "-out", "ca-cert.pem", "-days", "2", "-subj", "/CN=trioblock test CA")  # fmt: skip
    for who, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (d / f"{who}.ext").write_text(f"subjectAltName=DNS:localhost\nextendedKeyUsage={usage}\n")
        openssl("req", *EC_KEY, "-keyout", f"{who}-key.pem",
                "-out", f"{who}.csr", "-subj", f"/CN={who}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca-cert.pem", "-CAkey",
                "ca-key.pem", "-CAcreateserial", "-out", f"{who}-cert.pem", "-days", "2",
                "-extfile", f"{who}.ext")  # fmt: skip
    return d


async def test_tls_verify_peer_accepts_a_client_certificate(tls_dir: Path) -> None:
    result = await trioblock(
        "--tls=require", "--tls-certificates", str(tls_dir), "--tls-verify-peer",
        "-U", "-", "memory", "1M",
        "--run", f'nbdinfo --size "$uri&tls-certificates={tls_dir}"',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["1048576"]


# -- one connection on stdin/stdout (-s) ----------------------------------------------------


def connect_command_round_trip(argv: Sequence[str]) -> tuple[int, bytes]:
    h = nbd.NBD()
    h.connect_command(list(argv))
    h.pwrite(b"\x5a" * 4096, 8192)
    result = h.get_size(), bytes(h.pread(4096, 8192))
    h.shutdown()
    return result


async def test_single_mode_serves_libnbd_connect_command() -> None:
    argv = [*TRIOBLOCK, "-s", "memory", "1M"]
    size, data = await trio.to_thread.run_sync(connect_command_round_trip, argv)
    assert (size, data) == (1024 * 1024, b"\x5a" * 4096)


async def test_single_mode_plugin_output_never_reaches_the_protocol_stream(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    script = write_script(
        tmp_path,
        """\
import os, sys
print("hello at load time")
API_VERSION = 2
disk = bytearray(1024 * 1024)
def get_ready(): print("get_ready")
def open(readonly):
    print("open")
    os.write(1, b"C-level write to fd 1\\n")
    sys.stdout.flush()
    return 1
def get_size(h): return len(disk)
def pread(h, buf, offset, flags):
    print("pread", offset)
    buf[:] = disk[offset : offset + len(buf)]
def pwrite(h, buf, offset, flags):
    print("pwrite", offset)
    disk[offset : offset + len(buf)] = buf
""",
    )
    argv = [*TRIOBLOCK, "-s", "python", str(script)]
    size, data = await trio.to_thread.run_sync(connect_command_round_trip, argv)
    assert (size, data) == (1024 * 1024, b"\x5a" * 4096)
    err = capfd.readouterr().err
    for text in ("hello at load time", "get_ready", "open", "C-level write", "pwrite 8192"):
        assert text in err


# -- background (daemon) mode ---------------------------------------------------------------


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Make this process adopt orphaned descendants, so a test can reap a daemon's status."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.fail(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def reap(pid: int, limit: float = 30) -> int:
    """Wait (bounded) for an adopted process to exit; its exit code."""
    with trio.fail_after(limit):
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - never blocks
            if done:
                return os.waitstatus_to_exitcode(status)
            await trio.sleep(0.02)


async def test_daemon_is_ready_when_the_parent_exits_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    sock, pidfile = tmp_path / "nbd.sock", tmp_path / "nbd.pid"
    with subreaper():
        result = await trioblock("-U", str(sock), "-P", str(pidfile), "memory", "16M")
        assert result.returncode == 0, result.stderr
        # No waiting: the parent exits only once the child listens and wrote the pidfile.
        assert sock.exists()
        pid = int(pidfile.read_text())
        assert pid != os.getpid()
        out = await run(["nbdinfo", "--size", f"nbd+unix:///?socket={sock}"])
        assert out.strip() == "16777216"
        os.kill(pid, signal.SIGTERM)
        assert await reap(pid) == 0
    assert not sock.exists()


async def test_daemon_failing_after_fork_makes_the_parent_fail(tmp_path: Path) -> None:
    script = write_script(
        tmp_path, MINIMAL + "def after_fork(): raise RuntimeError('cannot start workers')\n"
    )
    result = await trioblock("-U", str(tmp_path / "sock"), "python", str(script))
    assert result.returncode == 1
    assert b"cannot start workers" in result.stderr
    assert not (tmp_path / "sock").exists()


async def test_foreground_server_exits_0_on_sigterm_and_removes_its_socket(tmp_path: Path) -> None:
    sock, pidfile = tmp_path / "nbd.sock", tmp_path / "nbd.pid"
    argv = [*TRIOBLOCK, "-f", "-U", str(sock), "-P", str(pidfile), "python", str(RAMDISK)]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, argv, check=False, stdin=subprocess.DEVNULL)
        )
        await wait_for_path(pidfile)
        assert int(pidfile.read_text()) == proc.pid
        assert (await run(["nbdinfo", "--size", f"nbd+unix:///?socket={sock}"])).strip()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await proc.wait() == 0
    assert not sock.exists()


async def test_exit_with_parent(tmp_path: Path) -> None:
    """The server's parent (a shell waiting on its stdin) exits: the server follows, status 0."""
    sock, pidfile = tmp_path / "nbd.sock", tmp_path / "nbd.pid"
    server = " ".join(
        [*TRIOBLOCK, "--exit-with-parent", "-U", str(sock), "-P", str(pidfile), "memory", "1M"]
    )
    with subreaper():
        async with trio.open_nursery() as nursery:
            shell: trio.Process = await nursery.start(
                partial(trio.run_process, ["sh", "-c", f"{server} & read line"], check=False,
                        stdin=subprocess.PIPE)
            )  # fmt: skip
            await wait_for_path(pidfile)
            pid = int(pidfile.read_text())
            assert shell.stdin is not None
            await shell.stdin.aclose()  # the shell reads EOF and exits
            await shell.wait()  # now the server is an orphan, adopted by this process
            assert await reap(pid) == 0
    assert not sock.exists()


# -- nbdkit compatibility -------------------------------------------------------------------


async def test_nbdkit_shim_runs_an_nbdkit_command_line_on_trioblock() -> None:
    need("nbdinfo")
    env = dict(os.environ, PATH=f"{ROOT / 'shims'}:{os.environ['PATH']}")
    command = (
        "nbdkit -U - python examples/ramdisk.py --run 'nbdinfo --size \"$uri\"'; nbdkit --version"
    )
    with trio.fail_after(60):
        result = await trio.run_process(
            ["sh", "-c", command], cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out[0] == str(64 * 1024 * 1024)
    assert out[1].startswith("trioblock ")


async def test_socket_activation_as_nbdinfo_does_it() -> None:
    out = await run(["nbdinfo", "--size", "--", "[", *TRIOBLOCK, "memory", "2M", "]"])
    assert out.strip() == str(2 * 1024 * 1024)


# -- plugin specs and arguments (load_plugin), in process -----------------------------------


def test_bare_arguments_go_to_the_magic_key_as_in_nbdkit() -> None:
    assert split_params(["1M", "a.b-c_d=x", "2M"], magic_key="size") == [
        ("size", "1M"), ("a.b-c_d", "x"), ("size", "2M"),
    ]  # fmt: skip
    # Not a key=value: the part before "=" is no config key, so the whole is a bare value.
    assert split_params(["/img/a=b.img", "1x=y", "=z"], magic_key="file") == [
        ("file", "/img/a=b.img"), ("file", "1x=y"), ("file", "=z"),
    ]  # fmt: skip
    with pytest.raises(PluginLoadError, match=r"expecting key=value .* got: bare"):
        split_params(["bare"], magic_key=None)


def test_builtin_takes_a_bare_size() -> None:
    plugin = load_plugin("memory", ["2M"])
    assert isinstance(plugin, MemoryPlugin)
    assert plugin.size == 2 * 1024 * 1024


def test_file_plugin_path_with_an_equals_sign(tmp_path: Path) -> None:
    image = tmp_path / "size=1M.img"
    image.write_bytes(bytes(4096))
    plugin = load_plugin("file", [str(image)])
    assert plugin.name == "file"


@pytest.mark.parametrize("first", ["SCRIPT", "script=SCRIPT"])
def test_python_takes_the_script_bare_or_as_script_key(tmp_path: Path, first: str) -> None:
    script = write_script(tmp_path, MINIMAL)
    plugin = load_plugin("python", [first.replace("SCRIPT", str(script))])
    assert isinstance(plugin, NbdkitPythonPlugin)


def test_python_needs_the_script_first(tmp_path: Path) -> None:
    script = write_script(tmp_path, MINIMAL + "def config(k, v): pass\n")
    with pytest.raises(PluginLoadError, match="first parameter must be script="):
        load_plugin("python", ["size=1M", f"script={script}"])


def test_unknown_plugin_names_what_can_be_loaded() -> None:
    with pytest.raises(PluginLoadError, match=r"only Python files \(\*\.py\)"):
        load_plugin("/usr/lib/nbdkit/plugins/nbdkit-memory-plugin.so", [])
    with pytest.raises(PluginLoadError, match="not a built-in plugin"):
        load_plugin("curl", [])


def test_an_nbdkit_scripts_top_level_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    script = write_script(
        tmp_path,
        f"with open({str(log)!r}, 'a') as f:\n    f.write('ran\\n')\n"
        "async def unrelated_helper(): pass\n" + MINIMAL,
    )
    assert isinstance(load_plugin(str(script), []), NbdkitPythonPlugin)
    assert log.read_text() == "ran\n"


ASYNC_PLUGIN = """\
import trio
magic_config_key = "size"
size = 0
def config(key, value):
    global size
    size = int(value)
async def open(readonly):
    await trio.lowlevel.checkpoint()
    return None
async def get_size(h):
    await trio.lowlevel.checkpoint()
    return size
async def pread(h, buf, offset, flags):
    await trio.lowlevel.checkpoint()
    buf[:] = bytes(len(buf))
"""


def test_async_plugin_file_is_recognised_and_takes_its_magic_key(tmp_path: Path) -> None:
    script = write_script(tmp_path, ASYNC_PLUGIN, name="zeros.py")
    plugin = load_plugin(str(script), ["4096"])
    assert isinstance(plugin, AsyncPlugin)
    assert plugin.name == "zeros"
    assert load_plugin("python", [str(script), "512"]).name == "zeros"  # again: a fresh module


def test_callbacks_bound_from_an_object_are_checked_by_importing(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        ASYNC_PLUGIN.replace("async def open", "async def _open").replace(
            "async def pread", "async def _pread"
        )
        + "open, pread = _open, _pread\n",
    )
    assert isinstance(load_plugin(str(script), []), AsyncPlugin)


async def test_async_plugin_from_the_command_line_serves() -> None:
    result = await trioblock(
        str(ROOT / "examples" / "async_remote.py"), "server=127.0.0.1:1", "--dump-plugin"
    )
    assert result.returncode == 0, result.stderr
    assert "name=async_remote" in lines(result.stdout)


# -- pieces of the command line, in process --------------------------------------------------


def test_captive_script_quotes_like_nbdkit() -> None:
    opts = parse_command_line(["-U", "/tmp/a b/s", "-e", "x/y z", "--tls=on", "memory", "1M"])
    script = captive_script("true", opts, unix_path="/tmp/a b/s", port=None)
    assert script.splitlines() == [
        "uri='nbd+unix:///x/y%20z?socket=/tmp/a%20b/s'",
        'nbd="$uri"',
        "exportname='x/y z'",
        "tls=1",
        "port=''",
        "unixsocket='/tmp/a b/s'",
        "true",
    ]


def test_options_may_follow_the_plugin_and_long_options_abbreviate() -> None:
    opts = parse_command_line(["memory", "1M", "--read", "-fv", "--export=e", "k=v"])
    assert (opts.plugin, opts.plugin_args) == ("memory", ["1M", "k=v"])
    assert (opts.readonly, opts.foreground, opts.verbose) == (True, True, True)
    assert opts.exportname == "e"


def test_run_and_exit_with_parent_imply_foreground() -> None:
    assert parse_command_line(["--run", "true", "null"]).foreground
    assert parse_command_line(["--exit-with-parent", "null"]).foreground
    assert not parse_command_line(["null"]).foreground


def test_describe_error_unwraps_single_exception_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [RuntimeError("a\nb")])])
    assert describe_error(group) == "RuntimeError: a b"
    assert describe_error(FileNotFoundError(2, "No such file", "/x")) == "/x: No such file"


def test_tls_context_from_a_certificates_directory(tls_dir: Path) -> None:
    context = load_tls_context(str(tls_dir), verify_peer=False)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert load_tls_context(str(tls_dir), verify_peer=True).verify_mode == ssl.CERT_REQUIRED


def test_tls_context_names_the_missing_files(tls_dir: Path) -> None:
    (tls_dir / "server-key.pem").unlink()
    with pytest.raises(TLSConfigError, match=r"missing or unreadable server-key\.pem"):
        load_tls_context(str(tls_dir), verify_peer=False)


def test_tls_context_rejects_a_key_that_does_not_match(tls_dir: Path) -> None:
    (tls_dir / "server-key.pem").write_bytes((tls_dir / "client-key.pem").read_bytes())
    with pytest.raises(TLSConfigError, match="loading server certificate and key"):
        load_tls_context(str(tls_dir), verify_peer=False)


SLOW_READ_PLUGIN = """\
import builtins  # the plugin's open() callback hides the built-in one
API_VERSION = 2
fifo = log = ""
def config(key, value):
    globals()[key] = value
def note(what):
    with builtins.open(log, "a") as f:
        f.write(what + "\\n")
def thread_model(): return 3
def open(readonly): return 1
def get_size(h): return 1024 * 1024
def pread(h, buf, offset, flags):
    note("pread start")
    with builtins.open(fifo, "rb") as f:  # blocks until the test opens it for writing
        f.read(1)
    buf[:] = b"x" * len(buf)
    note("pread end")
def flush(h, flags): note("flush")
def close(h): note("close")
def cleanup(): note("cleanup")
"""


def read_one_block(uri: str) -> bytes:
    h = nbd.NBD()
    h.connect_uri(uri)
    data = bytes(h.pread(4096, 0))
    with contextlib.suppress(nbd.Error):
        h.shutdown()  # the server may already have closed the connection
    return data


async def test_sigterm_lets_the_request_in_flight_finish_then_flushes_and_cleans_up(
    tmp_path: Path,
) -> None:
    sock, log, fifo = tmp_path / "nbd.sock", tmp_path / "plugin.log", tmp_path / "fifo"
    os.mkfifo(fifo)
    script = write_script(tmp_path, SLOW_READ_PLUGIN)
    argv = [*TRIOBLOCK, "-f", "-v", "-U", str(sock), "python", str(script),
            f"fifo={fifo}", f"log={log}"]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    err_stream = proc.stderr
    assert err_stream is not None
    stderr = bytearray()

    async def stderr_until(text: bytes) -> None:
        """Read the server's -v log until ``text``: how we know what it has done."""
        while text not in stderr:
            chunk = await err_stream.receive_some()
            assert chunk, f"trioblock exited early: {stderr.decode()}"
            stderr.extend(chunk)

    data: list[bytes] = []
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await stderr_until(b"listening on")

                async def client() -> None:
                    uri = f"nbd+unix:///?socket={sock}"
                    data.append(await trio.to_thread.run_sync(read_one_block, uri))

                nursery.start_soon(client)
                await wait_for_path(log)  # the read is in the plugin now
                proc.send_signal(signal.SIGTERM)
                await stderr_until(b"received signal SIGTERM")
                async with await trio.open_file(fifo, "wb") as f:  # let the read finish
                    await f.write(b"!")
                assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
    assert data == [b"x" * 4096]
    assert log.read_text().splitlines() == ["pread start", "pread end", "flush", "close", "cleanup"]
