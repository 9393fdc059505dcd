"""OPC UA site connector (asyncua)."""

from connectors.opcua.connector import NodeMap, OpcUaConfig, OpcUaConnector

__all__ = ["NodeMap", "OpcUaConfig", "OpcUaConnector"]
