"""The shipped rule files: promtool's own checks and unit tests, that the unit tests cover
every alert both firing and not firing (and every recording rule), and that the
experiment's rules use only the contract's metrics and no release-specific names."""
import re

import pytest
import yaml

from harness import ROOT, promql_names, require_tool, run

RULES_DIR = ROOT / "grafana" / "rules"
RULES = RULES_DIR / "sms-app.rules.yml"
RULE_TESTS = RULES_DIR / "sms-app.rules.test.yml"
# issue 15: the experiment's figures and guards
EXPERIMENT_RULES = RULES_DIR / "sms-experiment.rules.yml"
EXPERIMENT_RULE_TESTS = RULES_DIR / "sms-experiment.rules.test.yml"
RULE_FILES = [(RULES, RULE_TESTS), (EXPERIMENT_RULES, EXPERIMENT_RULE_TESTS)]
BY_NAME = pytest.mark.parametrize("rules,tests", RULE_FILES, ids=lambda p: p.name)


def rules_of(path):
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts(path=RULES):
    return [r for r in rules_of(path) if "alert" in r]


def test_every_rule_file_is_tested():
    shipped = sorted(RULES_DIR.glob("*.rules.yml"))
    assert shipped == sorted(r for r, _ in RULE_FILES), "a new rule file needs its promtool tests here"


@BY_NAME
def test_promtool_check_rules(rules, tests):
    res = run([require_tool("promtool"), "check", "rules", rules])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout + res.stderr


@BY_NAME
def test_promtool_test_rules(rules, tests):
    res = run([require_tool("promtool"), "test", "rules", tests.name], cwd=RULES_DIR)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout + res.stderr


@BY_NAME
def test_every_alert_is_unit_tested_firing_and_not_firing(rules, tests):
    doc = yaml.safe_load(tests.read_text())
    assert doc["rule_files"] == [rules.name]
    firing, quiet = set(), set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {a["alert"] for a in alerts(rules)}
    assert names, f"{rules.name} has no alerts"
    assert names - firing == set(), f"alerts without a firing case: {names - firing}"
    assert names - quiet == set(), f"alerts without a not-firing case: {names - quiet}"


def test_every_experiment_recording_rule_is_unit_tested():
    doc = yaml.safe_load(EXPERIMENT_RULE_TESTS.read_text())
    tested = " ".join(t["expr"] for case in doc["tests"] for t in case.get("promql_expr_test", []))
    records = {r["record"] for r in rules_of(EXPERIMENT_RULES) if "record" in r}
    assert len(records) >= 8
    assert {r for r in records if r not in tested} == set()


@BY_NAME
def test_alerts_carry_severity_summary_and_description(rules, tests):
    for a in alerts(rules):
        assert a["labels"].get("severity") in {"critical", "warning", "info"}, a["alert"]
        assert a["annotations"].get("summary"), a["alert"]
        assert len(a["annotations"].get("description", "")) > 80, f"{a['alert']}: say what to do"


def test_high_request_rate_is_the_seeds_rule():
    (rule,) = [a for a in alerts() if a["alert"] == "HighRequestRate"]
    assert "sms_messages_classified_total" in rule["expr"]
    assert rule["expr"].strip().endswith("* 60 > 15"), rule["expr"]
    assert rule["for"] == "2m"


def test_experiment_rules_use_contract_metrics_and_labels_only():
    """The contract test of test_2 covers sms-app.rules.yml; this covers the experiment's
    file the same way (recorded names may be used by the file's own alerts), and that it
    selects by the services' labels, not by job or pod names that carry a release name."""
    from test_2_dashboards import BUILTIN, SCRAPE_LABELS, contract_metrics
    contract = dict(contract_metrics(), **BUILTIN)
    rules = rules_of(EXPERIMENT_RULES)
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        where = r.get("alert") or r.get("record")
        assert not re.search(r"\b(job|pod)\s*(=|!=|=~|!~)", r["expr"]), f"{where}: selects by job/pod"
        used = promql_names(r["expr"])
        assert used["metrics"], where
        for name, matchers in used["metrics"].items():
            if name in recorded:
                continue
            assert name in contract, f"{where}: {name} is not a metric of docs/contracts.md"
            for label, _, _ in matchers:
                assert label in contract[name] | SCRAPE_LABELS, f"{where}: {name} has no label {label!r}"
    assert "sms_shadow_comparisons_total" in contract and "sms_model_guesses_total" in contract
