"""Server-side TLS from an nbdkit-style certificates directory (``--tls-certificates DIR``).

The directory holds the files nbdkit(1) reads (section "TLS"): ``ca-cert.pem`` (the CA that
signed the server's and, with ``--tls-verify-peer``, the clients' certificates),
``server-cert.pem`` and ``server-key.pem`` (unencrypted), and optionally ``ca-crl.pem`` (a
revocation list, checked for client certificates).  ``nbdkit`` finds them in
``$HOME/.pki/nbdkit`` or ``$HOME/.config/pki/nbdkit`` (``/etc/pki/nbdkit`` as root) when no
directory is given; :func:`default_certificates_dir` does the same search.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["TLSConfigError", "default_certificates_dir", "load_tls_context"]

CA_CERT = "ca-cert.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CA_CRL = "ca-crl.pem"
ROOT_CERTIFICATES_DIR = "/etc/pki/nbdkit"


class TLSConfigError(ValueError):
    """The certificates directory is missing files or holds unusable ones (one-line message)."""


def _is_certificates_dir(path: str) -> bool:
    return all(
        os.access(os.path.join(path, name), os.R_OK) for name in (CA_CERT, SERVER_CERT, SERVER_KEY)
    )


def default_certificates_dir() -> str | None:
    """The directory nbdkit would use when ``--tls-certificates`` is not given, if it exists."""
    if os.geteuid() == 0:
        candidates = [ROOT_CERTIFICATES_DIR]
    elif home := os.environ.get("HOME"):
        candidates = [
            os.path.join(home, ".pki", "nbdkit"),
            os.path.join(home, ".config", "pki", "nbdkit"),
        ]
    else:
        candidates = []
    return next((path for path in candidates if _is_certificates_dir(path)), None)


def load_tls_context(certdir: str, verify_peer: bool) -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` (TLS 1.2 or later) from the files in ``certdir``.

    With ``verify_peer`` clients must present a certificate signed by ``ca-cert.pem`` (and not
    revoked by ``ca-crl.pem`` when that file exists); the handshake fails otherwise.  Missing or
    unreadable files raise :class:`TLSConfigError` naming them.
    """
    paths = {name: os.path.join(certdir, name) for name in (CA_CERT, SERVER_CERT, SERVER_KEY)}
    missing = [name for name, path in paths.items() if not os.access(path, os.R_OK)]
    if missing:
        raise TLSConfigError(
            f"--tls-certificates {certdir}: missing or unreadable {', '.join(missing)} "
            f"(a certificates directory holds {CA_CERT}, {SERVER_CERT} and {SERVER_KEY})"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(paths[SERVER_CERT], paths[SERVER_KEY])
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"loading server certificate and key ({paths[SERVER_CERT]}, {paths[SERVER_KEY]}): "
            f"{_reason(exc)}"
        ) from exc
    if verify_peer:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=paths[CA_CERT])
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"loading {paths[CA_CERT]}: {_reason(exc)}") from exc
        crl = os.path.join(certdir, CA_CRL)
        if os.access(crl, os.R_OK):
            try:
                context.load_verify_locations(cafile=crl)
            except (OSError, ssl.SSLError) as exc:
                raise TLSConfigError(f"loading {crl}: {_reason(exc)}") from exc
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)
