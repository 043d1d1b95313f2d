"""The controller's pure and local parts: webhook signatures, the delivery memory, the
git source's handling of credentials, the log line formats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest

from regctl.adapters.gitsource import GitSource, SourceError, shown_url
from regctl.commands.controller_state import ControllerLog
from regctl.core.webhooks import (
    Deliveries,
    github_signature_ok,
    mlflow_delivery_problem,
    parse_registry_event,
)


def test_github_signature() -> None:
    body = b'{"ref": "refs/heads/main"}'
    good = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    assert github_signature_ok("s", body, good)
    assert github_signature_ok("s", body, good.upper().replace("SHA256=", "sha256="))
    assert not github_signature_ok("s", body + b" ", good)
    assert not github_signature_ok("t", body, good)
    assert not github_signature_ok("", body, good)  # no secret: nothing is authentic
    assert not github_signature_ok("s", body, None)
    assert not github_signature_ok("s", body, good.replace("sha256=", "sha1="))


def mlflow_headers(body: bytes, delivery: str, stamp: int, secret: str = "s") -> dict[str, str]:
    signed = f"{delivery}.{stamp}.{body.decode()}".encode()
    mac = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return {
        "x-mlflow-signature": f"v1,{mac}",
        "x-mlflow-timestamp": str(stamp),
        "x-mlflow-delivery-id": delivery,
    }


def test_mlflow_delivery() -> None:
    body = b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}'
    now = 1_800_000_000
    assert mlflow_delivery_problem("s", body, mlflow_headers(body, "d1", now), now) is None
    assert mlflow_delivery_problem("s", body, mlflow_headers(body, "d1", now - 301), now)
    assert mlflow_delivery_problem("s", body, mlflow_headers(body, "d1", now + 301), now)
    assert (
        mlflow_delivery_problem("x", body, mlflow_headers(body, "d1", now), now) == "bad signature"
    )
    h = mlflow_headers(body, "d1", now)
    assert mlflow_delivery_problem("s", body, {**h, "x-mlflow-delivery-id": "d2"}, now)
    assert mlflow_delivery_problem("s", body, {**h, "x-mlflow-signature": "v2,AAAA"}, now)
    assert mlflow_delivery_problem("s", body, {**h, "x-mlflow-signature": "v1,not base64!"}, now)
    assert mlflow_delivery_problem("s", body, {**h, "x-mlflow-timestamp": "1e9"}, now)
    assert mlflow_delivery_problem("", body, h, now) == "no secret configured"
    assert parse_registry_event(body) is not None
    assert parse_registry_event(body).model == "m"  # type: ignore[union-attr]
    assert parse_registry_event(b"[1]") is None and parse_registry_event(b"{") is None


def test_deliveries_remember_the_window() -> None:
    seen = Deliveries(window=10)
    assert seen.first_time("a", 0) and not seen.first_time("a", 5)
    assert seen.first_time("b", 6)
    assert seen.first_time("a", 20)  # forgotten after the window (the timestamp check is shorter)


def test_a_password_in_the_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="REGCTL_GIT_TOKEN"):
        GitSource("https://bot:hunter2@git.example.com/r.git", "main", tmp_path)
    with pytest.raises(SourceError, match="not a branch name"):
        GitSource("file:///r.git", "-c core.pager=sh", tmp_path)
    assert shown_url("https://bot@git.example.com/r.git") == "https://git.example.com/r.git"


def test_the_token_reaches_git_as_a_header_never_in_argv(tmp_path: Path) -> None:
    env = {"REGCTL_GIT_TOKEN": "t0k3n", "PATH": "/usr/bin:/bin"}
    src = GitSource("https://git.example.com/r.git", "main", tmp_path, env)
    passed = src._env  # what the git child gets
    assert "REGCTL_GIT_TOKEN" not in passed
    assert passed["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    basic = base64.b64encode(b"x-access-token:t0k3n").decode()
    assert passed["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"
    assert passed["GIT_TERMINAL_PROMPT"] == "0"
    ssh = GitSource("ssh://git@git.example.com/r.git", "main", tmp_path, env)
    assert "GIT_CONFIG_KEY_0" not in ssh._env  # a token goes to https only


def test_an_unreachable_source_is_an_error_not_a_hang(tmp_path: Path) -> None:
    src = GitSource((tmp_path / "missing.git").as_uri(), "main", tmp_path / "state")
    with pytest.raises(SourceError, match="git clone failed"):
        src.fetch()


def test_log_lines() -> None:
    out = io.StringIO()
    ControllerLog("text", out).event("reconcile", commit="abc", changes=2, detail="a b\x1b[2J")
    line = out.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line
    assert " reconcile commit=abc changes=2 detail=" in line
    out = io.StringIO()
    ControllerLog("json", out).event("reconcile", commit="abc", result="applied", duration=0.5)
    data = json.loads(out.getvalue())
    assert data["event"] == "reconcile" and data["result"] == "applied" and data["duration"] == 0.5
    assert data["time"].endswith("Z")
