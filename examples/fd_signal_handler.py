"""Handle signals as decoded ``signalfd_siginfo`` records: who sent it, and how.

    python examples/fd_signal_handler.py          # then: kill -USR1 <pid>; kill -TERM <pid>
    python examples/fd_signal_handler.py --demo   # sends itself SIGUSR1 x3, then SIGTERM

Unlike ``trio.open_signal_receiver`` (which only says *which* signal came), a signalfd tells
the sender's pid and uid and the si_code.  The receiver is created before any thread starts,
so no thread is left with the signals unblocked (masks are per thread).  Standard
signals sent before the first read coalesce: the three SIGUSR1 of ``--demo`` usually print once.
"""

from __future__ import annotations

import argparse
import os
import signal

import trio

from triofd import SignalReceiver


async def main(demo: bool) -> None:
    async with SignalReceiver([signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM]) as signals:
        print(f"pid {os.getpid()}: waiting for SIGUSR1/SIGHUP, SIGTERM stops", flush=True)
        if demo:
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)
        async for info in signals:
            sig = info.signal
            name = sig.name if isinstance(sig, signal.Signals) else str(sig)
            print(f"{name} from pid {info.pid} uid {info.uid} (code {info.code})", flush=True)
            if info.signo == signal.SIGTERM:
                break
    print("stopped cleanly")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="send ourselves a few signals")
    trio.run(main, parser.parse_args().demo)
