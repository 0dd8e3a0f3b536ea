"""Simulated OCPP 1.6J / 2.0.1 charger firmware: thousands of chargers in one process, over the wire only."""

from firmware_stubs.charger import FAULT_CODES, SimEnvironment, SimulatedCharger
from firmware_stubs.model import EV

__all__ = ["EV", "FAULT_CODES", "SimEnvironment", "SimulatedCharger"]
