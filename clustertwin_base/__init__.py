"""What every part of ClusterTwin stands on: connection settings, Kafka client security, topics.

The command line (``clustertwin``), the workers (``streams``) and the connector SDK
(``connectors.sdk``) all import this package, and it imports none of them, so an out-of-tree
connector depends on the SDK and the reading contract (``twin.readings``), never on the CLI.
"""
