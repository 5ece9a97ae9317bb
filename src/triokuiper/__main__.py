"""``triokuiper`` (the console script) and ``python -m triokuiper``; see :mod:`triokuiper._cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._cli import main as _main


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
