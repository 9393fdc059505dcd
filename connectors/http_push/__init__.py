"""HTTP push site connector (aiohttp)."""

from connectors.http_push.connector import HttpPushConfig, HttpPushConnector, parse_body

__all__ = ["HttpPushConfig", "HttpPushConnector", "parse_body"]
