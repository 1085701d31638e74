"""Build the gpulse Grafana dashboards (dashboards/*.json) from one description.

One script keeps the three dashboards consistent: every panel gets a unit, a description
that says how to read it, and the ``${datasource}`` variable; no UID is hard-coded.

    python dashboards/build.py           # write dashboards/*.json
    python dashboards/build.py --check   # exit 1 when a committed file differs from the build

Rates of the agent's counters are divided by the GPU's accounted seconds per second (the sum of
``gpulse_gpu_state_seconds_total`` over its states) rather than read per second of wall time:
the two are equal in production, and in ``gpulse demo --speed X`` this keeps throughput, power
and MFU at their simulated values instead of X times them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
TAG = "gpulse"

# Selectors the template variables fill in.
SEL = 'instance=~"$instance", gpu=~"$gpu"'
NODE = 'instance=~"$instance"'

# Clock-event reasons that hold clocks down (gpu_idle, sync_boost, application/display clock
# settings only say why the clock is where it is).
THROTTLE_REASONS = "sw_power_cap|hw_slowdown|sw_thermal_slowdown|hw_thermal_slowdown|hw_power_brake_slowdown"

STATE_COLORS = {
    "unavailable": "dark-red",
    "idle": "#808080",
    "starved_host": "orange",
    "starved_io": "dark-orange",
    "starved_other": "light-orange",
    "throttled_power": "yellow",
    "throttled_thermal": "dark-yellow",
    "memory_bound": "blue",
    "compute_bound": "green",
}
STATES = tuple(STATE_COLORS)

Json = dict[str, Any]


def gpu_clock(selector: str, window: str = "$__rate_interval") -> str:
    """Accounted agent seconds per second of each GPU: 1 in production, the demo's --speed X there."""
    return f"sum without (state) (rate(gpulse_gpu_state_seconds_total{{{selector}}}[{window}]))"


def per_gpu_rate(metric: str, selector: str = SEL, window: str = "$__rate_interval") -> str:
    """A per-GPU counter's rate per agent second (labels beyond gpu/uuid kept)."""
    return (f"rate({metric}{{{selector}}}[{window}])\n"
            f"/ on (job, instance, gpu, uuid) group_left ()\n{gpu_clock(selector, window)}")


def host_clock(window: str = "$__rate_interval") -> str:
    """Agent seconds per second of the node: all CPU seconds over the CPU count."""
    return (f"(sum by (job, instance) (rate(gpulse_host_cpu_seconds_total{{{NODE}}}[{window}]))"
            f" / on (job, instance) sum by (job, instance) (gpulse_host_cpus{{{NODE}}}))")


# --- panel model ---------------------------------------------------------------------------------


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def to_json(self, ref: str) -> Json:
        out: Json = {"datasource": DS, "refId": ref, "expr": self.expr,
                     "legendFormat": self.legend or "__auto",
                     "range": not self.instant, "instant": self.instant, "editorMode": "code"}
        if self.table:
            out["format"] = "table"
        return out


@dataclass
class Panel:
    kind: str  # timeseries | stat | table | bargauge | piechart | state-timeline
    title: str
    description: str
    unit: str
    targets: list[Target]
    width: int = 12
    height: int = 8
    stack: bool = False
    min: float | None = None
    max: float | None = None
    overrides: list[Json] = field(default_factory=list)
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)
    transformations: list[Json] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] | None = None
    color: Json | None = None
    decimals: int | None = None
    mappings: list[Json] = field(default_factory=list)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def state_overrides() -> list[Json]:
    """Fixed colours per time-accounting state, so that waste reads the same on every panel."""
    return [{"matcher": {"id": "byName", "options": state},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for state, colour in STATE_COLORS.items()]


def column_units(units: dict[str, str]) -> list[Json]:
    return [{"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": unit}]}
            for name, unit in units.items()]


def node_link_override(column: str = "instance") -> Json:
    return {"matcher": {"id": "byName", "options": column},
            "properties": [{"id": "links", "value": [{
                "title": "Node / GPU detail",
                "url": "/d/gpulse-node/gpulse-node-gpu-detail?var-instance=${__value.raw}"
                       "&${datasource:queryparam}&${__url_time_range}"}]}]}


def table_transforms(rename: dict[str, str], hide: Iterable[str] = ("Time", "__name__", "job")) -> list[Json]:
    return [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {name: True for name in hide},
                                        "renameByName": rename, "indexByName": {}}},
    ]


def _field_config(p: Panel) -> Json:
    defaults: Json = {"unit": p.unit, "mappings": p.mappings}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    steps = p.thresholds or [(None, "green")]
    defaults["thresholds"] = {"mode": "absolute",
                              "steps": [{"color": colour, "value": value} for value, colour in steps]}
    defaults["color"] = p.color or ({"mode": "thresholds"} if p.kind in ("stat", "bargauge") else
                                    {"mode": "palette-classic"})
    custom: Json = {}
    if p.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 60 if p.stack else 10,
                  "showPoints": "never", "spanNulls": False,
                  "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}
    elif p.kind == "table":
        custom = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}
    custom.update(p.custom)
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": p.overrides}


def _options(p: Panel) -> Json:
    if p.kind == "timeseries":
        base: Json = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                 "calcs": ["mean", "lastNotNull"]},
                      "tooltip": {"mode": "multi", "sort": "desc"}}
    elif p.kind == "stat":
        base = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                "textMode": "auto"}
    elif p.kind == "bargauge":
        base = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
    elif p.kind == "piechart":
        base = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "pieType": "donut", "displayLabels": ["name", "percent"],
                "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                           "values": ["value"]}}
    elif p.kind == "table":
        base = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    elif p.kind == "state-timeline":
        base = {"showValue": "never", "mergeValues": True, "alignValue": "left", "rowHeight": 0.8,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    else:
        base = {}
    base.update(p.options)
    return base


def layout(rows: list[Row]) -> list[Json]:
    """Grafana panels with grid positions: each row's panels flow left to right, 24 units wide."""
    out: list[Json] = []
    y = 0
    next_id = 1
    for row in rows:
        out.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for p in row.panels:
            if x + p.width > 24:
                y += line_height
                x = 0
                line_height = 0
            refs = [chr(ord("A") + i) for i in range(len(p.targets))]
            panel: Json = {
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "datasource": DS, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
                "targets": [t.to_json(ref) for t, ref in zip(p.targets, refs, strict=True)],
                "fieldConfig": _field_config(p), "options": _options(p),
            }
            if p.transformations:
                panel["transformations"] = p.transformations
            out.append(panel)
            next_id += 1
            x += p.width
            line_height = max(line_height, p.height)
        y += line_height
    return out


def variables(*, single_instance: bool = False) -> list[Json]:
    def query_var(name: str, label: str, query: str, *, multi: bool) -> Json:
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2, "sort": 3, "multi": multi, "includeAll": multi,
            **({"allValue": ".*"} if multi else {}),
            "current": {}, "options": [], "regex": "", "hide": 0,
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "options": [], "regex": "", "hide": 0, "refresh": 1, "multi": False,
         "includeAll": False},
        query_var("instance", "Node", "label_values(gpulse_gpu_info, instance)", multi=not single_instance),
        query_var("gpu", "GPU", 'label_values(gpulse_gpu_info{instance=~"$instance"}, gpu)', multi=True),
    ]


def dashboard(uid: str, title: str, description: str, rows: list[Row], *,
              single_instance: bool = False) -> Json:
    return {
        "uid": uid, "title": title, "description": description, "tags": [TAG],
        "editable": True, "graphTooltip": 1, "timezone": "browser", "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-3h", "to": "now"}, "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "gpulse dashboards", "type": "dashboards", "tags": [TAG], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": {"list": variables(single_instance=single_instance)},
        "panels": layout(rows),
    }


# --- 1. Fleet overview ---------------------------------------------------------------------------


def fleet() -> Json:
    wasted_gpu = f"gpu:gpulse_gpu_wasted_seconds:ratio_rate5m{{{SEL}}}"
    top = f"topk(10, {wasted_gpu})"
    rows = [
        Row("Where the GPU time goes", [
            Panel("timeseries", "GPUs by time-accounting state",
                  "How many of the selected GPUs were in each state (5-minute mean), stacked: the height is "
                  "the number of GPUs and the area over time is GPU-hours. Green (compute_bound) and blue "
                  "(memory_bound) are useful work; grey is idle capacity; orange is starved on the host "
                  "(input pipeline, I/O); yellow is throttled; red is unavailable.",
                  "short",
                  [Target(f"sum by (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}}})",
                          "{{state}}")],
                  width=16, height=9, stack=True, min=0, overrides=state_overrides(),
                  custom={"axisLabel": "GPUs"}),
            Panel("piechart", "GPU-hours by state over the time range",
                  "GPU-hours the selected GPUs spent in each state over the dashboard's time range, in the "
                  "agent's clock (in `gpulse demo --speed X` these are simulated hours). The slices other "
                  "than compute_bound and memory_bound are the waste to chase.",
                  "h",
                  [Target(f"sum by (state) (increase(gpulse_gpu_state_seconds_total{{{SEL}}}[$__range]))"
                          " / 3600",
                          "{{state}}", instant=True)],
                  width=8, height=9, overrides=state_overrides(), decimals=1),
            Panel("bargauge", "Time-accounting share per node",
                  "Per node, the share of its GPUs' time in each state over the last 5 minutes (each GPU "
                  "weighs the same). A long orange or grey bar on one node points at its input pipeline or "
                  "at idle allocations there.",
                  "percentunit",
                  [Target(f"instance_state:gpulse_gpu_state_seconds:ratio_rate5m{{{NODE}}} > 0",
                          "{{instance}} {{state}}", instant=True)],
                  width=12, height=9, min=0, max=1,
                  options={"displayMode": "basic"},
                  thresholds=[(None, "blue")]),
            Panel("stat", "Wasted GPU time (selected GPUs)",
                  "Mean share of the selected GPUs' time not spent computing: unavailable, idle and starved "
                  "time plus the clock lost to throttling while executing (last 5 minutes). Lower is better.",
                  "percentunit",
                  [Target(f"avg({wasted_gpu})", "wasted")],
                  width=6, height=9, min=0, max=1,
                  thresholds=[(None, "green"), (0.2, "yellow"), (0.5, "red")]),
            Panel("stat", "GPUs reporting",
                  "GPUs the agents on the selected nodes know about, and how many of them answer "
                  "(gpulse_gpu_up). A difference means lost or unresponsive GPUs.",
                  "short",
                  [Target(f"count(gpulse_gpu_up{{{SEL}}})", "known"),
                   Target(f"sum(gpulse_gpu_up{{{SEL}}})", "answering")],
                  width=6, height=9, thresholds=[(None, "blue")], options={"colorMode": "value"}),
        ]),
        Row("Efficiency: MFU and MBU", [
            Panel("stat", "Fleet MFU",
                  "Model FLOPs utilization over all GPUs of the scrape job: the mean over GPUs of achieved "
                  "FLOP/s over the datasheet peak (reported by the workload where it reports, else estimated "
                  "from tensor-pipe activity and clock). Idle GPUs count as 0, so idle capacity lowers it. "
                  "Ignores the node filter.",
                  "percentunit", [Target("job:gpulse_gpu_mfu:ratio_rate5m", "{{job}}")],
                  width=6, height=7, min=0, max=1,
                  thresholds=[(None, "red"), (0.2, "yellow"), (0.4, "green")]),
            Panel("stat", "Fleet MBU (memory-bound GPUs)",
                  "Memory bandwidth utilization over the GPUs that were mostly memory-bound (LLM decode): "
                  "achieved DRAM bandwidth over the datasheet peak. Judge those GPUs by this, not by MFU. "
                  "Ignores the node filter; empty when no GPU is memory-bound.",
                  "percentunit", [Target("job:gpulse_gpu_mbu:ratio_rate5m", "{{job}}")],
                  width=6, height=7, min=0, max=1,
                  thresholds=[(None, "red"), (0.3, "yellow"), (0.6, "green")]),
            Panel("timeseries", "MFU per node",
                  "Mean MFU of each node's GPUs (5-minute windows; idle GPUs count as 0). A drop on one node "
                  "while the others hold points at that node: check its throttling and starvation panels.",
                  "percentunit", [Target(f"instance:gpulse_gpu_mfu:ratio_rate5m{{{NODE}}}", "{{instance}}")],
                  width=12, height=7, min=0, max=1),
            Panel("timeseries", "MFU per GPU",
                  "MFU of each selected GPU; the `source` in the legend says whether it is reported by the "
                  "workload or estimated by the agent. Low MFU on a compute-bound GPU is worth a look; a "
                  "memory-bound GPU is judged by its MBU (next panel).",
                  "percentunit",
                  [Target(f"gpu:gpulse_gpu_mfu:ratio_rate5m{{{SEL}}}",
                          "{{instance}} GPU {{gpu}} ({{source}})")],
                  width=12, height=8, min=0, max=1),
            Panel("timeseries", "MBU per GPU",
                  "Memory bandwidth utilization of each selected GPU: achieved DRAM bandwidth over the peak. "
                  "LLM decode is memory-bound by nature: 60-80 % here is good work even when its MFU is low.",
                  "percentunit",
                  [Target(f"gpu:gpulse_gpu_mbu:ratio_rate5m{{{SEL}}}", "{{instance}} GPU {{gpu}}")],
                  width=12, height=8, min=0, max=1),
        ]),
        Row("Problems now", [
            Panel("stat", "Throttled GPUs now",
                  "GPUs whose clocks a power or thermal reason holds down at the latest sample. A few with "
                  "the power cap under heavy load is normal; thermal reasons are not.",
                  "short",
                  [Target(f"count(max by (instance, gpu) (gpulse_gpu_clock_event_active{{{SEL}, "
                          f"reason=~\"{THROTTLE_REASONS}\"}}) == 1) or vector(0)", "throttled")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "yellow")]),
            Panel("stat", "Starved GPUs",
                  "GPUs that were assigned but waited on their host (input pipeline, CPU, I/O) more than "
                  "30 % of the last 5 minutes. See the Workload efficiency dashboard for whose job it is.",
                  "short",
                  [Target(f"count(gpu:gpulse_gpu_starved_seconds:ratio_rate5m{{{SEL}}} > 0.3) or vector(0)",
                          "starved")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "orange")]),
            Panel("stat", "Unavailable GPUs",
                  "GPUs that cannot be read now: lost (fallen off the bus, reset required) or unresponsive. "
                  "Anything above 0 is a hardware or driver incident.",
                  "short",
                  [Target(f"count(gpulse_gpu_up{{{SEL}}} == 0) or vector(0)", "unavailable")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "red")]),
            Panel("stat", "GPUs with XID errors",
                  "GPUs that raised any XID since their agent started. The table below says which XID; the "
                  "runbook's XID reference says what each means.",
                  "short",
                  [Target(f"count(sum by (instance, gpu) (gpulse_gpu_xid_errors_total{{{SEL}}}) > 0)"
                          " or vector(0)",
                          "xid")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "red")]),
            Panel("stat", "GPUs with uncorrectable ECC errors",
                  "GPUs with uncorrectable ECC errors since the driver loaded (volatile count). Their data "
                  "may be corrupt; they need a reset.",
                  "short",
                  [Target(f"count(gpulse_gpu_ecc_errors_total{{{SEL}, counter=\"volatile\", "
                          "type=\"uncorrected\"}"
                          f" > 0) or vector(0)", "ecc")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "red")]),
            Panel("stat", "GPUs with a memory repair pending",
                  "GPUs with a row remap (or page retirement) that takes effect at the next reset, or a "
                  "failed row remap (RMA).",
                  "short",
                  [Target(f"count((gpulse_gpu_row_remap_pending{{{SEL}}} == 1)"
                          f" or (gpulse_gpu_row_remap_failure{{{SEL}}} == 1)"
                          f" or (gpulse_gpu_retired_pages_pending{{{SEL}}} == 1)) or vector(0)",
                          "pending")],
                  width=4, height=5, thresholds=[(None, "green"), (1, "orange")]),
            Panel("timeseries", "GPU errors over time",
                  "Unavailable GPUs, XID errors and uncorrectable ECC errors over time, summed over the "
                  "selected GPUs. Counts since each agent started: a step up is a new error.",
                  "short",
                  [Target(f"sum by (instance) (1 - gpulse_gpu_up{{{SEL}}})", "{{instance}} unavailable GPUs"),
                   Target(f"sum by (instance, xid) (gpulse_gpu_xid_errors_total{{{SEL}}})",
                          "{{instance}} XID {{xid}}"),
                   Target(f"sum by (instance) (gpulse_gpu_ecc_errors_total{{{SEL}, counter=\"volatile\", "
                          f"type=\"uncorrected\"}})", "{{instance}} uncorrectable ECC")],
                  width=12, height=8, min=0, decimals=0),
            Panel("table", "XID errors by GPU",
                  "Every XID each GPU raised since its agent started, with the count. Look the code up in "
                  "the runbook's XID reference: some are application faults, others need a reset or an RMA.",
                  "short",
                  [Target(f"sum by (instance, gpu, uuid, xid) (gpulse_gpu_xid_errors_total{{{SEL}}})",
                          instant=True, table=True)],
                  width=12, height=8,
                  transformations=table_transforms({"Value": "count"}),
                  overrides=[node_link_override()]),
        ]),
        Row("Power and energy", [
            Panel("timeseries", "Power draw per node",
                  "Total GPU power draw of each node (W), with the sum of the power limits dashed above it. "
                  "Draw pinned at the limit means the power cap is throttling.",
                  "watt",
                  [Target(f"sum by (instance) (gpulse_gpu_power_watts{{{SEL}}})", "{{instance}} draw"),
                   Target(f"sum by (instance) (gpulse_gpu_power_limit_watts{{{SEL}}})",
                          "{{instance}} limit")],
                  width=12, height=8, min=0,
                  overrides=[{"matcher": {"id": "byRegexp", "options": ".* limit"},
                              "properties": [{"id": "custom.lineStyle",
                                              "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            Panel("stat", "Energy over the time range",
                  "Energy the selected GPUs consumed over the dashboard's time range, from their energy "
                  "counters (in the agent's clock: simulated time in the demo).",
                  "joule",
                  [Target(f"sum(increase(gpulse_gpu_energy_joules_total{{{SEL}}}[$__range]))", "energy",
                          instant=True)],
                  width=6, height=8, thresholds=[(None, "blue")], options={"graphMode": "none"}),
            Panel("stat", "Mean power per GPU",
                  "Mean power per selected GPU over the last 5 minutes, from the energy counter (exact "
                  "whatever the scrape interval).",
                  "watt",
                  [Target(f"avg(gpu:gpulse_gpu_energy_joules:rate5m{{{SEL}}})", "mean power")],
                  width=6, height=8, thresholds=[(None, "blue")]),
        ]),
        Row("Worst GPUs", [
            Panel("table", "Worst GPUs by wasted time",
                  "The ten selected GPUs that wasted the largest share of the last 5 minutes (not executing, "
                  "plus clock lost to throttling), with their starved, throttled and idle shares and MFU. "
                  "Click a node to open its detail dashboard.",
                  "percentunit",
                  [Target(top, instant=True, table=True),
                   Target(f"gpu:gpulse_gpu_starved_seconds:ratio_rate5m{{{SEL}}}"
                          " and on (job, instance, gpu, uuid) "
                          f"{top}", instant=True, table=True),
                   Target(f"sum without (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}, "
                          f"state=~\"throttled_.*\"}}) and on (job, instance, gpu, uuid) {top}",
                          instant=True, table=True),
                   Target(f"sum without (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}, "
                          f"state=\"idle\"}}) and on (job, instance, gpu, uuid) {top}",
                          instant=True, table=True),
                   Target(f"max without (source) (gpu:gpulse_gpu_mfu:ratio_rate5m{{{SEL}}}) and on "
                          f"(job, instance, gpu, uuid) {top}", instant=True, table=True)],
                  width=24, height=9, min=0, max=1,
                  transformations=table_transforms({"Value #A": "wasted", "Value #B": "starved",
                                                    "Value #C": "throttled", "Value #D": "idle",
                                                    "Value #E": "MFU"}),
                  overrides=[node_link_override(),
                             {"matcher": {"id": "byName", "options": "wasted"},
                              "properties": [{"id": "custom.cellOptions",
                                              "value": {"type": "gauge", "mode": "gradient"}}]}],
                  options={"sortBy": [{"displayName": "wasted", "desc": True}]}),
        ]),
    ]
    return dashboard("gpulse-fleet", "gpulse / Fleet overview",
                     "Where the fleet's GPU time goes, how efficiently it is used, and what is broken now.",
                     rows)


# --- 2. Node / GPU detail ------------------------------------------------------------------------


def node() -> Json:
    proc_gpu = f"gpulse_process_gpu_memory_bytes{{{SEL}}}"
    rows = [
        Row("Activity", [
            Panel("timeseries", "SM, tensor and DRAM activity",
                  "Per GPU: SM activity (share of time the SMs had work), tensor-pipe activity and DRAM "
                  "bandwidth utilization, with utilization.gpu (busy: any kernel running) for comparison. "
                  "Busy near 100 % with low SM activity means small kernels; high DRAM with low tensor "
                  "activity means memory-bound work.",
                  "percentunit",
                  [Target(per_gpu_rate("gpulse_gpu_sm_active_seconds_total"), "GPU {{gpu}} SM active"),
                   Target(per_gpu_rate("gpulse_gpu_tensor_active_seconds_total"),
                          "GPU {{gpu}} tensor active"),
                   Target(per_gpu_rate("gpulse_gpu_dram_active_seconds_total"), "GPU {{gpu}} DRAM bandwidth"),
                   Target(per_gpu_rate("gpulse_gpu_busy_seconds_total"),
                          "GPU {{gpu}} busy (utilization.gpu)")],
                  width=12, height=9, min=0, max=1),
            Panel("timeseries", "Time accounting",
                  "Where the selected GPUs' time went, as a stacked share of 100 % (mean of the selected "
                  "GPUs, 5-minute windows). Green and blue are useful work; orange is starved on the host; "
                  "yellow is throttled; grey is idle; red is unavailable.",
                  "percentunit",
                  [Target(f"avg by (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}}})",
                          "{{state}}")],
                  width=12, height=9, stack=True, min=0, max=1, overrides=state_overrides()),
            Panel("timeseries", "MFU and MBU",
                  "MFU (reported by the workload where it reports, else estimated) and MBU of each selected "
                  "GPU. Compute-bound work is judged by MFU, memory-bound work (LLM decode) by MBU.",
                  "percentunit",
                  [Target(f"gpu:gpulse_gpu_mfu:ratio_rate5m{{{SEL}}}", "GPU {{gpu}} MFU ({{source}})"),
                   Target(f"gpu:gpulse_gpu_mbu:ratio_rate5m{{{SEL}}}", "GPU {{gpu}} MBU")],
                  width=24, height=7, min=0, max=1),
        ]),
        Row("Clocks and throttling", [
            Panel("timeseries", "SM clock against its maximum",
                  "Current SM clock of each GPU (solid) and its maximum (dashed). A clock well under the "
                  "maximum while the GPU is busy is throttling: the next panels say why.",
                  "hertz",
                  [Target(f"gpulse_gpu_sm_clock_hertz{{{SEL}}}", "GPU {{gpu}} SM clock"),
                   Target(f"gpulse_gpu_sm_clock_max_hertz{{{SEL}}}", "GPU {{gpu}} max")],
                  width=12, height=8, min=0,
                  overrides=[{"matcher": {"id": "byRegexp", "options": ".* max"},
                              "properties": [{"id": "custom.lineStyle",
                                              "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            Panel("state-timeline", "Active throttle reasons",
                  "Which clock-event reasons hold each GPU's clocks down, sample by sample (coloured = "
                  "active). sw_power_cap / hw_power_brake_slowdown are power; sw/hw_thermal_slowdown are "
                  "temperature; hw_slowdown is either.",
                  "bool_on_off",
                  [Target(f"gpulse_gpu_clock_event_active{{{SEL}, reason=~\"{THROTTLE_REASONS}\"}}",
                          "GPU {{gpu}} {{reason}}")],
                  width=12, height=8,
                  color={"mode": "thresholds"}, thresholds=[(None, "transparent"), (1, "orange")]),
            Panel("timeseries", "Throttled share by reason",
                  "Share of each GPU's time its clocks were held down, per reason (5-minute windows, from "
                  "the violation counters where the GPU has them). Reasons overlap, so they need not add up.",
                  "percentunit",
                  [Target(f"gpu:gpulse_gpu_throttle_seconds:ratio_rate5m{{{SEL}}} > 0",
                          "GPU {{gpu}} {{reason}}")],
                  width=12, height=8, min=0, max=1),
            Panel("timeseries", "Clock lost to throttling",
                  "Share of each GPU's time lost to a lowered clock while executing: executing time x (1 - "
                  "SM clock / max SM clock). This is the compute a slower clock cost.",
                  "percentunit",
                  [Target(f"gpu:gpulse_gpu_clock_lost_seconds:ratio_rate5m{{{SEL}}}", "GPU {{gpu}}")],
                  width=12, height=8, min=0, max=1),
        ]),
        Row("Power and thermals", [
            Panel("timeseries", "Power against its limit",
                  "Power draw of each GPU (solid) and its enforced limit (dashed). Draw pinned at the limit "
                  "means the power cap throttles it.",
                  "watt",
                  [Target(f"gpulse_gpu_power_watts{{{SEL}}}", "GPU {{gpu}} draw"),
                   Target(f"gpulse_gpu_power_limit_watts{{{SEL}}}", "GPU {{gpu}} limit")],
                  width=12, height=8, min=0,
                  overrides=[{"matcher": {"id": "byRegexp", "options": ".* limit"},
                              "properties": [{"id": "custom.lineStyle",
                                              "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            Panel("timeseries", "Temperatures against their thresholds",
                  "GPU and memory temperature of each GPU (solid) and the slowdown threshold (dashed), where "
                  "the GPU starts cutting its clocks. Closing in on it means failing cooling.",
                  "celsius",
                  [Target(f"gpulse_gpu_temperature_celsius{{{SEL}}}", "GPU {{gpu}} {{sensor}}"),
                   Target(f"gpulse_gpu_temperature_threshold_celsius{{{SEL}, threshold=\"slowdown\"}}",
                          "GPU {{gpu}} slowdown threshold")],
                  width=12, height=8,
                  overrides=[{"matcher": {"id": "byRegexp", "options": ".* threshold"},
                              "properties": [{"id": "custom.lineStyle",
                                              "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            Panel("timeseries", "Thermal headroom",
                  "Degrees each GPU runs under its slowdown threshold. Under 5 °C for minutes raises "
                  "GpuTemperatureNearSlowdown; at 0 it throttles.",
                  "celsius",
                  [Target(f"gpulse_gpu_thermal_headroom_celsius{{{SEL}}}", "GPU {{gpu}}")],
                  width=12, height=7, thresholds=[(None, "red"), (5, "yellow"), (10, "green")],
                  custom={"thresholdsStyle": {"mode": "line+area"}}),
            Panel("timeseries", "Power headroom",
                  "Watts each GPU draws under its enforced power limit. Near 0 under load means the power "
                  "cap decides its clock.",
                  "watt",
                  [Target(f"gpulse_gpu_power_headroom_watts{{{SEL}}}", "GPU {{gpu}}")],
                  width=12, height=7),
        ]),
        Row("Memory and interconnect", [
            Panel("timeseries", "GPU memory used",
                  "Framebuffer memory in use on each GPU (solid) against its total (dashed).",
                  "bytes",
                  [Target(f"gpulse_gpu_memory_used_bytes{{{SEL}}}", "GPU {{gpu}} used"),
                   Target(f"gpulse_gpu_memory_total_bytes{{{SEL}}}", "GPU {{gpu}} total")],
                  width=8, height=8, min=0,
                  overrides=[{"matcher": {"id": "byRegexp", "options": ".* total"},
                              "properties": [{"id": "custom.lineStyle",
                                              "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            Panel("timeseries", "PCIe throughput",
                  "Bytes per second each GPU sends (transmit) and receives over PCIe. Host-to-device copies "
                  "of input batches show here; a starved GPU with little PCIe traffic waits on the host, "
                  "not on the bus.",
                  "Bps",
                  [Target(per_gpu_rate("gpulse_gpu_pcie_transmit_bytes_total"), "GPU {{gpu}} transmit"),
                   Target(per_gpu_rate("gpulse_gpu_pcie_receive_bytes_total"), "GPU {{gpu}} receive")],
                  width=8, height=8, min=0),
            Panel("timeseries", "NVLink throughput",
                  "Bytes per second each GPU sends and receives over NVLink, all links together: collectives "
                  "(all-reduce) in multi-GPU training.",
                  "Bps",
                  [Target(per_gpu_rate("gpulse_gpu_nvlink_transmit_bytes_total"), "GPU {{gpu}} transmit"),
                   Target(per_gpu_rate("gpulse_gpu_nvlink_receive_bytes_total"), "GPU {{gpu}} receive")],
                  width=8, height=8, min=0),
        ]),
        Row("Processes", [
            Panel("table", "Processes on these GPUs",
                  "The compute processes on each selected GPU with their GPU memory, command, user and owner "
                  "(container, pod, Slurm job) where the agent found one.",
                  "bytes",
                  [Target(f"{proc_gpu}\n* on (job, instance, pid) group_left (comm, user, container_id, pod, "
                          "namespace, container, slurm_job)\ngpulse_process_info", instant=True, table=True)],
                  width=24, height=7,
                  transformations=table_transforms({"Value": "GPU memory"}, hide=("Time", "__name__", "job",
                                                                                "instance"))),
        ]),
        Row("Host", [
            Panel("timeseries", "Host CPU by mode",
                  "Share of the node's CPU time per mode (idle left out), stacked. iowait growing while a "
                  "GPU is starved points at storage; user/system at 100 % at the input pipeline.",
                  "percentunit",
                  [Target(f"sum by (mode) (rate(gpulse_host_cpu_seconds_total{{{NODE}, mode!=\"idle\"}}"
                          "[$__rate_interval]))\n/ ignoring (mode) group_left\n"
                          f"sum(rate(gpulse_host_cpu_seconds_total{{{NODE}}}[$__rate_interval]))",
                          "{{mode}}")],
                  width=8, height=8, stack=True, min=0, max=1),
            Panel("timeseries", "Host pressure stall (PSI)",
                  "Share of time at least one task on the node stalled on CPU, I/O or memory (pressure stall "
                  "information, 'some'). CPU pressure alongside a starved GPU means the input pipeline lacks "
                  "cores; I/O pressure means it waits on storage.",
                  "percentunit",
                  [Target(f"rate(gpulse_host_pressure_stall_seconds_total{{{NODE}, kind=\"some\"}}"
                          f"[$__rate_interval])\n/ on (job, instance) group_left ()\n{host_clock()}",
                          "{{resource}}")],
                  width=8, height=8, min=0, max=1),
            Panel("timeseries", "CPU of the GPU processes",
                  "CPU cores each GPU process and its descendants (data-loader workers) use, per process. A "
                  "worker pinned at 1 core while its GPU is starved is the bottleneck; profile it.",
                  "short",
                  [Target(f"sum without (mode) (rate(gpulse_process_cpu_seconds_total{{{NODE}}}"
                          "[$__rate_interval]))"
                          f"\n/ on (job, instance) group_left ()\n{host_clock()}\n* on (job, instance, pid) "
                          "group_left (comm) gpulse_process_info", "{{pid}} {{comm}}")],
                  width=8, height=8, min=0, custom={"axisLabel": "CPU cores"}),
        ]),
    ]
    return dashboard("gpulse-node", "gpulse / Node & GPU detail",
                     "Every signal of one node's GPUs and its host: activity, clocks and throttling, power "
                     "and "
                     "thermals, memory and interconnect, processes, host CPU and pressure.", rows,
                     single_instance=True)


# --- 3. Workload efficiency -----------------------------------------------------------------------


def _on_process(gpu_expr: str) -> str:
    """A per-GPU value copied onto each process on that GPU (labels of the process row)."""
    return (f"{gpu_expr}\n* on (job, instance, gpu, uuid) group_right ()\n"
            f"(gpulse_process_gpu_memory_bytes{{{SEL}}} >= bool 0)")


def _by_owner(gpu_expr: str, owner: str, owner_filter: str) -> str:
    """A per-GPU value joined to its workload and averaged per owner."""
    return (f"avg by ({owner}) (\n  {gpu_expr}\n  * on (gpu, uuid) group_left ({owner})\n"
            f"  gpulse_gpu_allocation_info{{{NODE}, {owner_filter}}}\n)")


def _owner_rows(title: str, owner: str, owner_filter: str, legend: str, what: str) -> Row:
    mfu = f"max without (source) (gpu:gpulse_gpu_mfu:ratio_rate5m{{{SEL}}})"
    starved = f"gpu:gpulse_gpu_starved_seconds:ratio_rate5m{{{SEL}}}"
    throttled = (f"sum without (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}, "
                 "state=~\"throttled_.*\"})")
    return Row(title, [
        Panel("timeseries", f"MFU by {what}",
              f"Mean MFU of the GPUs allocated to each {what} (reported where the workload reports, else "
              "estimated). Compare like with like: a decode server's MFU is low by nature (see its MBU).",
              "percentunit", [Target(_by_owner(mfu, owner, owner_filter), legend)],
              width=8, height=8, min=0, max=1),
        Panel("timeseries", f"Starved share by {what}",
              f"Share of time the GPUs of each {what} waited on their host (input pipeline, CPU, I/O). Above "
              "30 % for 15 minutes raises GpuDataStarvation.",
              "percentunit", [Target(_by_owner(starved, owner, owner_filter), legend)],
              width=8, height=8, min=0, max=1),
        Panel("timeseries", f"Throttled share by {what}",
              f"Share of time the GPUs of each {what} ran with clocks held down by the power cap or "
              "temperature.",
              "percentunit", [Target(_by_owner(throttled, owner, owner_filter), legend)],
              width=8, height=8, min=0, max=1),
        Panel("table", f"GPUs and memory by {what}",
              f"How many GPUs each {what} holds and the memory used on them, with their mean MFU, MBU "
              "and starved share over the last 5 minutes.",
              "short",
              [Target(f"count by ({owner}) (gpulse_gpu_allocation_info{{{SEL}, {owner_filter}}})",
                      instant=True, table=True),
               Target(_by_owner(mfu, owner, owner_filter), instant=True, table=True),
               Target(_by_owner(f"gpu:gpulse_gpu_mbu:ratio_rate5m{{{SEL}}}", owner, owner_filter),
                      instant=True, table=True),
               Target(_by_owner(starved, owner, owner_filter), instant=True, table=True),
               Target(f"sum by ({owner}) (\n  gpulse_gpu_memory_used_bytes{{{SEL}}}\n  * on (gpu, uuid) "
                      f"group_left ({owner})\n  gpulse_gpu_allocation_info{{{NODE}, {owner_filter}}}\n)",
                      instant=True, table=True)],
              width=24, height=7,
              transformations=table_transforms({"Value #A": "GPUs", "Value #B": "MFU", "Value #C": "MBU",
                                                "Value #D": "starved", "Value #E": "GPU memory"}),
              overrides=column_units({"MFU": "percentunit", "MBU": "percentunit", "starved": "percentunit",
                                      "GPU memory": "bytes"})),
    ])


def workloads() -> Json:
    mfu = f"max without (source) (gpu:gpulse_gpu_mfu:ratio_rate5m{{{SEL}}})"
    process_rows = Row("Per process", [
        Panel("table", "Processes: efficiency of their GPUs",
              "One row per process and GPU: its GPU memory, and the MFU, MBU, starved and throttled shares "
              "of that GPU over the last 5 minutes. Processes sharing a GPU share its figures (their own "
              "share of the SMs is in the next panel).",
              "percentunit",
              [Target(f"gpulse_process_gpu_memory_bytes{{{SEL}}}\n* on (job, instance, pid) group_left "
                      "(comm, user, pod, namespace, slurm_job)\ngpulse_process_info",
                      instant=True, table=True),
               Target(_on_process(mfu), instant=True, table=True),
               Target(_on_process(f"gpu:gpulse_gpu_mbu:ratio_rate5m{{{SEL}}}"), instant=True, table=True),
               Target(_on_process(f"gpu:gpulse_gpu_starved_seconds:ratio_rate5m{{{SEL}}}"), instant=True,
                      table=True),
               Target(_on_process(f"sum without (state) (gpu:gpulse_gpu_state_seconds:ratio_rate5m{{{SEL}, "
                                  "state=~\"throttled_.*\"})"), instant=True, table=True)],
              width=24, height=8,
              transformations=table_transforms({"Value #A": "GPU memory", "Value #B": "GPU MFU",
                                                "Value #C": "GPU MBU", "Value #D": "GPU starved",
                                                "Value #E": "GPU throttled"}),
              overrides=[*column_units({"GPU memory": "bytes"}), node_link_override()]),
        Panel("timeseries", "SM share per process",
              "Each process's share of its GPU's time with kernels on the SMs, as NVML samples it per "
              "process: on a shared GPU this splits the work between processes instead of copying the "
              "GPU's figure to each.",
              "percentunit",
              [Target(f"gpulse_process_gpu_sm_utilization_ratio{{{SEL}}}\n"
                      "* on (job, instance, pid) group_left "
                      "(comm) gpulse_process_info", "{{instance}} GPU {{gpu}} pid {{pid}} {{comm}}")],
              width=12, height=8, min=0, max=1),
        Panel("timeseries", "CPU per GPU process",
              "CPU cores each process on a GPU uses (its own threads; its data-loader workers are listed "
              "on the Node dashboard). A process at its CPU quota while its GPU is starved is the "
              "bottleneck.",
              "short",
              [Target(f"sum without (mode) (rate(gpulse_process_cpu_seconds_total{{{NODE}}}"
                      "[$__rate_interval]))"
                      f"\n/ on (job, instance) group_left ()\n{host_clock()}\n"
                      "* on (job, instance, pid) group_left (comm)\n"
                      "(gpulse_process_info and on (job, instance, pid) gpulse_process_gpu_memory_bytes"
                      f"{{{SEL}}})",
                      "{{instance}} pid {{pid}} {{comm}}")],
              width=12, height=8, min=0, custom={"axisLabel": "CPU cores"}),
    ])
    rows = [
        process_rows,
        _owner_rows("Per Kubernetes namespace / pod", "namespace, pod", 'pod!=""', "{{namespace}}/{{pod}}",
                    "pod"),
        _owner_rows("Per Slurm job", "slurm_job", 'slurm_job!=""', "job {{slurm_job}}", "Slurm job"),
    ]
    return dashboard("gpulse-workloads", "gpulse / Workload efficiency",
                     "MFU, starvation and throttling per process, per Kubernetes pod and namespace, and per "
                     "Slurm job.", rows)


def build() -> dict[str, Json]:
    """File name -> dashboard JSON, in a stable order."""
    return {"gpulse-fleet.json": fleet(), "gpulse-node.json": node(), "gpulse-workloads.json": workloads()}


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write to (default: dashboards/)")
    args = parser.parse_args(argv)
    stale = []
    for name, board in build().items():
        path = args.out / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write(f"out of date (run python dashboards/build.py): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
