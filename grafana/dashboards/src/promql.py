"""PromQL in the dashboards' one style: every selector restricted to the dashboard's
`$namespace`, every rate over Grafana's `$__rate_interval`."""

NAMESPACE = 'namespace="$namespace"'


def select(metric: str, *matchers: str) -> str:
    """`metric{namespace="$namespace", <matchers>}`."""
    return f"{metric}{{{', '.join((NAMESPACE, *matchers))}}}"


def rate(metric: str, *matchers: str) -> str:
    return f"rate({select(metric, *matchers)}[$__rate_interval])"


def sum_by(labels: str, expr: str) -> str:
    return f"sum by ({labels}) ({expr})"


def sum_rate(labels: str, metric: str, *matchers: str) -> str:
    """Per-second rate summed by `labels`, e.g. `version, source`."""
    return sum_by(labels, rate(metric, *matchers))


def share(labels: str, metric: str, part: str, *matchers: str) -> str:
    """The share of `metric`'s rate that also matches `part`, by `labels`: 0 (not no data)
    while nothing matches `part`, and no data while there is nothing at all."""
    total = sum_rate(labels, metric, *matchers)
    return f"({sum_rate(labels, metric, *matchers, part)} or {total} * 0) / {total}"


def quantile(q: float, labels: str, histogram: str, *matchers: str) -> str:
    """The q-quantile of a histogram by `labels` (`le` is added)."""
    return f"histogram_quantile({q:g}, {sum_rate(f'{labels}, le', histogram + '_bucket', *matchers)})"
