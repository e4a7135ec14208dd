"""What the three dashboards share: the data source and the `datasource` / `namespace`
variables, one look for every time series (table legend, multi tooltip, unit, thresholds),
the Prometheus query, and the dashboard itself with its rows laid out on Grafana's grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from string import ascii_uppercase
from typing import Sequence, Union

from grafana_foundation_sdk.builders import barchart as barchart_builder
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

import metrics

# Every panel and query reads the Prometheus the `datasource` variable picks.
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
DEFAULT_NAMESPACE = "sms-app"
# The namespaces where an app or a model runs (each exports its info gauge, always 1).
NAMESPACE_QUERY = f'label_values({{__name__=~"{metrics.APP_INFO}|{metrics.MODEL_INFO}"}}, namespace)'
TAG = "sms-app"

Panel = Union[timeseries_builder.Panel, barchart_builder.Panel]
# Threshold steps: (colour, from value); the first step's value is None (from -infinity).
Steps = Sequence[tuple[str, Union[float, None]]]
NO_THRESHOLDS: Steps = (("green", None),)


def query(expr: str, legend: str) -> prometheus.Dataquery:
    """A range query as written in the code editor, with its legend."""
    return (prometheus.Dataquery().datasource(DATASOURCE).editor_mode(prometheus_model.QueryEditorMode.CODE)
            .expr(expr).legend_format(legend).range())


def _targets(panel: Panel, queries: Sequence[prometheus.Dataquery]) -> None:
    for ref_id, q in zip(ascii_uppercase, queries):
        panel.with_target(q.ref_id(ref_id))


def _thresholds(steps: Steps) -> dash.ThresholdsConfig:
    return (dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(color=color, value=value) for color, value in steps]))


def timeseries(title: str, description: str, unit: str, queries: Sequence[prometheus.Dataquery], *,
               width: int, height: int = 8, thresholds: Steps = NO_THRESHOLDS,
               threshold_style: common.GraphThresholdsStyleMode = common.GraphThresholdsStyleMode.OFF,
               min_value: float | None = 0, max_value: float | None = None,
               decimals: float | None = None) -> timeseries_builder.Panel:
    """A line graph with the legend as a table (mean, last, max) and a shared tooltip.
    `thresholds` with a `threshold_style` such as LINE_AND_AREA draws an alert's limit."""
    panel = (timeseries_builder.Panel().title(title).description(description).datasource(DATASOURCE)
             .span(width).height(height).unit(unit)
             .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
             .thresholds(_thresholds(thresholds))
             .thresholds_style(common_builder.GraphThresholdsStyleConfig().mode(threshold_style))
             .draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
             .show_points(common.VisibilityMode.NEVER).span_nulls(False)
             .legend(common_builder.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.TABLE).placement(common.LegendPlacement.BOTTOM)
                     .calcs(["mean", "lastNotNull", "max"]))
             .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if min_value is not None:
        panel.min(min_value)
    if max_value is not None:
        panel.max(max_value)
    if decimals is not None:
        panel.decimals(decimals)
    _targets(panel, queries)
    return panel


def grouped_bars(title: str, description: str, unit: str, expr: str, legend: str, *, rows: str,
                 columns: str, width: int, height: int) -> barchart_builder.Panel:
    """Bars from one instant query as a table: a group per value of the label `rows`, a bar
    per value of the label `columns` in it (Grafana's grouping-to-matrix transformation)."""
    panel = (barchart_builder.Panel().title(title).description(description).datasource(DATASOURCE)
             .span(width).height(height).unit(unit).min(0)
             .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
             .thresholds(_thresholds(NO_THRESHOLDS))
             .line_width(1).fill_opacity(80)
             .orientation(common.VizOrientation.VERTICAL).show_value(common.VisibilityMode.NEVER)
             .stacking(common.StackingMode.NONE).group_width(0.8).bar_width(0.9).x_tick_label_rotation(0)
             .legend(common_builder.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM)
                     .calcs([]))
             .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.NONE))
             .with_transformation(model.DataTransformerConfig(
                 id_val="groupingToMatrix",
                 options={"columnField": columns, "rowField": rows, "valueField": "Value", "emptyValue": "zero"})))
    table = (prometheus.Dataquery().datasource(DATASOURCE).editor_mode(prometheus_model.QueryEditorMode.CODE)
             .expr(expr).legend_format(legend).instant().format(prometheus_model.PromQueryFormat.TABLE))
    _targets(panel, [table])
    return panel


@dataclass
class Row:
    """A row's title and its panels, left to right, wrapping at Grafana's 24 columns."""
    title: str
    panels: list[Panel] = field(default_factory=list)


def _variables() -> list:
    datasource = (dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
                  .hide(model.VariableHide.DONT_HIDE)
                  .include_all(False).multi(False).regex(""))
    namespace = (dash.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
                 .query({"qryType": 1, "query": NAMESPACE_QUERY,
                         "refId": "PrometheusVariableQueryEditor-VariableQuery"})
                 .current(model.VariableOption(selected=True, text=DEFAULT_NAMESPACE, value=DEFAULT_NAMESPACE))
                 .hide(model.VariableHide.DONT_HIDE).include_all(False).multi(False).options([])
                 .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).regex("")
                 .sort(model.VariableSort.ALPHABETICAL_ASC))
    return [datasource, namespace]


def dashboard(uid: str, title: str, description: str, rows: Sequence[Row]) -> dash.Dashboard:
    """The dashboard: last hour, refreshed every 30 s, shared crosshair, a link to the other
    SMS app dashboards, both variables, and the rows (open, so their panels sit on the
    dashboard itself) with panel ids 1, 2, ... in reading order."""
    board = (dash.Dashboard(title).uid(uid).description(description).tags([TAG]).editable()
             .tooltip(model.DashboardCursorSync.CROSSHAIR).time("now-1h", "now").timezone("browser")
             .refresh("30s").fiscal_year_start_month(0).live_now(False)
             .week_start("").version(1)
             .link(dash.DashboardLink("SMS app dashboards").type(model.DashboardLinkType.DASHBOARDS)
                   .tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True))
             .annotation(dash.AnnotationQuery().name("Annotations & Alerts").built_in(1)
                         .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                         .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard"))
             .variables(_variables()))
    ids = count(1)
    for row in rows:
        board.with_row(dash.Row(row.title).id(next(ids)).collapsed(False))
        for panel in row.panels:
            board.with_panel(panel.id(next(ids)))
    return board
