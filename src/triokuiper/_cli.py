"""The ``triokuiper`` command line.

* ``triokuiper compat PLUGIN.py [ARGS...]`` — run a plugin written for the official ``ekuiper``
  SDK on triokuiper's runtime (eKuiper's ``'{"sendTimeout":1000}'`` argument passes through);
* ``triokuiper package DIR [-o NAME.zip]`` — build an eKuiper portable-plugin zip from DIR
  (``{name}.json``, the executable, ``sources/{s}.yaml``) and check it as eKuiper's installer does.

Errors are one ``triokuiper: error: ...`` line and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "triokuiper"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="eKuiper portable plugins on Trio.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compat = commands.add_parser(
        "compat", help="run an official-SDK plugin script on triokuiper's runtime"
    )
    compat.add_argument("plugin", help="the plugin script (it calls ekuiper.plugin.start)")
    compat.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    package = commands.add_parser("package", help="build a portable-plugin zip")
    package.add_argument("directory", help="the plugin directory ({name}.json at its top)")
    package.add_argument("-o", "--output", help="NAME.zip, or a directory for {name}.zip")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command line; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "compat":
            from ._compat import run_compat

            run_compat(args.plugin, args.args)
            return 0
        from ._package import build_package

        path = build_package(args.directory, args.output)
        print(path)
        return 0
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:  # PackageError is a ValueError
        text = str(exc) or type(exc).__name__
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 1
