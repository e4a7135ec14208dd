"""The shipped alert rules: promtool's own checks and unit tests, and that the unit tests
cover every alert both firing and not firing."""
import yaml

from harness import ROOT, require_tool, run

RULES_DIR = ROOT / "grafana" / "rules"
RULES = RULES_DIR / "sms-app.rules.yml"
RULE_TESTS = RULES_DIR / "sms-app.rules.test.yml"


def alerts():
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules():
    res = run([require_tool("promtool"), "check", "rules", RULES])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_promtool_test_rules():
    res = run([require_tool("promtool"), "test", "rules", RULE_TESTS.name], cwd=RULES_DIR)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing, quiet = set(), set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {a["alert"] for a in alerts()}
    assert "HighRequestRate" in names
    assert names - firing == set(), f"alerts without a firing case: {names - firing}"
    assert names - quiet == set(), f"alerts without a not-firing case: {names - quiet}"


def test_alerts_carry_severity_summary_and_description():
    for a in alerts():
        assert a["labels"].get("severity") in {"critical", "warning", "info"}, a["alert"]
        assert a["annotations"].get("summary"), a["alert"]
        assert len(a["annotations"].get("description", "")) > 80, f"{a['alert']}: say what to do"


def test_high_request_rate_is_the_seeds_rule():
    (rule,) = [a for a in alerts() if a["alert"] == "HighRequestRate"]
    assert "sms_messages_classified_total" in rule["expr"]
    assert rule["expr"].strip().endswith("* 60 > 15"), rule["expr"]
    assert rule["for"] == "2m"
