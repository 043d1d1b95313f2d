"""A small GitHub Actions runner for tests: it executes a workflow's jobs on this machine.

What it runs for real: every `run:` step (bash with `-eo pipefail`, as GitHub runs
`shell: bash`), with the workflow's, the job's and the step's `env:` evaluated, the
`GITHUB_OUTPUT`, `GITHUB_ENV`, `GITHUB_PATH` and `GITHUB_STEP_SUMMARY` files read back
after each step, the `${{ }}` expressions of `env:`, `with:`, `if:` and outputs
(contexts github, env, secrets, steps, inputs, runner; operators ! == != && || and the
functions success, failure, always, cancelled, contains, startsWith, endsWith, format,
toJSON), the event payload in `GITHUB_EVENT_PATH`, and the regctl action (`uses: ./` or
the reference `regctl init` writes) as a composite action: its steps, inputs with
defaults, and outputs.

What it does not run, and says so in `Job.skipped`: `actions/checkout` (the test
prepares the workspace, a real git clone), `actions/setup-python` (the test's Python is
on PATH) and the action's step `id: install` (pip would replace the test's own regctl;
tests/test_adoption.py installs the built wheel for real). Any other action is an error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

SKIPPED_ACTIONS = ("actions/checkout@", "actions/setup-python@")
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||<=|>=|[!<>()\[\],.*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)
_INTERP = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_STATUS = re.compile(r"\b(success|failure|always|cancelled)\s*\(")


def load_yaml(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


# ---- expressions -------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse expression at {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value


def _loose(value: Any) -> Any:
    """GitHub's comparison coercion: strings and booleans compare as numbers."""
    if isinstance(value, bool):
        return float(value)
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else 0.0
        except ValueError:
            return value.casefold()
    return float(value) if isinstance(value, int | float) else value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return bool(_loose(a) == _loose(b))


def to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


class _Parser:
    def __init__(self, text: str, ctx: dict[str, Any], status: dict[str, bool]) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.ctx = ctx
        self.status = status

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ValueError(f"expected {value!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ValueError(f"trailing tokens: {self.toks[self.i :]}")
        return value

    def or_(self) -> Any:
        left = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            left = left if _truthy(left) else right
        return left

    def and_(self) -> Any:
        left = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.cmp()
            left = right if _truthy(left) else left
        return left

    def cmp(self) -> Any:
        left = self.unary()
        tok = self.peek()
        if tok and tok[1] in ("==", "!=", "<", ">", "<=", ">="):
            self.take()
            right = self.unary()
            if tok[1] in ("==", "!="):
                return _equal(left, right) == (tok[1] == "==")
            a, b = _loose(left), _loose(right)
            return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[tok[1]]
        return left

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value)
        if value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind != "name":
            raise ValueError(f"unexpected {value!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek() == ("op", "("):
            return self.call(value)
        return _get(self.ctx, value)

    def call(self, name: str) -> Any:
        self.take("(")
        args = []
        while self.peek() != ("op", ")"):
            args.append(self.or_())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        return _call(name, args, self.status)

    def postfix(self, value: Any) -> Any:
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                value = _get(value, self.take()[1])
            else:
                key = self.or_()
                self.take("]")
                value = _get(value, to_str(key))
        return value


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).casefold() == key.casefold():
                return v
    return None


def _call(name: str, args: list[Any], status: dict[str, bool]) -> Any:
    fn = name.casefold()
    if fn in ("success", "failure", "always", "cancelled"):
        return {
            "success": not status["failed"],
            "failure": status["failed"],
            "always": True,
            "cancelled": False,
        }[fn]
    if fn == "contains":
        hay, needle = args
        if isinstance(hay, list):
            return any(_equal(x, needle) for x in hay)
        return to_str(needle).casefold() in to_str(hay).casefold()
    if fn == "startswith":
        return to_str(args[0]).casefold().startswith(to_str(args[1]).casefold())
    if fn == "endswith":
        return to_str(args[0]).casefold().endswith(to_str(args[1]).casefold())
    if fn == "format":
        text = to_str(args[0])
        for i, arg in enumerate(args[1:]):
            text = text.replace("{" + str(i) + "}", to_str(arg))
        return text
    if fn == "tojson":
        return json.dumps(args[0], indent=2)
    raise ValueError(f"unsupported function {name}()")


def evaluate(expr: str, ctx: dict[str, Any], status: dict[str, bool] | None = None) -> Any:
    return _Parser(expr, ctx, status or {"failed": False}).parse()


def interpolate(value: Any, ctx: dict[str, Any], status: dict[str, bool] | None = None) -> str:
    """A `with:`/`env:` value: YAML scalars as GitHub turns them into strings, `${{ }}`
    replaced by the value of the expression."""
    text = to_str(value)
    return _INTERP.sub(lambda m: to_str(evaluate(m.group(1), ctx, status)), text)


def condition(raw: Any, ctx: dict[str, Any], status: dict[str, bool]) -> bool:
    """An `if:`: implicit `success() &&` unless it names a status function."""
    if raw is None:
        return not status["failed"]
    text = to_str(raw).strip()
    m = _INTERP.fullmatch(text)
    text = m.group(1) if m else text
    value = _truthy(evaluate(text, ctx, status))
    return value if _STATUS.search(text) else value and not status["failed"]


# ---- running -----------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure or skipped
    outputs: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


@dataclass
class Job:
    name: str
    result: str = "success"
    steps: list[StepResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summary: str = ""

    def step(self, name: str) -> StepResult:
        found = [s for s in self.steps if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.steps])
        return found[0]

    def log(self) -> str:
        return "\n".join(f"== {s.name}: {s.outcome}\n{s.stdout}{s.stderr}" for s in self.steps)


def _read_kv(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `k=v` lines and `k<<DELIM` blocks."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            body = []
            i += 1
            while lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        i += 1
    path.write_text("")
    return out


@dataclass
class Runner:
    """Runs the jobs of a workflow in `workspace` for one event."""

    workspace: Path
    temp: Path
    event_name: str
    event: dict[str, Any]
    repository: str
    secrets: dict[str, str]
    action_root: Path
    action_refs: tuple[str, ...]
    github: dict[str, Any] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.temp.mkdir(parents=True, exist_ok=True)
        event_path = self.temp / "event.json"
        event_path.write_text(json.dumps(self.event), encoding="utf-8")
        self.github = {
            "event_name": self.event_name,
            "event": self.event,
            "event_path": str(event_path),
            "repository": self.repository,
            "repository_owner": self.repository.split("/")[0],
            "server_url": "https://github.com",
            "run_id": "4242",
            "workspace": str(self.workspace),
            "action_path": "",
            **self.github,
        }
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GITHUB_"))}
        self.base_env = {**keep, **self.base_env}

    def run(self, workflow: Path) -> dict[str, Job]:
        wf = load_yaml(workflow)
        jobs = {}
        for job_id, job in wf["jobs"].items():
            jobs[job_id] = self.run_job(job_id, job, wf)
        return jobs

    def _env_files(self) -> dict[str, Path]:
        files = {}
        for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            path = self.temp / name.lower()
            path.write_text("")
            files[name] = path
        return files

    def run_job(self, job_id: str, job: dict[str, Any], wf: dict[str, Any]) -> Job:
        result = Job(job_id)
        files = self._env_files()
        ctx: dict[str, Any] = {"github": self.github, "secrets": self.secrets, "steps": {}}
        ctx["runner"] = {"temp": str(self.temp), "os": "Linux"}
        status = {"failed": False}
        if not condition(job.get("if"), ctx, status):
            result.result = "skipped"
            return result
        env: dict[str, str] = {}
        for scope in (wf.get("env") or {}, job.get("env") or {}):
            for key, value in scope.items():
                env[key] = interpolate(value, {**ctx, "env": env})
        state = {"env": env, "path": [], "files": files}
        for i, step in enumerate(job.get("steps", [])):
            sid = step.get("id") or f"step{i}"
            name = step.get("name") or step.get("uses") or step.get("run", "").split("\n")[0]
            ctx["env"] = env
            if not condition(step.get("if"), ctx, status):
                result.steps.append(StepResult(name, "skipped"))
                continue
            res = self.run_step(name, step, ctx, state, result, status)
            ctx["steps"][sid] = {"outputs": res.outputs, "outcome": res.outcome}
            result.steps.append(res)
            if res.outcome == "failure":
                status["failed"] = True
        result.result = "failure" if status["failed"] else "success"
        result.summary = files["GITHUB_STEP_SUMMARY"].read_text(encoding="utf-8")
        return result

    def run_step(
        self,
        name: str,
        step: dict[str, Any],
        ctx: dict[str, Any],
        state: dict[str, Any],
        job: Job,
        status: dict[str, bool],
    ) -> StepResult:
        if "run" in step:
            step_env = {k: interpolate(v, ctx, status) for k, v in (step.get("env") or {}).items()}
            cwd = self.workspace / interpolate(step.get("working-directory", "."), ctx)
            return self.shell(name, step["run"], {**state["env"], **step_env}, cwd, state)
        uses = str(step["uses"])
        if uses.startswith(SKIPPED_ACTIONS):
            job.skipped.append(f"{name}: {uses}")
            return StepResult(name, "success")
        if uses in self.action_refs:
            inputs = {k: interpolate(v, ctx, status) for k, v in (step.get("with") or {}).items()}
            return self.composite(name, inputs, ctx, state, job)
        raise AssertionError(f"the test runner cannot run action {uses!r}")

    def composite(
        self,
        name: str,
        given: dict[str, str],
        outer: dict[str, Any],
        state: dict[str, Any],
        job: Job,
    ) -> StepResult:
        action = load_yaml(self.action_root / "action.yml")
        assert action["runs"]["using"] == "composite"
        unknown = set(given) - set(action.get("inputs") or {})
        assert not unknown, f"inputs not defined by the action: {unknown}"
        github = {**self.github, "action_path": str(self.action_root)}
        ctx: dict[str, Any] = {**outer, "github": github, "steps": {}, "env": state["env"]}
        inputs = {}
        for key, spec in (action.get("inputs") or {}).items():
            if key in given:
                inputs[key] = given[key]
            else:
                assert not spec.get("required") or key in given, f"missing input {key}"
                inputs[key] = interpolate(spec.get("default", ""), ctx)
        ctx["inputs"] = inputs
        status = {"failed": False}
        out, err = [], []
        for i, step in enumerate(action["runs"]["steps"]):
            sid = step.get("id") or f"step{i}"
            label = step.get("name") or step.get("uses")
            if not condition(step.get("if"), ctx, status):
                continue
            if step.get("id") == "install":
                job.skipped.append(f"{name}: {label} (the test's regctl is installed)")
                continue
            if "uses" in step:
                assert str(step["uses"]).startswith(SKIPPED_ACTIONS), step["uses"]
                job.skipped.append(f"{name}: {step['uses']}")
                continue
            env = {k: interpolate(v, ctx, status) for k, v in (step.get("env") or {}).items()}
            env["GITHUB_ACTION_PATH"] = str(self.action_root)
            cwd = self.workspace / interpolate(step.get("working-directory", "."), ctx)
            res = self.shell(label, step["run"], {**state["env"], **env}, cwd, state)
            out.append(res.stdout)
            err.append(res.stderr)
            ctx["steps"][sid] = {"outputs": res.outputs, "outcome": res.outcome}
            ctx["env"] = state["env"]
            if res.outcome == "failure":
                status["failed"] = True
                break
        outputs = {
            key: interpolate(spec.get("value", ""), ctx)
            for key, spec in (action.get("outputs") or {}).items()
        }
        outcome = "failure" if status["failed"] else "success"
        return StepResult(name, outcome, outputs, "".join(out), "".join(err))

    def shell(
        self, name: str, src: str, env: dict[str, str], cwd: Path, state: dict[str, Any]
    ) -> StepResult:
        script = self.temp / "step.sh"
        script.write_text(src, encoding="utf-8")
        files = state["files"]
        full = {
            **self.base_env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_EVENT_PATH": self.github["event_path"],
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_SERVER_URL": self.github["server_url"],
            "GITHUB_API_URL": str(self.github.get("api_url", "")),
            "GITHUB_RUN_ID": self.github["run_id"],
            "GITHUB_SHA": str(self.github.get("sha", "")),
            "GITHUB_REF": str(self.github.get("ref", "")),
            "GITHUB_BASE_REF": str(self.github.get("base_ref", "")),
            "GITHUB_WORKSPACE": str(self.workspace),
            "RUNNER_TEMP": str(self.temp),
            **{k: str(v) for k, v in files.items()},
            **env,
        }
        if state["path"]:
            full["PATH"] = os.pathsep.join([*state["path"], full.get("PATH", "")])
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outputs = _read_kv(files["GITHUB_OUTPUT"])
        state["env"].update(_read_kv(files["GITHUB_ENV"]))
        added = files["GITHUB_PATH"].read_text(encoding="utf-8").split()
        files["GITHUB_PATH"].write_text("")
        state["path"] = [*added, *state["path"]]
        outcome = "success" if proc.returncode == 0 else "failure"
        return StepResult(name, outcome, outputs, proc.stdout, proc.stderr)
