"""Settings of the stream worker (``CLUSTERTWIN_STREAMS_*``), beside the shared connection settings.

Everything has a production-sensible default except what must never have one (credentials,
which come from ``clustertwin_base.settings``). Tests and the demo change names (app id, twin id,
topics) to run side by side without seeing each other's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clustertwin_base.settings import Settings


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERTWIN_STREAMS_", extra="ignore")

    app_id: str = Field("clustertwin-twin", description="Faust app id: consumer group, tables")
    group: str | None = Field(
        None,
        description="a cluster group of the routing file: its clusters, its readings topic, "
        "app id <app_id>-<group> unless set",
    )
    twin: str = Field("live", description="value of the `twin` tag on every InfluxDB point")
    clusters: str = Field("dunkirk", description="comma-separated cluster names of the twin")
    catalog_file: Path | None = Field(
        None, description="a compiled meter index (JSON) instead of the twin's cluster files"
    )
    readings_partitions: int = Field(4, ge=1, description="partitions when creating `readings`")
    late_topic: str = "readings-late"
    grace_s: float = Field(60.0, ge=0, description="how long a window waits for late readings")
    horizon_years: int = Field(
        1,
        ge=0,
        description="late readings restate their windows back to 1 January of this many "
        "years before the record's own year; older ones go to the dead-letter topic",
    )
    idle_flush_s: float = Field(
        30.0, gt=0, description="wall-clock time without data after which a site's windows close"
    )
    ytd_every_s: float = Field(
        600.0,
        ge=0,
        description="a site's twin_ytd points are rewritten at most this often (wall clock); "
        "a change not yet written is written by the next batch or idle flush after it. At "
        "165,000 meters, rewriting every site's year to date with every batch was a third of "
        "the points; the live view and progress read the worker's own year to date",
    )
    cluster_retention_s: float = Field(
        6 * 3600.0, gt=0, description="how long cluster windows accept site updates after closing"
    )
    batch_max: int = Field(2000, ge=1, description="records per processing batch")
    batch_within_s: float = Field(0.2, gt=0, description="max wait to fill a batch")
    cluster_within_s: float = Field(
        1.0,
        gt=0,
        description="max wait to fill a batch of the cluster stage: every batch writes each "
        "cluster's changed windows once, so at most one write per cluster and second (taken "
        "every 0.2 s, the cluster windows were a fifth of the points a reading cost at "
        "165,000 meters); cluster figures lag the sites' by up to this much",
    )
    batch_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1,
        description="bytes of record values per stored batch (a batch taken is cut into "
        "runs of at most this much; a bigger record alone): bounds a batch's work on a burst "
        "of huge envelopes well below the stall watchdog",
    )
    overlap_commits: bool = Field(
        True,
        description="compute the next batch while the previous one is being stored; off: "
        "one batch at a time (same guarantees, for comparing or ruling it out)",
    )
    stall_s: float = Field(
        60.0,
        gt=0,
        description="readings waiting this long with no progress (and InfluxDB up) = stalled: "
        "the worker exits so its supervisor restarts it (safe: nothing unstored is acked)",
    )
    stop_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a stop (SIGTERM/SIGINT) taking longer exits the process at once (Faust "
        "can wait forever for its last offset commit); safe, nothing unstored is acknowledged",
    )
    gapfill_file: Path | None = Field(
        None,
        description="gap-fill declarations by meter id (``meters: {id: {method: ...}}``, "
        "``twin.gapfill``), for a worker on a compiled catalog; with the twin's cluster files "
        "the meters' own ``gap_fill`` (or their site's or cluster's) is used",
    )
    datadir: Path | None = Field(
        None,
        description="Faust's data directory [cache dir/faust/<app id>]; never the current "
        "directory, which Faust would otherwise fill with <app id>-data folders",
    )
    web_host: str = Field(
        "127.0.0.1", description="the host other workers reach this one by (table routing)"
    )
    web_bind: str = Field(
        "127.0.0.1",
        description="interface the views listen on (0.0.0.0: all; they have no sign-in)",
    )
    web_port: int = 6066
    loglevel: str = "WARNING"
    progress_every_s: float = Field(10.0, gt=0)

    @property
    def cluster_names(self) -> list[str]:
        return [v.strip() for v in self.clusters.split(",") if v.strip()]

    @property
    def ytd_every_ms(self) -> int:
        return int(self.ytd_every_s * 1000)

    @property
    def grace_ms(self) -> int:
        return int(self.grace_s * 1000)


GroupedT = TypeVar("GroupedT", bound=BaseSettings)


def for_group(cfg: GroupedT, settings: Settings) -> tuple[GroupedT, Settings]:
    """A worker of a cluster group (``clustertwin_base.routing``): the group's clusters,
    readings topic and an app id (consumer group, tables) of its own, so the workers of other
    groups share nothing with it. Explicit clusters that disagree with the group are an error.
    For the stream and the alerting workers' settings alike (``group``, ``clusters``,
    ``app_id``)."""
    group: str | None = getattr(cfg, "group", None)
    settings, clusters = settings.for_group(group)
    if clusters is None:
        return cfg, settings
    prefix = cfg.model_config.get("env_prefix", "")
    given = [c.strip() for c in str(getattr(cfg, "clusters", "")).split(",") if c.strip()]
    if "clusters" in cfg.model_fields_set and sorted(given) != sorted(clusters):
        raise ValueError(
            f"{prefix}CLUSTERS={','.join(given)!r} disagrees with group {group!r} of the "
            f"routing file ({', '.join(clusters)}): set one of them"
        )
    update: dict[str, object] = {"clusters": ",".join(clusters)}
    if "app_id" not in cfg.model_fields_set:
        named: Any = cfg  # both settings classes have an app_id
        update["app_id"] = f"{named.app_id}-{group}"
    return cfg.model_copy(update=update), settings
