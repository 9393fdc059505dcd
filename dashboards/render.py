"""Pictures of the dashboards for the README, drawn with matplotlib from the panels' own data.

No Grafana image renderer here (it needs a headless browser), so each dashboard is drawn
panel by panel on Grafana's 24-column grid: every panel's query runs against InfluxDB
exactly as Grafana would run it (:func:`dashboards.runner.run_direct`), and the result is
drawn as a stat, a time series, bars, a donut or a table. What you see is what the panel
would show for the same range, not a mock-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from influxdb_client import InfluxDBClient

from dashboards.runner import Series, run_direct

BG, PANEL, TEXT, MUTED = "#111217", "#181b1f", "#d8d9da", "#8e8e8e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#96d98d"]
ROW_PX = 30  # one grid unit of height, in Grafana pixels


def _colour(name: str, i: int, overrides: Mapping[str, str]) -> str:
    return overrides.get(name, PALETTE[i % len(PALETTE)])


def _overrides(panel: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in (panel.get("fieldConfig") or {}).get("overrides") or []:
        name = (o.get("matcher") or {}).get("options")
        for prop in o.get("properties") or []:
            if prop.get("id") == "color" and isinstance(prop.get("value"), dict):
                out[str(name)] = str(prop["value"].get("fixedColor"))
    return out


def _unit(panel: Mapping[str, Any]) -> str:
    unit = str(((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or "")
    if unit.startswith("suffix:"):
        return unit.split(":", 1)[1].strip()
    return {"percent": "%", "short": ""}.get(unit, unit)


def _fmt(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return str(value)
    v = float(value)
    text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 1 else f"{v:.3g}"
    return f"{text} {unit}".strip()


def _draw_panel(ax: Any, panel: Mapping[str, Any], series: list[Series]) -> None:
    kind = panel.get("type")
    unit = _unit(panel)
    colours = _overrides(panel)
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color("#2c3235")
    ax.set_title(str(panel.get("title", "")), color=TEXT, fontsize=9, loc="left", pad=4)
    ax.tick_params(colors=MUTED, labelsize=7)
    if not series:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if kind == "stat":
        ax.set_xticks([])
        ax.set_yticks([])
        n = len(series)
        for i, s in enumerate(series):
            nums = s.numbers()
            value = nums[-1] if nums else None
            x = (i + 0.5) / n
            ax.text(
                x,
                0.52,
                _fmt(value, unit) if value is not None else "–",
                color="#73bf69",
                ha="center",
                va="center",
                fontsize=15 if n < 3 else 11,
                weight="bold",
                transform=ax.transAxes,
            )
            ax.text(
                x,
                0.16,
                s.name,
                color=MUTED,
                ha="center",
                va="center",
                fontsize=7,
                transform=ax.transAxes,
            )
    elif kind == "timeseries":
        for i, s in enumerate(series):
            pts = [
                (t, v)
                for t, v in zip(s.times, s.values, strict=False)
                if t is not None and isinstance(v, int | float)
            ]
            if not pts:
                continue
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                lw=1.4,
                label=s.name,
                color=_colour(s.name, i, colours),
            )
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(color="#2c3235", lw=0.5)
        ax.set_ylabel(unit, color=MUTED, fontsize=7)
        ax.legend(
            fontsize=6,
            facecolor=PANEL,
            edgecolor="#2c3235",
            labelcolor=TEXT,
            loc="upper left",
            ncol=min(4, len(series)),
        )
    elif kind in ("bargauge", "piechart"):
        names = [s.name for s in series]
        values = [(s.numbers() or [0.0])[-1] for s in series]
        if kind == "piechart" and sum(v for v in values if v > 0) > 0:
            ax.pie(
                [max(v, 0.0) for v in values],
                labels=None,
                wedgeprops={"width": 0.45},
                colors=[_colour(n, i, colours) for i, n in enumerate(names)],
                center=(-1.1, 0.0),
                radius=1.0,
                frame=True,
            )
            # donut on the left, legend on the right, inside the panel
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_ylim(-1.15, 1.15)
            ax.set_xlim(-2.2, 2.4)
            ax.set_xticks([])
            ax.set_yticks([])
            total = sum(max(v, 0.0) for v in values)
            ax.legend(
                [
                    f"{n}  {100 * max(v, 0) / total:.0f} %"
                    for n, v in zip(names, values, strict=True)
                ],
                fontsize=6,
                facecolor=PANEL,
                edgecolor="#2c3235",
                labelcolor=TEXT,
                loc="center left",
                bbox_to_anchor=(0.5, 0.5),
            )
        else:
            ax.barh(names, values, color=[_colour(n, i, colours) for i, n in enumerate(names)])
            for y, v in enumerate(values):
                ax.text(v, y, " " + _fmt(v, unit), color=TEXT, va="center", fontsize=7)
            ax.invert_yaxis()
            top = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("max")
            if isinstance(top, int | float) and max(values, default=0.0) <= top:
                ax.set_xlim(min(0.0, *values), top)
            ax.set_xticks([])
    elif kind == "table":
        ax.set_xticks([])
        ax.set_yticks([])
        rows, header = _table_rows(series)
        if rows:
            table = ax.table(
                cellText=rows[:12], colLabels=header, loc="upper center", cellLoc="left"
            )
            table.auto_set_font_size(False)
            table.set_fontsize(6.5)
            for cell in table.get_celld().values():
                cell.set_facecolor(PANEL)
                cell.set_edgecolor("#2c3235")
                cell.get_text().set_color(TEXT)


def _table_rows(series: list[Series]) -> tuple[list[list[str]], list[str]]:
    # A table query yields rows with several columns; Series keeps them in `columns`.
    for s in series:
        if s.columns:
            header = [c for c in s.columns if not c.startswith("_") or c == "_time"]
            n = len(next(iter(s.columns.values())))
            rows = []
            for i in range(n):
                row = []
                for c in header:
                    v = s.columns[c][i]
                    row.append(v.strftime("%H:%M:%S") if isinstance(v, datetime) else _fmt(v, ""))
                rows.append(row)
            return rows, header
    return [], []


def render_dashboard(
    model: Mapping[str, Any],
    client: InfluxDBClient,
    *,
    org: str,
    bucket: str,
    start: datetime,
    stop: datetime,
    variables: Mapping[str, str],
    out: Path,
) -> Path:
    panels = [p for p in model.get("panels") or [] if p.get("type") != "row"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width_in, unit_h = 16.0, 16.0 / 24 * 0.42
    fig = plt.figure(figsize=(width_in, bottom * unit_h + 0.6), facecolor=BG)
    fig.suptitle(
        f"{model.get('title')}   ·   {', '.join(f'{k}={v}' for k, v in variables.items())}   ·   "
        f"{start:%Y-%m-%d %H:%M} – {stop:%H:%M} UTC",
        color=TEXT,
        fontsize=11,
        x=0.01,
        ha="left",
    )
    top_margin = 0.6 / (bottom * unit_h + 0.6)
    for panel in panels:
        g = panel["gridPos"]
        left = g["x"] / 24 + 0.006
        w = g["w"] / 24 - 0.012
        h = (g["h"] / bottom) * (1 - top_margin) - 0.03
        y = 1 - top_margin - ((g["y"] + g["h"]) / bottom) * (1 - top_margin) + 0.012
        # room inside the panel for tick labels and bar names, as Grafana leaves
        inset = {"timeseries": 0.03, "bargauge": 0.055}.get(str(panel.get("type")), 0.0)
        ax = fig.add_axes((left + inset, y, w - inset, h))
        series: list[Series] = []
        for target in panel.get("targets") or []:
            series.extend(
                run_direct(
                    client,
                    target["query"],
                    org=org,
                    bucket=bucket,
                    start=start,
                    stop=stop,
                    variables=variables,
                    window=max(timedelta(minutes=1), (stop - start) / 200),
                )
            )
        if panel.get("type") == "alertlist":
            ax.set_facecolor(PANEL)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(panel.get("title")), color=TEXT, fontsize=9, loc="left")
            ax.text(
                0.5,
                0.5,
                "Grafana alert list\n(live in Grafana)",
                color=MUTED,
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
            continue
        _draw_panel(ax, panel, series)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=BG)
    plt.close(fig)
    return out
