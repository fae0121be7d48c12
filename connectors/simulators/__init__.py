"""Provider simulators: real HTTP servers on loopback standing in for the
external platforms. Each lives in its provider's folder
(``connectors/providers/<id>/simulator.py``); this package holds the shared
machinery (``base``) and the runner (``python -m connectors.simulators``).

Pure standard library (no Django), so the runner starts instantly.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.util import find_spec

from connectors.providers import PROVIDER_IDS
from connectors.simulators.base import HOLD, Faults, SimRun, SimulatorServer, Step


@cache
def simulator_classes() -> dict[str, type[SimulatorServer]]:
    """Provider id → simulator class, for every provider folder that has one.

    Loaded on first use: a provider's simulator module imports ``base`` from
    this package, so importing them here at import time would be circular.
    """
    found: dict[str, type[SimulatorServer]] = {}
    for provider_id in PROVIDER_IDS:
        name = f"connectors.providers.{provider_id}.simulator"
        if find_spec(name) is not None:
            simulator = import_module(name).SIMULATOR
            if simulator.provider != provider_id:
                raise TypeError(f"{simulator.__name__}.provider is not {provider_id!r}")
            found[provider_id] = simulator
    return found


__all__ = ["HOLD", "Faults", "SimRun", "SimulatorServer", "Step", "simulator_classes"]
