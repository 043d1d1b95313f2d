"""docs/tutorial.md shows real output: its commands are run here and their output must be
in the tutorial, verbatim (issue 15: "every output shown is real").

Sections 1, 2, 4 and 5 run as written, in an empty folder, against the embedded store.
What differs from run to run (the folder, run ids, commit hashes, times) is compared
after the test puts the tutorial's values in place of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import REPO

TUTORIAL = REPO / "docs" / "tutorial.md"
RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"
MANIFEST = """\
# yaml-language-server: $schema=../schema/regctl.schema.json
apiVersion: regctl/v1
kind: RegisteredModel
name: btcusdt-1h-inference-7d-logret
description: 7-day log-return forecaster, BINANCE BTCUSDT perpetual, 1h bars.
experiment: binance-btcusdt-perp-1h-7d-logret
tags: {owner: quant-research, task: regression}
versions:
  - run: run_20251008_145809_lgbm_y_logret_168h_huber
    run_dir: runs/run_20251008_145809_lgbm_y_logret_168h_huber
    description: Huber LGBM on y_logret_168h; rmse_test 0.0447, corr_val 0.43.
    aliases: [Staging]
"""


def sh(*args: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def test_the_tutorial_shows_what_its_commands_print(tmp_path: Path) -> None:
    doc = TUTORIAL.read_text(encoding="utf-8")
    assert MANIFEST in doc
    who = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REGCTL_"))},
        **who,
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    regctl = shutil.which("regctl")
    assert regctl
    shown: list[str] = []

    init = sh(regctl, "init", "models", cwd=tmp_path, env=env)
    shown.append(init.replace(str(tmp_path / "models"), "/tmp/tut/models"))
    repo = tmp_path / "models"
    sh("git", "init", "-q", "-b", "main", cwd=repo, env=env)
    sh("git", "config", "user.name", "Ada", cwd=repo, env=env)  # the actor regctl records
    sh("git", "config", "user.email", "ada@example.com", cwd=repo, env=env)
    shown.append(sh(regctl, "validate", cwd=repo, env=env))
    src = REPO / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60" / RUN
    shutil.copytree(src, repo / "runs" / RUN)
    (repo / "manifests" / "btcusdt-1h-inference-7d-logret.yaml").write_text(MANIFEST)
    shown.append(sh(regctl, "validate", cwd=repo, env=env))
    shown.append(sh(regctl, "apply", "--auto-approve", cwd=repo, env=env))
    sh(regctl, "diff", "--exit-code", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "First model: the forecaster at Staging", cwd=repo, env=env)
    assert sh("git", "status", "--short", cwd=repo, env=env) == ""  # .gitignore held

    sh("git", "switch", "-q", "-c", "promote-lgbm", cwd=repo, env=env)
    path = repo / "manifests" / "btcusdt-1h-inference-7d-logret.yaml"
    path.write_text(MANIFEST.replace("aliases: [Staging]", "aliases: [Staging, Production]"))
    shown.append(sh(regctl, "diff", "--base", "main", cwd=repo, env=env))
    markdown = sh(regctl, "diff", "--base", "main", "--format", "markdown", cwd=repo, env=env)
    shown.append("\n".join(f"> {line}" if line else ">" for line in markdown.splitlines()))
    sh(
        "git",
        "commit",
        "-qam",
        "Promote the Huber LGBM forecaster to Production",
        cwd=repo,
        env=env,
    )
    sh("git", "switch", "-q", "main", cwd=repo, env=env)
    merge = "Merge pull request #1 from promote-lgbm"
    sh("git", "merge", "-q", "--no-ff", "-m", merge, "promote-lgbm", cwd=repo, env=env)
    head = sh("git", "rev-parse", "HEAD", cwd=repo, env=env).strip()
    applied = sh(regctl, "apply", "--auto-approve", cwd=repo, env={**env, "REGCTL_COMMIT": head})
    shown.append("\n".join(applied.rstrip().splitlines()[-3:]))
    log = sh(regctl, "log", "btcusdt-1h-inference-7d-logret", cwd=repo, env=env)
    # dates and hashes are this run's: put the tutorial's in their place
    doc_log = re.findall(r"^(\S+)  Ada <ada@example.com>  ([0-9a-f]{7})  ", doc, re.M)
    run_log = re.findall(r"^(\S+)  Ada <ada@example.com>  ([0-9a-f]{7})  ", log, re.M)
    assert len(doc_log) == len(run_log) == 2
    for (d_when, d_sha), (r_when, r_sha) in zip(doc_log, run_log, strict=True):
        log = log.replace(r_when, d_when).replace(r_sha, d_sha)
    shown.append(log)
    resolved = sh(regctl, "resolve", "btcusdt-1h-inference-7d-logret@Production", cwd=repo, env=env)
    assert "Production, Staging" in resolved and f"commit {head} by Ada" in resolved
    content = next(line for line in resolved.splitlines() if line.startswith("  content:"))
    assert content in doc, content  # the shipped run directory's digest, as the page shows

    for block in shown:
        assert block.rstrip() in doc, block
