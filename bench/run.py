"""trioblock against nbdkit, side by side in one run.

Each round starts both servers on the same plugin in turn (alternating which goes first), fills the
disk with the same random data, then runs the same clients against each: nbdcopy to null: at the
default request size (256 KiB) and at 4 KiB, and fio's nbd engine (4 KiB random reads, depth 16);
for the 256 KiB copy it also records the server's CPU time per GiB (user + system, all threads).
A second pair compares trioblock's built-in ``memory`` with nbdkit's C ``memory`` plugin.  Prints
medians and ratios (trioblock / nbdkit: above 1.0 means trioblock is faster).  Also measures the
server memory that 1000 idle connections cost.

    .venv/bin/python bench/run.py [--size 1G] [--rounds 3] [--only python|memory|idle]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRIOBLOCK = str(ROOT / ".venv" / "bin" / "trioblock")
RAMDISK = str(HERE / "ramdisk_plugin.py")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


@contextmanager
def server(argv: list[str], sock: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in the foreground on ``sock`` until the block ends."""
    if os.path.exists(sock):
        os.unlink(sock)  # a server killed earlier may leave its socket behind
    proc = subprocess.Popen([*argv[:1], "-f", "-U", sock, *argv[1:]], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start")
            time.sleep(0.02)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def fio_iops(uri: str) -> float:
    out = subprocess.run(
        [
            "fio",
            "--name=randread",
            "--ioengine=nbd",
            f"--uri={uri}",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=16",
            "--runtime=8",
            "--time_based",
            "--output-format=json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out[out.index("{") :])["jobs"][0]["read"]["iops"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(
    uri: str, size: int, results: dict[str, list[float]], name: str, server_pid: int
) -> None:
    mb = size / 1e6
    # Wall time is noisy on a shared machine; the server's CPU time per GiB served is not, and
    # on a quiet machine the server that needs less of it wins.
    cpu = cpu_seconds(server_pid)
    results[f"{name} nbdcopy 256k MB/s"].append(mb / timed(["nbdcopy", uri, "null:"]))
    results[f"{name} nbdcopy 256k server CPU s/GiB"].append(
        (cpu_seconds(server_pid) - cpu) / (size / (1 << 30))
    )
    req = ["nbdcopy", "--request-size=4096", uri, "null:"]
    results[f"{name} nbdcopy 4k MB/s"].append(mb / timed(req))
    results[f"{name} fio randread 4k IOPS"].append(fio_iops(uri))


def python_round(
    tmp: str, size: int, image: str, results: dict[str, list[float]], flip: bool
) -> None:
    sides = [
        ("nbdkit", ["nbdkit", "python", RAMDISK]),
        ("trioblock", [TRIOBLOCK, "python", RAMDISK]),
    ]
    for name, argv in reversed(sides) if flip else sides:
        sock = f"{tmp}/{name}.sock"
        with server([*argv, f"size={size}"], sock) as proc:
            uri = f"nbd+unix:///?socket={sock}"
            subprocess.run(["nbdcopy", image, uri], check=True)
            run_clients(uri, size, results, f"python/{name}", proc.pid)


def memory_round(
    tmp: str, size: int, image: str, results: dict[str, list[float]], flip: bool
) -> None:
    sides = [("nbdkit", ["nbdkit", "memory"]), ("trioblock", [TRIOBLOCK, "memory"])]
    for name, argv in reversed(sides) if flip else sides:
        sock = f"{tmp}/mem-{name}.sock"
        with server([*argv, f"size={size}"], sock):
            uri = f"nbd+unix:///?socket={sock}"
            subprocess.run(["nbdcopy", image, uri], check=True)
            mb = size / 1e6
            results[f"memory/{name} nbdcopy 256k MB/s"].append(
                mb / timed(["nbdcopy", uri, "null:"])
            )


def _handshake_go(sock: socket.socket) -> None:
    """Fixed-newstyle handshake with NBD_OPT_GO for export "", then stay idle."""
    buf = b""
    while len(buf) < 18:
        buf += sock.recv(18 - len(buf))
    sock.sendall(struct.pack(">I", 3))
    sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 6) + struct.pack(">IH", 0, 0))
    while True:
        head = b""
        while len(head) < 20:
            head += sock.recv(20 - len(head))
        _, _, rtype, length = struct.unpack(">QIII", head)
        left = length
        while left:
            left -= len(sock.recv(left))
        if rtype == 1:
            return
        if rtype & (1 << 31):
            raise RuntimeError("GO refused")


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    assert match
    return int(match.group(1))


def idle_connections(tmp: str, count: int = 1000) -> dict[str, float]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * count)), hard))
    out = {}
    for name, argv in [("trioblock", [TRIOBLOCK, "memory"]), ("nbdkit", ["nbdkit", "memory"])]:
        sock = f"{tmp}/idle-{name}.sock"
        with server([*argv, "size=1G"], sock) as proc:
            before = rss_kib(proc.pid)
            conns = []
            for _ in range(count):
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                _handshake_go(s)
                conns.append(s)
            time.sleep(1)
            after = rss_kib(proc.pid)
            for s in conns:
                s.close()
        out[f"{name} MiB for {count} idle connections"] = (after - before) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["python", "memory", "idle"])
    args = ap.parse_args()
    for tool in ("nbdkit", "nbdcopy", "fio"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing: run `make bootstrap` first")
    size = parse_size(args.size)
    results: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        image = f"{tmp}/random.img"
        with open(image, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        for r in range(args.rounds):
            flip = bool(r % 2)
            if args.only in (None, "python"):
                python_round(tmp, size, image, results, flip)
            if args.only in (None, "memory"):
                memory_round(tmp, size, image, results, flip)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        idle = idle_connections(tmp) if args.only in (None, "idle") else {}
    print(f"{'measure':45} {'trioblock':>12} {'nbdkit':>12} {'ratio':>7}")
    keys = sorted({k.split(" ", 1)[1] for k in results}, key=str)
    for prefix in ("python", "memory"):
        for key in keys:
            ours, theirs = (
                results.get(f"{prefix}/trioblock {key}"),
                results.get(f"{prefix}/nbdkit {key}"),
            )
            if not ours or not theirs:
                continue
            a, b = statistics.median(ours), statistics.median(theirs)
            if "CPU" in key:  # less is better: the ratio is nbdkit's ÷ ours, so > 1 is ours
                print(f"{prefix + ' ' + key:45} {a:12.2f} {b:12.2f} {b / a:7.2f}")
            else:
                print(f"{prefix + ' ' + key:45} {a:12.1f} {b:12.1f} {a / b:7.2f}")
    for key, value in idle.items():
        print(f"{key:45} {value:12.1f}")


if __name__ == "__main__":
    main()
