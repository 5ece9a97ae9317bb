"""The ``triokuiper`` command line: compat and package, with one-line errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from triokuiper.__main__ import main

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "kuiper_plugin"


def test_package_writes_the_zip_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "triodemo.zip"
    assert main(["package", str(EXAMPLE_DIR), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    names = zipfile.ZipFile(out).namelist()
    assert {"triodemo.json", "triodemo.py", "sources/ticker.yaml"} <= set(names)


def test_package_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["package", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("triokuiper: error: ")
    assert err.count("\n") == 1
    assert main(["package", str(EXAMPLE_DIR), "-o", str(tmp_path / "othername.zip")]) == 1
    assert capsys.readouterr().err.startswith("triokuiper: error: ")


def test_compat_with_a_missing_script_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compat", "/nonexistent/plugin.py"]) == 1
    assert capsys.readouterr().err == (
        "triokuiper: error: /nonexistent/plugin.py: no such plugin script\n"
    )


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["package"], ["compat"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("triokuiper: error: ")
    assert err.count("\n") == 1


def test_compat_without_ekuiper_exits_1_with_one_line(tmp_path: Path) -> None:
    """An SDK plugin started with no eKuiper listening: a clear error, status 1, no hang."""
    script = tmp_path / "lonely.py"
    script.write_text(
        "from ekuiper import plugin, PluginConfig\n"
        "import ekuiper, triokuiper\n"
        "assert 'triokuiper' in ekuiper.__file__\n"
        "plugin.start(PluginConfig('lonely', {}, {}, {}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "triokuiper", "compat", str(script), '{"sendTimeout":1000}'],
        env={"TRIOKUIPER_IPC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert b"cannot dial ipc://" in proc.stderr
