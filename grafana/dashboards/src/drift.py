"""The prediction drift row, the same on the Experiment and the Shadow vs Stable dashboards:
per model version, live scores against the model card's held-out split, from the series
grafana/rules/sms-drift.rules.yml records."""
from __future__ import annotations

from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

import metrics as m
from promql import select
from shared import Row, grouped_bars, query, timeseries

# Population stability index: under 0.1 no shift, 0.1-0.2 moderate, above 0.2 significant.
PSI_STEPS = (("green", None), ("orange", 0.1), ("red", 0.2))


def labelled(series: str, kind: str) -> str:
    """The series with a label `kind` and a label `series` = "<version> <kind>": one bar per
    version and kind in each probability bucket."""
    return (f'label_join(label_replace({select(series)}, "kind", "{kind}", "", ""), '
            f'"series", " ", "version", "kind")')


def per_window(series: dict[str, str]) -> list:
    return [query(select(series[w]), f"{{{{version}}}} {w}") for w in ("1h", "1d")]


def psi(title: str, description: str, series: dict[str, str], height: int):
    return timeseries(title, description, "none", per_window(series), width=12, height=height,
                      thresholds=PSI_STEPS, threshold_style=GraphThresholdsStyleMode.DASHED)


def row() -> Row:
    return Row("Prediction drift: live scores against the model card's held-out split "
               "(grafana/rules/sms-drift.rules.yml)", [
        grouped_bars("Spam probability distribution: live (1h) vs reference",
                     "Share of messages per spam probability bucket (upper bound le) per model version: scored "
                     "live over the last hour (every source and protocol) next to the model card's held-out "
                     "split (the reference). Bars that differ are what the PSI sums up.",
                     "percentunit",
                     f"{labelled(m.SPAM_PROBABILITY_SHARE_1H, 'live 1h')}\nor\n"
                     f"{labelled(m.SPAM_PROBABILITY_REFERENCE, 'reference')}",
                     "{{version}} {{kind}} le {{le}}", rows="le", columns="series", width=12, height=9),
        psi("Score drift (PSI) per version",
            "Population stability index of the live spam probabilities against the model card's held-out "
            "split, over 1 hour and 1 day: under 0.1 no shift, 0.1-0.2 moderate, above 0.2 significant "
            "(PredictionDrift: above 0.2 for 30 minutes on 1 hour).", m.SPAM_PROBABILITY_PSI, height=9),
        timeseries("Spam share shift against reference",
                   "Share of spam answers per version minus the share of the held-out split the model labels "
                   "spam (points of share; 0 = as measured in training), over 1 hour and 1 day.",
                   "percentunit", per_window(m.SPAM_SHARE_SHIFT), width=12, min_value=None),
        psi("Input length drift (PSI) per version",
            "Population stability index of the live messages' lengths in characters against the held-out "
            "split's, over 1 hour and 1 day: a shift here with one in the scores says the messages changed, "
            "not the model.", m.INPUT_CHARS_PSI, height=8),
    ])
