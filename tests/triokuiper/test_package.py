"""triokuiper._package: zips eKuiper's plugin manager installs, refused the way it refuses them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from triokuiper._package import (
    PackageError,
    PluginInfo,
    build_package,
    validate_package,
    validate_package_metadata,
)

MIRROR = {
    "version": "1.0.0",
    "language": "python",
    "executable": "mirror.py",
    "sources": ["random"],
    "sinks": ["file"],
    "functions": ["revert"],
}


def make_plugin(root: Path, name: str = "mirror", **changes: Any) -> Path:
    src = root / name
    (src / "sources").mkdir(parents=True)
    (src / "lib" / "deep").mkdir(parents=True)
    meta = {**MIRROR, **changes}
    (src / f"{name}.json").write_text(json.dumps(meta))
    (src / "mirror.py").write_text("print('plugin')\n")
    (src / "sources" / "random.yaml").write_text("default:\n  interval: 1000\n")
    (src / "lib" / "deep" / "helper.py").write_text("X = 1\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "mirror.cpython-311.pyc").write_bytes(b"\0")
    return src


# The cases of eKuiper's TestValidate (model_test.go), expected name "mirror".
GO_VALIDATE_CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"name": "mirror", "version": "1.0.0", "language": "go", "executable": "mirror.exe"},
        "invalid plugin, must define at lease one source, sink or function",
    ),
    (
        {"name": "wrr", "language": "go", "executable": "mirror.exe", "sources": ["a", "b"]},
        "invalid plugin, expect name 'mirror' but got 'wrr'",
    ),
    (
        {"name": "mirror", "version": "1.0.0", "language": "go", "sources": ["a"], "sinks": []},
        "invalid plugin, missing executable",
    ),
    (
        {"name": "mirror", "executable": "tt", "sources": ["a"], "functions": ["aa"]},
        "invalid plugin, missing language",
    ),
    (
        {"name": "mirror", "language": "c", "executable": "tt", "functions": ["aa"]},
        "invalid plugin, language 'c' is not supported",
    ),
]


@pytest.mark.parametrize(("meta", "error"), GO_VALIDATE_CASES)
def test_metadata_is_refused_with_ekuipers_messages(meta: dict[str, Any], error: str) -> None:
    with pytest.raises(PackageError) as err:
        validate_package_metadata(meta, "mirror")
    assert str(err.value) == error


def test_metadata_name_defaults_to_the_package_name_and_keys_fold_case() -> None:
    info = validate_package_metadata(
        b'{"Language":"go","EXECUTABLE":"m","sinks":["a","b"],"about":{"x":1}}', "mirror"
    )
    assert info == PluginInfo(
        name="mirror", language="go", executable="m", sinks=("a", "b"), extra={"about": {"x": 1}}
    )


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (b"[1]", "cannot unmarshal array into Go value"),
        (b'{"name":5}', "cannot unmarshal number into Go struct field PluginInfo.name"),
        (b'{"sources":"x"}', "cannot unmarshal string into Go struct field PluginInfo.sources"),
        (b"{nope", "invalid json"),
        (
            b'{"language":"python","executable":"m","sinks":["a"],"virtualEnvType":"venv"}',
            "unsupported virtual type: venv",
        ),
        (
            b'{"language":"python","executable":"m","sinks":["a"],"virtualEnvType":"conda"}',
            "needs the conda env name",
        ),
    ],
)
def test_bad_metadata_documents_are_refused(document: bytes, error: str) -> None:
    with pytest.raises(PackageError, match=error):
        validate_package_metadata(document, "mirror")


def test_conda_metadata_with_env_is_accepted() -> None:
    info = validate_package_metadata(
        {**MIRROR, "virtualEnvType": "conda", "env": "py311"}, "mirror"
    )
    assert (info.virtual_env_type, info.env) == ("conda", "py311")


def test_build_package_writes_an_installable_reproducible_zip(tmp_path: Path) -> None:
    src = make_plugin(tmp_path)
    first = build_package(src, tmp_path / "out")
    data = first.read_bytes()
    second = build_package(src, tmp_path / "out" / "mirror.zip")
    assert first == tmp_path / "out" / "mirror.zip"
    assert second.read_bytes() == data
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    assert names == [
        "lib/",
        "sources/",
        "lib/deep/",
        "mirror.json",
        "mirror.py",
        "lib/deep/helper.py",
        "sources/random.yaml",
    ]
    assert modes["mirror.py"] & 0o111
    assert not modes["mirror.json"] & 0o111
    assert validate_package(first).sources == ("random",)


def test_build_package_defaults_next_to_the_source_dir(tmp_path: Path) -> None:
    assert build_package(make_plugin(tmp_path)) == tmp_path / "mirror.zip"


def test_build_package_refuses_missing_files_and_wrong_names(tmp_path: Path) -> None:
    src = make_plugin(tmp_path)
    (src / "sources" / "random.yaml").unlink()
    with pytest.raises(PackageError, match=r"^missing sources/random.yaml$"):
        build_package(src)
    with pytest.raises(PackageError, match=r"must be named mirror\.zip"):
        build_package(make_plugin(tmp_path / "b"), tmp_path / "other.zip")
    nameless = tmp_path / "empty"
    nameless.mkdir()
    with pytest.raises(PackageError, match="exactly one"):
        build_package(nameless)
    exe_missing = make_plugin(tmp_path / "c", executable="run.sh")
    with pytest.raises(PackageError, match=r"^missing run.sh$"):
        build_package(exe_missing)


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


META = json.dumps(MIRROR).encode()


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ({"mirror.py": b""}, r"^missing or invalid json file mirror.json, found 1 files in total$"),
        ({"sub/mirror.json": META}, "missing or invalid json file mirror.json"),
        ({"mirror.json": META, "mirror.py": b""}, r"^missing sources/random.yaml$"),
        ({"mirror.json": META, "sources/random.yaml": b""}, r"^missing mirror.py$"),
        (
            {"mirror.json": META, "mirror.py": b"", "sources/random.yaml": b"", "../x": b""},
            "path escapes from parent",
        ),
        (
            {"mirror.json": META, "mirror.py": b"", "sources/random.yaml": b"", "a/b/c": b""},
            "mkdir a/b: no such file or directory",
        ),
    ],
)
def test_zips_are_refused_like_the_plugin_manager(
    tmp_path: Path, entries: dict[str, bytes], error: str
) -> None:
    with pytest.raises(PackageError, match=error):
        validate_package(write_zip(tmp_path / "mirror.zip", entries))


def test_zip_named_differently_from_its_json_is_refused(tmp_path: Path) -> None:
    src = make_plugin(tmp_path)
    built = build_package(src)
    renamed = built.rename(tmp_path / "other.zip")
    with pytest.raises(PackageError, match=r"missing or invalid json file other\.json"):
        validate_package(renamed)
    assert validate_package(renamed, name="mirror").name == "mirror"


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "mirror.zip"
    bogus.write_bytes(b"PK not really")
    with pytest.raises(PackageError, match="not a valid zip"):
        validate_package(bogus)
