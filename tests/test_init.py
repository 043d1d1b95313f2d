"""`regctl init`: a team's repository from the package's scaffold (issue 15).

Run as a user runs it (the `regctl` executable, in a folder outside this checkout), then
`git init` and `regctl validate` there. A second init changes nothing and exits 1; a
bad action reference is refused before anything is written; `--import` fills the
manifests from a real server and leaves `diff` empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import empty_sqlite

EXPECTED = [
    ".github/workflows/apply.yml",
    ".github/workflows/drift.yml",
    ".github/workflows/plan.yml",
    ".gitignore",
    "README.md",
    "manifests/README.md",
    "policies/hmm.yaml",
    "policies/lgbm.yaml",
    "policies/registry.yaml",
    "schema/regctl.schema.json",
]


def regctl(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("regctl")
    assert exe, "the regctl executable is not on PATH"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [exe, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git/" not in p.as_posix()
    }


def test_init_then_validate_then_init_again(tmp_path: Path) -> None:
    proc = regctl("init", "team", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    team = tmp_path / "team"
    assert sorted(snapshot(team)) == EXPECTED
    assert "Next steps:" in proc.stdout and "mlflow-registry" in proc.stdout
    assert "regctl/regctl@v" in (team / ".github/workflows/plan.yml").read_text()
    assert "mlflow.db" in (team / ".gitignore").read_text()
    # the $schema comments point at the file init wrote
    for policy in (team / "policies").glob("*.yaml"):
        assert policy.read_text().startswith(
            "# yaml-language-server: $schema=../schema/regctl.schema.json"
        )

    subprocess.run(["git", "init", "-q"], cwd=team, check=True)
    valid = regctl("validate", cwd=team)
    assert valid.returncode == 0, valid.stderr
    assert "4 policies" in valid.stdout

    before = snapshot(team)
    again = regctl("init", "team", cwd=tmp_path)
    assert again.returncode == 1
    assert "nothing was written" in again.stderr
    for rel in EXPECTED:
        assert rel in again.stderr
    assert snapshot(team) == before


def test_init_refuses_what_is_in_the_way_and_force_keeps_the_rest(tmp_path: Path) -> None:
    team = tmp_path / "team"
    (team / "manifests").mkdir(parents=True)
    (team / "manifests" / "mine.yaml").write_text("# a team's own file\n")
    (team / "README.md").write_text("ours\n")
    proc = regctl("init", str(team), cwd=tmp_path)
    assert proc.returncode == 1
    assert "README.md" in proc.stderr and "mine.yaml" not in proc.stderr
    assert not (team / "policies").exists()

    forced = regctl("init", "--force", str(team), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (team / "README.md").read_text() != "ours\n"
    assert (team / "manifests" / "mine.yaml").read_text() == "# a team's own file\n"


def test_a_bad_action_reference_writes_nothing(tmp_path: Path) -> None:
    for bad in (
        "owner/repo",  # no ref
        "owner/repo@v1\n    run: curl evil",  # would end the YAML value
        "owner/repo@v1 # x",
        "'owner/repo@v1'",
        "../x@v1",
        "owner/../repo@v1",
    ):
        proc = regctl("init", "--action", bad, "team", cwd=tmp_path)
        assert proc.returncode == 1, bad
        assert proc.stderr.count("\n") == 1 and "--action" in proc.stderr
        assert not (tmp_path / "team").exists()
    sha = "0123456789abcdef0123456789abcdef01234567"
    ok = regctl("init", "--action", f"acme/regctl@{sha}", "team", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"uses: acme/regctl@{sha}" in (tmp_path / "team/.github/workflows/apply.yml").read_text()


def test_init_import_fills_the_manifests_from_the_registry(tmp_path: Path, uniq: str) -> None:
    """Against a private store: `--import` reads every model of the registry (and marks
    them managed), which on the shared test server would reach other tests' models."""
    from mlflow import MlflowClient

    uri = empty_sqlite(tmp_path / "mlflow.db")
    client = MlflowClient(uri, uri)
    exp = client.create_experiment(f"{uniq}-exp", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(exp, run_name=f"{uniq}-run")
    client.set_terminated(run.info.run_id)
    name = f"{uniq}-model"
    client.create_registered_model(name, description="imported by init")
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "Staging", mv.version)

    env = {"MLFLOW_TRACKING_URI": uri}
    proc = regctl("init", "--import", "team", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    team = tmp_path / "team"
    manifest = team / "manifests" / f"{name}.yaml"
    assert manifest.exists(), proc.stdout
    text = manifest.read_text()
    assert "Staging" in text and f"{uniq}-run" in text
    assert regctl("validate", cwd=team).returncode == 0
    diff = regctl("diff", "--exit-code", cwd=team, env=env)
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_force_never_writes_through_a_link(tmp_path: Path) -> None:
    """A linked folder in the team's repository (`policies -> elsewhere`) would send the
    scaffold's files outside it: refused before any write, even with --force."""
    team = tmp_path / "team"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    team.mkdir()
    (team / "policies").symlink_to(elsewhere, target_is_directory=True)
    (team / "README.md").write_text("ours\n")
    proc = regctl("init", "--force", str(team), cwd=tmp_path)
    assert proc.returncode == 1
    assert "policies: is a link" in proc.stderr and "nothing was written" in proc.stderr
    assert list(elsewhere.iterdir()) == []
    assert (team / "README.md").read_text() == "ours\n"
    assert not (team / "manifests").exists()
