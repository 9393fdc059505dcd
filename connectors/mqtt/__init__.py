"""MQTT site connector (paho-mqtt)."""

from connectors.mqtt.connector import MqttConfig, MqttConnector, TopicMap, parse_message

__all__ = ["MqttConfig", "MqttConnector", "TopicMap", "parse_message"]
