"""Trio-native async plugins adapted to the Plugin interface, driven without a server."""

from __future__ import annotations

import errno
import logging
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
import trio
import trio.testing

from trioblock._plugins._async import AsyncPlugin, AsyncPluginModule, is_async_plugin_module
from trioblock._plugins._backend import (
    CACHE_EMULATE,
    CACHE_NATIVE,
    CACHE_NONE,
    FLAG_FUA,
    FUA_EMULATE,
    FUA_NATIVE,
    FUA_NONE,
    ExportInfo,
    PluginConnection,
    ThreadModel,
    read_bytes,
)


class RamDisk:
    """The smallest useful async plugin: 1 MiB of RAM, plus call records for the tests."""

    def __init__(self) -> None:
        self.disk = bytearray(1 << 20)
        self.calls: list[str] = []

    async def open(self, readonly: bool) -> dict[str, bool]:
        await trio.lowlevel.checkpoint()
        return {"readonly": readonly}

    async def get_size(self, h: object) -> int:
        await trio.lowlevel.checkpoint()
        return len(self.disk)

    async def pread(self, h: object, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        buf[:] = self.disk[offset : offset + len(buf)]


class WritableRamDisk(RamDisk):
    async def pwrite(self, h: object, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(f"pwrite {offset} {flags}")
        self.disk[offset : offset + len(buf)] = buf


def plugin_with(base: type[RamDisk] = RamDisk, **callbacks: Any) -> AsyncPlugin:
    """An AsyncPlugin over an instance of ``base`` with extra async callbacks as attributes."""
    obj = base()
    for name, fn in callbacks.items():
        setattr(obj, name, fn)
    return AsyncPlugin.from_object(obj)


async def connect(plugin: AsyncPlugin, readonly: bool = False) -> PluginConnection:
    return await plugin.open(readonly, "", False)


async def info_of(plugin: AsyncPlugin, readonly: bool = False) -> ExportInfo:
    return await (await connect(plugin, readonly)).info()


def answer(value: object) -> Any:
    async def callback(*args: object) -> object:
        await trio.lowlevel.checkpoint()
        return value

    return callback


def failing(exc: BaseException) -> Any:
    async def callback(*args: object) -> None:
        await trio.lowlevel.checkpoint()
        raise exc

    return callback


# -- recognising and loading ---------------------------------------------------------------------


def test_is_async_plugin_module_needs_async_open_and_pread() -> None:
    assert is_async_plugin_module(RamDisk())
    sync_style = types.SimpleNamespace(open=lambda readonly: 1, pread=lambda h, b, o, f: None)
    assert not is_async_plugin_module(sync_style)
    half = types.SimpleNamespace(open=RamDisk().open, pread=lambda h, b, o, f: None)
    assert not is_async_plugin_module(half)
    assert not is_async_plugin_module(object())


def test_a_module_satisfies_the_protocol_and_loads() -> None:
    module = types.ModuleType("ramdisk_module")
    disk = RamDisk()
    module.open = disk.open  # type: ignore[attr-defined]
    module.get_size = disk.get_size  # type: ignore[attr-defined]
    module.pread = disk.pread  # type: ignore[attr-defined]
    typed: AsyncPluginModule = disk  # structural: RamDisk has the three required callbacks
    assert typed is disk
    plugin = AsyncPlugin.from_object(module)
    assert plugin.name == "ramdisk_module"
    assert plugin.thread_model is ThreadModel.PARALLEL


def test_config_gets_every_param_in_order_then_config_complete() -> None:
    seen: list[tuple[str, ...]] = []
    obj = RamDisk()
    obj.config = lambda key, value: seen.append((key, value))  # type: ignore[attr-defined]
    obj.config_complete = lambda: seen.append(("complete",))  # type: ignore[attr-defined]
    AsyncPlugin.from_object(obj, [("size", "1M"), ("size", "2M"), ("name", "x")])
    assert seen == [("size", "1M"), ("size", "2M"), ("name", "x"), ("complete",)]


def test_params_without_config_are_refused() -> None:
    with pytest.raises(ValueError, match="takes no parameters"):
        AsyncPlugin.from_object(RamDisk(), [("size", "1M")])


def test_missing_required_callbacks_are_named() -> None:
    obj = types.SimpleNamespace(open=RamDisk().open)
    with pytest.raises(ValueError, match="get_size, pread not defined"):
        AsyncPlugin.from_object(obj)


def test_sync_data_callbacks_and_async_config_are_refused() -> None:
    with pytest.raises(TypeError, match="pwrite must be an async def"):
        plugin_with(pwrite=lambda h, buf, offset, flags: None)

    async def config(key: str, value: str) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(TypeError, match="config must be a plain"):
        plugin_with(config=config)


def test_thread_model_is_asked_after_configuration() -> None:
    obj = RamDisk()
    model = [ThreadModel.PARALLEL.value]
    obj.config = lambda key, value: model.append(int(value))  # type: ignore[attr-defined]
    obj.thread_model = lambda: model[-1]  # type: ignore[attr-defined]
    plugin = AsyncPlugin.from_object(obj, [("model", "0")])
    assert plugin.thread_model is ThreadModel.SERIALIZE_CONNECTIONS


def test_thread_model_is_parallel_unless_the_plugin_says_otherwise() -> None:
    plugin = plugin_with(thread_model=lambda: 2)
    assert plugin.thread_model is ThreadModel.SERIALIZE_REQUESTS
    with pytest.raises(ValueError, match="thread_model\\(\\) returned invalid value 7"):
        plugin_with(thread_model=lambda: 7)


# -- capabilities --------------------------------------------------------------------------------


async def test_a_plugin_with_only_required_callbacks_is_read_only_with_no_extras() -> None:
    info = await info_of(plugin_with())
    assert info == ExportInfo(size=1 << 20)


async def test_writable_plugin_without_zero_advertises_fast_zero_to_fail_it_fast() -> None:
    info = await info_of(plugin_with(WritableRamDisk))
    assert (info.can_write, info.can_zero, info.can_fast_zero) == (True, False, True)
    assert (info.can_trim, info.can_flush, info.can_fua) == (False, False, FUA_NONE)


async def test_plugin_with_zero_does_not_advertise_fast_zero_unless_it_says_so() -> None:
    info = await info_of(plugin_with(WritableRamDisk, zero=answer(None)))
    assert (info.can_zero, info.can_fast_zero) == (True, False)
    info = await info_of(plugin_with(WritableRamDisk, zero=answer(None), can_fast_zero=answer(1)))
    assert info.can_fast_zero is True


async def test_can_answers_use_python_truthiness() -> None:
    plugin = plugin_with(
        WritableRamDisk,
        can_write=answer(1),
        can_multi_conn=answer("yes"),
        is_rotational=answer([]),
        can_extents=answer(0),
        extents=answer([]),
    )
    info = await info_of(plugin)
    assert (info.can_write, info.can_multi_conn) == (True, True)
    assert (info.is_rotational, info.can_extents) == (False, False)


async def test_flush_makes_fua_emulated_and_cache_makes_cache_native_by_default() -> None:
    plugin = plugin_with(WritableRamDisk, flush=answer(None), cache=answer(None))
    info = await info_of(plugin)
    assert (info.can_flush, info.can_fua, info.can_cache) == (True, FUA_EMULATE, CACHE_NATIVE)
    plugin = plugin_with(WritableRamDisk, can_fua=answer(FUA_NATIVE), can_cache=answer(True))
    info = await info_of(plugin)
    assert (info.can_fua, info.can_cache) == (FUA_NATIVE, CACHE_EMULATE)


async def test_an_out_of_range_can_fua_fails_info_with_eio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugin = plugin_with(WritableRamDisk, can_fua=answer(3))
    with pytest.raises(OSError, match="can_fua returned an invalid value") as exc:
        await info_of(plugin)
    assert exc.value.errno == errno.EIO
    assert "can_fua returned an invalid value: 3" in caplog.text


async def test_read_only_connection_never_asks_about_writing() -> None:
    asked: list[str] = []

    def recording(name: str) -> Any:
        async def callback(h: object) -> bool:
            await trio.lowlevel.checkpoint()
            asked.append(name)
            return True

        return callback

    names = ["can_write", "can_trim", "can_zero", "can_fast_zero", "can_flush"]
    plugin = plugin_with(WritableRamDisk, **{name: recording(name) for name in names})
    info = await info_of(plugin, readonly=True)
    assert asked == ["can_flush"]
    assert (info.can_write, info.can_trim, info.can_zero, info.can_fast_zero) == (False,) * 4
    assert (info.can_flush, info.can_fua) == (True, FUA_NONE)


async def test_block_size_and_description_are_checked_like_nbdkit() -> None:
    info = await info_of(
        plugin_with(block_size=answer((1, 4096, 0xFFFFFFFF)), export_description=answer("disk"))
    )
    assert (info.block_size, info.description) == ((1, 4096, 0xFFFFFFFF), "disk")
    assert (await info_of(plugin_with(block_size=answer((0, 0, 0))))).block_size is None
    for bad in [(3, 4096, 4096), (512, 256, 4096), (4096, 4096, 1000), (1, 2), "abc"]:
        with pytest.raises(OSError, match="block_size returned an invalid value"):
            await info_of(plugin_with(block_size=answer(bad)))


async def test_a_bad_size_fails_info_with_eio() -> None:
    for bad in [-1, 2**63, "big", 1.5]:
        with pytest.raises(OSError, match="get_size returned an invalid value"):
            await info_of(plugin_with(get_size=answer(bad)))


# -- data path -----------------------------------------------------------------------------------


async def test_pread_fills_a_buffer_the_plugin_cannot_keep() -> None:
    kept: list[memoryview] = []
    disk = RamDisk()
    disk.disk[10:15] = b"hello"

    real_pread = disk.pread

    async def pread(h: object, buf: memoryview, offset: int, flags: int) -> None:
        await real_pread(h, buf, offset, flags)
        kept.append(buf)

    disk.pread = pread  # type: ignore[method-assign]
    conn = await connect(AsyncPlugin.from_object(disk))
    assert read_bytes(await conn.pread(5, 10, 0)) == b"hello"
    with pytest.raises(ValueError, match="released"):
        kept[0][0] = 1


async def test_pwrite_gets_a_read_only_view_and_the_flags() -> None:
    plugin = plugin_with(WritableRamDisk)
    disk = plugin.obj
    assert isinstance(disk, WritableRamDisk)
    seen: list[bool] = []
    real_pwrite = disk.pwrite

    async def pwrite(h: object, buf: memoryview, offset: int, flags: int) -> None:
        seen.append(buf.readonly)
        await real_pwrite(h, buf, offset, flags)

    plugin.callbacks["pwrite"] = pwrite
    conn = await connect(plugin)
    await conn.pwrite(memoryview(bytearray(b"data")), 100, FLAG_FUA)
    assert seen == [True]
    assert disk.calls == [f"pwrite 100 {FLAG_FUA}"]
    assert read_bytes(await conn.pread(4, 100, 0)) == b"data"


async def test_operations_the_plugin_lacks_fail_with_eopnotsupp_except_cache() -> None:
    conn = await connect(plugin_with())
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: conn.flush(0),
        lambda: conn.trim(1, 0, 0),
        lambda: conn.zero(1, 0, 0),
        lambda: conn.extents(1, 0, 0),
    ]
    for operation in operations:
        with pytest.raises(OSError, match="not supported") as exc:
            await operation()
        assert exc.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError, match="read-only"):
        await conn.pwrite(memoryview(b"x"), 0, 0)
    with trio.testing.assert_checkpoints():
        await conn.cache(10, 0, 0)  # CACHE_NATIVE without cache(): nothing to do


async def test_optional_operations_are_passed_through() -> None:
    log: list[tuple[object, ...]] = []

    def recording(name: str, result: object = None) -> Any:
        async def callback(*args: object) -> object:
            await trio.lowlevel.checkpoint()
            log.append((name, *args[1:]))
            return result

        return callback

    plugin = plugin_with(
        WritableRamDisk,
        flush=recording("flush"),
        trim=recording("trim"),
        zero=recording("zero"),
        cache=recording("cache"),
        extents=recording("extents", iter([(0, 512, 3), (512, 512, 0)])),
    )
    conn = await connect(plugin)
    await conn.flush(0)
    await conn.trim(1, 2, 3)
    await conn.zero(4, 5, 6)
    await conn.cache(7, 8, 0)
    assert await conn.extents(1024, 0, 0) == [(0, 512, 3), (512, 512, 0)]
    assert log == [
        ("flush", 0),
        ("trim", 1, 2, 3),
        ("zero", 4, 5, 6),
        ("cache", 7, 8, 0),
        ("extents", 1024, 0, 0),
    ]


async def test_malformed_extents_fail_with_eio() -> None:
    conn = await connect(plugin_with(extents=answer([(0, 512)])))
    with pytest.raises(OSError, match="extents returned an invalid value") as exc:
        await conn.extents(512, 0, 0)
    assert exc.value.errno == errno.EIO


# -- errors --------------------------------------------------------------------------------------


async def test_oserror_from_a_callback_keeps_its_errno() -> None:
    conn = await connect(plugin_with(WritableRamDisk, trim=failing(OSError(errno.ENOSPC, "full"))))
    with pytest.raises(OSError, match="full") as exc:
        await conn.trim(1, 0, 0)
    assert exc.value.errno == errno.ENOSPC


async def test_any_other_exception_becomes_eio_with_the_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = await connect(plugin_with(WritableRamDisk, zero=failing(KeyError("boom"))))
    with (
        caplog.at_level(logging.ERROR, logger="trioblock.plugin"),
        pytest.raises(OSError, match="zero failed") as exc,
    ):
        await conn.zero(1, 0, 0)
    assert exc.value.errno == errno.EIO
    assert isinstance(exc.value.__cause__, KeyError)
    (record,) = caplog.records
    assert record.name == "trioblock.plugin"
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


async def test_oserror_without_errno_becomes_eio() -> None:
    conn = await connect(plugin_with(WritableRamDisk, flush=failing(OSError("vague"))))
    with pytest.raises(OSError, match="flush failed") as exc:
        await conn.flush(0)
    assert exc.value.errno == errno.EIO


async def test_cancellation_passes_through_untouched() -> None:
    async def slow_flush(h: object, flags: int) -> None:
        await trio.sleep_forever()

    conn = await connect(plugin_with(WritableRamDisk, flush=slow_flush))
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.flush(0)
    assert scope.cancelled_caught


async def test_a_failing_close_is_logged_and_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    conn = await connect(plugin_with(close=failing(RuntimeError("close broke"))))
    await conn.close()
    assert "close failed" in caplog.text
    assert "close broke" in caplog.text


# -- plugin-wide callbacks -----------------------------------------------------------------------


async def test_lifecycle_callbacks_are_awaited_when_present() -> None:
    log: list[str] = []

    def recording(name: str) -> Any:
        async def callback(*args: object) -> None:
            await trio.lowlevel.checkpoint()
            log.append(f"{name}{args}")

        return callback

    names = ("get_ready", "after_fork", "preconnect", "cleanup", "close")
    plugin = plugin_with(**{name: recording(name) for name in names})
    await plugin.get_ready()
    await plugin.after_fork()
    await plugin.preconnect(True)
    conn = await connect(plugin, readonly=True)
    await conn.close()
    await plugin.cleanup()
    assert log == [
        "get_ready()",
        "after_fork()",
        "preconnect(True,)",
        "close({'readonly': True},)",
        "cleanup()",
    ]


async def test_missing_lifecycle_callbacks_still_checkpoint() -> None:
    plugin = plugin_with()
    conn = await connect(plugin)
    for operation in (plugin.get_ready, plugin.after_fork, plugin.cleanup, conn.close):
        with trio.testing.assert_checkpoints():
            await operation()
    with trio.testing.assert_checkpoints():
        await plugin.preconnect(False)


async def test_list_exports_accepts_names_and_pairs_and_defaults_to_one_unnamed_export() -> None:
    assert await plugin_with().list_exports(False, False) == [("", None)]
    assert await plugin_with().default_export(False, False) == ""

    async def list_exports(readonly: bool, is_tls: bool) -> Iterable[object]:
        await trio.lowlevel.checkpoint()
        return ["a", ("b", "second"), ("c", None)]

    plugin = plugin_with(list_exports=list_exports, default_export=answer("b"))
    assert await plugin.list_exports(True, False) == [("a", None), ("b", "second"), ("c", None)]
    assert await plugin.default_export(True, False) == "b"
    with pytest.raises(OSError, match="list_exports returned an invalid value"):
        await plugin_with(list_exports=answer([42])).list_exports(False, False)
    with pytest.raises(OSError, match="default_export returned an invalid value"):
        await plugin_with(default_export=answer(None)).default_export(False, False)


async def test_can_cache_none_is_honoured() -> None:
    info = await info_of(plugin_with(cache=answer(None), can_cache=answer(CACHE_NONE)))
    assert info.can_cache == CACHE_NONE
