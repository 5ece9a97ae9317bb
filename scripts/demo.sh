#!/usr/bin/env bash
# The main job: trioblock serves examples/ramdisk.py (an unmodified nbdkit-style Python plugin) on
# a private Unix socket in captive mode, and real libnbd/qemu clients use it; we show what they saw.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 16M /dev/urandom > "$work/in.img"
export DEMO_DIR="$work"
exec trioblock -U - python examples/ramdisk.py size=64M --run '
    set -e
    echo "== nbdinfo $uri"; nbdinfo "$uri"
    echo "== nbdcopy 16 MiB of random data in and out again"
    nbdcopy "$DEMO_DIR/in.img" "$uri"
    nbdcopy --request-size=4096 "$uri" "$DEMO_DIR/out.img"
    head -c 16M "$DEMO_DIR/out.img" | cmp - "$DEMO_DIR/in.img" && echo "the 16 MiB read back are identical"
    echo "== qemu-io: write a pattern, zero, discard, read the pattern back"
    qemu-io -f raw -c "write -P 0xab 32M 64k" -c "write -z 33M 64k" -c "discard 34M 64k" \
        -c "read -P 0xab 32M 64k" -c "read -P 0 33M 64k" "$uri" | grep -v "ops/sec"
    echo "== nbdinfo --map (allocation as the client sees it)"; nbdinfo --map "$uri"
'
