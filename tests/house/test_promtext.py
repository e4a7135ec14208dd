"""The one parser of the services' metrics pages (tooling/smsdev/promtext.py), which the
bench and the suites read every counter through."""

from __future__ import annotations

import math

import pytest

from smsdev import promtext

# As the services write it (the app's page, cut), with what the format also allows: an
# escaped label value holding a quote, a brace, a backslash and a newline, a trailing
# comma, a timestamp, +Inf and NaN.
PAGE = r"""# HELP sms_requests_total Requests answered, by route and status.
# TYPE sms_requests_total counter
sms_requests_total{method="POST",route="/sms/",status="200",version="v1"} 41
sms_requests_total{method="POST",route="/sms/",status="503",version="v1"} 2
sms_requests_total{method="GET",route="/readyz",status="200",version="v1"} 7
sms_refused_connections_total{version="v1"} 3

sms_request_latency_seconds_bucket{method="POST",route="/sms/",version="v1",le="+Inf"} 43
sms_odd{text="say \"hi\" {or} \\ not\nthis",} 1.5 1700000000000
sms_gauge NaN
sms_limit +Inf
# EOF
"""


def test_samples_are_read_with_their_labels_unescaped():
    got = list(promtext.samples(PAGE))
    assert [n for n, _, _ in got] == ["sms_requests_total"] * 3 + [
        "sms_refused_connections_total", "sms_request_latency_seconds_bucket", "sms_odd", "sms_gauge", "sms_limit"]
    assert got[0][1] == {"method": "POST", "route": "/sms/", "status": "200", "version": "v1"}
    assert got[5][1:] == ({"text": 'say "hi" {or} \\ not\nthis'}, 1.5)
    assert got[4][1]["le"] == "+Inf"
    assert math.isnan(got[6][2]) and got[7][2] == math.inf


def test_metric_sums_the_matching_samples_and_by_label_groups_them():
    assert promtext.metric(PAGE, "sms_requests_total") == 50
    assert promtext.metric(PAGE, "sms_requests_total", route="/sms/") == 43
    assert promtext.metric(PAGE, "sms_requests_total", route="/sms/", status="503") == 2
    assert promtext.metric(PAGE, "sms_refused_connections_total") == 3
    assert promtext.metric(PAGE, "sms_not_there") == 0
    assert promtext.by_label(PAGE, "sms_requests_total", "status", route="/sms/") == {"200": 41, "503": 2}
    assert promtext.by_label(PAGE, "sms_requests_total", "route") == {"/sms/": 43, "/readyz": 7}


@pytest.mark.parametrize("line", [
    'sms_x{status=200} 1',                     # an unquoted label value
    'sms_x{a="1" b="2"} 1',                    # labels without a comma between them
    'sms_x{a="1"} 1 2 3',                      # more than a value and a timestamp
    'sms_x{a="1"} one',                        # a value that is not a number
    'sms_x{a="1"',                             # cut off
    '{a="1"} 1',                               # no name
])
def test_a_line_that_is_not_a_sample_is_an_error_not_a_zero(line):
    with pytest.raises(promtext.ParseError) as err:
        list(promtext.samples(PAGE + line + "\n"))
    assert line in str(err.value)
