"""``python -m connectors.simulators``: run every provider simulator.

Prints each simulator's URL and default token, then serves until SIGINT or
SIGTERM. Each simulator listens on its declared ``default_port`` unless
``--<provider-id>-port`` says otherwise (``--github-actions-port 0``; ``0``
picks a free port).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from connectors.simulators import SimulatorServer, simulator_classes


def _flag(provider_id: str) -> str:
    return f"--{provider_id.replace('_', '-')}-port"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.simulators",
        description="Serve every provider simulator on 127.0.0.1.",
    )
    for provider_id, simulator_class in simulator_classes().items():
        parser.add_argument(
            _flag(provider_id),
            dest=f"port_{provider_id}",
            type=int,
            default=simulator_class.default_port,
            help=f"{provider_id} simulator port (default {simulator_class.default_port})",
        )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay added to every API request"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    simulators: list[SimulatorServer] = []
    try:
        for provider_id, simulator_class in simulator_classes().items():
            port = getattr(args, f"port_{provider_id}")
            simulator = simulator_class(port, latency_ms=args.latency_ms)
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
