"""Build and check eKuiper portable-plugin zips the way eKuiper's plugin manager installs them.

eKuiper (``internal/plugin/portable/manager.go``, ``model.go``, ``pkg/filex/zip.go``) installs
``POST /plugins/portables {"name": N, "file": ".../N.zip"}`` by reading ``N.json`` from the zip
root (Go ``json.Unmarshal`` into ``PluginInfo``, name defaulting to ``N``), validating it, then
unzipping every entry -- ``sources/``, ``sinks/``, ``functions/`` into its etc and data dirs, the
rest into ``plugins/portable/N/`` -- and finally requiring ``N.json``, the executable and
``sources/{source}.yaml`` for each source among the unzipped files.  Unzipping goes through a
sandboxed root with a single-level ``Mkdir`` per entry, so a file in ``a/b/`` needs directory
entries for ``a/`` and ``a/b/`` before it; :func:`build_package` writes them.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "InstalledPlugin",
    "PackageError",
    "PluginInfo",
    "build_package",
    "install_package",
    "validate_package",
    "validate_package_metadata",
]

_LANGUAGES = ("go", "python")
_SYMBOL_DIRS = ("sources/", "sinks/", "functions/")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same tree gives the same zip
_SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class PackageError(ValueError):
    """A package eKuiper would refuse to install; the message is eKuiper's where it has one."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """``portable.PluginInfo``: the ``{name}.json`` of a portable plugin."""

    name: str
    version: str = ""
    language: str = ""
    executable: str = ""
    sources: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    virtual_env_type: str | None = None
    env: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys eKuiper ignores (Go drops unknown fields)."""


_STRING_FIELDS = {"name", "version", "language", "executable"}
_POINTER_FIELDS = {"virtualenvtype": "virtual_env_type", "env": "env"}
_LIST_FIELDS = {"sources", "sinks", "functions"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_error(value: Any, name: str, go_type: str) -> PackageError:
    return PackageError(
        f"json: cannot unmarshal {_kind(value)} into Go struct field PluginInfo.{name} "
        f"of type {go_type}"
    )


def _parse_info(document: Any, default_name: str) -> PluginInfo:
    """Go's ``json.Unmarshal`` into ``PluginInfo{PluginMeta: {Name: default_name}}``."""
    if document is None:
        return PluginInfo(name=default_name)
    if not isinstance(document, dict):
        raise PackageError(
            f"json: cannot unmarshal {_kind(document)} into Go value of type portable.PluginInfo"
        )
    values: dict[str, Any] = {"name": default_name}
    extra: dict[str, Any] = {}
    for key, value in document.items():
        folded = key.lower()  # Go matches field names case-insensitively
        if folded in _STRING_FIELDS:
            if value is None:
                continue
            if not isinstance(value, str):
                raise _type_error(value, folded, "string")
            values[folded] = value
        elif folded in _POINTER_FIELDS:
            if value is not None and not isinstance(value, str):
                raise _type_error(value, folded, "string")
            values[_POINTER_FIELDS[folded]] = value
        elif folded in _LIST_FIELDS:
            if value is None:
                values[folded] = ()
                continue
            if not isinstance(value, list):
                raise _type_error(value, folded, "[]string")
            for item in value:
                if not isinstance(item, str):
                    raise _type_error(item, folded, "string")
            values[folded] = tuple(value)
        else:
            extra[key] = value
    return PluginInfo(**values, extra=extra)


def validate_package_metadata(
    metadata: Mapping[str, Any] | PluginInfo | bytes | str, expected_name: str
) -> PluginInfo:
    """Parse (if needed) and validate plugin metadata like ``PluginInfo.Validate(name)``.

    ``metadata`` is the ``{name}.json`` content (bytes/str), its decoded mapping, or a
    :class:`PluginInfo`.  Beyond eKuiper's install-time checks it refuses a
    ``virtualEnvType`` other than ``conda`` and ``conda`` without ``env``, which eKuiper
    only reports when it starts the plugin.
    """
    if isinstance(metadata, PluginInfo):
        info = metadata
    else:
        if isinstance(metadata, bytes | str):
            try:
                document = json.loads(metadata)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise PackageError(f"invalid json: {exc}") from None
        else:
            document = dict(metadata)
        info = _parse_info(document, expected_name)
    if info.name != expected_name:
        raise PackageError(f"invalid plugin, expect name '{expected_name}' but got '{info.name}'")
    if info.language == "":
        raise PackageError("invalid plugin, missing language")
    if info.executable == "":
        raise PackageError("invalid plugin, missing executable")
    if len(info.sources) + len(info.sinks) + len(info.functions) == 0:
        raise PackageError("invalid plugin, must define at lease one source, sink or function")
    if info.language not in _LANGUAGES:
        raise PackageError(f"invalid plugin, language '{info.language}' is not supported")
    if info.virtual_env_type is not None:
        if info.virtual_env_type != "conda":
            raise PackageError(f"unsupported virtual type: {info.virtual_env_type}")
        if not info.env:
            raise PackageError("virtualEnvType conda needs the conda env name in env")
    return info


def _clean(name: str) -> str:
    """``filepath.ToSlash(filepath.Clean(name))``."""
    return posixpath.normpath(name.replace("\\", "/")) if name else "."


def _check_entries(names: Iterable[tuple[str, bool]]) -> set[str]:
    """What ``UnzipTo`` would do with each entry; returns the installed file names."""
    made: set[str] = {"sources", "sinks", "functions"}  # exist in every eKuiper etc/data dir
    files: set[str] = set()
    for raw, is_dir in names:
        name = _clean(raw)
        if name.startswith("/") or name == ".." or name.startswith("../"):
            raise PackageError(f"openat {name}: path escapes from parent")
        parent = posixpath.dirname(name)
        if is_dir:
            if parent and parent not in made:
                raise PackageError(f"mkdir {name}: no such file or directory")
            made.add(name)
            continue
        # A file's parent is made with one Mkdir: its own parent must already exist.
        grandparent = posixpath.dirname(parent)
        if grandparent and grandparent not in made:
            raise PackageError(f"mkdir {parent}: no such file or directory")
        if parent:
            made.add(parent)
        files.add(name)
    return files


def validate_package(zip_path: str | os.PathLike[str], name: str | None = None) -> PluginInfo:
    """Check a zip as ``Manager.install`` would for the plugin ``name`` (default: zip stem)."""
    path = Path(zip_path)
    name = (path.stem if name is None else name).strip(" ")
    if name == "":
        raise PackageError(f"invalid name {name}: should not be empty")
    json_name = f"{name}.json"
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackageError(f"zip: not a valid zip file: {exc}") from None
    with archive:
        entries = archive.infolist()
        meta_entry = next((e for e in entries if e.filename == json_name), None)
        if meta_entry is None:
            raise PackageError(
                f"missing or invalid json file {json_name}, found {len(entries)} files in total"
            )
        info = validate_package_metadata(archive.read(meta_entry), name)
        installed = _check_entries((e.filename, e.is_dir()) for e in entries)
    required = [json_name, info.executable, *(f"sources/{s}.yaml" for s in info.sources)]
    for file_name in required:
        if file_name not in installed:
            raise PackageError(f"missing {file_name}")
    return info


def _tree(src: Path, exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for file_name in sorted(files):
            file_path = Path(root) / file_name
            if file_name.endswith((".pyc", ".pyo")) or file_name.startswith("."):
                continue
            if exclude is not None and file_path.resolve() == exclude:
                continue
            found.append(file_path)
    return found


def _find_metadata(src: Path) -> str:
    candidates = sorted(p.stem for p in src.glob("*.json"))
    if len(candidates) != 1:
        raise PackageError(
            f"{src} must hold exactly one {{name}}.json plugin description, found "
            f"{candidates or 'none'}"
        )
    return candidates[0]


def build_package(
    src_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Zip a plugin directory into ``{name}.zip`` that eKuiper will install; return its path.

    ``src_dir`` holds ``{name}.json`` at its top, the executable, and ``sources/{s}.yaml``
    per source (plus anything else to ship).  ``output`` is the zip path (a ``.zip`` whose
    stem must be the plugin name, which eKuiper requires) or a directory to put
    ``{name}.zip`` in; default: next to ``src_dir``.  The result is checked with
    :func:`validate_package` before it replaces ``output``, and building the same tree twice
    gives identical bytes.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise PackageError(f"{src} is not a directory")
    name = _find_metadata(src)
    info = validate_package_metadata((src / f"{name}.json").read_bytes(), name)
    if output is None:
        target = src.resolve().parent / f"{name}.zip"
    else:
        target = Path(output)
        if target.is_dir() or target.suffix != ".zip":  # a directory, maybe not there yet
            target = target / f"{name}.zip"
    if target.stem != name:
        raise PackageError(f"the zip must be named {name}.zip (the plugin name), not {target.name}")
    files = _tree(src, target.resolve())
    relative = [f.relative_to(src).as_posix() for f in files]
    required = [f"{name}.json", info.executable, *(f"sources/{s}.yaml" for s in info.sources)]
    for file_name in required:
        if file_name not in relative:
            raise PackageError(f"missing {file_name}")
    directories = sorted(
        {posixpath.dirname(r) for r in relative} - {""}, key=lambda d: (d.count("/"), d)
    )
    all_dirs: set[str] = set()
    for directory in directories:  # every ancestor, parents before children
        parts = directory.split("/")
        all_dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for directory in sorted(all_dirs, key=lambda d: (d.count("/"), d)):
            entry = zipfile.ZipInfo(directory + "/", _ZIP_EPOCH)
            entry.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
            archive.writestr(entry, b"")
        for file_path, rel in zip(files, relative, strict=True):
            mode = file_path.stat().st_mode
            executable = rel == info.executable or mode & 0o111
            entry = zipfile.ZipInfo(rel, _ZIP_EPOCH)
            entry.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, file_path.read_bytes())
    try:
        validate_package(partial, name)
    except BaseException:
        partial.unlink()
        raise
    partial.replace(target)
    return target


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """Where :func:`install_package` put a plugin, and the executable eKuiper would launch."""

    info: PluginInfo
    plugin_dir: Path
    executable: Path


def install_package(
    zip_path: str | os.PathLike[str], ekuiper_root: str | os.PathLike[str], name: str | None = None
) -> InstalledPlugin:
    """Unzip a validated package into an eKuiper-like tree, as ``Manager.install`` lays it out.

    ``sources/``, ``sinks/`` and ``functions/`` entries go to both ``etc/`` and ``data/``;
    everything else to ``plugins/portable/{name}/`` with the zip's file modes.  ``install.sh``
    is copied but not run.  For tests: the returned ``executable`` is what eKuiper launches.
    """
    info = validate_package(zip_path, name)
    root = Path(ekuiper_root)
    plugin_dir = root / "plugins" / "portable" / info.name
    with zipfile.ZipFile(zip_path) as archive:
        for entry in archive.infolist():
            rel = _clean(entry.filename)
            if rel.startswith(_SYMBOL_DIRS):
                targets = [root / "etc" / rel, root / "data" / rel]
            else:
                targets = [plugin_dir / rel]
            for target in targets:
                if entry.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(entry))
                mode = (entry.external_attr >> 16) & 0o777
                if mode:
                    target.chmod(mode)
    return InstalledPlugin(info, plugin_dir, plugin_dir / info.executable)
