"""The series the dashboards read, by name: the services' metrics as docs/contracts.md
("## Metrics") names them, and what the shipped rules (grafana/rules/) record from them.
The observability tests check every name and label in the generated JSON against both."""

# app service (:8080/metrics), every series labelled with the app's `version`
REQUESTS = "sms_requests_total"  # {version,method,route,status}
REQUEST_LATENCY = "sms_request_latency_seconds"  # histogram {version,method,route}
ACTIVE_REQUESTS = "sms_active_requests"  # gauge {version}
MESSAGES_CLASSIFIED = "sms_messages_classified_total"  # {version,result}
MODEL_CALLS = "sms_model_calls_total"  # {version,outcome}
CACHE_HITS = "sms_cache_hits_total"  # {version}
CACHE_MISSES = "sms_cache_misses_total"  # {version}
GUESSES = "sms_guesses_total"  # {version,agreement}
REFUSED_CONNECTIONS = "sms_refused_connections_total"  # {version}
APP_INFO = "sms_app_info"  # gauge {version,cache_enabled}

# model service (:9464/metrics), labelled with `version` and `source` (app = serving, shadow)
MODEL_PREDICTIONS = "sms_model_predictions_total"  # {version,source,result,protocol}
MODEL_INFERENCE = "sms_model_inference_seconds"  # histogram {version,source,protocol}
MODEL_INFLIGHT = "sms_model_inflight_requests"  # gauge {version,source}
MODEL_REQUESTS = "sms_model_requests_total"  # {version,source,code}
MODEL_REFUSED_CONNECTIONS = "sms_model_refused_connections_total"  # {version,source,listener}
MODEL_GUESSES = "sms_model_guesses_total"  # {version,source,agreement}
MODEL_INFO = "sms_model_info"  # gauge {version,source,model_name,data_sha256}
SHADOW_COMPARISONS = "sms_shadow_comparisons_total"  # {version,source,reference_version,outcome}
SHADOW_PROBABILITY_GAP = "sms_shadow_probability_gap"  # histogram {version,source,reference_version}

# Prometheus' own series
UP = "up"

# recorded by grafana/rules/sms-experiment.rules.yml (the verdict's inputs over the decision window)
ERROR_SHARE_1D = "namespace_version:sms_request_error_share:ratio_rate1d"
GUESS_AGREEMENT_1D = "namespace_version:sms_guess_agreement:ratio_rate1d"
MODEL_CALLS_PER_CLASSIFICATION_1D = "namespace_version:sms_model_calls_per_classification:ratio_rate1d"
REQUEST_LATENCY_P95_1D = "namespace_version:sms_request_latency_seconds:p95_rate1d"
SHADOW_AGREEMENT_1D = "namespace_version_reference_version:sms_shadow_agreement:ratio_rate1d"

# recorded by grafana/rules/sms-drift.rules.yml
SPAM_PROBABILITY_SHARE_1H = "namespace_version_le:sms_model_spam_probability_share:ratio_rate1h"
SPAM_PROBABILITY_REFERENCE = "namespace_version_le:sms_model_spam_probability_reference:share"
SPAM_PROBABILITY_PSI = {"1h": "namespace_version:sms_model_spam_probability_psi:rate1h",
                        "1d": "namespace_version:sms_model_spam_probability_psi:rate1d"}
INPUT_CHARS_PSI = {"1h": "namespace_version:sms_model_input_chars_psi:rate1h",
                   "1d": "namespace_version:sms_model_input_chars_psi:rate1d"}
SPAM_SHARE_SHIFT = {"1h": "namespace_version:sms_model_spam_share_shift:ratio_rate1h",
                    "1d": "namespace_version:sms_model_spam_share_shift:ratio_rate1d"}

# recorded by grafana/rules/sms-slo.rules.yml (Sloth, from grafana/slos/)
SLO_BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"
SLO_CURRENT_BURN_RATE = "slo:current_burn_rate:ratio"
SLO_PERIOD_BURN_RATE = "slo:period_burn_rate:ratio"
SLO_ERROR_BUDGET = "slo:error_budget:ratio"  # a constant per SLO, without namespace


def slo_error_ratio(window: str) -> str:
    """Sloth's SLI error ratio over one of its windows (5m, 30m, 1h, 2h, 6h, 1d, 3d, 30d)."""
    return f"slo:sli_error:ratio_rate{window}"
