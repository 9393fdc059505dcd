"""Alerting on emission drift and untrustworthy data, as a stage of the stream worker.

``AlertStage`` (``streams.alerting.stage``) is the hook the worker calls per batch;
``AlertEngine`` (``streams.alerting.engine``) the detector logic; ``Alert`` the ``alert/1``
record on the ``alerts`` topic; ``WebhookNotifier`` the Slack/Teams notifier.
"""

from streams.alerting.config import AlertConfig
from streams.alerting.engine import AlertEngine
from streams.alerting.model import Alert, Kind
from streams.alerting.notify import WebhookNotifier
from streams.alerting.stage import AlertStage, AlertTopics

__all__ = [
    "Alert",
    "AlertConfig",
    "AlertEngine",
    "AlertStage",
    "AlertTopics",
    "Kind",
    "WebhookNotifier",
]
