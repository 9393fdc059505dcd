"""Simulated site meters for the example clusters: the source of the live demo."""

from connectors.simulator.connector import ClusterSimulator, SimulatorConfig, SimulatorConnector

__all__ = ["ClusterSimulator", "SimulatorConfig", "SimulatorConnector"]
