"""Throw-away X.509 certificates for the TLS interop tests, made with ``openssl``.

:func:`make_pki` writes one directory that serves both ends, with the file names each end looks
for: nbdkit's (``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``) for the server, and
libnbd's and qemu's (``ca-cert.pem``, ``client-cert.pem``, ``client-key.pem``) for
``--tls-certificates DIR`` / ``tls-creds-x509,dir=DIR``.  Keys are P-256 (fast to generate); the
server certificate names ``localhost`` and ``127.0.0.1``, so hostname checks pass over TCP too.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_CERT = "ca-cert.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client-cert.pem"
CLIENT_KEY = "client-key.pem"

_KEY_OPTIONS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class PKI:
    full: Path
    """CA, server and client certificates and keys (server and client directory at once)."""
    ca_only: Path
    """Only ``ca-cert.pem``: a client that trusts the server but has no certificate to show."""
    other_ca: Path
    """A client with a certificate from an unrelated CA, which also distrusts the server."""


def _openssl(*args: str | Path, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed: run the README's test command")
    result = subprocess.run(
        [openssl, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", *_KEY_OPTIONS, "-keyout", "ca-key.pem", "-out", CA_CERT,
        "-subj", f"/CN={name}", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _issue(directory: Path, stem: str, subject: str, extensions: str) -> None:
    """Sign ``{stem}-cert.pem`` (key ``{stem}-key.pem``) with the CA in ``directory``."""
    (directory / f"{stem}.ext").write_text(extensions)
    _openssl(
        "req", "-new", *_KEY_OPTIONS, "-keyout", f"{stem}-key.pem", "-out", f"{stem}.csr",
        "-subj", subject,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{stem}.csr", "-CA", CA_CERT, "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-days", "2", "-extfile", f"{stem}.ext", "-out", f"{stem}-cert.pem",
        cwd=directory,
    )  # fmt: skip


_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
"""
_CLIENT_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


def make_pki(root: Path) -> PKI:
    """Create the three certificate directories under ``root`` (which must exist)."""
    full, ca_only, other = root / "pki", root / "ca-only", root / "other-ca"
    for directory in (full, ca_only, other):
        directory.mkdir()
    _make_ca(full, "triokit test CA")
    _issue(full, "server", "/CN=localhost", _SERVER_EXTENSIONS)
    _issue(full, "client", "/CN=triokit test client", _CLIENT_EXTENSIONS)
    shutil.copy(full / CA_CERT, ca_only / CA_CERT)
    _make_ca(other, "unrelated CA")
    _issue(other, "client", "/CN=stranger", _CLIENT_EXTENSIONS)
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY):
        if not (full / name).is_file():
            raise RuntimeError(f"openssl did not write {full / name}")
    return PKI(full=full, ca_only=ca_only, other_ca=other)
