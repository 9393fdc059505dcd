"""ClusterTwin: live digital twin of the greenhouse-gas emissions of industrial clusters.

This package holds the command line and the native local stack; the product itself
lives in the sibling packages ``twin`` (domain), ``streams`` (Faust app),
``connectors`` (site connectors) and ``dashboards`` (Grafana as code).
"""

__version__ = "0.1.0"
