"""NbdkitPythonPlugin hosts nbdkit Python plugins with nbdkit 1.32's exact semantics.

The plugins under ``plugins/`` are ordinary nbdkit plugin scripts; tests drive the host directly
(no server, no sockets) and read what the plugins recorded through ``plugin.module``.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioblock import nbdkit
from trioblock._plugins import _context
from trioblock._plugins._backend import (
    CACHE_EMULATE,
    CACHE_NATIVE,
    CACHE_NONE,
    FLAG_FAST_ZERO,
    FLAG_FUA,
    FLAG_MAY_TRIM,
    FUA_EMULATE,
    FUA_NATIVE,
    FUA_NONE,
    ExportInfo,
    PluginConnection,
    ThreadModel,
    read_bytes,
)
from trioblock._plugins._nbdkit_host import (
    DEFAULT_THREAD_LIMIT,
    NbdkitPythonPlugin,
    redirect_plugin_stdout,
)

PLUGINS = Path(__file__).parent / "plugins"
MiB = 1024 * 1024


def load(name: str, *params: tuple[str, str], **kwargs: Any) -> NbdkitPythonPlugin:
    return NbdkitPythonPlugin.from_script(PLUGINS / f"{name}.py", params, **kwargs)


def redefine(plugin: NbdkitPythonPlugin, **attrs: object) -> None:
    """Replace module-level names of a loaded plugin (nbdkit looks callbacks up on each call)."""
    for name, value in attrs.items():
        setattr(plugin.module, name, value)


def write_plugin(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plugin.py"
    path.write_text(body)
    return path


REQUIRED = {
    "open": "def open(readonly):\n    return None\n",
    "get_size": "def get_size(h):\n    return 512\n",
    "pread": "def pread(h, buf, offset, flags):\n    buf[:] = bytes(len(buf))\n",
}


async def open_conn(
    plugin: NbdkitPythonPlugin, *, readonly: bool = False
) -> tuple[PluginConnection, ExportInfo]:
    conn = await plugin.open(readonly, "", False)
    return conn, await conn.info()


@pytest.fixture
def plugin_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="trioblock.plugin"):
        yield caplog


def raises_errno(code: int) -> pytest.RaisesExc[OSError]:
    """pytest.raises for an OSError carrying exactly this errno."""
    return pytest.raises(OSError, match=rf"^\[Errno {code}\] ")


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioblock.plugin" and r.levelname == "ERROR"]


# -- loading -------------------------------------------------------------------------------


def test_script_runs_as_main_in_a_fresh_module_and_main_is_restored() -> None:
    main_before = sys.modules["__main__"]
    plugin = load("recording")
    assert plugin.module.LOADED_AS == "__main__"
    assert plugin.module.MAIN_WHILE_LOADING is True
    assert plugin.module.__file__ == str(PLUGINS / "recording.py")
    assert sys.modules["__main__"] is main_before
    assert sys.modules["nbdkit"] is nbdkit


def test_each_load_gets_its_own_module_state() -> None:
    first, second = load("recording"), load("recording")
    assert first.module is not second.module
    assert first.module.calls is not second.module.calls


def test_missing_api_version_means_api_1() -> None:
    assert load("recording_v1").api_version == 1
    assert load("recording").api_version == 2


@pytest.mark.parametrize("value", ["0", "3", "'2'", "2.0"])
def test_bad_api_version_is_a_clear_value_error(tmp_path: Path, value: str) -> None:
    path = write_plugin(tmp_path, f"API_VERSION = {value}\n" + "".join(REQUIRED.values()))
    with pytest.raises(ValueError, match="API_VERSION"):
        NbdkitPythonPlugin.from_script(path, [])


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_callback_is_named(tmp_path: Path, missing: str) -> None:
    body = "".join(src for name, src in REQUIRED.items() if name != missing)
    path = write_plugin(tmp_path, body + f"{missing} = 'not callable'\n")
    with pytest.raises(ValueError, match=f"required callback {missing} is not defined"):
        NbdkitPythonPlugin.from_script(path, [])


def test_params_without_config_callback_are_an_error() -> None:
    with pytest.raises(ValueError, match="does not need command line configuration"):
        load("minimal", ("size", "1M"))


def test_config_then_config_complete_then_thread_model_in_order() -> None:
    plugin = load("recording", ("a", "1"), ("b", "2"))
    assert plugin.module.calls == [
        ("config", "a", "1"),
        ("config", "b", "2"),
        ("config_complete",),
        ("thread_model",),
    ]


def test_config_complete_can_be_skipped_for_dump_plugin() -> None:
    plugin = load("recording", ("a", "1"), config_complete=False)
    assert ("config_complete",) not in plugin.module.calls
    assert ("config", "a", "1") in plugin.module.calls


def test_config_exception_propagates_from_from_script() -> None:
    with pytest.raises(RuntimeError, match="unknown parameter"):
        load("block_size", ("bogus", "1"))


def test_thread_model_defaults_to_serialize_all_requests() -> None:
    assert load("minimal").thread_model is ThreadModel.SERIALIZE_ALL_REQUESTS
    assert load("recording").thread_model is ThreadModel.PARALLEL


@pytest.mark.parametrize(
    ("returned", "effective"),
    [
        (0, ThreadModel.SERIALIZE_CONNECTIONS),
        (2, ThreadModel.SERIALIZE_REQUESTS),
        (7, ThreadModel.PARALLEL),
    ],
)
def test_thread_model_is_capped_at_parallel(
    tmp_path: Path, returned: int, effective: ThreadModel
) -> None:
    body = "".join(REQUIRED.values()) + f"def thread_model():\n    return {returned}\n"
    plugin = NbdkitPythonPlugin.from_script(write_plugin(tmp_path, body), [])
    assert plugin.thread_model is effective


def test_dump_plugin_returns_host_lines_then_the_plugins_printed_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = load("printing")
    capsys.readouterr()
    lines = plugin.dump_plugin()
    assert lines[0].startswith("python_version=")
    assert "nbdkit_python_maximum_api_version=2" in lines
    assert lines[-2:] == ["printing_key=1", "other=2"]
    assert capsys.readouterr().out == ""


# -- lifecycle -----------------------------------------------------------------------------


async def test_lifecycle_callbacks_run_in_a_worker_thread_once() -> None:
    plugin = load("recording")
    plugin.module.calls.clear()
    await plugin.get_ready()
    await plugin.after_fork()
    await plugin.preconnect(True)
    conn = await plugin.open(False, "", False)
    await conn.close()
    await conn.close()
    await plugin.cleanup()
    await plugin.cleanup()
    assert plugin.module.calls == [
        ("get_ready",),
        ("after_fork",),
        ("preconnect", True),
        ("open", False, ""),
        ("close", {"readonly": False}),
        ("cleanup",),
    ]
    assert threading.get_ident() not in plugin.module.threads


async def test_absent_callbacks_still_checkpoint() -> None:
    plugin = load("minimal")
    conn = await plugin.open(True, "", False)
    for call in (plugin.get_ready, plugin.after_fork, plugin.cleanup, plugin.cleanup, conn.close):
        with trio.testing.assert_checkpoints():
            await call()
    with trio.testing.assert_checkpoints():
        await plugin.preconnect(False)


async def test_calls_into_worker_threads_are_checkpoints() -> None:
    plugin = load("recording")
    with trio.testing.assert_checkpoints():
        await plugin.get_ready()
    with trio.testing.assert_checkpoints():
        await plugin.default_export(False, False)
    conn, _ = await open_conn(plugin)
    with trio.testing.assert_checkpoints():
        await conn.pread(512, 0, 0)


async def test_close_and_cleanup_reach_the_plugin_even_when_cancelled() -> None:
    plugin = load("recording")
    conn = await plugin.open(False, "", False)
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.close()
        await plugin.cleanup()
    assert plugin.module.calls[-2:] == [("close", {"readonly": False}), ("cleanup",)]


async def test_callbacks_run_under_the_given_limiter() -> None:
    assert load("minimal").limiter.total_tokens == DEFAULT_THREAD_LIMIT
    limiter = trio.CapacityLimiter(3)
    plugin = load("minimal", limiter=limiter)
    assert plugin.limiter is limiter
    seen: list[int] = []
    redefine(plugin, get_ready=lambda: seen.append(limiter.borrowed_tokens))
    await plugin.get_ready()
    assert seen == [1]
    assert limiter.borrowed_tokens == 0


async def test_close_exception_is_logged_not_raised(plugin_log: pytest.LogCaptureFixture) -> None:
    conn = await load("errors").open(False, "", False)
    await conn.close()
    assert any("close" in r.getMessage() for r in error_records(plugin_log))


# -- exports and the per-connection context ------------------------------------------------


async def test_export_name_inside_open_comes_from_the_connection_context() -> None:
    plugin = load("recording")
    _context.current.set(_context.ConnectionContext(export_name="disk1", is_tls=True))
    await plugin.open(True, "disk1", True)
    assert plugin.module.calls[-1] == ("open", True, "disk1")
    assert await trio.to_thread.run_sync(nbdkit.export_name) == "disk1"
    assert await trio.to_thread.run_sync(nbdkit.is_tls) is True


async def test_connection_callbacks_see_the_opened_export_name_and_tls() -> None:
    # nbdkit 1.32.5 reports the name it opened: the default export's, if the client sent "".
    plugin = load("exports")
    redefine(plugin, export_description=lambda h: f"{nbdkit.export_name()} {nbdkit.is_tls()}")
    requests: list[str] = []
    _context.current.set(
        _context.ConnectionContext(request_shutdown=lambda: requests.append("shutdown"))
    )
    conn = await plugin.open(False, "a", True)
    assert plugin.module.calls[-1] == ("open", False, "a")
    assert (await conn.info()).description == "a True"
    assert nbdkit.export_name() == ""  # the task's own context is left alone
    redefine(plugin, pread=lambda h, buf, offset, flags: nbdkit.shutdown())
    await conn.pread(1, 0, 0)
    assert requests == ["shutdown"]


async def test_shutdown_and_disconnect_reach_the_server_hooks() -> None:
    requests: list[object] = []
    _context.current.set(
        _context.ConnectionContext(
            request_shutdown=lambda: requests.append("shutdown"),
            request_disconnect=requests.append,
        )
    )
    await trio.to_thread.run_sync(nbdkit.shutdown)
    await trio.to_thread.run_sync(nbdkit.disconnect)
    await trio.to_thread.run_sync(nbdkit.disconnect, True)
    assert requests == ["shutdown", False, True]


async def test_blocking_ops_run_several_requests_in_one_hop_with_the_connection_context() -> None:
    plugin = load("recording")
    conn, _ = await open_conn(plugin)
    conn_at_b = await plugin.open(False, "b", False)
    ops, ops_at_b = conn.blocking, conn_at_b.blocking
    assert ops is not None
    assert ops_at_b is not None
    redefine(plugin, flush=lambda h, flags: plugin.module.calls.append(nbdkit.export_name()))

    def batch() -> tuple[bytes, str]:
        ops.pwrite(memoryview(b"abc"), 0, 0)
        data = read_bytes(ops.pread(3, 0, 0))
        ops_at_b.flush(0)
        ops.flush(0)
        return data, nbdkit.export_name()

    _context.current.set(_context.ConnectionContext(export_name="outer"))
    assert await trio.to_thread.run_sync(batch) == (b"abc", "outer")
    assert plugin.module.calls[-2:] == ["b", ""]


async def test_list_exports_accepts_names_and_name_description_tuples() -> None:
    plugin = load("exports")
    assert await plugin.list_exports(True, False) == [("a", None), ("b", "bee"), ("c", None)]
    assert plugin.module.calls == [("list_exports", True, False)]


async def test_list_exports_accepts_any_iterable() -> None:
    plugin = load("exports", ("mode", "generator"))
    assert await plugin.list_exports(False, True) == [("x", None), ("y", None)]


@pytest.mark.parametrize("mode", ["none_description", "not_iterable"])
async def test_malformed_list_exports_fails_with_eio(
    mode: str, plugin_log: pytest.LogCaptureFixture
) -> None:
    plugin = load("exports", ("mode", mode))
    with raises_errno(errno.EIO):
        await plugin.list_exports(False, False)
    assert error_records(plugin_log)


async def test_list_exports_generator_failure_uses_set_error(
    plugin_log: pytest.LogCaptureFixture,
) -> None:
    plugin = load("exports", ("mode", "failing_generator"))
    with pytest.raises(PermissionError) as exc_info:
        await plugin.list_exports(False, False)
    assert exc_info.value.errno == errno.EACCES
    assert error_records(plugin_log)[-1].exc_info is not None


async def test_default_export_comes_from_the_plugin() -> None:
    plugin = load("exports")
    assert await plugin.default_export(True, True) == "a"
    assert plugin.module.calls == [("default_export", True, True)]


async def test_without_list_exports_the_default_export_is_listed() -> None:
    assert await load("minimal").list_exports(False, False) == [("", None)]
    assert await load("minimal").default_export(False, False) == ""
    assert await load("default_export").list_exports(False, False) == [("disk0", None)]


async def test_default_export_must_return_a_string(plugin_log: pytest.LogCaptureFixture) -> None:
    plugin = load("exports")
    redefine(plugin, default_export=lambda readonly, is_tls: 42)
    with raises_errno(errno.EIO) as exc_info:
        await plugin.default_export(False, False)
    assert "did not return a string" in str(exc_info.value)


async def test_export_description_is_read_at_info_time() -> None:
    conn = await load("exports").open(False, "b", False)
    assert (await conn.info()).description == "export b"


@pytest.mark.parametrize("failure", ["raise", "not-a-string"])
async def test_failing_export_description_means_no_description(
    failure: str, plugin_log: pytest.LogCaptureFixture
) -> None:
    plugin = load("minimal")

    def export_description(h: object) -> object:
        if failure == "raise":
            raise RuntimeError("no description today")
        return 42

    redefine(plugin, export_description=export_description)
    _, info = await open_conn(plugin)
    assert info.description is None
    assert error_records(plugin_log)


# -- capabilities --------------------------------------------------------------------------


async def test_missing_can_callbacks_follow_the_operations_that_exist() -> None:
    plugin = load("recording")
    plugin.module.calls.clear()
    _, info = await open_conn(plugin)
    assert info == ExportInfo(
        size=MiB,
        can_write=True,
        can_flush=True,
        can_trim=True,
        can_zero=True,
        can_fast_zero=False,
        can_extents=True,
        can_multi_conn=False,
        is_rotational=False,
        can_fua=FUA_EMULATE,
        can_cache=CACHE_NATIVE,
        block_size=None,
        description=None,
    )
    assert plugin.module.calls == [("open", False, ""), ("get_size",)]


async def test_info_makes_one_worker_thread_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = await load("not_true").open(False, "", False)
    hops = 0
    real_run_sync = trio.to_thread.run_sync

    async def counting_run_sync(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_run_sync(*args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
    await conn.info()
    assert hops == 1


async def test_only_pread_means_read_only_without_fua_or_cache() -> None:
    _, info = await open_conn(load("minimal"))
    assert info == ExportInfo(size=65536)


async def test_readonly_open_disables_write_and_skips_write_callbacks() -> None:
    _, info = await open_conn(load("recording"), readonly=True)
    assert (info.can_write, info.can_trim, info.can_zero, info.can_fast_zero) == (False,) * 4
    assert info.can_fua == FUA_NONE
    assert (info.can_flush, info.can_extents) == (True, True)
    assert info.can_cache == CACHE_NATIVE


async def test_can_write_returning_1_makes_the_export_read_only() -> None:
    plugin = load("can_write_one")
    _, info = await open_conn(plugin)
    assert info.can_write is False
    assert (info.can_trim, info.can_fua) == (False, FUA_NONE)
    assert plugin.module.calls == []  # nbdkit never asks can_trim/can_fua of a read-only export


async def test_boolean_can_callbacks_count_only_literal_true() -> None:
    _, info = await open_conn(load("not_true"))
    assert info.can_write is True
    assert info.can_flush is False  # 1
    assert info.can_trim is False  # "yes"
    assert info.can_zero is False  # 1
    assert info.can_fast_zero is False  # 1
    assert info.can_extents is False  # 1
    assert info.is_rotational is False  # 1
    assert info.can_multi_conn is False  # [True]


async def test_can_fua_and_can_cache_are_integers_so_true_means_emulate() -> None:
    _, info = await open_conn(load("not_true"))
    assert info.can_fua == FUA_EMULATE == 1
    assert info.can_cache == CACHE_EMULATE == 1


@pytest.mark.parametrize(
    ("returned", "expected"),
    [(0, FUA_NONE), (False, FUA_NONE), (1, FUA_EMULATE), (2, FUA_NATIVE), (3, FUA_EMULATE)],
)
async def test_can_fua_values(returned: int, expected: int) -> None:
    plugin = load("recording")
    redefine(plugin, can_fua=lambda h: returned)
    _, info = await open_conn(plugin)
    assert info.can_fua == expected


@pytest.mark.parametrize(
    ("returned", "expected"), [(0, CACHE_NONE), (1, CACHE_EMULATE), (2, CACHE_NATIVE)]
)
async def test_can_cache_values(returned: int, expected: int) -> None:
    plugin = load("minimal")
    redefine(plugin, can_cache=lambda h: returned)
    _, info = await open_conn(plugin)
    assert info.can_cache == expected


async def test_can_fua_defaults_to_emulate_only_with_flush() -> None:
    _, with_flush = await open_conn(load("recording"))
    _, without_flush = await open_conn(load("no_zero"))
    assert (with_flush.can_fua, without_flush.can_fua) == (FUA_EMULATE, FUA_NONE)


async def test_can_fua_that_is_not_an_integer_fails_the_open(
    plugin_log: pytest.LogCaptureFixture,
) -> None:
    plugin = load("recording")
    redefine(plugin, can_fua=lambda h: "native")
    conn = await plugin.open(False, "", False)
    with raises_errno(errno.EIO):
        await conn.info()
    assert error_records(plugin_log)


async def test_can_fast_zero_defaults_to_not_can_zero() -> None:
    _, with_zero = await open_conn(load("recording"))
    _, without_zero = await open_conn(load("no_zero"))
    assert (with_zero.can_zero, with_zero.can_fast_zero) == (True, False)
    assert (without_zero.can_zero, without_zero.can_fast_zero) == (False, True)

    refusing = load("recording")
    redefine(refusing, can_zero=lambda h: False)
    _, info = await open_conn(refusing)
    assert (info.can_zero, info.can_fast_zero) == (False, True)


@pytest.mark.parametrize("size", [-1, "big", 2**63])
async def test_invalid_get_size_fails_the_open(
    size: object, plugin_log: pytest.LogCaptureFixture
) -> None:
    plugin = load("minimal")
    redefine(plugin, get_size=lambda h: size)
    conn = await plugin.open(False, "", False)
    with raises_errno(errno.EIO):
        await conn.info()


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("0,0,0", None),
        ("1,512,65536", (1, 512, 65536)),
        ("512,4096,33554432", (512, 4096, 33554432)),
        ("4096,4096,4096", (4096, 4096, 4096)),
        ("1,4096,-1", (1, 4096, 0xFFFFFFFF)),
        ("65536,65536,4294967295", (65536, 65536, 0xFFFFFFFF)),
    ],
)
async def test_valid_block_size(param: str, expected: tuple[int, int, int] | None) -> None:
    _, info = await open_conn(load("block_size", ("block_size", param)))
    assert info.block_size == expected


@pytest.mark.parametrize(
    "param",
    [
        "0,512,4096",  # minimum below 1
        "3,512,4096",  # minimum not a power of 2
        "131072,131072,131072",  # minimum above 64K
        "512,1000,4096",  # preferred not a power of 2
        "1,256,4096",  # preferred below 512
        "512,67108864,67108864",  # preferred above 32M
        "512,4096,5000",  # maximum not a multiple of minimum
        "4096,2048,8192",  # minimum > preferred
        "512,8192,4096",  # preferred > maximum
    ],
)
async def test_invalid_block_size_fails_the_open(
    param: str, plugin_log: pytest.LogCaptureFixture
) -> None:
    conn = await load("block_size", ("block_size", param)).open(False, "", False)
    with raises_errno(errno.EIO) as exc_info:
        await conn.info()
    assert "block_size" in str(exc_info.value)
    assert error_records(plugin_log)


async def test_block_size_must_be_a_tuple() -> None:
    plugin = load("block_size", ("block_size", "512,4096,4096"), ("as_list", "1"))
    conn = await plugin.open(False, "", False)
    with pytest.raises(OSError, match="block_size"):
        await conn.info()


# -- data path: API 2 and API 1 signatures -------------------------------------------------


async def test_api2_pread_fills_a_writable_memoryview() -> None:
    plugin = load("recording")
    plugin.module.disk[4096:4100] = b"data"
    conn, _ = await open_conn(plugin)
    assert read_bytes(await conn.pread(4, 4096, 0)) == b"data"
    assert plugin.module.calls[-1] == ("pread", "memoryview", False, 4, 4096, 0)


async def test_api2_write_side_calls_pass_flags() -> None:
    plugin = load("recording")
    conn, _ = await open_conn(plugin)
    plugin.module.calls.clear()
    await conn.pwrite(memoryview(bytearray(b"xyz")), 10, FLAG_FUA)
    await conn.flush(0)
    await conn.trim(512, 1024, FLAG_FUA)
    await conn.zero(512, 2048, FLAG_MAY_TRIM | FLAG_FAST_ZERO)
    await conn.cache(4096, 0, 0)
    assert await conn.extents(8192, 0, 0) == [(0, 8192, 3)]
    assert plugin.module.calls == [
        ("pwrite", "memoryview", True, b"xyz", 10, FLAG_FUA),
        ("flush", 0),
        ("trim", 512, 1024, FLAG_FUA),
        ("zero", 512, 2048, FLAG_MAY_TRIM | FLAG_FAST_ZERO),
        ("cache", 4096, 0, 0),
        ("extents", 8192, 0, 0),
    ]
    assert plugin.module.disk[10:13] == b"xyz"


async def test_api1_uses_the_old_signatures() -> None:
    plugin = load("recording_v1")
    conn, _ = await open_conn(plugin)
    assert read_bytes(await conn.pread(4, 2, 0)) == b"cdef"
    await conn.pwrite(memoryview(b"xyz"), 10, FLAG_FUA)
    await conn.flush(0)
    await conn.trim(512, 1024, 0)
    await conn.zero(512, 2048, FLAG_MAY_TRIM)
    await conn.zero(512, 2048, 0)
    await conn.cache(4096, 0, 0)
    await conn.extents(512, 0, 0)
    h = "v1-handle"
    assert plugin.module.calls == [
        ("pread", h, 4, 2),
        ("pwrite", h, b"xyz", 10),
        ("flush", h),
        ("trim", h, 512, 1024),
        ("zero", h, 512, 2048, True),
        ("zero", h, 512, 2048, False),
        ("cache", h, 4096, 0, 0),
        ("extents", h, 512, 0, 0),
    ]


async def test_api1_short_pread_fails_with_eio(plugin_log: pytest.LogCaptureFixture) -> None:
    conn, _ = await open_conn(load("recording_v1", ("short", "1")))
    with raises_errno(errno.EIO) as exc_info:
        await conn.pread(8, 0, 0)
    assert "too small" in str(exc_info.value)
    assert error_records(plugin_log)


async def test_api1_pread_must_return_a_buffer(plugin_log: pytest.LogCaptureFixture) -> None:
    conn, _ = await open_conn(load("recording_v1", ("pread", "str")))
    with raises_errno(errno.EIO):
        await conn.pread(8, 0, 0)


async def test_api1_pread_longer_buffer_is_truncated_to_count() -> None:
    plugin = load("recording_v1")
    redefine(plugin, pread=lambda h, count, offset: bytearray(b"0123456789"))
    conn, _ = await open_conn(plugin)
    assert read_bytes(await conn.pread(4, 0, 0)) == b"0123"


async def test_operation_advertised_but_not_defined_fails_with_eio(
    plugin_log: pytest.LogCaptureFixture,
) -> None:
    # can_cache() may claim NATIVE without a cache(); nbdkit 1.32.5 then answers EIO.
    plugin = load("minimal")
    redefine(plugin, can_cache=lambda h: CACHE_NATIVE)
    conn, info = await open_conn(plugin)
    assert info.can_cache == CACHE_NATIVE
    with raises_errno(errno.EIO) as exc_info:
        await conn.cache(512, 0, 0)
    assert "not implemented" in str(exc_info.value)


async def test_zero_without_zero_callback_asks_for_the_pwrite_fallback() -> None:
    conn, _ = await open_conn(load("no_zero"))
    with raises_errno(errno.EOPNOTSUPP):
        await conn.zero(512, 0, 0)


# -- errors --------------------------------------------------------------------------------


async def test_exception_without_set_error_is_eio_with_traceback_logged(
    plugin_log: pytest.LogCaptureFixture,
) -> None:
    conn, _ = await open_conn(load("errors"))
    plugin_log.clear()
    with raises_errno(errno.EIO):
        await conn.pread(512, 0, 0)
    [record] = error_records(plugin_log)
    assert "pread" in record.getMessage()
    assert record.exc_info is not None
    assert "pread exploded" in str(record.exc_info[1])


async def test_set_error_chooses_the_errno() -> None:
    conn, _ = await open_conn(load("errors"))
    with raises_errno(errno.ENOSPC):
        await conn.pwrite(memoryview(b"x"), 0, 0)
    with pytest.raises(PermissionError):
        await conn.cache(512, 0, 0)


async def test_set_error_does_not_leak_into_the_next_callback() -> None:
    conn, _ = await open_conn(load("errors"))
    with pytest.raises(OSError, match="No space"):
        await conn.pwrite(memoryview(b"x"), 0, 0)
    with raises_errno(errno.EIO):
        await conn.pread(512, 0, 0)


async def test_plugins_own_oserror_does_not_choose_the_errno() -> None:
    conn, _ = await open_conn(load("errors"))
    with raises_errno(errno.EIO):
        await conn.flush(0)


async def test_set_error_is_ignored_when_the_callback_returns() -> None:
    conn, _ = await open_conn(load("errors"))
    await conn.trim(512, 0, 0)


@pytest.mark.parametrize(("offset", "code"), [(0, errno.EOPNOTSUPP), (1, errno.ENOTSUP)])
async def test_zero_with_set_error_eopnotsupp_falls_back_whether_it_returns_or_raises(
    offset: int, code: int, plugin_log: pytest.LogCaptureFixture
) -> None:
    conn, _ = await open_conn(load("errors"))
    with raises_errno(code):
        await conn.zero(512, offset, 0)
    assert error_records(plugin_log) == []  # a fallback, not an error


async def test_zero_failing_otherwise_is_eio(plugin_log: pytest.LogCaptureFixture) -> None:
    conn, _ = await open_conn(load("errors"))
    with raises_errno(errno.EIO):
        await conn.zero(512, 2, 0)
    assert error_records(plugin_log)


async def test_open_failure_is_an_oserror(plugin_log: pytest.LogCaptureFixture) -> None:
    plugin = load("minimal")

    def refuse(readonly: bool) -> None:
        nbdkit.set_error(errno.EACCES)
        raise RuntimeError("go away")

    redefine(plugin, open=refuse)
    with pytest.raises(PermissionError):
        await plugin.open(False, "", False)


# -- extents -------------------------------------------------------------------------------


async def extents_of(
    extents: object, count: int = 8192, offset: int = 0
) -> list[tuple[int, int, int]]:
    plugin = load("extents")
    redefine(plugin, EXTENTS=extents)
    conn, _ = await open_conn(plugin)
    return list(await conn.extents(count, offset, 0))


async def test_extents_are_returned_as_int_tuples() -> None:
    assert await extents_of([(0, 4096, 0), (4096, 4096, 3)]) == [(0, 4096, 0), (4096, 4096, 3)]
    assert await extents_of(iter([(0, 8192, True)])) == [(0, 8192, 1)]


async def test_extents_are_clipped_to_the_request_start_and_export_end() -> None:
    assert await extents_of([(0, 4096, 0), (4096, 4096, 3)], offset=1000) == [
        (1000, 3096, 0),
        (4096, 4096, 3),
    ]
    assert await extents_of([(0, 512, 1), (512, 2 * MiB, 0)], offset=MiB - 512) == [
        (MiB - 512, 512, 0)
    ]


async def test_extents_of_equal_type_merge_and_empty_ones_vanish() -> None:
    assert await extents_of([(0, 512, 3), (512, 0, 1), (512, 512, 3)]) == [(0, 1024, 3)]


async def test_without_extents_callback_one_allocated_extent_covers_the_request() -> None:
    conn, _ = await open_conn(load("minimal"))
    assert await conn.extents(4096, 512, 0) == [(512, 4096, 0)]


@pytest.mark.parametrize(
    ("extents", "offset"),
    [
        pytest.param([], 0, id="empty"),
        pytest.param(42, 0, id="not-iterable"),
        pytest.param([[0, 512, 0]], 0, id="list-not-tuple"),
        pytest.param([(0, 512)], 0, id="two-tuple"),
        pytest.param([(0, 512, "data")], 0, id="non-int"),
        pytest.param([(0, -1, 0)], 0, id="negative"),
        pytest.param([(0, 512, 2**32)], 0, id="type-overflow"),
        pytest.param([(0, 512, 0), (1024, 512, 0)], 0, id="gap"),
        pytest.param([(512, 512, 0)], 0, id="starts-after-offset"),
        pytest.param([(0, 512, 0)], 1024, id="ends-before-offset"),
    ],
)
async def test_malformed_extents_fail_with_eio_and_a_logged_message(
    extents: object, offset: int, plugin_log: pytest.LogCaptureFixture
) -> None:
    with raises_errno(errno.EIO):
        await extents_of(extents, offset=offset)
    assert error_records(plugin_log)


# -- the nbdkit module ---------------------------------------------------------------------


def test_debug_logs_at_debug_level(plugin_log: pytest.LogCaptureFixture) -> None:
    nbdkit.debug("hello from the plugin")
    [record] = [r for r in plugin_log.records if r.name == "trioblock.plugin"]
    assert (record.levelno, record.getMessage()) == (logging.DEBUG, "hello from the plugin")
    with pytest.raises(TypeError):
        nbdkit.debug(1)  # type: ignore[arg-type]


def test_set_error_needs_an_int() -> None:
    with pytest.raises(TypeError):
        nbdkit.set_error("EIO")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        nbdkit.set_error(2**40)


def test_constants_match_nbdkit() -> None:
    assert (
        nbdkit.THREAD_MODEL_SERIALIZE_CONNECTIONS,
        nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS,
        nbdkit.THREAD_MODEL_SERIALIZE_REQUESTS,
        nbdkit.THREAD_MODEL_PARALLEL,
    ) == (0, 1, 2, 3)
    assert (nbdkit.FLAG_MAY_TRIM, nbdkit.FLAG_FUA, nbdkit.FLAG_REQ_ONE) == (1, 2, 4)
    assert nbdkit.FLAG_FAST_ZERO == 8
    assert (nbdkit.FUA_NONE, nbdkit.FUA_EMULATE, nbdkit.FUA_NATIVE) == (0, 1, 2)
    assert (nbdkit.CACHE_NONE, nbdkit.CACHE_EMULATE, nbdkit.CACHE_NATIVE) == (0, 1, 2)
    assert (nbdkit.EXTENT_HOLE, nbdkit.EXTENT_ZERO) == (1, 2)
    assert type(nbdkit.THREAD_MODEL_PARALLEL) is int


# Checked against nbdkit 1.32.5's nbdkit.parse_size.
@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1", 1),
        (" 12", 12),
        ("\t3", 3),
        ("+5", 5),
        ("-0", 0),
        ("01k", 1024),
        ("1b", 1),
        ("1B", 1),
        ("1s", 512),
        ("1S", 512),
        ("1k", 1024),
        ("2M", 2 * MiB),
        ("3g", 3 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("1E", 1 << 60),
        ("7E", 7 << 60),
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_parse_size_accepts(text: str, size: int) -> None:
    assert nbdkit.parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", "abc", "-1", "8E", "1KB", "12 ", "1\n", "0x10", "1.5M", "9223372036854775808", "1\u212a"],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        nbdkit.parse_size(text)


def test_parse_size_needs_a_str() -> None:
    with pytest.raises(TypeError):
        nbdkit.parse_size(b"1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("1e-1", 0.1),
        (".5", 0.5),
        (" 0.5", 0.5),
        ("10%", 0.1),
        ("200%", 2.0),
        ("1:10", 0.1),
        ("1/10", 0.1),
        ("0/0", 0.0),
        ("0:0", 0.0),
        ("1", 1.0),
    ],
)
def test_parse_probability_accepts(text: str, value: float) -> None:
    assert nbdkit.parse_probability("p", text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text", ["", "abc", "-1", "5/0", "inf", "nan", "1e999", "0.5 ", "50 %", "1::10", "%"]
)
def test_parse_probability_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="error-rate"):
        nbdkit.parse_probability("error-rate", text)


# -- stdout --------------------------------------------------------------------------------


async def test_plugin_print_goes_to_stderr_under_redirect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with redirect_plugin_stdout():
        plugin = load("printing")
        conn, _ = await open_conn(plugin)
        assert read_bytes(await conn.pread(3, 0, 0)) == b"xxx"
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["loading printing plugin", "open called", "pread called"]
