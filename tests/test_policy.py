"""Policies and waivers: loading, every rule kind, waivers, rendering. Pure: no server."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from regctl import escape
from regctl.errors import InputError
from regctl.policy.comparison import alias_comparison
from regctl.policy.evaluation import evaluate
from regctl.policy.loading import load_policies
from regctl.policy.values import PolicyReport, PolicySet, Result, Subject
from regctl.render.policy import render_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"
TODAY = dt.date(2025, 10, 10)
MODEL = "btcusdt-1h-inference-7d-logret"
RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"

LGBM_PARAMS = {
    "model_type": "lgbm",
    "target": "y_logret_168h",
    "objective": "huber",
    "primary_metric": "rmse",
    "dataset_slug": "BINANCE_BTCUSDT.P__60",
    "feature_list_id": "binance_btcusdt_p60_default",
    "hyperparam_tuning": "1",
    "run_dir": f"/models/BINANCE_BTCUSDT.P, 60/{RUN}",
    "model_path": f"/models/BINANCE_BTCUSDT.P, 60/{RUN}/model.txt",
}
LGBM_METRICS = {
    "rmse_train": 0.0548,
    "rmse_val": 0.0669,
    "rmse_test": 0.0448,
    "corr_train": 0.41,
    "corr_val": 0.315,
    "corr_test": 0.29,
}


def subject(**changes: object) -> Subject:
    base = Subject(
        model=MODEL,
        run=RUN,
        run_id="4f1c0d9a2b7e4c61a3d5e8f90b1c2d3e",
        version=None,
        aliases=("Production",),
        description="Huber LGBM; rmse_test 0.0448.",
        params=dict(LGBM_PARAMS),
        metrics=dict(LGBM_METRICS),
        source="run_dir",
        location="manifests/btc.yaml:9",
        digest=DIGEST,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def write(repo: Path, name: str, body: str) -> Path:
    path = repo / "policies" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def policy(
    tmp_path: Path, rules: str, match: str = "{params: {model_type: lgbm}}", extra: str = ""
) -> PolicySet:
    """One policy `p` with the given rules (YAML, indented by 2 under `rules:`)."""
    body = (
        "apiVersion: regctl/v1\nkind: Policy\nname: p\n"
        f"match: {match}\nrules:\n{textwrap.indent(textwrap.dedent(rules).strip(), '  ')}\n"
    )
    write(tmp_path, "p.yaml", body + extra)
    return load_policies(tmp_path)


def run(
    ps: PolicySet,
    *subjects: Subject,
    incumbents: Mapping[tuple[str, str], Subject] | None = None,
    today: dt.date = TODAY,
) -> PolicyReport:
    return evaluate(ps, subjects, incumbents or {}, today)


def only(report: PolicyReport) -> Result:
    assert len(report.results) == 1, report.results
    return report.results[0]


def names_everything(r: Result, observed: str, bound: str) -> None:
    """The message names the model, run, policy, rule, observed value and bound."""
    for part in (r.model, r.run, r.policy, r.rule, observed, bound):
        assert part in r.message, (part, r.message)
    assert observed in r.observed
    assert bound in r.bound
    assert "\n" not in r.message


def load_errors(tmp_path: Path) -> list[str]:
    with pytest.raises(InputError) as info:
        load_policies(tmp_path)
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- require_*


def test_require_params_pass_fail_and_no_data(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: need, require_params: [model_type, target, objective]}")
    ok = only(run(ps, subject()))
    assert ok.outcome == "pass"
    names_everything(ok, "all 3 present", "model_type, target, objective")

    params = {k: v for k, v in LGBM_PARAMS.items() if k not in ("target", "objective")}
    bad = only(run(ps, subject(params=params)))
    assert bad.outcome == "deny"
    names_everything(bad, "missing target, objective", "require_params model_type")

    none = only(run(ps, subject(params=None)))
    assert none.outcome == "deny"
    names_everything(none, "no run data", "require_params model_type")


def test_require_metrics_pass_fail_and_no_data(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: need, require_metrics: [rmse_test, corr_val]}")
    assert only(run(ps, subject())).outcome == "pass"
    metrics = {k: v for k, v in LGBM_METRICS.items() if k != "rmse_test"}
    bad = only(run(ps, subject(metrics=metrics)))
    assert bad.outcome == "deny"
    names_everything(bad, "missing rmse_test", "require_metrics rmse_test, corr_val")
    none = only(run(ps, subject(metrics=None)))
    assert none.outcome == "deny"
    names_everything(none, "no run data", "require_metrics rmse_test")


# --------------------------------------------------------------------------- run_name

LGBM_NAME = r"- {name: naming, run_name: '^run_\d{8}_\d{6}_lgbm_{target}_{objective}$'}"


def test_run_name_placeholders_pass(tmp_path: Path) -> None:
    ps = policy(tmp_path, LGBM_NAME)
    r = only(run(ps, subject()))
    assert r.outcome == "pass"
    names_everything(r, RUN, r"^run_\d{8}_\d{6}_lgbm_y_logret_168h_huber$")


def test_run_name_quantifier_stays_a_quantifier(tmp_path: Path) -> None:
    ps = policy(tmp_path, LGBM_NAME)
    seven_digits = "run_2025100_145809_lgbm_y_logret_168h_huber"
    r = only(run(ps, subject(run=seven_digits)))
    assert r.outcome == "deny"
    names_everything(r, seven_digits, r"\d{8}")


def test_run_name_param_value_is_escaped(tmp_path: Path) -> None:
    ps = policy(tmp_path, LGBM_NAME)
    params = {**LGBM_PARAMS, "target": "y.ret"}
    good = only(run(ps, subject(run="run_20251008_145809_lgbm_y.ret_huber", params=params)))
    assert good.outcome == "pass"
    assert r"y\.ret" in good.bound
    # unescaped, `.` would match any character
    bad = only(run(ps, subject(run="run_20251008_145809_lgbm_yXret_huber", params=params)))
    assert bad.outcome == "deny"
    names_everything(bad, "run_20251008_145809_lgbm_yXret_huber", r"y\.ret")


def test_run_name_escaped_brace_is_not_a_placeholder(tmp_path: Path) -> None:
    ps = policy(tmp_path, r"- {name: naming, run_name: '^a\{target}$'}")
    assert only(run(ps, subject(run="a{target}"))).outcome == "pass"
    assert only(run(ps, subject(run="ay_logret_168h"))).outcome == "deny"


def test_run_name_missing_placeholder_param_fails_closed(tmp_path: Path) -> None:
    ps = policy(tmp_path, LGBM_NAME)
    params = {k: v for k, v in LGBM_PARAMS.items() if k != "objective"}
    r = only(run(ps, subject(params=params)))
    assert r.outcome == "deny"
    names_everything(r, "param objective missing", "{objective}")
    none = only(run(ps, subject(params=None)))
    assert none.outcome == "deny"
    names_everything(none, "no run data", "{target}")


def test_run_name_without_placeholders_needs_no_params(tmp_path: Path) -> None:
    ps = policy(tmp_path, r"- {name: naming, run_name: '^run_hmm_\d{8}_\d{6}$'}")
    assert only(run(ps, subject(run="run_hmm_20251009_105640", params=None))).outcome == "pass"


# --------------------------------------------------------------------------- metrics


def test_metric_bounds_pass_and_fail(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: bar, metrics: {rmse_test: {max: 0.06}, corr_val: {min: 0.2}}}")
    report = run(ps, subject())
    assert [(r.check, r.outcome) for r in report.results] == [
        ("rmse_test", "pass"),
        ("corr_val", "pass"),
    ]
    report = run(ps, subject(metrics={**LGBM_METRICS, "rmse_test": 0.071, "corr_val": 0.1}))
    high, low = report.results
    assert high.outcome == low.outcome == "deny"
    names_everything(high, "0.071", "max 0.06")
    assert "above the maximum" in high.message
    names_everything(low, "0.1", "min 0.2")
    assert "below the minimum" in low.message
    assert report.exit_code == 3


def test_metric_bound_is_inclusive_and_nan_never_passes(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: bar, metrics: {rmse_test: {min: 0.01, max: 0.06}}}")
    assert only(run(ps, subject(metrics={"rmse_test": 0.06}))).outcome == "pass"
    assert only(run(ps, subject(metrics={"rmse_test": 0.01 + 0.05}))).outcome == "pass"
    r = only(run(ps, subject(metrics={"rmse_test": math.nan})))
    assert r.outcome == "deny"
    names_everything(r, "NaN", "min 0.01, max 0.06")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-math.inf, "-Infinity"),
        (math.inf, "+Infinity"),
        (-sys.float_info.max, "-1.7976931348623157e+308 (MLflow's stand-in for -Infinity)"),
        (sys.float_info.max, "1.7976931348623157e+308 (MLflow's stand-in for +Infinity)"),
    ],
)
def test_infinities_fail_every_bound_and_are_named(
    tmp_path: Path, value: float, shown: str
) -> None:
    """-Infinity is below any max, but it is no rmse: every bound fails, naming the value."""
    for bound in ("{max: 0.06}", "{min: -1000000}", "{min: 0.01, max: 0.06}"):
        ps = policy(tmp_path, "- {name: bar, metrics: {rmse_test: " + bound + "}}")
        r = only(run(ps, subject(metrics={"rmse_test": value})))
        assert r.outcome == "deny", bound
        assert f"rmse_test is {shown}, not a finite number" in r.message


def test_metric_missing_and_no_data(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: bar, metrics: {rmse_test: {max: 0.06}}}")
    r = only(run(ps, subject(metrics={"rmse_val": 0.01})))
    assert r.outcome == "deny"
    assert "rmse_test is missing" in r.message
    names_everything(r, "missing", "rmse_test max 0.06")
    r = only(run(ps, subject(metrics=None)))
    assert r.outcome == "deny"
    names_everything(r, "no run data", "rmse_test max 0.06")


# --------------------------------------------------------------------------- compare_to

NO_REGRESSION = """
- name: no-regression
  aliases: [Production]
  compare_to: Production
  metrics: {rmse_test: {max_increase: 5%}}
"""


def incumbent(**changes: object) -> Subject:
    base = subject(
        run="run_20250901_120000_lgbm_y_logret_168h_huber",
        run_id="00000000000000000000000000000001",
        version=3,
        metrics={**LGBM_METRICS, "rmse_test": 0.0440},
        source="mlflow",
        location="",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_compare_to_within_and_beyond_percent(tmp_path: Path) -> None:
    ps = policy(tmp_path, NO_REGRESSION)
    holders = {(MODEL, "Production"): incumbent()}
    ok = only(run(ps, subject(metrics={"rmse_test": 0.0460}), incumbents=holders))
    assert ok.outcome == "pass"  # +4.5%
    bad = only(run(ps, subject(metrics={"rmse_test": 0.0470}), incumbents=holders))
    assert bad.outcome == "deny"  # +6.8%
    names_everything(bad, "0.047 vs 0.044", "max_increase 5%")
    assert "+6.82%" in bad.observed
    assert "Production v3" in bad.message


def test_compare_to_absolute_decrease_with_callable_lookup(tmp_path: Path) -> None:
    ps = policy(
        tmp_path,
        """
        - name: auc-kept
          compare_to: Production
          metrics: {auc_test: {max_decrease: 0.01}}
        """,
    )
    holder = incumbent(metrics={"auc_test": 0.60})
    asked: list[tuple[str, str]] = []

    def lookup(model: str, alias: str) -> Subject | None:
        asked.append((model, alias))
        return holder

    ok = evaluate(ps, [subject(metrics={"auc_test": 0.595})], lookup, TODAY)
    assert only(ok).outcome == "pass"
    bad = only(evaluate(ps, [subject(metrics={"auc_test": 0.58})], lookup, TODAY))
    assert bad.outcome == "deny"
    names_everything(bad, "0.58 vs 0.6", "max_decrease 0.01")
    assert asked == [(MODEL, "Production")] * 2


def test_compare_to_no_incumbent_and_same_run_pass(tmp_path: Path) -> None:
    ps = policy(tmp_path, NO_REGRESSION)
    r = only(run(ps, subject(metrics={"rmse_test": 9.0})))
    assert r.outcome == "pass"
    names_everything(r, "no incumbent", "compare_to Production")
    same = incumbent(run=RUN, run_id=subject().run_id)
    r = only(run(ps, subject(metrics={"rmse_test": 9.0}), incumbents={(MODEL, "Production"): same}))
    assert r.outcome == "pass"
    names_everything(r, "is the incumbent", "compare_to Production")


def test_compare_to_missing_data_fails_closed(tmp_path: Path) -> None:
    ps = policy(tmp_path, NO_REGRESSION)
    holders = {(MODEL, "Production"): incumbent()}
    r = only(run(ps, subject(metrics={"rmse_val": 0.1}), incumbents=holders))
    assert r.outcome == "deny"
    assert "rmse_test is missing" in r.message
    names_everything(r, "missing", "max_increase 5%")
    r = only(run(ps, subject(metrics=None), incumbents=holders))
    names_everything(r, "no run data", "max_increase 5%")
    assert r.outcome == "deny"
    holders = {(MODEL, "Production"): incumbent(metrics={})}
    r = only(run(ps, subject(), incumbents=holders))
    assert r.outcome == "deny"
    names_everything(r, "incumbent value missing", "max_increase 5%")


def test_compare_to_percent_of_negative_metric(tmp_path: Path) -> None:
    ps = policy(
        tmp_path,
        """
        - name: ll
          compare_to: Production
          metrics: {test_ll: {max_decrease: 2%}}
        """,
    )
    holders = {(MODEL, "Production"): incumbent(metrics={"test_ll": -100.0})}
    assert only(run(ps, subject(metrics={"test_ll": -101.5}), incumbents=holders)).outcome == (
        "pass"
    )
    assert only(run(ps, subject(metrics={"test_ll": -102.5}), incumbents=holders)).outcome == (
        "deny"
    )


# --------------------------------------------------------------------------- other kinds


def test_require_description_warns(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: described, severity: warn, require_description: true}")
    assert only(run(ps, subject())).outcome == "pass"
    for missing in (None, "   "):
        report = run(ps, subject(description=missing))
        r = only(report)
        assert r.outcome == "warn"
        names_everything(r, "no description", "require_description")
        assert report.warned == (r,)
        assert report.exit_code == 0


def test_allowed_aliases(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: aliases, allowed_aliases: [Staging, Production]}")
    assert only(run(ps, subject(aliases=("Staging",)))).outcome == "pass"
    assert only(run(ps, subject(aliases=()))).outcome == "pass"
    r = only(run(ps, subject(aliases=("Production", "Canary"))))
    assert r.outcome == "deny"
    names_everything(r, "aliases Production, Canary", "allowed_aliases Staging, Production")
    assert "Canary is not allowed" in r.message
    # MLflow compares alias names exactly
    assert only(run(ps, subject(aliases=("production",)))).outcome == "deny"


def test_allowed_params(tmp_path: Path) -> None:
    ps = policy(
        tmp_path, "- {name: criterion, allowed_params: {primary_metric: [bic, icl]}}", match="{}"
    )
    hmm = {"primary_metric": "bic"}
    assert only(run(ps, subject(params=hmm))).outcome == "pass"
    r = only(run(ps, subject(params={"primary_metric": "aic"})))
    assert r.outcome == "deny"
    names_everything(r, "primary_metric aic", "primary_metric one of bic, icl")
    r = only(run(ps, subject(params={})))
    assert r.outcome == "deny"
    names_everything(r, "missing", "primary_metric one of bic, icl")
    r = only(run(ps, subject(params=None)))
    names_everything(r, "no run data", "primary_metric one of bic, icl")


def test_alias_scope(tmp_path: Path) -> None:
    ps = policy(tmp_path, "- {name: bar, aliases: [Production], metrics: {rmse_test: {max: 0}}}")
    assert run(ps, subject(aliases=("Staging",))).results == ()
    assert only(run(ps, subject(aliases=("Production",)))).outcome == "deny"
    # scoping is case-insensitive, so a differently cased alias cannot dodge the bar
    assert only(run(ps, subject(aliases=("production",)))).outcome == "deny"


def test_match_selects_versions_and_fails_closed_without_params(tmp_path: Path) -> None:
    ps = policy(
        tmp_path,
        "- {name: need, require_metrics: [bic_final]}",
        match="{params: {model_type: [hmm, hmm2], primary_metric: bic}}",
    )
    assert run(ps, subject()).results == ()  # an lgbm run is not judged
    hmm = {"model_type": "hmm2", "primary_metric": "bic"}
    assert only(run(ps, subject(params=hmm, metrics={"bic_final": 1.0}))).outcome == "pass"
    r = only(run(ps, subject(params=None, metrics=None)))
    assert r.outcome == "deny"
    assert "no run data" in r.message


# --------------------------------------------------------------------------- waivers

WAIVER_TEXT = """
---
apiVersion: regctl/v1
kind: Waiver
policy: p
rule: bar
model: {model}
{binding}
reason: Accepted by the risk review of 2025-10-09.
expires: {expires}
"""
DIGEST = "sha256:" + "ab" * 32


class _Waiver:
    """`WAIVER.format(model=, run=, expires=)`: a waiver bound by run name + DIGEST, or by
    `run_id` when `run` is a run id (32 hex digits)."""

    @staticmethod
    def format(*, model: str, run: str, expires: str, digest: str = DIGEST) -> str:
        if re.fullmatch(r"[0-9a-f]{32}", run):
            binding = f"run_id: {run}"
        else:
            binding = f"run: {json.dumps(run)}\ndigest: {digest}"
        return WAIVER_TEXT.format(model=model, binding=binding, expires=expires)


WAIVER = _Waiver()
BAR = "- {name: bar, metrics: {rmse_test: {max: 0.01}}}"


def test_waiver_valid_is_reported_not_hidden(tmp_path: Path) -> None:
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run=RUN, expires="2026-12-31"))
    report = run(ps, subject())
    r = only(report)
    assert r.outcome == "waived"
    assert report.waived == (r,)
    assert report.exit_code == 0
    assert r.waiver_expires == dt.date(2026, 12, 31)
    assert "waived until 2026-12-31: Accepted by the risk review" in r.message
    names_everything(r, "0.0448", "max 0.01")


def test_waiver_holds_through_its_last_day_and_names_runs_by_id(tmp_path: Path) -> None:
    run_id = subject().run_id
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run=run_id, expires="2025-10-10"))
    assert only(run(ps, subject())).outcome == "waived"
    assert only(run(ps, subject(), today=dt.date(2025, 10, 11))).outcome == "expired-waiver"


def test_waiver_expired_is_a_deny(tmp_path: Path) -> None:
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run=RUN, expires="2025-01-01"))
    report = run(ps, subject())
    r = only(report)
    assert r.outcome == "expired-waiver"
    assert report.denied == (r,)
    assert report.exit_code == 3
    assert "waiver expired on 2025-01-01" in r.message
    names_everything(r, "0.0448", "max 0.01")


def test_waiver_for_another_run_does_not_apply(tmp_path: Path) -> None:
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run="other", expires="2026-12-31"))
    assert only(run(ps, subject())).outcome == "deny"


def test_waiver_expired_on_warn_rule_stays_a_warning(tmp_path: Path) -> None:
    ps = policy(
        tmp_path,
        "- {name: bar, severity: warn, metrics: {rmse_test: {max: 0.01}}}",
        extra=WAIVER.format(model=MODEL, run=RUN, expires="2025-01-01"),
    )
    r = only(run(ps, subject()))
    assert r.outcome == "warn"
    assert "waiver expired on 2025-01-01" in r.message


def test_waiver_unknown_policy_and_rule_are_errors(tmp_path: Path) -> None:
    policy_text = (
        "apiVersion: regctl/v1\nkind: Policy\nname: p\n"
        "match: {params: {model_type: lgbm}}\nrules:\n" + f"  {BAR}\n"
    )
    write(tmp_path, "p.yaml", policy_text)
    write(
        tmp_path,
        "waivers.yaml",
        WAIVER.format(model=MODEL, run=RUN, expires="2026-12-31").replace("policy: p", "policy: q")
        + WAIVER.format(model=MODEL, run=RUN, expires="2026-12-31").replace("rule: bar", "rule: x"),
    )
    errors = load_errors(tmp_path)
    assert errors == [
        "policies/waivers.yaml:4:9: policy: no policy named 'q' (known: p)",
        "policies/waivers.yaml:16:7: rule: policy 'p' has no rule 'x' (bar)",
    ]


def test_waiver_schema_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "w.yaml",
        """
        apiVersion: regctl/v1
        kind: Waiver
        policy: p
        rule: bar
        model: m
        run: r
        reason: '  '
        expires: 2026-13-01
        """,
    )
    errors = load_errors(tmp_path)
    assert any(e.startswith("policies/w.yaml:7:9: reason: ") for e in errors), errors
    assert any(
        e.startswith("policies/w.yaml:8:10: expires: expected a date like 2026-12-31")
        for e in errors
    ), errors


def test_duplicate_waivers_are_errors(tmp_path: Path) -> None:
    waiver = WAIVER.format(model=MODEL, run=RUN, expires="2026-12-31")
    write(
        tmp_path,
        "p.yaml",
        "apiVersion: regctl/v1\nkind: Policy\nname: p\n"
        f"match: {{params: {{model_type: lgbm}}}}\nrules:\n  {BAR}\n",
    )
    write(tmp_path, "w.yaml", waiver + waiver)
    errors = load_errors(tmp_path)
    assert len(errors) == 1
    assert "is already declared in policies/w.yaml:2" in errors[0]


# --------------------------------------------------------------------------- loader


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "- {name: a, require_params: [x], colour: red}",
            "policies/p.yaml:6:36: rules[0].colour: unknown field",
        ),
        (
            "- {name: a, require_params: [x], require_metrics: [y]}",
            "policies/p.yaml:6:36: rules[0].require_metrics: a rule holds exactly one check; "
            "this one has 'require_params' and 'require_metrics' (split it into two rules)",
        ),
        (
            "- {name: a}",
            "policies/p.yaml:6:5: rules[0]: a rule needs one check: require_params, "
            "require_metrics, run_name, metrics, require_description, allowed_aliases, "
            "allowed_params",
        ),
        (
            "- {name: a, compare_to: Production}",
            "policies/p.yaml:6:15: rules[0].compare_to: compare_to needs `metrics` with "
            "max_increase/max_decrease",
        ),
        (
            "- {name: a, metrics: {rmse: {max_increase: 5%}}}",
            "policies/p.yaml:6:32: rules[0].metrics.rmse.max_increase: max_increase is relative "
            "to an incumbent: add `compare_to: <alias>` to the rule, or use min/max",
        ),
        (
            "- {name: a, compare_to: Production, metrics: {rmse: {max: 1}}}",
            "policies/p.yaml:6:56: rules[0].metrics.rmse.max: max is an absolute bound: put it "
            "in a rule without compare_to",
        ),
        (
            "- {name: a, compare_to: Production, metrics: {rmse: {max_increase: '5'}}}",
            "policies/p.yaml:6:70: rules[0].metrics.rmse.max_increase: expected a percentage "
            "like '5%' or an absolute number like 0.01, got '5'",
        ),
        (
            "- {name: a, metrics: {rmse: {min: 2, max: 1}}}",
            "policies/p.yaml:6:37: rules[0].metrics.rmse.min: min 2 is above max 1",
        ),
        (
            "- {name: a, metrics: {rmse: {max: '0.06'}}}",
            "policies/p.yaml:6:37: rules[0].metrics.rmse.max: expected a number, got a string "
            "('0.06'): unquote it",
        ),
        (
            "- {name: a, run_name: '^run_(\\d{8}$'}",
            "policies/p.yaml:6:25: rules[0].run_name: invalid regular expression: missing ), "
            "unterminated subpattern at position 5",
        ),
        (
            "- {name: a, require_description: true}\n- {name: a, require_description: true}",
            "policies/p.yaml:7:12: rules[1].name: rule 'a' is already declared in this policy "
            "(line 6)",
        ),
        (
            "- {name: a, severity: fatal, require_description: true}",
            "policies/p.yaml:6:25: rules[0].severity: must be 'deny' or 'warn', got 'fatal'",
        ),
        (
            "- {name: a, aliases: [latest], require_description: true}",
            "policies/p.yaml:6:25: rules[0].aliases[0]: alias 'latest' is reserved by MLflow "
            "('latest' and 'v<digits>')",
        ),
        (
            "- {name: a, require_description: false}",
            "policies/p.yaml:6:36: rules[0].require_description: set it to true, or remove the "
            "rule",
        ),
        (
            "- {name: 'bad name', require_description: true}",
            "policies/p.yaml:6:12: rules[0].name: 'bad name': use letters, digits, '_', '-' and "
            "'.', starting with a letter or digit",
        ),
    ],
)
def test_loader_rule_errors(tmp_path: Path, rules: str, expected: str) -> None:
    write(
        tmp_path,
        "p.yaml",
        "apiVersion: regctl/v1\nkind: Policy\nname: p\n"
        "match: {params: {model_type: lgbm}}\nrules:\n"
        f"{textwrap.indent(rules, '  ')}\n",
    )
    assert load_errors(tmp_path) == [expected]


def test_loader_collects_errors_across_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
        apiVersion: regctl/v1
        kind: Policy
        name: a
        match: {params: {hyperparam_tuning: 1}}
        rules:
          - {name: r, require_description: true}
        """,
    )
    write(tmp_path, "b.yaml", "apiVersion: regctl/v1\nkind: Policy\nname: b\nname: c\n")
    write(tmp_path, "c.yaml", "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\n")
    write(
        tmp_path,
        "d.yaml",
        "apiVersion: regctl/v1\nkind: Policy\nname: a\nmatch: {}\nrules:\n"
        "  - {name: r, require_description: true}\n",
    )
    assert load_errors(tmp_path) == [
        "policies/a.yaml:4:37: match.params.hyperparam_tuning: expected a string or a list "
        "of strings, got an integer 1: quote it",
        "policies/b.yaml:4:1: name: duplicate key (first defined at line 3)",
        "policies/c.yaml:2:7: kind: must be 'Policy' or 'Waiver' in policies/, got "
        "'RegisteredModel'",
        "policies/d.yaml:3:7: name: policy 'a' is already declared in policies/a.yaml:3:7",
    ]


def test_loader_missing_kind_and_empty_documents(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "---\n---\nname: x\n")
    assert load_errors(tmp_path) == [
        "policies/a.yaml:3:1: kind: required field is missing (Policy or Waiver)"
    ]


def test_loader_without_policies_folder(tmp_path: Path) -> None:
    assert load_policies(tmp_path) == PolicySet()


# --------------------------------------------------------------------------- shipped


def test_shipped_policies_load() -> None:
    ps = load_policies(REPO)
    names = [p.name for p in ps.policies]
    assert names == ["hmm", "lgbm-classification", "lgbm-regression", "registry-conventions"]
    conventions = ps.policy("registry-conventions")
    assert conventions is not None and dict(conventions.match) == {}
    assert ps.waivers == ()


def test_shipped_policies_judge_the_schema_examples() -> None:
    ps = load_policies(REPO)
    good = subject()
    report = run(ps, good)
    assert {r.policy for r in report.results} == {"lgbm-regression", "registry-conventions"}
    assert report.denied == () and report.warned == ()
    # the regression bar of the shipped policy
    bad = run(ps, subject(metrics={**LGBM_METRICS, "rmse_test": 0.07}))
    assert [(r.rule, r.check) for r in bad.denied] == [("production-bar", "rmse_test")]
    # an incumbent 5% better blocks the promotion
    holder = incumbent(metrics={**LGBM_METRICS, "rmse_test": 0.040})
    blocked = run(ps, good, incumbents={(MODEL, "Production"): holder})
    assert [r.rule for r in blocked.denied] == ["no-worse-than-incumbent"]
    # an HMM run whose selection criterion the schema does not know
    hmm = {**LGBM_PARAMS, "model_type": "hmm", "primary_metric": "aic"}
    odd = run(ps, subject(run="run_hmm_20251009_105640", params=hmm, metrics={}))
    assert ("hmm", "schema-values", "primary_metric") in {
        (r.policy, r.rule, r.check) for r in odd.denied
    }
    assert {r.rule for r in odd.warned} == {"known-family"}


def test_shipped_examples_pass_the_shipped_policies() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"example run directories not generated yet: {EXAMPLES}")
    from regctl.adapters.rundir import read_run_dir

    dirs = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    assert dirs, "no example run directories"
    subjects = []
    for d in dirs:
        record = read_run_dir(d)
        subjects.append(
            Subject(
                model=f"example-{record.params['model_type']}",
                run=record.run_name,
                run_id=None,
                version=None,
                aliases=("Production",),
                description="An example.",
                params=record.params,
                metrics=record.metrics,
                source="run_dir",
                location="manifests/example.yaml:7",
            )
        )
    report = run(load_policies(REPO), *subjects)
    assert report.denied == () and report.warned == (), render_report(report, "text")
    judged = {(r.model, r.policy) for r in report.results}
    assert ("example-lgbm", "lgbm-regression") in judged
    assert ("example-hmm", "hmm") in judged


# --------------------------------------------------------------------------- reports


def mixed_report(tmp_path: Path) -> PolicyReport:
    ps = policy(
        tmp_path,
        """
        - {name: bar, metrics: {rmse_test: {max: 0.01}}}
        - {name: described, severity: warn, require_description: true}
        - name: no-regression
          compare_to: Production
          metrics: {rmse_test: {max_increase: 5%}}
        """,
        extra=WAIVER.format(model="other", run="run|<b>", expires="2026-12-31"),
    )
    holders = {(MODEL, "Production"): incumbent()}
    return run(
        ps,
        subject(description=None, location="manifests/a,b.yaml:9:5"),
        subject(model="other", run="run|<b>", version=2, location="manifests/o.yaml:4"),
        incumbents=holders,
    )


def test_report_is_deterministic(tmp_path: Path) -> None:
    report = mixed_report(tmp_path)
    again = evaluate(
        load_policies(tmp_path),
        [
            subject(model="other", run="run|<b>", version=2, location="manifests/o.yaml:4"),
            subject(description=None, location="manifests/a,b.yaml:9:5"),
        ],
        {(MODEL, "Production"): incumbent()},
        TODAY,
    )
    assert again == report
    assert [(r.model, r.rule, r.outcome) for r in report.results] == [
        (MODEL, "bar", "deny"),
        (MODEL, "described", "warn"),
        (MODEL, "no-regression", "pass"),
        ("other", "bar", "waived"),
        ("other", "described", "pass"),
        ("other", "no-regression", "pass"),
    ]
    assert report.exit_code == 3


def test_render_json(tmp_path: Path) -> None:
    text = render_report(mixed_report(tmp_path), "json")
    doc = json.loads(text)
    assert doc["format_version"] == 1
    assert doc["summary"] == {
        "deny": 1,
        "expired-waiver": 0,
        "warn": 1,
        "waived": 1,
        "pass": 3,
        "denied": 1,
        "exit_code": 3,
    }
    first = doc["results"][0]
    assert first["outcome"] == "deny" and first["policy"] == "p" and first["rule"] == "bar"
    assert first["observed"] == "rmse_test 0.0448"
    assert first["bound"] == "rmse_test max 0.01"
    waived = doc["results"][3]
    assert waived["waiver"] == {
        "reason": "Accepted by the risk review of 2025-10-09.",
        "expires": "2026-12-31",
    }
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_render_github_annotations(tmp_path: Path) -> None:
    lines = render_report(mixed_report(tmp_path), "github").splitlines()
    assert lines[0].startswith("::error file=manifests/a%2Cb.yaml,line=9,col=5,title=p/bar::")
    assert f"{MODEL} (new version), run {RUN}: p/bar:" in lines[0]
    assert lines[1].startswith(
        "::warning file=manifests/a%2Cb.yaml,line=9,col=5,title=p/described::"
    )
    assert lines[2].startswith("::notice file=manifests/o.yaml,line=4,title=p/bar::waived: ")
    assert "risk review of 2025-10-09." in lines[2]
    assert lines[3] == "policy check: 1 denied, 1 warned, 1 waived, 3 passed"
    assert len(lines) == 4


def test_render_github_escapes_percent_and_newlines(tmp_path: Path) -> None:
    assert escape.annotation("5% a\r\nb") == "5%25 a\\r\\nb"
    ps = policy(tmp_path, NO_REGRESSION)
    holders = {(MODEL, "Production"): incumbent()}
    evil = "run\nname"
    report = run(ps, subject(run=evil, metrics={"rmse_test": 0.06}), incumbents=holders)
    out = render_report(report, "github")
    first = out.splitlines()[0]
    assert first.startswith("::error ")
    assert "max_increase 5%25" in first
    assert "%" not in first.replace("%25", "").replace("%2C", "").replace("%3A", "")
    assert "run\\nname" in first  # control characters never split an annotation


def test_render_markdown_escapes_cells(tmp_path: Path) -> None:
    out = render_report(mixed_report(tmp_path), "markdown")
    assert out.startswith("### Policy check\n\n**1 denied** · 1 warned · 1 waived · 3 passed\n")
    assert "| Outcome | Model | Version | Run | Policy / rule | Observed | Bound | Detail |" in out
    assert "| **deny** | `btcusdt-1h-inference-7d-logret` | new | " in out
    assert "| `run\\|<b>` |" in out  # a code span: data, not HTML (tests/test_injection.py)
    assert "<b>" not in out.replace("`run\\|<b>`", "")
    assert "waived until 2026-12-31" in out
    assert "<details>" not in out
    verbose = render_report(mixed_report(tmp_path), "markdown", verbose=True)
    assert "<details><summary>3 passed</summary>" in verbose


def test_render_text_and_unknown_format(tmp_path: Path) -> None:
    out = render_report(mixed_report(tmp_path), "text")
    assert out.splitlines()[0].startswith("manifests/a,b.yaml:9:5: DENY: ")
    assert out.endswith("policy check: 1 denied, 1 warned, 1 waived, 3 passed\n")
    assert "pass:" not in out
    assert "pass:" in render_report(mixed_report(tmp_path), "text", verbose=True)
    assert render_report(PolicyReport(()), "text") == (
        "policy check: no policy applies to the selected versions\n"
    )
    with pytest.raises(ValueError, match="unknown report format"):
        render_report(PolicyReport(()), "yaml")


# --------------------------------------------------------------------------- comparison


def test_alias_comparison_puts_primary_first() -> None:
    cand = subject(metrics={"rmse_train": 1.0, "corr_val": 0.3, "rmse_test": 0.05, "mae": 2.0})
    holder = incumbent(metrics={"rmse_test": 0.04, "corr_val": 0.2, "extra": 7.0})
    rows = alias_comparison(cand, holder, "rmse")
    assert [r.metric for r in rows] == ["rmse_test", "rmse_train", "corr_val", "extra", "mae"]
    metric, mine, theirs, delta = rows[0]
    assert (metric, mine, theirs) == ("rmse_test", 0.05, 0.04)
    assert delta == pytest.approx(0.01)
    assert rows[3] == ("extra", None, 7.0, None)
    assert [r.metric for r in alias_comparison(cand, None, "corr_val")][:1] == ["corr_val"]
    assert all(r.incumbent is None for r in alias_comparison(cand, None, "rmse"))


# ------------------------------------------------------------------ fail closed (issue 13)

PROD_BAR = "- {name: bar, aliases: [Production], metrics: {rmse_test: {max: 0.01}}}"


def test_protected_alias_needs_a_policy_with_a_match(tmp_path: Path) -> None:
    """`aliases: [Production]` makes Production protected: a version that no policy with a
    non-empty match judges may not hold it, even if only match-{} policies pass it."""
    ps = policy(tmp_path, PROD_BAR, match="{params: {model_type: hmm}}")
    write(
        tmp_path,
        "conventions.yaml",
        "apiVersion: regctl/v1\nkind: Policy\nname: c\nmatch: {}\nrules:\n"
        "  - {name: d, severity: warn, require_description: true}\n",
    )
    ps = load_policies(tmp_path)
    report = run(ps, subject())  # an lgbm run: the hmm policy does not judge it
    (r,) = report.denied
    assert (r.policy, r.rule, r.outcome) == ("regctl", "protected-alias", "deny")
    assert r.waive_with is None  # regctl's own verdicts cannot be waived
    assert f"no policy judges {MODEL} (new version) (run 4f1c0d9a2b7e4c61a3d5e8f90b1c2d3e)" in (
        r.message
    )
    assert "for Production" in r.message
    assert run(ps, subject(aliases=("Staging",))).denied == ()  # not protected
    (r,) = run(ps, subject(aliases=("production",))).denied
    assert r.rule == "protected-alias"


def test_match_ignores_case_of_schema_enumerations(tmp_path: Path) -> None:
    """`model_type: LGBM` is LightGBM for sync, so the lgbm policy judges it (and denies)."""
    ps = policy(tmp_path, PROD_BAR)
    loud = {**LGBM_PARAMS, "model_type": "LGBM", "objective": "Huber"}
    r = only(run(ps, subject(params=loud)))
    assert (r.policy, r.rule, r.outcome) == ("p", "bar", "deny")


def test_a_missing_match_key_is_missing_data(tmp_path: Path) -> None:
    ps = policy(tmp_path, PROD_BAR)
    results = run(ps, subject(params={})).results
    assert [(r.policy, r.rule, r.outcome) for r in results] == [
        ("regctl", "match", "deny"),
        ("regctl", "protected-alias", "deny"),
    ]
    assert "cannot tell whether policy p judges this version: the run has no param " in (
        results[0].message
    )
    # a key that rules the policy out wins over a missing one
    two = policy(tmp_path, PROD_BAR, match="{params: {model_type: lgbm, primary_metric: rmse}}")
    hmm = {"model_type": "hmm"}
    assert [r.rule for r in run(two, subject(params=hmm)).results] == ["protected-alias"]


def test_waiver_by_name_needs_the_runs_digest(tmp_path: Path) -> None:
    named_only = WAIVER_TEXT.format(model=MODEL, binding=f"run: {RUN}", expires="2026-12-31")
    ps = policy(tmp_path, BAR, extra=named_only)
    r = only(run(ps, subject(run_id=None)))
    assert r.outcome == "deny"
    assert r.waiver_note is not None and "names the run by name only" in r.waiver_note
    assert f"run: {RUN}, digest: {DIGEST}" in r.waiver_note
    assert r.waive_with == f"run: {RUN}, digest: {DIGEST}"
    other = "sha256:" + "cd" * 32
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run=RUN, expires="2026-12-31"))
    r = only(run(ps, subject(digest=other)))
    assert r.outcome == "deny"
    assert f"its digest {DIGEST} is not this run's {other}" in r.message
    r = only(run(ps, subject(in_experiment=False)))
    assert r.outcome == "deny" and "not in the model's experiment" in r.message
    assert only(run(ps, subject())).outcome == "waived"


def test_waiver_by_run_id_binds_that_run_only(tmp_path: Path) -> None:
    rid = subject().run_id
    assert rid is not None
    ps = policy(tmp_path, BAR, extra=WAIVER.format(model=MODEL, run=rid, expires="2026-12-31"))
    assert only(run(ps, subject())).outcome == "waived"
    r = only(run(ps, subject(run_id="0" * 32)))  # same name, another run
    assert r.outcome == "deny" and r.waiver_note is None
    assert r.waive_with == "run_id: " + "0" * 32


def test_waiver_binding_is_validated(tmp_path: Path) -> None:
    for binding, message in (
        ("", "give the run: `run_id`, or `run` (its name) with `digest`"),
        (f"run: {RUN}\nrun_id: {'a' * 32}", "give the run"),
        (f"run_id: {'a' * 32}\ndigest: {DIGEST}", "`digest` goes with `run`"),
        (f"run: {RUN}\ndigest: sha256:12", "digest: String should match pattern"),
    ):
        policy_text = (
            "apiVersion: regctl/v1\nkind: Policy\nname: p\nmatch: {}\nrules:\n" + f"  {BAR}\n"
        )
        write(tmp_path, "p.yaml", policy_text)
        write(
            tmp_path,
            "w.yaml",
            WAIVER_TEXT.format(model=MODEL, binding=binding, expires="2026-12-31"),
        )
        errors = load_errors(tmp_path)
        assert any(message in e for e in errors), (binding, errors)
