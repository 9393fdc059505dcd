"""The worker runtime: the parts both Faust apps (the twin worker, the alerting worker) are made of.

Each app used to declare its own Faust settings, topics, tables, agents and timers, and the
copies drifted. Here they are once, each a small part an app wires together:

=====================  ===================================================================
``factory``            ``create_faust_app`` (the shared Faust settings, broker credentials,
                       fetch and request sizes, the quiet-libraries worker class),
                       ``influx_sink`` (closed after the consumer), ``raise_log_levels``
``channels``           raw-bytes ``raw_topic`` / ``raw_table``, ``FaustTable`` (the stages'
                       state table), ``topic_sender``, ``record_from_event``
``agents``             ``batch_agent`` (take a batch, store it, acknowledge what is stored),
                       ``stored_then_acked``
``liveness``           ``Liveness`` (offsets stored, busy since), ``StallWatchdog`` (exit 70
                       when stuck), ``IdleTimer`` (act on silence only with the broker up)
=====================  ===================================================================
"""

from streams.runtime.agents import Batch, BatchHandler, Batching, batch_agent, stored_then_acked
from streams.runtime.channels import (
    FaustTable,
    Send,
    raw_table,
    raw_topic,
    record_from_event,
    topic_sender,
)
from streams.runtime.factory import (
    AppSpec,
    QuietWorker,
    create_faust_app,
    faust_datadir,
    influx_sink,
    raise_log_levels,
)
from streams.runtime.liveness import CaughtUp, IdleTimer, Liveness, StallWatchdog

__all__ = [
    "AppSpec",
    "Batch",
    "BatchHandler",
    "Batching",
    "CaughtUp",
    "FaustTable",
    "IdleTimer",
    "Liveness",
    "QuietWorker",
    "Send",
    "StallWatchdog",
    "batch_agent",
    "create_faust_app",
    "faust_datadir",
    "influx_sink",
    "raise_log_levels",
    "raw_table",
    "raw_topic",
    "record_from_event",
    "stored_then_acked",
    "topic_sender",
]
