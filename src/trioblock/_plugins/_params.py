"""Parsing plugin parameters the way nbdkit does (``nbdkit_parse_size``, ``nbdkit_parse_bool``).

Both functions accept exactly what nbdkit 1.32 accepts, so a command line that works with
``nbdkit memory 1G`` works here too, and raise :class:`ValueError` with nbdkit's wording otherwise.
No imports beyond the standard library: ``trioblock.nbdkit`` reuses them.
"""

from __future__ import annotations

import re

__all__ = ["MAX_SIZE", "parse_bool", "parse_size"]

MAX_SIZE = 2**63 - 1
"""The largest size nbdkit accepts: disk sizes are ``int64_t`` (an ``off_t``)."""

# strtoimax(str, &end, 10): C-locale white space, an optional sign, ASCII digits.  What follows
# the digits is the suffix, checked separately so errors can say which part was wrong.
_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)(.*)", re.DOTALL)

_MAX_DIGITS = len(str(MAX_SIZE))
_KIB = 1024
_SCALES = {
    "b": 1,
    "k": _KIB,
    "m": _KIB**2,
    "g": _KIB**3,
    "t": _KIB**4,
    "p": _KIB**5,
    "e": _KIB**6,
    "s": 512,  # "sectors" of 512 bytes, whatever the real sector size is
}

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def parse_size(text: str) -> int:
    """Parse a size such as ``"512"``, ``"64k"``, ``"1G"`` or ``"8s"`` into bytes.

    A decimal number (leading white space and a sign allowed, as ``strtoimax`` does) followed by at
    most one suffix, either case: ``b`` (bytes), ``k m g t p e`` (powers of 1024) or ``s``
    (512-byte sectors).  Hex, fractions and ``MiB``/``MB`` are refused, like nbdkit.  The result
    must fit in ``0 .. 2**63-1``; anything else raises :class:`ValueError`.
    """
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise ValueError(f"could not parse size string ({text!r})")
    number, suffix = m.groups()
    # Bound the digits before int(): a huge string must be "too big", not int()'s digit limit.
    digits = number.lstrip("+-").lstrip("0")
    if digits and number[0] == "-":
        raise ValueError(f"size cannot be negative ({text!r})")
    if len(digits) > _MAX_DIGITS or (size := int(digits or "0", 10)) > MAX_SIZE:
        raise ValueError(f"size ({text!r}) exceeds maximum value")
    if suffix == "":
        scale = 1
    elif len(suffix) == 1 and suffix.isascii() and suffix.lower() in _SCALES:
        scale = _SCALES[suffix.lower()]
    else:
        raise ValueError(f"could not parse size: unknown suffix {suffix!r} in {text!r}")
    if size * scale > MAX_SIZE:
        raise ValueError(f"overflow computing size ({text!r})")
    return size * scale


def parse_bool(text: str) -> bool:
    """Parse ``1/true/t/yes/y/on`` or ``0/false/f/no/n/off`` (ASCII case-insensitive).

    Anything else, including surrounding white space, raises :class:`ValueError`.
    """
    # nbdkit folds ASCII case only; str.lower() would also fold e.g. the Kelvin sign.
    word = text.lower() if text.isascii() else text
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"could not decipher boolean ({text!r})")
