"""Tuning of the alert detectors (YAML or ``CLUSTERTWIN_ALERTS_*``), validated with pydantic.

Defaults are chosen for 1-minute meters and 5-minute detector intervals; every duration is in
seconds of *event time*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin.drift import ShiftConfig
from twin.yaml_loader import load_yaml


class AlertConfigError(ValueError):
    """The alerting configuration is invalid; the message names the field."""


class AlertConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: int = Field(300, ge=60, description="detector interval (emission buckets)")
    grace_s: int = Field(60, ge=0, description="wait for late readings before closing a bucket")
    expected_interval_s: float = Field(60.0, gt=0, description="meter interval until learnt")
    silent_intervals: float = Field(5, gt=1, description="a meter silent this long is alerted")
    flat_intervals: float = Field(30, gt=1, description="unchanged this long = flat-lined")
    flat_rel_tol: float = Field(1e-9, ge=0, description="relative change counted as no change")
    flat_ignore_zero: bool = Field(True, description="a meter at 0 is off, not stuck")
    min_coverage: float = Field(
        0.8, gt=0, le=1, description="share of readings for a complete bucket"
    )
    jump_ratio: float = Field(0.5, gt=0, description="meter level change that breaks the balance")
    # pathway drift
    margin_1h: float = Field(0.10, ge=0, description="1 h rate above pathway by more than this")
    margin_24h: float = Field(0.05, ge=0, description="24 h rate above pathway by more than this")
    drift_for_1h_s: int = Field(7200, ge=0, description="how long the 1 h drift must last")
    drift_for_24h_s: int = Field(6 * 3600, ge=0, description="how long the 24 h drift must last")
    projection_margin: float = Field(0.02, ge=0, description="projected year-end above target")
    projection_for_s: int = Field(6 * 3600, ge=0)
    clear_for_s: int = Field(1800, ge=0, description="how long a cleared condition must hold")
    min_rate_coverage: float = Field(0.75, gt=0, le=1, description="data needed for a rate")
    # statistical shift (units of sigma)
    shift_lam: float = Field(0.02, gt=0, lt=1)
    shift_k: float = Field(1.0, ge=0)
    shift_h: float = Field(8.0, gt=0)
    shift_h_clear: float = Field(2.0, ge=0)
    shift_warmup: int = Field(24, ge=2)
    shift_min_rel_sigma: float = Field(0.01, ge=0)
    cluster_wait_s: int = Field(
        3 * 86400,
        gt=0,
        description="how far a catching-up site may lag before the cluster "
        "closes its buckets without it",
    )
    update_every_s: int = Field(3600, gt=0, description="an open alert is re-published this often")

    @property
    def step_ms(self) -> int:
        return self.step_s * 1000

    @property
    def shift(self) -> ShiftConfig:
        return ShiftConfig(
            lam=self.shift_lam,
            lam_var=self.shift_lam,
            k=self.shift_k,
            h=self.shift_h,
            h_clear=self.shift_h_clear,
            cap=2 * self.shift_h,
            warmup=self.shift_warmup,
            min_rel_sigma=self.shift_min_rel_sigma,
        )

    @classmethod
    def from_yaml(cls, path: Path) -> AlertConfig:
        try:
            data: Any = load_yaml(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AlertConfigError(f"{path}: cannot read: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
            raise AlertConfigError(f"{path}: " + "; ".join(parts)) from exc
