"""Modbus TCP site connector (pymodbus)."""

from connectors.modbus.connector import ModbusConfig, ModbusConnector, Register, plan_reads

__all__ = ["ModbusConfig", "ModbusConnector", "Register", "plan_reads"]
