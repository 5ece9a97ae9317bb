"""The ``nbdkit`` module as an nbdkit Python plugin sees it (``import nbdkit``).

The host (:mod:`trioblock._plugins._nbdkit_host`) installs this module as ``sys.modules["nbdkit"]``
before it runs a plugin script, so plugins written for ``nbdkit python`` run unmodified.  It
provides the API of nbdkit-python-plugin(3) as of nbdkit 1.32, plus ``disconnect`` and
``parse_probability`` from later releases and ``is_tls``.

Per-connection functions (``export_name``, ``is_tls``, ``shutdown``, ``disconnect``) read
:data:`trioblock._plugins._context.current`, which ``trio.to_thread.run_sync`` carries into the
worker thread running the callback.  ``set_error`` is per thread, like nbdkit's: the host clears
it before each callback and reads it afterwards.
"""

from __future__ import annotations

import logging
import math
import operator
import re
import threading
from typing import Final

from ._plugins import _backend, _context

__all__ = [
    "CACHE_EMULATE",
    "CACHE_NATIVE",
    "CACHE_NONE",
    "EXTENT_HOLE",
    "EXTENT_ZERO",
    "FLAG_FAST_ZERO",
    "FLAG_FUA",
    "FLAG_MAY_TRIM",
    "FLAG_REQ_ONE",
    "FUA_EMULATE",
    "FUA_NATIVE",
    "FUA_NONE",
    "THREAD_MODEL_PARALLEL",
    "THREAD_MODEL_SERIALIZE_ALL_REQUESTS",
    "THREAD_MODEL_SERIALIZE_CONNECTIONS",
    "THREAD_MODEL_SERIALIZE_REQUESTS",
    "debug",
    "disconnect",
    "export_name",
    "is_tls",
    "parse_probability",
    "parse_size",
    "set_error",
    "shutdown",
]

# Plain ints, as nbdkit's C module defines them (not enum members).
THREAD_MODEL_SERIALIZE_CONNECTIONS: Final = int(_backend.ThreadModel.SERIALIZE_CONNECTIONS)
THREAD_MODEL_SERIALIZE_ALL_REQUESTS: Final = int(_backend.ThreadModel.SERIALIZE_ALL_REQUESTS)
THREAD_MODEL_SERIALIZE_REQUESTS: Final = int(_backend.ThreadModel.SERIALIZE_REQUESTS)
THREAD_MODEL_PARALLEL: Final = int(_backend.ThreadModel.PARALLEL)

FLAG_MAY_TRIM: Final = _backend.FLAG_MAY_TRIM
FLAG_FUA: Final = _backend.FLAG_FUA
FLAG_REQ_ONE: Final = _backend.FLAG_REQ_ONE
FLAG_FAST_ZERO: Final = _backend.FLAG_FAST_ZERO

FUA_NONE: Final = _backend.FUA_NONE
FUA_EMULATE: Final = _backend.FUA_EMULATE
FUA_NATIVE: Final = _backend.FUA_NATIVE

CACHE_NONE: Final = _backend.CACHE_NONE
CACHE_EMULATE: Final = _backend.CACHE_EMULATE
CACHE_NATIVE: Final = _backend.CACHE_NATIVE

EXTENT_HOLE: Final = _backend.EXTENT_HOLE
EXTENT_ZERO: Final = _backend.EXTENT_ZERO

_logger = logging.getLogger("trioblock.plugin")

_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


class _ErrorSlot(threading.local):
    errno = 0


_error = _ErrorSlot()


def _clear_error() -> None:
    """Forget the errno of a previous callback on this thread (host use)."""
    _error.errno = 0


def _last_error() -> int:
    """The errno the plugin passed to :func:`set_error` on this thread, or 0 (host use)."""
    return _error.errno


def _require_str(func: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{func}() argument must be str, not {type(value).__name__}")
    return value


def debug(msg: str) -> None:
    """Log ``msg`` at DEBUG level to the ``trioblock.plugin`` logger."""
    _logger.debug("%s", _require_str("debug", msg))


def export_name() -> str:
    """The export name the client asked for on the current connection."""
    return _context.current.get().export_name


def is_tls() -> bool:
    """Whether the current connection uses TLS (not in nbdkit 1.32's Python module)."""
    return _context.current.get().is_tls


def set_error(err: int) -> None:
    """Choose the errno the client sees if the running callback raises (else EIO)."""
    value = operator.index(err)
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError("set_error() argument is out of range for a C int")
    _error.errno = value


def shutdown() -> None:
    """Ask the server to shut down (asynchronously, like nbdkit_shutdown)."""
    _context.current.get().request_shutdown()


def disconnect(force: bool = False) -> None:
    """Ask the server to drop the current client; ``force`` skips finishing in-flight replies."""
    _context.current.get().request_disconnect(bool(force))


# C isspace() in the "C" locale; Python's \s would also accept Unicode spaces.
_C_SPACE = " \t\n\v\f\r"
_SIZE_RE = re.compile(rf"[{_C_SPACE}]*([+-]?)([0-9]+)(.*)", re.DOTALL)
_SIZE_SCALE = {"": 1, "b": 1, "s": 512} | {c: 1 << (10 * (i + 1)) for i, c in enumerate("kmgtpe")}
_SIZE_SCALE |= {c.upper(): scale for c, scale in _SIZE_SCALE.items()}


def parse_size(s: str) -> int:
    """Parse a size as nbdkit_parse_size does: ``N`` plus one optional suffix.

    Suffixes (either case): ``b`` = 1, ``k m g t p e`` = powers of 1024, ``s`` = 512-byte
    sectors.  Leading whitespace and a sign are accepted; negative sizes, other or longer
    suffixes and results above 2**63-1 raise :class:`ValueError`.
    """
    m = _SIZE_RE.fullmatch(_require_str("parse_size", s))
    if m is None:
        raise ValueError(f"could not parse size string ({s!r})")
    sign, digits, suffix = m.groups()
    size = int(digits)
    if sign == "-" and size != 0:
        raise ValueError(f"size cannot be negative ({s!r})")
    if size > _INT64_MAX:
        raise ValueError(f"size ({s!r}) exceeds maximum value")
    scale = _SIZE_SCALE.get(suffix)
    if scale is None:
        raise ValueError(f"could not parse size: unknown suffix {suffix!r}")
    if size * scale > _INT64_MAX:
        raise ValueError(f"overflow computing size ({s!r})")
    return size * scale


# What C's strtod() accepts for a decimal number (hex floats are not supported here).
_FLOAT = rf"[{_C_SPACE}]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_RATIO_RE = re.compile(rf"({_FLOAT})[:/]({_FLOAT})")
_PERCENT_RE = re.compile(rf"({_FLOAT})(%?)")


def parse_probability(what: str, s: str) -> float:
    """Parse a probability as nbdkit_parse_probability (nbdkit >= 1.36) does.

    Accepts ``0.1``, ``1e-1``, ``10%``, ``1:10`` and ``1/10`` (all meaning 0.1); ``0/0`` is 0.
    The result is finite and >= 0 but may exceed 1 (``200%``); anything else raises
    :class:`ValueError` mentioning ``what``.
    """
    _require_str("parse_probability", what)
    _require_str("parse_probability", s)
    if m := _RATIO_RE.fullmatch(s):
        num, den = float(m[1]), float(m[2])
        if den == 0 and num != 0:
            raise ValueError(f"{what}: could not parse {s!r}")
        value = num / den if den != 0 else 0.0
    elif m := _PERCENT_RE.fullmatch(s):
        value = float(m[1]) / 100.0 if m[2] else float(m[1])
    else:
        raise ValueError(f"{what}: could not parse {s!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what}: could not parse {s!r}")
    if value < 0:
        raise ValueError(f"{what}: probability must be >= 0 ({s!r})")
    return value
