"""Every rule kind passing, failing and with missing data, judged on runs logged in a real
MLflow server (the data comes from MLflow, not from the run directory)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable

import pytest

from conftest import Backend, write_manifest

CLI = Callable[..., tuple[int, str, str]]
RUN = "run_20251008_145809_lgbm_y_1h_huber"

# rule body, params override (None = drop the key), metrics, aliases, expected outcome,
# words the message must hold (besides model, run, policy and rule)
CASES = {
    "require_params-pass": (
        "require_params: [target, dataset_slug]",
        {},
        {},
        [],
        "pass",
        ["target"],
    ),
    "require_params-fail": (
        "require_params: [feature_list_id, nonexistent]",
        {},
        {},
        [],
        "deny",
        ["nonexistent", "missing"],
    ),
    "require_metrics-pass": (
        "require_metrics: [rmse_test]",
        {},
        {"rmse_test": 0.05},
        [],
        "pass",
        ["rmse_test"],
    ),
    "require_metrics-missing": (
        "require_metrics: [corr_val]",
        {},
        {"rmse_test": 0.05},
        [],
        "deny",
        ["corr_val", "missing"],
    ),
    "run_name-pass": (
        r"run_name: '^run_\d{8}_\d{6}_lgbm_{target}_{objective}$'",
        {},
        {},
        [],
        "pass",
        [RUN],
    ),
    "run_name-fail": (
        r"run_name: '^run_\d{8}_\d{6}_lgbm_{target}_quantile$'",
        {},
        {},
        [],
        "deny",
        [RUN, "quantile"],
    ),
    "run_name-missing-param": (
        r"run_name: '^run_{nosuchparam}$'",
        {},
        {},
        [],
        "deny",
        ["nosuchparam"],
    ),
    "metrics-max-pass": (
        "metrics: {rmse_test: {max: 0.06}}",
        {},
        {"rmse_test": 0.05},
        [],
        "pass",
        ["0.05", "0.06"],
    ),
    "metrics-max-fail": (
        "metrics: {rmse_test: {max: 0.06}}",
        {},
        {"rmse_test": 0.08},
        [],
        "deny",
        ["0.08", "0.06"],
    ),
    "metrics-min-fail": (
        "metrics: {corr_val: {min: 0.2}}",
        {},
        {"corr_val": 0.1},
        [],
        "deny",
        ["0.1", "0.2"],
    ),
    "metrics-missing": (
        "metrics: {corr_val: {min: 0.2}}",
        {},
        {"rmse_test": 0.05},
        [],
        "deny",
        ["corr_val", "missing"],
    ),
    "compare_to-no-incumbent": (
        "compare_to: Production\n    metrics: {rmse_test: {max_increase: 5%}}",
        {},
        {"rmse_test": 0.05},
        [],
        "pass",
        ["no incumbent"],
    ),
    "require_description-fail": ("require_description: true", {}, {}, [], "deny", ["description"]),
    "allowed_aliases-fail": (
        "allowed_aliases: [Staging, Production]",
        {},
        {},
        ["Canary"],
        "deny",
        ["Canary"],
    ),
    "allowed_aliases-pass": (
        "allowed_aliases: [Staging, Production]",
        {},
        {},
        ["Staging"],
        "pass",
        ["Staging"],
    ),
    "allowed_params-fail": (
        "allowed_params: {objective: [rmse, l2]}",
        {},
        {},
        [],
        "deny",
        ["huber"],
    ),
    "allowed_params-missing": (
        "allowed_params: {feature_list_id: [a]}",
        {"feature_list_id": None},
        {},
        [],
        "deny",
        ["feature_list_id"],
    ),
}


def _setup(b: Backend, uniq: str, case: str) -> str:
    rule, params, metrics, aliases, _, _ = CASES[case]
    d = b.repo / "runs" / RUN
    d.mkdir(parents=True)
    config = {
        "model_type": "lgbm",
        "target": "y_1h",
        "objective": "huber",
        "dataset": "BTC, 60",
        "feature_list_id": "fl",
    }
    for key, value in params.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (d / "pipeline_config.json").write_text(json.dumps(config))
    (d / "metrics.json").write_text(json.dumps(metrics or {"rmse_test": 0.05}))
    (d / "model.txt").write_text("tree\n")
    (b.repo / "policies").mkdir()
    (b.repo / "policies" / "p.yaml").write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: case-policy\nmatch: {}\nrules:\n"
        f"  - name: the-rule\n    {rule}\n"
    )
    model = f"{uniq}-m"
    alias_line = f"    aliases: [{', '.join(aliases)}]\n" if aliases else ""
    write_manifest(
        b.repo,
        "m",
        textwrap.dedent(f"""\
            apiVersion: regctl/v1
            kind: RegisteredModel
            name: {model}
            experiment: {uniq}-exp
            versions:
              - run: {RUN}
                run_dir: runs/{RUN}
            """)
        + alias_line,
    )
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_kind_on_a_logged_run(
    case: str, server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    model = _setup(b, uniq, case)
    base = ("--tracking-uri", b.uri, "--repo", str(b.repo))
    assert run_cli(*base, "sync")[0] == 0  # the run is logged: data comes from MLflow
    code, out, err = run_cli(*base, "check", "--format", "json")
    expected, words = CASES[case][4], CASES[case][5]
    data = json.loads(out)
    results = [r for r in data["results"] if r["rule"] == "the-rule"]
    assert results, out
    outcome = "deny" if any(r["outcome"] == "deny" for r in results) else results[0]["outcome"]
    assert outcome == expected, results
    assert code == (3 if expected == "deny" else 0), err
    message = " ".join(r["message"] for r in results)
    for word in (model, RUN, "case-policy", "the-rule", *words):
        assert word in message, (word, message)


def test_a_directory_changed_after_logging_is_refused_not_judged(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Once logged, a run is what MLflow holds; a directory edited afterwards is no longer
    that run's directory (its content differs), so check refuses it instead of judging
    either set of numbers."""
    b = server_backend
    _setup(b, uniq, "metrics-max-pass")
    base = ("--tracking-uri", b.uri, "--repo", str(b.repo))
    assert run_cli(*base, "sync")[0] == 0
    code, out, _ = run_cli(*base, "check", "--format", "json")
    assert code == 0
    result = next(r for r in json.loads(out)["results"] if r["rule"] == "the-rule")
    assert result["outcome"] == "pass" and "0.05" in result["observed"]
    # the directory changes after logging; MLflow still holds 0.05
    (b.repo / "runs" / RUN / "metrics.json").write_text(json.dumps({"rmse_test": 0.5}))
    code, out, err = run_cli(*base, "check", "--format", "json")
    assert code == 1
    assert "metric 'rmse_test': run has 0.05, directory has 0.5" in err
