#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian peers, a .venv, triokit in editable mode.
# Each step runs only when what it provides is missing, so a warm machine pays nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(libnbd-bin python3-libnbd qemu-utils fio nbdkit nbdkit-plugin-python openssl gnutls-bin
              nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils iproute2 util-linux)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.triokit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing triokit (editable) with test extras" >&2
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e '.[test]' >&2
    touch "$stamp"
fi

# libnbd's Python bindings come from Debian (python3-libnbd), built for /usr/bin/python3 (3.11).
# The venv's interpreter has the same 3.11 ABI, so expose just those two files to it through a
# private directory and a .pth file, rather than all of Debian's dist-packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
nbddir="$PWD/.venv/debian-libnbd"
if [ ! -f "$site/debian-libnbd.pth" ]; then
    mkdir -p "$nbddir"
    for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod*.so; do
        [ -e "$f" ] && ln -sf "$f" "$nbddir/"
    done
    echo "$nbddir" > "$site/debian-libnbd.pth"
fi
