"""Plugin adapters: every kind of plugin normalised to the server's Plugin interface.

:func:`load_plugin` turns a command line (``PLUGIN [key=value ...]``) into a :class:`Plugin`, the
way ``nbdkit PLUGIN [key=value ...]`` does:

* ``python SCRIPT.py k=v ...`` (or ``python script=SCRIPT.py k=v ...``) and ``SCRIPT.py k=v ...``
  load a Python file.  A file is a **Trio-native async plugin** when, once imported, the module
  passes :func:`~trioblock._plugins._async.is_async_plugin_module` (its ``open`` and ``pread``
  are ``async def``); otherwise it is an **nbdkit Python plugin** (nbdkit-python-plugin(3)).  A
  file whose top level defines ``open`` and ``pread`` with a plain ``def`` (every nbdkit script)
  is not imported for that test but goes straight to the nbdkit host, so its top level runs
  exactly once, as ``__main__``, as under nbdkit.  An async plugin module is imported under its
  file's name (``async_remote.py`` → ``async_remote``) unless that name is taken.
* ``memory``, ``file``, ``null``: the built-in plugins.

Arguments follow nbdkit's rules (server/main.c): ``key=value`` when ``key`` starts with a letter
and holds only letters, digits, ``.``, ``_`` and ``-``; anything else is a bare value.  A bare value
goes to the plugin's "magic" key (``size`` for memory and null, ``file`` for file, an async plugin
module's ``magic_config_key`` if it sets one); for ``python`` the first argument, if bare, is the
script, and for Python files other bare values are errors.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

from ._backend import Plugin

__all__ = ["BUILTIN_PLUGINS", "LoadedPlugin", "PluginLoadError", "load_plugin", "open_plugin"]

BUILTIN_PLUGINS = ("file", "memory", "null")

_CONFIG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_IMPORTED: set[str] = set()  # sys.modules names this loader gave to async plugin modules


class PluginLoadError(ValueError):
    """The plugin could not be found, loaded or configured; ``str()`` is one line for the user."""


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin and the file it came from (``--dump-plugin`` prints it as ``path=``)."""

    plugin: Plugin | None
    """None only from a ``--dump-plugin`` load of a built-in whose parameters are incomplete."""
    path: str
    name: str
    cls: type[Plugin]


def load_plugin(spec: str, args: Sequence[str]) -> Plugin:
    """Load and configure the plugin ``spec`` with command line ``args`` (``key=value`` strings).

    Raises :class:`PluginLoadError` (a :class:`ValueError`) with a one-line message for an unknown
    plugin, a bad argument, or a plugin whose loading or configuration failed; the original
    exception is chained as ``__cause__``.
    """
    loaded = open_plugin(spec, args)
    assert loaded.plugin is not None  # only dump_only loads may lack an instance
    return loaded.plugin


def open_plugin(spec: str, args: Sequence[str], *, dump_only: bool = False) -> LoadedPlugin:
    """:func:`load_plugin`, also reporting where the plugin lives.

    With ``dump_only`` (``--dump-plugin``) an nbdkit script's ``config_complete`` is skipped, as
    nbdkit does, and a built-in whose parameters are missing yields ``plugin=None`` instead of an
    error, so its class-level facts can still be printed.
    """
    if spec == "python":
        first = args[0] if args else ""
        key, sep, script = first.partition("=")
        if not (sep and _CONFIG_KEY.fullmatch(key)):
            key, script = "script", first  # a bare first argument is the script
        if not script or key != "script":
            raise PluginLoadError(
                "python: the first parameter must be script=/path/to/python/script.py"
            )
        return _load_python_file(script, args[1:], dump_only=dump_only)
    if spec.endswith(".py"):
        return _load_python_file(spec, args, dump_only=dump_only)
    if spec in BUILTIN_PLUGINS:
        return _load_builtin(spec, args, dump_only=dump_only)
    if "/" in spec or "." in spec:
        raise PluginLoadError(
            f"cannot open plugin '{spec}': only Python files (*.py) can be loaded by path"
        )
    raise PluginLoadError(
        f"cannot open plugin '{spec}': not a built-in plugin ({', '.join(BUILTIN_PLUGINS)}), "
        "'python SCRIPT.py' or a path to a .py file"
    )


def split_params(args: Sequence[str], *, magic_key: str | None) -> list[tuple[str, str]]:
    """Split ``key=value`` arguments; bare values go to ``magic_key`` as nbdkit's main() does."""
    params: list[tuple[str, str]] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and _CONFIG_KEY.fullmatch(key):
            params.append((key, value))
        elif magic_key is not None:
            params.append((magic_key, arg))
        else:
            raise PluginLoadError(f"expecting key=value on the command line but got: {arg}")
    return params


# -- built-ins ------------------------------------------------------------------------------


def _builtin_class(name: str) -> type[Plugin]:
    # Imported on demand: the file plugin loads ctypes, none of them is needed to print --help.
    if name == "memory":
        from ._memory import MemoryPlugin

        return MemoryPlugin
    if name == "file":
        from ._file import FilePlugin

        return FilePlugin
    from ._null import NullPlugin

    return NullPlugin


def _load_builtin(name: str, args: Sequence[str], *, dump_only: bool) -> LoadedPlugin:
    cls = _builtin_class(name)
    path = _module_file(cls)
    magic = getattr(cls, "magic_config_key", None)
    params = split_params(args, magic_key=magic if isinstance(magic, str) else None)
    from_params = getattr(cls, "from_params")  # noqa: B009 - every built-in has it
    try:
        plugin = from_params(params)
    except ValueError as exc:
        if dump_only:
            return LoadedPlugin(None, path, cls.name, cls)
        raise PluginLoadError(_prefixed(name, exc)) from exc
    if not isinstance(plugin, Plugin):
        raise TypeError(f"{cls.__name__}.from_params returned {plugin!r}")
    return LoadedPlugin(plugin, path, plugin.name, cls)


def _module_file(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    return os.path.abspath(getattr(module, "__file__", None) or cls.__module__)


# -- Python files ---------------------------------------------------------------------------


def _load_python_file(script: str, args: Sequence[str], *, dump_only: bool) -> LoadedPlugin:
    path = os.path.abspath(script)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise PluginLoadError(f"{script}: cannot open file: {exc.strerror}") from exc
    module = _import_if_async(path, source)
    if module is not None:
        return _load_async(path, module, args, dump_only=dump_only)

    from ._nbdkit_host import NbdkitPythonPlugin

    params = split_params(args, magic_key=None)
    try:
        plugin = NbdkitPythonPlugin.from_script(path, params, config_complete=not dump_only)
    except Exception as exc:
        raise PluginLoadError(_prefixed(script, exc)) from exc
    return LoadedPlugin(plugin, path, plugin.name, NbdkitPythonPlugin)


def _is_plain_nbdkit_script(source: bytes, path: str) -> bool:
    """Does the file define ``open`` and ``pread`` at top level with a plain ``def``?

    Every nbdkit Python plugin does; an async plugin cannot (its ``open`` and ``pread`` are
    ``async def``).  Anything else (callbacks imported or bound from an object) is imported to be
    sure.
    """
    try:
        tree = ast.parse(source, path)
    except SyntaxError as exc:
        where = f"{path}:{exc.lineno}" if exc.lineno else path
        raise PluginLoadError(f"{where}: syntax error: {exc.msg}") from exc
    plain = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    return {"open", "pread"} <= plain


def _import_if_async(path: str, source: bytes) -> types.ModuleType | None:
    """Import the file as a module if it may be an async plugin; None for nbdkit scripts."""
    if _is_plain_nbdkit_script(source, path):
        return None
    from ._async import is_async_plugin_module

    stem = os.path.splitext(os.path.basename(path))[0]
    free = stem.isidentifier() and (stem not in sys.modules or stem in _IMPORTED)
    name = stem if free else f"_trioblock_plugin_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    _install_nbdkit_module()  # in case it is an nbdkit script after all
    sys.modules[name] = module  # dataclasses, pickle and typing look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginLoadError(_prefixed(path, exc)) from exc
    if is_async_plugin_module(module):
        _IMPORTED.add(name)
        return module
    del sys.modules[name]  # an nbdkit script: the host runs it again, as __main__
    return None


def _install_nbdkit_module() -> None:
    from .. import nbdkit

    sys.modules.setdefault("nbdkit", nbdkit)


def _load_async(
    path: str,
    module: types.ModuleType,
    args: Sequence[str],
    *,
    dump_only: bool,
) -> LoadedPlugin:
    from ._async import AsyncPlugin

    magic = getattr(module, "magic_config_key", None)
    params = split_params(args, magic_key=magic if isinstance(magic, str) else None)
    try:
        if dump_only:  # nbdkit calls config but not config_complete before dumping
            plugin = AsyncPlugin(module)
            config = getattr(module, "config", None)
            if callable(config):
                for key, value in params:
                    config(key, value)
            elif params:
                raise ValueError(f"{plugin.name}: this plugin takes no parameters (no config)")
        else:
            plugin = AsyncPlugin.from_object(module, params)
    except Exception as exc:
        raise PluginLoadError(_prefixed(path, exc)) from exc
    return LoadedPlugin(plugin, path, plugin.name, type(plugin))


def _prefixed(where: str, exc: BaseException) -> str:
    """``where: message``, unless the message already starts with where (or its full path)."""
    text = _one_line(exc)
    if text.startswith((f"{where}:", f"{os.path.abspath(where)}:")):
        return text
    return f"{where}: {text}"


def _one_line(exc: BaseException) -> str:
    """``str(exc)`` squeezed to one line, with the type when the message alone says little."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    if isinstance(exc, (ValueError, OSError, PluginLoadError)):
        return text
    return f"{type(exc).__name__}: {text}"
