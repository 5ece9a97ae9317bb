"""trionfs without async: the blocking face, for scripts.

    python examples/nfs_sync_face.py nfs://server/export/some/dir

Writes a text file and a binary file, reads them back, lists the directory.
"""

from __future__ import annotations

import sys

from trionfs import sync


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} nfs://server/export/DIR")
    with sync.NFS(sys.argv[1]) as nfs:
        with nfs.open("/hello.txt", "w", encoding="utf-8") as f:
            f.write("hello from trionfs\nsecond line\n")
        with nfs.open("/bytes.bin", "wb") as f:
            f.write(bytes(range(256)))
        with nfs.open("/hello.txt", encoding="utf-8") as f:
            for line in f:
                print("read:", line.rstrip("\n"))
        with nfs.open("/bytes.bin", "rb") as f:
            print("bytes ok:", f.read() == bytes(range(256)))
        for name in sorted(nfs.listdir("/")):
            print("entry:", name, nfs.stat(name).st_size)


if __name__ == "__main__":
    main()
