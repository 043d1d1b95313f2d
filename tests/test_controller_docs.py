"""docs/controller.md and deploy/: the page shows the files as they are, the files parse
and use only flags `regctl controller` accepts, and the page's "Try it" commands work
as written (run here against the embedded store)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from regctl.cli_controller import controller

from conftest import REPO, free_port

DOC = REPO / "docs" / "controller.md"
DEPLOY = REPO / "deploy"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def flags_ok(args: list[str]) -> click.Context:
    """Parse `args` as `regctl controller` would (click raises on an unknown flag)."""
    return controller.make_context("controller", list(args))


@pytest.mark.parametrize(
    ("lang", "name"),
    [
        ("ini", "regctl-controller.service"),
        ("yaml", "kubernetes.yaml"),
        ("dockerfile", "Dockerfile"),
    ],
)
def test_the_page_shows_the_files(lang: str, name: str) -> None:
    assert blocks(lang) == [(DEPLOY / name).read_text(encoding="utf-8")]


def test_the_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "regctl-controller.service").read_text())
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/regctl") and argv[1] == "controller"
    ctx = flags_ok(argv[2:])
    assert ctx.params["self_heal"] and ctx.params["log_format"] == "json"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) <= 30
    assert service["Restart"] == "on-failure" and service["User"] != "root"
    assert str(ctx.params["state_dir"]).startswith("/var/lib/" + service["StateDirectory"])
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_kubernetes_manifests() -> None:
    docs = list(YAML(typ="safe").load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Secret", "Deployment", "Service"}
    deploy, secret, service = kinds["Deployment"], kinds["Secret"], kinds["Service"]
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    (box,) = spec["template"]["spec"]["containers"]
    ctx = flags_ok(box["args"])
    listen_port = int(ctx.params["listen"].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports["http"] == listen_port
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in box["env"] if "valueFrom" in e}
    assert "MLFLOW_TRACKING_TOKEN" in refs  # the registry credential comes from the Secret
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    mounted = {m["mountPath"] for m in box["volumeMounts"]}
    assert any(str(ctx.params["state_dir"]).startswith(m) for m in mounted)
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert ctx.params["public_url"].endswith(f":{service['spec']['ports'][0]['port']}")


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_dockerfile() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    for word, rest in steps:
        assert word in {
            "FROM",
            "RUN",
            "COPY",
            "USER",
            "WORKDIR",
            "ENV",
            "EXPOSE",
            "HEALTHCHECK",
            "ENTRYPOINT",
            "CMD",
        }
        if word == "COPY":
            *sources, _ = rest.split()
            assert all((REPO / s).exists() for s in sources), rest
    by = dict(steps)
    assert json.loads(by["ENTRYPOINT"]) == ["regctl", "controller"]
    assert by["USER"] != "root" and by["USER"] != "0"
    assert by["EXPOSE"] == "8080" and "8080/healthz" in by["HEALTHCHECK"]
    runs = [rest.split() for word, rest in steps if word == "RUN"]
    assert any("git" in words for words in runs)  # the source is cloned with git


def test_try_it_as_written(tmp_path: Path) -> None:
    """The "Try it" commands, in a fresh clone of this repository (port substituted)."""
    (lines,) = [b for b in blocks("sh") if "controller" in b]
    commands = lines.strip().splitlines()
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(checkout)], check=True)
    # on main, as a checkout of the repository is (a worktree here may be on a branch)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", "-B", "main"], check=True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "controller"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    subprocess.run(["bash", "-c", commands[0]], cwd=checkout, env=env, check=True)
    start = commands[1].replace("127.0.0.1:8080", f"127.0.0.1:{port}").removesuffix(" &")
    assert "controller" in start and start != commands[1]
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {start}"], cwd=checkout, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True
        ).stdout.strip()
        if not body:
            proc.kill()
            raise AssertionError(proc.communicate(timeout=10)[1])
        assert body == f"ready {head}\n"
        assert "curl -s 127.0.0.1:8080/readyz" in commands[2]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "result=applied" in err and "lease result=released" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
