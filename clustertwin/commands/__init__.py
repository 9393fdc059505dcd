"""Click commands, one module per area of the product (see ``clustertwin.cli``).

``clustertwin.cli`` imports every module here to build the command group, so whatever a
module imports at its top every command pays for, ``clustertwin --help`` included. What only
one command runs (Faust and the workers, the Kafka and InfluxDB clients, the connector SDK,
the dashboards' Grafana SDK) is therefore imported inside that command: those imports are
lazy on purpose, for start-up time. Everything light is imported at the top.
"""
