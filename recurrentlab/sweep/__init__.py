"""Sweeps: expansion (``spec``), launchers, the runner, and results aggregation."""

from recurrentlab.sweep.launchers import (
    Launcher,
    LocalLauncher,
    SweepInterrupted,
    make_launcher,
    register_launcher,
    registered_launchers,
)
from recurrentlab.sweep.spec import RunSpec, expand, fixed, product, seeds, sweep, zip_, zipped

__all__ = [
    "Launcher",
    "LocalLauncher",
    "RunSpec",
    "SweepInterrupted",
    "expand",
    "fixed",
    "make_launcher",
    "product",
    "register_launcher",
    "registered_launchers",
    "seeds",
    "sweep",
    "zip_",
    "zipped",
]
