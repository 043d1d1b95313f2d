"""Fuzz the CLI's inputs (issue 13, case 11): URIs, manifests, policies, plan files.

`regctl.cli.main` runs in-process on generated input. The property, for every
example: the exit code is one regctl defines, stderr is only lines that start with
`error: ` or `warning: ` (one line per message), and there is never an
`internal error` or a traceback. Exit 1 comes with at least one `error:` line.

No server is needed: the registry is an unreachable `http://127.0.0.1:9` (connection
refused at once, no retries) or an embedded `sqlite:///` store in a temporary folder.
Generated URIs either fail regctl's checks or point at those, so nothing is resolved
over DNS and no database is created at a generated path. Example counts are bounded
(`REGCTL_FUZZ_EXAMPLES`, default 40 per test) to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regctl.cli import main
from regctl.core.uris import uri_problem
from regctl.errors import ExitCode

from conftest import empty_sqlite

EXAMPLES = int(os.environ.get("REGCTL_FUZZ_EXAMPLES", "40"))
UNREACHABLE = "http://127.0.0.1:9"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXIT_CODES = {int(c) for c in ExitCode}


@pytest.fixture(autouse=True)
def _fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable server fails on the first refused connection, not after backoff."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, out: str, err: str, *, allowed: set[int] = EXIT_CODES) -> None:
    assert code in allowed, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    for line in lines:
        assert line.startswith(("error: ", "warning: ")), lines
        assert not line.startswith("internal error"), lines
    if code == ExitCode.ERROR:
        assert any(line.startswith("error: ") for line in lines), (out, err)


@contextlib.contextmanager
def repo() -> Iterator[Path]:
    """A fresh repository folder per example (hypothesis reuses the test's fixtures)."""
    root = Path(tempfile.mkdtemp(prefix="regctl-fuzz-"))
    try:
        (root / "manifests").mkdir()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------- values

# what YAML and JSON give a loader: scalars of every type, big and non-finite numbers,
# unicode, and nesting
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "Production", "latest", "v1", "a\nb", "\x1b[2J", "ü", "'"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
YAML_TOKENS = [
    *"abcAZ09 _-.:,[]{}&*!|>'\"%@`#?\n\t\\\x00\x1b",
    *["---\n", "...\n", "apiVersion: regctl/v1\n", "kind: RegisteredModel\n", "name: m\n"],
    *["versions:\n", "  - run: r\n", "&a ", "*a", "!!python/object ", "<<: ", "? ", "%YAML 1.1\n"],
]
YAMLISH = st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join)


def dump_yaml(value: Any) -> str:
    try:
        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return json.dumps(value, default=str)


# ------------------------------------------------------------------------- URIs

LOCAL_HOSTS = ["127.0.0.1", "[::1]"]
BAD_HOSTS = ["", "[::1", "::1]", "[zz::1]", "a b", "a..b", "h%20", "h\x00", "[::1]x", ".h"]
BAD_PORTS = ["", "0", "65536", "99999", "-1", "x", "1" * 30, "٣", "9 "]


@st.composite
def uris(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["text", "http", "sqlite", "other"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "sqlite":
        return draw(
            st.sampled_from(
                [
                    "sqlite:",
                    "sqlite:/",
                    "sqlite://",
                    "sqlite:///",
                    "sqlite://host/x.db",
                    "sqlite:///x.db?mode=ro",
                    "sqlite:///x.db#f",
                    "SQLITE://",
                    "sqlite:///a\x00b",
                    "sqlite:///a\nb",
                ]
            )
        )
    if kind == "other":
        scheme = draw(st.sampled_from(["ftp", "file", "s3", "c", "mysql", "postgresql", "gopher"]))
        sep = draw(st.sampled_from([":", "://", ":///"]))
        port = draw(st.sampled_from(BAD_PORTS[1:]))  # a database URI never gets a valid port
        return f"{scheme}{sep}h:{port}" if scheme in ("mysql", "postgresql") else scheme + sep
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    user = draw(st.sampled_from(["", "u@", "u:secret-pw@", "@", "u:p:q@"]))
    good = draw(st.booleans())
    host = draw(st.sampled_from(LOCAL_HOSTS if good else BAD_HOSTS + LOCAL_HOSTS))
    port = ":9" if good else draw(st.sampled_from([":9", ""] + [":" + p for p in BAD_PORTS]))
    tail = draw(st.sampled_from(["", "/", "/mlflow", "?q=secret-pw", "#x", "/a b", "/\x1b"]))
    return f"{scheme}://{user}{host}{port}{tail}"


def _safe_to_try(uri: str) -> bool:
    """A URI regctl accepts is one that it will connect to: only loopback port 9."""
    if uri_problem(uri) is not None:
        return True
    return any(f"{h}:9" in uri for h in LOCAL_HOSTS) and uri.lower().startswith("http")


@FUZZ
@given(uri=uris(), flag=st.sampled_from(["--tracking-uri", "--registry-uri"]))
def test_fuzz_uris(uri: str, flag: str) -> None:
    if not _safe_to_try(uri):
        return
    with repo() as root:
        for command in (["diff"], ["validate"], ["resolve", "m@Production"]):
            code, out, err = run(flag, uri, "--repo", str(root), *command)
            assert_clean(code, out, err)
            assert "secret-pw" not in out + err
            if uri_problem(uri) is not None and command != ["validate"]:
                assert err.startswith(f"error: {flag}: "), err


# ------------------------------------------------------------------------- manifests

RUNS = st.sampled_from(["r1", "run_20240101_000000", "", "a/b", "..", "x" * 300])


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else any value: most examples get past the schema."""
    return st.integers(0, 3).flatmap(lambda n: VALUES if n == 3 else good)


NAMES = st.one_of(
    st.sampled_from(["m", "M", "n", "a b", "\x1b]0;t\x07", "x" * 300]), st.text(min_size=1)
)
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "run": mostly(RUNS),
        "run_id": mostly(st.sampled_from(["abc", "a" * 65, "../x"])),
        "run_dir": st.sampled_from(["no/such/dir", "../outside", ""]),
        "artifact_path": mostly(st.sampled_from(["/abs", "../up", "m", ""])),
        "version": mostly(st.integers(min_value=-3, max_value=2**70)),
        "description": mostly(st.text(max_size=20)),
        "aliases": mostly(st.lists(st.sampled_from(["Production", "latest", "v2", "a b", "P"]))),
        "unknown": VALUES,
    },
)


@st.composite
def manifests(draw: st.DrawFn) -> str:
    """Random YAML-ish text, or a manifest's structure with random values."""
    if draw(st.integers(0, 4)) == 4:
        return draw(YAMLISH)
    doc: dict[str, Any] = {
        "apiVersion": draw(mostly(st.just("regctl/v1"))),
        "kind": draw(mostly(st.just("RegisteredModel"))),
        "name": draw(mostly(NAMES)),
    }
    optional = {
        "description": mostly(st.text(max_size=20)),
        "experiment": mostly(st.sampled_from(["exp", "e\nx", ""])),
        "tags": mostly(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        "prune": mostly(st.booleans()),
        "versions": mostly(st.lists(ENTRY, max_size=3)),
        "extra": VALUES,
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)) if key == "extra" else draw(st.booleans()):
            doc[key] = draw(strategy)
    return dump_yaml(doc)


FILE_NAMES = st.sampled_from(
    ["m.yaml", "n.YAML", "o.yml", "p.Yml", "q.yaml", "r.yaml"] * 4
    + ["notes.txt", ".hidden.yaml", "m.YAML", ".gitkeep", "README.md"]
)


@FUZZ
@given(
    files=st.dictionaries(FILE_NAMES, manifests(), min_size=1, max_size=3),
    command=st.sampled_from(
        [["validate"], ["diff"], ["check"], ["apply", "--prune"], ["log", "m"]]
    ),
)
def test_fuzz_manifests(files: dict[str, str], command: list[str]) -> None:
    with repo() as root:
        for name, text in files.items():
            (root / "manifests" / name).write_text(text, encoding="utf-8")
        code, out, err = run("--tracking-uri", UNREACHABLE, "--repo", str(root), *command)
        assert_clean(code, out, err)


# ------------------------------------------------------------------------- policies

REGEXES = st.sampled_from(["^run_{target}$", "(", "(a+)+$", "{", "\\", "[z-a]", "{unknown}", ""])
RULE_CHECKS = {
    "require_params": st.one_of(st.lists(st.text(max_size=8), max_size=3), VALUES),
    "require_metrics": st.one_of(st.lists(st.text(max_size=8), max_size=3), VALUES),
    "run_name": st.one_of(REGEXES, VALUES),
    "metrics": st.one_of(
        st.dictionaries(
            st.sampled_from(["rmse", "auc", ""]),
            st.dictionaries(
                st.sampled_from(["min", "max", "max_increase", "max_decrease", "x"]),
                st.one_of(
                    st.floats(), st.sampled_from(["5%", "-5%", "%", "1e999%", ".5 %"]), VALUES
                ),
            ),
            max_size=2,
        ),
        VALUES,
    ),
    "compare_to": st.one_of(st.sampled_from(["Production", "latest"]), VALUES),
    "require_description": VALUES,
    "allowed_aliases": VALUES,
    "allowed_params": VALUES,
    "aliases": st.one_of(st.just(["Production"]), VALUES),
    "severity": st.one_of(st.sampled_from(["deny", "warn", "info"]), VALUES),
}


@st.composite
def policies(draw: st.DrawFn) -> str:
    """Random YAML-ish text, or policy and waiver structures with random values."""
    if draw(st.integers(0, 3)) == 0:
        return draw(YAMLISH)
    docs = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            rules = []
            for _ in range(draw(st.integers(0, 3))):
                rule: dict[str, Any] = {"name": draw(st.one_of(st.just("r"), VALUES))}
                for key in draw(st.lists(st.sampled_from(sorted(RULE_CHECKS)), max_size=3)):
                    rule[key] = draw(RULE_CHECKS[key])
                rules.append(rule)
            doc: dict[str, Any] = {
                "apiVersion": "regctl/v1",
                "kind": "Policy",
                "name": draw(st.one_of(st.sampled_from(["p", "p"]), VALUES)),
                "match": draw(st.one_of(st.just({}), st.just({"params": {"a": "b"}}), VALUES)),
                "rules": draw(st.one_of(st.just(rules), VALUES)),
            }
        else:
            doc = {
                "apiVersion": "regctl/v1",
                "kind": "Waiver",
                "policy": draw(st.one_of(st.just("p"), VALUES)),
                "rule": draw(st.one_of(st.just("r"), VALUES)),
                "model": draw(st.one_of(st.just("m"), VALUES)),
                "run": draw(st.one_of(st.just("r1"), VALUES)),
                "reason": draw(st.one_of(st.just("ok"), VALUES)),
                "expires": draw(
                    st.one_of(st.sampled_from(["2099-01-01", "2000-01-01", "9999-99-99"]), VALUES)
                ),
            }
        docs.append(dump_yaml(doc))
    return "---\n".join(docs)


@FUZZ
@given(
    files=st.dictionaries(FILE_NAMES, policies(), min_size=1, max_size=2),
    command=st.sampled_from([["validate"], ["check"], ["diff"]]),
)
def test_fuzz_policies(files: dict[str, str], command: list[str]) -> None:
    with repo() as root:
        (root / "policies").mkdir()
        for name, text in files.items():
            (root / "policies" / name).write_text(text, encoding="utf-8")
        code, out, err = run("--tracking-uri", UNREACHABLE, "--repo", str(root), *command)
        assert_clean(code, out, err)


# ------------------------------------------------------------------------- plan files

ACTIONS = st.sampled_from(
    [
        "sync_run",
        "create_model",
        "set_model_description",
        "set_model_tag",
        "create_version",
        "set_version_description",
        "set_alias",
        "delete_alias",
        "delete_version",
        "delete_model",
        "drop_table",
        "",
    ]
)
CHANGE_FIELDS = st.sampled_from(
    [
        "model",
        "version",
        "alias",
        "old",
        "new",
        "entry",
        "tags",
        "key",
        "run_id",
        "expected_version",
        "pinned",
        "files",
        "bytes",
        "location",
        "x",
    ]
)


@st.composite
def plan_texts(draw: st.DrawFn) -> str:
    """Random JSON, or a plan's structure with wrong types, unknown actions, huge ints."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.text(max_size=100))
    if choice == 1:
        return json.dumps(draw(VALUES))
    changes = []
    for _ in range(draw(st.integers(0, 4))):
        change: dict[str, Any] = {}
        if draw(st.integers(0, 5)):
            change["action"] = draw(st.one_of(ACTIONS, VALUES))
        for key in draw(st.lists(CHANGE_FIELDS, max_size=5)):
            change[key] = draw(st.one_of(st.text(max_size=8), st.integers(-(2**70), 2**70), VALUES))
        changes.append(draw(st.one_of(st.just(change), VALUES)) if choice == 2 else change)
    plan: dict[str, Any] = {
        "format_version": draw(st.one_of(st.just(1), VALUES)),
        "target": draw(st.one_of(st.just(""), VALUES)),
        "fingerprint": draw(st.one_of(st.just("sha256:0"), VALUES)),
        "models": draw(st.one_of(st.just([]), VALUES)),
        "changes": changes,
        "notes": draw(st.one_of(st.just([]), VALUES)),
        "bindings": draw(st.one_of(st.just([]), VALUES)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(plan)), max_size=2)):
        plan.pop(key, None)
    return json.dumps(plan, allow_nan=True)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded store for every plan example (created once, never written to)."""
    return empty_sqlite(tmp_path_factory.mktemp("fuzz-db") / "mlflow.db")


@FUZZ
@given(text=plan_texts())
def test_fuzz_plan_files(sqlite_uri: str, text: str) -> None:
    with repo() as root:
        plan = root / "plan.json"
        plan.write_text(text, encoding="utf-8")
        code, out, err = run(
            "--tracking-uri", sqlite_uri, "--repo", str(root), "apply", str(plan), "--auto-approve"
        )
        assert_clean(code, out, err, allowed={0, 1})
        # an empty registry and no manifests: a plan that changes anything is refused
        if code == 0:
            assert "No changes" in out or not json.loads(text).get("changes"), (out, err)
