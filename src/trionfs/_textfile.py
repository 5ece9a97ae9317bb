"""Text files: :class:`NFSTextFile`, an :class:`~trionfs.NFSFile` decoded like
``io.TextIOWrapper`` does over a binary file."""

from __future__ import annotations

import codecs
import errno
import io
import os
from collections.abc import Callable
from typing import Any

import trio

from ._file import NFSFile

__all__ = ["NFSTextFile"]


class NFSTextFile:
    """Text I/O over an :class:`NFSFile`, as :class:`io.TextIOWrapper` does over a binary file.

    Universal newlines on read (``newline=None``), ``\\n`` written as is; ``tell()``/``seek()``
    accept 0 and the end only (like ``TextIOWrapper`` cookies, positions are opaque otherwise).
    """

    def __init__(self, raw: NFSFile, encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> None:  # fmt: skip
        self.buffer = raw
        self.encoding = encoding or "utf-8"
        self.errors = errors or "strict"
        if newline not in (None, "", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline!r}")
        self.newline = newline
        codecs.lookup(self.encoding)  # LookupError now, not at the first read
        self._decoder = self._new_decoder()
        self._encoder = codecs.getincrementalencoder(self.encoding)(self.errors)
        self._pending = ""

    def _new_decoder(self) -> Callable[[bytes, bool], str]:
        decoder: Any = codecs.getincrementaldecoder(self.encoding)(self.errors)
        if self.newline is None:
            decoder = io.IncrementalNewlineDecoder(decoder, translate=True)
        return decoder.decode  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self.buffer.name

    @property
    def closed(self) -> bool:
        return self.buffer.closed

    async def __aenter__(self) -> NFSTextFile:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> NFSTextFile:
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def read(self, size: int = -1) -> str:
        if size is None or size < 0:
            text = self._pending + self._decoder(await self.buffer.read(), True)
            self._pending = ""
            return text
        while len(self._pending) < size:
            data = await self.buffer.read(max(size, 8192))
            self._pending += self._decoder(data, not data)
            if not data:
                break
        text, self._pending = self._pending[:size], self._pending[size:]
        return text

    async def readline(self) -> str:
        sep = "\n" if self.newline in (None, "", "\n") else self.newline
        while True:
            idx = self._pending.find(sep)
            if self.newline == "" and idx < 0:
                idx = self._pending.find("\r")
            if idx >= 0:
                end = idx + len(sep)
                line, self._pending = self._pending[:end], self._pending[end:]
                return line
            data = await self.buffer.read(8192)
            self._pending += self._decoder(data, not data)
            if not data:
                line, self._pending = self._pending, ""
                return line

    async def readlines(self) -> list[str]:
        return [line async for line in self]

    async def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        out = text
        if self.newline not in (None, "", "\n"):
            out = text.replace("\n", self.newline)
        await self.buffer.write(self._encoder.encode(out))
        return len(text)

    async def writelines(self, lines: Any) -> None:
        for line in lines:
            await self.write(line)

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if offset != 0:
            raise io.UnsupportedOperation("can only seek to the start or the end of a text file")
        self._pending = ""
        self._decoder = self._new_decoder()
        return await self.buffer.seek(0, whence)

    async def tell(self) -> int:
        if self._pending:
            raise OSError(errno.EINVAL, "telling position disabled by read-ahead text")
        return await self.buffer.tell()

    async def flush(self) -> None:
        await self.buffer.flush()

    async def truncate(self, size: int | None = None) -> int:
        return await self.buffer.truncate(size)

    async def aclose(self) -> None:
        await self.buffer.aclose()

    close = aclose
