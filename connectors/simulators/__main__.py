"""``python -m connectors.simulators``: run all three provider simulators.

Prints each simulator's URL and default token, then serves until SIGINT or
SIGTERM. Ports default to 8701 (GitHub Actions), 8702 (Cursor), 8703 (Devin);
``0`` picks a free port.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from connectors.simulators import DEFAULT_PORTS, SIMULATORS, SimulatorServer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.simulators",
        description="Serve the GitHub Actions, Cursor and Devin simulators on 127.0.0.1.",
    )
    parser.add_argument("--github-port", type=int, default=DEFAULT_PORTS["github_actions"])
    parser.add_argument("--cursor-port", type=int, default=DEFAULT_PORTS["cursor"])
    parser.add_argument("--devin-port", type=int, default=DEFAULT_PORTS["devin"])
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay added to every API request"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ports = {
        "github_actions": args.github_port,
        "cursor": args.cursor_port,
        "devin": args.devin_port,
    }
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    simulators: list[SimulatorServer] = []
    try:
        for provider_id, simulator_class in SIMULATORS.items():
            simulator = simulator_class(ports[provider_id], latency_ms=args.latency_ms)
            simulators.append(simulator.start())
            print(f"{provider_id}: {simulator.url} (token {simulator.default_token})", flush=True)
        while not stop.wait(0.1):
            pass
    except OSError as error:
        print(f"cannot start the simulators: {error}", file=sys.stderr)
        return 1
    finally:
        for simulator in simulators:
            simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
