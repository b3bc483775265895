"""`python -m sandbox`: serve the Zoom, NeetoCal and meetergo simulators until interrupted.

Prints the env lines (KEY=value) a meetbridge process needs on stdout, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from sandbox.server import start_all


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--zoom-port", type=int, default=8101)
    parser.add_argument("--neetocal-port", type=int, default=8102)
    parser.add_argument("--meetergo-port", type=int, default=8103)
    parser.add_argument("--log-requests", action="store_true", help="print an access log line per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    ports = {"zoom": args.zoom_port, "neetocal": args.neetocal_port, "meetergo": args.meetergo_port}
    sandbox = start_all(args.host, ports, log_requests=args.log_requests)
    for name, value in sandbox.env.items():
        print(f"{name}={value}")
    sys.stdout.flush()
    print("sandbox: serving; Ctrl-C to stop", file=sys.stderr)

    stopping = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping.wait(1.0):  # a timed wait keeps the main thread responsive to signals
        pass
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
