"""Generic HTTP/JSON polling connector: a gateway's JSON answer mapped by YAML alone."""

from connectors.http_poll.connector import (
    OUTAGE_STATUS,
    HttpPollConfig,
    HttpPollConnector,
    HttpRequestError,
    Select,
)

__all__ = ["OUTAGE_STATUS", "HttpPollConfig", "HttpPollConnector", "HttpRequestError", "Select"]
