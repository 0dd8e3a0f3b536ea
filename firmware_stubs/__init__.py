"""Simulated OCPP 1.6J / 2.0.1 chargers and OCPP 2.1 swap stations, thousands per process, wire only."""

from firmware_stubs.charger import FAULT_CODES, SimEnvironment, SimulatedCharger
from firmware_stubs.model import EV
from firmware_stubs.swap_station import Pack, SwapStation

__all__ = ["EV", "FAULT_CODES", "Pack", "SimEnvironment", "SimulatedCharger", "SwapStation"]
