"""``nfs://`` URLs, spelled as libnfs spells them.

``nfs://[user@]server[:port]/path[?arg=value&...]``

* ``server`` is a host name, an IPv4 address or a bracketed IPv6 address; ``:port`` is the NFS
  port (as libnfs's ``nfsport=``: no portmapper lookup for NFS).
* ``user@`` is accepted and ignored, as libnfs does (AUTH_SYS credentials come from ``uid=`` and
  ``gid=``).
* ``path`` is percent-decoded.  For :func:`trionfs.mount` it is the export; for the context-free
  :func:`trionfs.open` it is an export followed by a path inside it.

Arguments (libnfs's, then our own).  An unknown argument or a bad value is a ``ValueError``:
libnfs 4.0 silently ignores a misspelt ``wsize=`` and the transfer then runs with the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

DEFAULT_TIMEO = 600
"""Deciseconds, as libnfs: 60 s per try."""
DEFAULT_RETRANS = 2
DEFAULT_RSIZE = 4 << 20
"""Bytes per READ unless ``rsize`` says otherwise (capped by the server's FSINFO ``rtmax``).
libnfs uses 1 MiB; fewer, larger READs cost the client less CPU per byte (measured on
ganesha: ~20% less per MiB read than 1 MiB, and 1592 against 1340 MB/s to a file)."""
DEFAULT_WSIZE = 1 << 20
"""Bytes per WRITE unless ``wsize`` says otherwise (capped by FSINFO ``wtmax``).  Writes are
paced by the server, and ganesha spends ~30% more CPU per MiB on 4 MiB WRITEs than on 1 MiB
ones (1.01-1.06 against 0.76-0.82 ms/MiB, 10 alternating rounds, twice), so 1 MiB WRITEs
copy faster (1351 against 1182 MB/s) though they cost the client a little more."""
MAX_TRANSFER = 64 << 20
DEFAULT_WINDOW = 4
DEFAULT_READDIR_BUFFER = 128 << 10
"""Outstanding READ (or WRITE) calls per open file."""

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "": True,
               "0": False, "false": False, "no": False, "off": False}  # fmt: skip


@dataclass(frozen=True, slots=True)
class NFSURL:
    """A parsed ``nfs://`` URL.  ``timeo`` is in deciseconds like libnfs's."""

    host: str
    path: str = "/"
    user: str | None = None
    nfsport: int | None = None
    mountport: int | None = None
    uid: int | None = None
    """AUTH_SYS uid; None: this process's (as libnfs)."""
    gid: int | None = None
    auxgids: tuple[int, ...] = ()
    version: int = 3
    timeo: int = DEFAULT_TIMEO
    retrans: int = DEFAULT_RETRANS
    autoreconnect: int = -1
    rsize: int = DEFAULT_RSIZE
    wsize: int = DEFAULT_WSIZE
    readonly: bool = False
    privport: bool = False
    window: int = DEFAULT_WINDOW
    sync: bool = False
    readdir_buffer: int = DEFAULT_READDIR_BUFFER
    """``readdir-buffer``: the most bytes one READDIRPLUS reply may carry (libnfs's name)."""

    @property
    def timeout(self) -> float:
        """``timeo`` in seconds: how long one try of a call waits for its reply."""
        return self.timeo / 10

    @property
    def total_timeout(self) -> float:
        """How long a call may take in all, its retransmissions included."""
        return self.timeout * (self.retrans + 1)

    def with_path(self, path: str) -> NFSURL:
        return dataclasses.replace(self, path=path)

    def geturl(self) -> str:
        """The URL back as text, with only the arguments that differ from the defaults."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{quote(self.user)}@" if self.user else ""
        port = f":{self.nfsport}" if self.nfsport is not None else ""
        args = []
        for field in dataclasses.fields(self):
            if field.name in ("host", "path", "user", "nfsport"):
                continue
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, tuple):
                value = ",".join(map(str, value))
            args.append(f"{field.name.replace('_', '-')}={value}")
        query = "?" + "&".join(args) if args else ""
        return f"nfs://{user}{host}{port}{quote(self.path)}{query}"


def _int(name: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"nfs URL: {name}={text!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"nfs URL: {name}={value} is out of range {lo}..{hi}")
    return value


def _bool(name: str, text: str) -> bool:
    try:
        return _BOOL_WORDS[text.lower()]
    except KeyError:
        raise ValueError(f"nfs URL: {name}={text!r} is not a boolean (0/1)") from None


def _port(name: str, text: str) -> int:
    return _int(name, text, 1, 65535)


def _ids(name: str, text: str) -> tuple[int, ...]:
    if not text:
        return ()
    ids = tuple(_int(name, part, 0, 0xFFFFFFFF) for part in text.split(","))
    if len(ids) > 16:  # RFC 5531 AUTH_SYS: at most 16 supplementary groups
        raise ValueError(f"nfs URL: {name}: at most 16 groups fit in AUTH_SYS, got {len(ids)}")
    return ids


def _parse_arg(name: str, text: str) -> tuple[str, object]:
    if name in ("uid", "gid"):
        return name, _int(name, text, 0, 0xFFFFFFFF)
    if name in ("nfsport", "mountport"):
        return name, _port(name, text)
    if name == "version":
        version = _int(name, text, 0, 0xFFFFFFFF)
        if version != 3:
            raise ValueError(f"nfs URL: version={version} is not supported: trionfs speaks NFSv3")
        return name, version
    if name == "timeo":
        return name, _int(name, text, 1, 10**9)
    if name == "retrans":
        return name, _int(name, text, 0, 10**6)
    if name == "autoreconnect":
        return name, _int(name, text, -1, 10**6)
    if name in ("rsize", "wsize"):
        return name, _int(name, text, 512, MAX_TRANSFER)
    if name == "window":
        return name, _int(name, text, 1, 256)
    if name == "readdir-buffer":
        return "readdir_buffer", _int(name, text, 1024, 16 << 20)
    if name in ("readonly", "privport", "sync"):
        return name, _bool(name, text)
    if name == "auxgids":
        return name, _ids(name, text)
    raise ValueError(f"nfs URL: unknown argument {name!r}")


def parse_url(url: str) -> NFSURL:
    """Parse an ``nfs://`` URL; every problem is a ``ValueError`` naming the culprit."""
    if not isinstance(url, str):
        raise TypeError(f"an nfs URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme.lower() != "nfs":
        raise ValueError(f"not an nfs:// URL: {url!r}")
    if parts.fragment:
        raise ValueError(f"nfs URL: a fragment ('#{parts.fragment}') has no meaning here")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"nfs URL: bad server or port in {url!r}: {exc}") from None
    if not host:
        raise ValueError(f"nfs URL: no server in {url!r}")
    fields: dict[str, object] = {"host": host, "path": unquote(parts.path) or "/"}
    if parts.username:
        fields["user"] = unquote(parts.username)
    if port is not None:
        if port == 0:
            raise ValueError("nfs URL: port 0")
        fields["nfsport"] = port
    seen: set[str] = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        key = name.lower()
        if key in seen:
            raise ValueError(f"nfs URL: argument {key!r} given twice")
        seen.add(key)
        field, parsed = _parse_arg(key, value)
        fields[field] = parsed
    if "nfsport" in seen and port is not None and fields["nfsport"] != port:
        raise ValueError("nfs URL: both :port and nfsport= given, and they differ")
    if not str(fields["path"]).startswith("/"):
        fields["path"] = "/" + str(fields["path"])
    return NFSURL(**fields)  # type: ignore[arg-type]


def normalize_path(path: str) -> str:
    """An absolute path with ``.``/empty components and trailing slashes removed (``..`` kept:
    it is resolved on the server, where it may cross a symlink)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def split_components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]
