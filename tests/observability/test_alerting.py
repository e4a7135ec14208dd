"""Alert e-mail end to end: real Prometheus -> real Alertmanager -> an SMTP sink (aiosmtpd).

The rule under test is generated from the shipped rules file: same expression and
threshold, only `for:` shortened (and a 1 s evaluation interval), so the test does not wait
two minutes. The shipped file is not changed."""
import copy
import email
import html
import re
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import (NAMESPACE, ROOT, Load, ProcGroup, Prometheus, chart_alertmanager_routing, free_port,
                     poll, require_tool, scrape_config, wait_http_ok)

RULES = ROOT / "grafana" / "rules" / "sms-app.rules.yml"
TEST_FOR = "5s"


def test_rule_copy(tmp_path: Path) -> Path:
    """The shipped HighRequestRate with a short `for:`, nothing else changed."""
    doc = yaml.safe_load(RULES.read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "HighRequestRate"]
    short = copy.deepcopy(rule)
    short["for"] = TEST_FOR
    path = tmp_path / "high-request-rate.test-copy.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "sms-app.traffic.test-copy",
                                                "interval": "1s", "rules": [short]}]}))
    assert short["expr"] == rule["expr"] and short["labels"] == rule["labels"]
    return path


test_rule_copy.__test__ = False  # a helper, not a test


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def alerting(stack, log_dir, tmp_path):
    group = ProcGroup(log_dir)
    try:
        smtp_port = free_port()
        smtp = group.start("smtp-sink", [Path(sys.executable).parent / "aiosmtpd", "-n",
                                         "-l", f"127.0.0.1:{smtp_port}"],
                           env={"PYTHONUNBUFFERED": "1"})
        poll(lambda: smtp.check_alive() or port_open(smtp_port), 30, what="the SMTP sink")

        am_port = free_port()
        am_cfg = tmp_path / "alertmanager.yml"
        am_cfg.write_text(yaml.safe_dump({
            "global": {"smtp_smarthost": f"127.0.0.1:{smtp_port}",
                       "smtp_from": "alertmanager@sms-app.test", "smtp_require_tls": False},
            # routed as the chart's AlertmanagerConfig routes (helm/templates/alertmanagerconfig.yaml)
            **chart_alertmanager_routing(group_wait="1s", group_interval="5s", repeat_interval="1h"),
            "receivers": [{"name": "email", "email_configs": [
                {"to": "oncall@sms-app.test", "send_resolved": True}]}],
        }))
        am_bin = require_tool("prometheus-alertmanager")
        am = group.start("alertmanager", [am_bin, f"--config.file={am_cfg}",
                                          f"--storage.path={tmp_path / 'am-data'}",
                                          f"--web.listen-address=127.0.0.1:{am_port}",
                                          "--cluster.listen-address="])
        wait_http_ok(f"http://127.0.0.1:{am_port}/-/ready", am)

        apps = [t for t in stack.targets() if t["job"] == "sms-app-app"]
        config = scrape_config(apps)
        config["rule_files"] = [str(test_rule_copy(tmp_path))]
        config["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
        # resend firing alerts every 2 s (default 1 m): the first send can go out before
        # the Alertmanager is discovered
        prom = Prometheus(group, tmp_path / "prometheus", config, name="prometheus-alerting",
                          extra_args=("--rules.alert.resend-delay=2s",))
        poll(lambda: prom.targets_up(len(apps)), 60, what="app targets up")
        yield {"prom": prom, "smtp": smtp, "am_port": am_port}
    finally:
        group.stop_all()


def mails(smtp_log: str) -> list[email.message.Message]:
    """The messages aiosmtpd's Debugging handler printed."""
    out = []
    for chunk in re.findall(r"-+ MESSAGE FOLLOWS -+\n(.*?)\n-+ END MESSAGE -+", smtp_log, re.S):
        chunk = re.sub(r"\Amail options: .*\n+", "", chunk)
        out.append(email.message_from_string(chunk))
    return out


def subjects(smtp_log: str) -> list[str]:
    return [m["Subject"] for m in mails(smtp_log)]


def text_of(msg: email.message.Message) -> str:
    """The readable text of the mail (Alertmanager's default e-mail is HTML only)."""
    parts = [p for p in msg.walk() if p.get_content_type() in ("text/plain", "text/html")]
    assert parts, "the e-mail has no text part"
    body = parts[0].get_payload(decode=True).decode()
    body = re.sub(r"(?s)<(style|head)\b.*?</\1>", " ", body)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_high_request_rate_sends_email(stack, alerting):
    prom, smtp = alerting["prom"], alerting["smtp"]

    def state():
        alerts = prom.api("alerts")["alerts"]
        return {a["labels"]["alertname"]: a["state"] for a in alerts}

    # before: no traffic, the counters are flat: the alert is inactive and no mail went out
    poll(lambda: prom.query('count(count_over_time(up{job="sms-app-app"}[1m]) >= 3) == 2'), 30,
         what="three scrapes of both apps")
    time.sleep(2)  # and a few more 1 s rule evaluations over them
    assert "HighRequestRate" not in state(), state()
    assert subjects(smtp.log()) == []

    # drive well over 15 classifications a minute (bounded: at most 90 s / 2,000 calls)
    def one():
        r = stack.classify("v1", "Are we still on for lunch tomorrow at noon?")
        assert r.status_code == 200, r.text
    with Load(one, pause=0.1, max_seconds=90, max_calls=2000) as load:
        rate = poll(lambda: [s for s in prom.query(
            'sum by (namespace) (rate(sms_messages_classified_total[1m])) * 60 > 15')], 30,
            what="more than 15 classifications a minute")
        assert rate[0]["metric"]["namespace"] == NAMESPACE
        poll(lambda: state().get("HighRequestRate") == "firing", 45,
             what="HighRequestRate to fire")
        mails_about = poll(lambda: [s for s in subjects(smtp.log()) if "HighRequestRate" in s], 45,
                     what="an e-mail about HighRequestRate at the SMTP sink")
    assert not load.errors, load.errors
    print("e-mail subject:", mails_about[0])
    assert mails_about[0].startswith("[FIRING:1] HighRequestRate"), mails_about
    (msg,) = [m for m in mails(smtp.log()) if m["Subject"] == mails_about[0]][:1]
    assert msg["To"] == "oncall@sms-app.test"
    body = text_of(msg)
    assert "More than 15 SMS classifications a minute in sms-app" in body, body
    assert "namespace = sms-app" in body, body
