"""Issue 13, case 6: every string from the registry, a run or a file is rendered as data.

Two parts. The escaping module's own contract, as literal tables and one property
(no server). Then one registry world built twice on the real server, once with benign
strings and once with hostile ones in every slot regctl prints (model names and
descriptions, tags, version descriptions, run names, params, experiment and run
directory names, a managed model nobody declares, an unmanaged version holding an
alias), rendered by the CLI in every format:

- markdown (`diff`, `check`) is parsed with markdown-it-py (CommonMark plus GFM tables):
  the hostile render has exactly the token types of the benign one (so no link, image,
  HTML, heading, emphasis, fence or table cell came from a value), and the payloads
  only ever appear inside code (`code_inline`, or the ```diff fence);
- text (`diff`, `check`, `resolve`, errors) carries no ESC, BEL, C1 or bidi control,
  and on a terminal only regctl's own colour codes;
- `check --format github` stays one workflow command per result;
- JSON parses back to the hostile values and carries no raw control either.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from regctl import escape
from regctl.adapters.git import Commit
from regctl.core.history import Event
from regctl.core.importplan import ImportedModel, ImportReport
from regctl.render.history import render_log
from regctl.render.importing import render_report as render_import

from conftest import REPO, Server

# ---------------------------------------------------------------------------- payloads

PAYLOADS = (
    "[x](https://evil.example)",
    "![i](https://evil.example/a.png)",
    "<img src=x onerror=alert(1)>",
    "<details>",
    "@octocat",
    "#1",
    "**bold**",
    "_em_",
    "```",
    "|",
    "\n# heading",
    "\r",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "\u202e",
    "`` ` ``",
    "\x9b31m",
    "\n```\n<img src=x onerror=alert(1)>\n```diff",  # closes the diff fence, reopens it
)
HOSTILE = " ".join(PAYLOADS)
# MLflow refuses '/' and ':' in model names; everything else goes
NAME_SAFE = " ".join(p for p in PAYLOADS if "/" not in p and ":" not in p)

# what no text output may carry unless regctl wrote it: ESC, BEL, CSI (C1), bidi controls
FORBIDDEN_TEXT = re.compile("[\x1b\x07\x9b\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
SGR = re.compile(r"\x1b\[(?:3[0-9]|0)m")


def md() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


# ----------------------------------------------------------------- escape.py: tables


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("plain run_1 é ü 中文 🙂", "plain run_1 é ü 中文 🙂"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("a\tb", "a\\tb"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),  # C1: NEL and CSI
        ("a\u202eb", "a\\u202eb"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("\u2028\u2029", "\\u2028\\u2029"),  # line and paragraph separators
        ("\ud800", "\\ud800"),  # a lone surrogate would crash the UTF-8 writer
        ("\U000e0001", "\\U000e0001"),  # a format character beyond the BMP
        ("back\\slash \\n", "back\\slash \\n"),  # not doubled: text(text(s)) == text(s)
        ("<b>|`*_[]()#@", "<b>|`*_[]()#@"),  # text is not markdown
    ],
)
def test_text(value: str, expected: str) -> None:
    assert escape.text(value) == expected
    assert escape.text(expected) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", '""'),
        ("run_1", "`run_1`"),
        ("a`b", "``a`b``"),
        ("a``b`c", "```a``b`c```"),
        ("`a", "`` `a ``"),
        ("a`", "`` a` ``"),
        ("```", "```` ``` ````"),
        (" a", "`  a `"),
        ("a ", "` a  `"),
        (" a ", "`  a  `"),
        ("   ", "`   `"),  # only spaces: CommonMark keeps them as they are
        ('""', '`""`'),  # the value "" is code; the empty value is not
        ("a\nb", "`a\\nb`"),
        ("[x](https://evil.example)", "`[x](https://evil.example)`"),
        ("a|b", "`a|b`"),  # outside a table a pipe is text
    ],
)
def test_md_code(value: str, expected: str) -> None:
    assert escape.md_code(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a|b", "`a\\|b`"),
        ("a\\|b", "`a\\\\|b`"),  # GFM: `\|` is the escape, whatever precedes it
        ("|", "`\\|`"),
        ("", '""'),
    ],
)
def test_md_cell(value: str, expected: str) -> None:
    assert escape.md_cell(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain é", '"plain é"'),
        ("a\u202eb", '"a\\u202eb"'),
        ("\x7f\x9b", '"\\u007f\\u009b"'),
        ("\u2028", '"\\u2028"'),
        ("\ud800", '"\\ud800"'),
        ("\U000e0001", '"\\udb40\\udc01"'),  # a surrogate pair beyond the BMP
        ("\x1b\n", '"\\u001b\\n"'),  # json.dumps escaped these already
    ],
)
def test_json_text(value: str, expected: str) -> None:
    got = escape.json_text(json.dumps(value, ensure_ascii=False))
    assert got == expected
    assert json.loads(got) == value


def test_json_text_keeps_its_own_newlines() -> None:
    doc = json.dumps({"a": "x\u202ey", "b": [1]}, indent=2, ensure_ascii=False)
    assert escape.json_text(doc) == doc.replace("\u202e", "\\u202e")
    assert "\n" in escape.json_text(doc)


@pytest.mark.parametrize(
    ("value", "data", "prop"),
    [
        ("5% a\r\nb", "5%25 a\\r\\nb", "5%25 a\\r\\nb"),
        ("p/r: a,b", "p/r: a,b", "p/r%3A a%2Cb"),
        ("x\n::error::fake", "x\\n::error::fake", "x\\n%3A%3Aerror%3A%3Afake"),
        ("\x1b[31m", "\\x1b[31m", "\\x1b[31m"),
    ],
)
def test_annotation(value: str, data: str, prop: str) -> None:
    assert escape.annotation(value) == data
    assert escape.annotation_property(value) == prop


def _escaped_category(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _children(tokens: list[Token]) -> list[Token]:
    out = []
    for t in tokens:
        out.append(t)
        out.extend(t.children or [])
    return out


@given(st.text())
def test_any_string_is_one_code_span_holding_its_text(value: str) -> None:
    shown = escape.text(value)
    assert not any(_escaped_category(ch) for ch in shown)
    assert escape.text(shown) == shown
    if not value:
        return
    inline = [t for t in _children(md().parse(escape.md_code(value))) if t.children is None]
    assert [t.type for t in inline] == ["paragraph_open", "code_inline", "paragraph_close"]
    assert inline[1].content == shown
    row = f"| a | b |\n| --- | --- |\n| {escape.md_cell(value)} | x |\n"
    cells = [t for t in _children(md().parse(row)) if t.type == "td_open"]
    codes = [t for t in _children(md().parse(row)) if t.type == "code_inline"]
    assert len(cells) == 2
    assert [c.content for c in codes] == [shown]


# ------------------------------------------------------------- renderers without server


def test_log_text_escapes_commit_and_manifest_strings() -> None:
    commit = Commit("a" * 40, "aaaaaaa", "2025-10-10", "eve\x1b]0;pwned\x07", "subj\u202e\nx")
    out = render_log("m", [Event(commit, ("Production: 1 -> run\x1b[2J",), ("n\r",))], "text")
    assert not FORBIDDEN_TEXT.search(out)
    assert out.count("\n") == 3  # the header, the move, the note: no line of a value's own
    assert "eve\\x1b]0;pwned\\x07" in out and "subj\\u202e\\nx" in out
    assert "run\\x1b[2J" in out and "! n\\r" in out
    none = render_log("m\x1b[2J", [], "text", alias="P\n")
    assert none == "No promotions of alias P\\n of m\\x1b[2J in the git history.\n"


def test_import_report_escapes_model_names() -> None:
    report = ImportReport(
        (ImportedModel(f"m{NAME_SAFE}", "manifests/m.yaml", "created", 1, managed=False),),
        warnings=(f"w {HOSTILE}",),
    )
    out = render_import(report, adopted=[f"m{NAME_SAFE}"])
    assert not FORBIDDEN_TEXT.search(out)
    assert len(out.splitlines()) == len(render_import(_benign_import(), adopted=["m"]).splitlines())


def _benign_import() -> ImportReport:
    return ImportReport(
        (ImportedModel("m", "manifests/m.yaml", "created", 1, managed=False),), warnings=("w",)
    )


# ------------------------------------------------------------ one world, twice, on a server

SLOTS = (
    "model",
    "orphan",
    "experiment",
    "model_desc_old",
    "model_desc_new",
    "tag_old",
    "tag_new",
    "run1",
    "run2",
    "run3",
    "run4",
    "v1_desc_old",
    "v1_desc_new",
    "v2_desc",
    "unmanaged_desc",
    "param",
    "provenance",
    "manifest",
)
NAMES = ("model", "orphan", "run4", "manifest")  # MLflow model names and file names: no '/' or ':'
PRINTABLE = ("run4",)  # regctl refuses run directory names with control characters

POLICY = """\
apiVersion: regctl/v1
kind: Policy
name: gate
match: {params: {model_type: lgbm}}
rules:
  - name: bar
    aliases: [Production]
    metrics: {rmse_test: {max: 0.06}}
  - name: better
    aliases: [Production]
    compare_to: Production
    metrics: {rmse_test: {max_increase: 5%}}
  - name: described
    require_description: true
    severity: warn
"""


def _strings(uniq: str, hostile: bool) -> dict[str, str]:
    """Every slot's value: `{uniq}-{slot}`, after the payloads (rotated, so that each
    payload starts some value) in the hostile world."""
    out = {}
    for i, slot in enumerate(SLOTS):
        plain = f"{uniq}-{slot}"
        if hostile:
            parts = PAYLOADS[i % len(PAYLOADS) :] + PAYLOADS[: i % len(PAYLOADS)]
            if slot in NAMES:
                parts = tuple(p for p in parts if "/" not in p and ":" not in p)
            if slot in PRINTABLE:
                parts = tuple(p for p in parts if p.isprintable())
            plain = " ".join((*parts, plain))
        out[slot] = plain
    # a metric name holds letters, digits and "_-. :/" only (no "//"): enough for a www.
    # autolink and emphasis
    out["metric"] = f"www.evil.example/{uniq} _em_" if hostile else f"{uniq}_metric"
    return out


def _q(value: str) -> str:
    return json.dumps(value)  # a YAML double-quoted scalar, escapes included


@dataclass
class World:
    """One registry world on the shared server and what every command printed for it."""

    s: dict[str, str]
    repo: Path
    url: str
    out: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    def args(self, *cmd: str, color: bool = False) -> list[str]:
        flags = [] if color else ["--no-color"]
        return ["--tracking-uri", self.url, "--repo", str(self.repo), *flags, *cmd]


def _cli(args: list[str]) -> tuple[int, str, str]:
    from regctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _build(url: str, root: Path, s: dict[str, str]) -> World:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    c = MlflowClient(url, url)
    exp_id = c.create_experiment(s["experiment"])

    def run(name: str, rmse: float) -> str:
        rid: str = c.create_run(exp_id, run_name=name).info.run_id
        params = {"model_type": "lgbm", "primary_metric": "rmse_test", "model_path": "model.txt"}
        params["note"] = s["param"]
        metrics = {"rmse_test": rmse, s["metric"]: 1.5}
        c.log_batch(
            rid,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        c.set_terminated(rid)
        return rid

    r1, _, r3 = run(s["run1"], 0.05), run(s["run2"], 0.1), run(s["run3"], 0.04)
    tags = {"regctl.managed": "true", "owner": s["tag_old"], "regctl.applied": s["provenance"]}
    c.create_registered_model(s["model"], tags=tags, description=s["model_desc_old"])
    c.create_model_version(
        s["model"],
        f"runs:/{r1}",
        run_id=r1,
        description=s["v1_desc_old"],
        tags={"regctl.applied": s["provenance"]},
    )
    c.create_model_version(s["model"], f"runs:/{r3}", run_id=r3, description=s["unmanaged_desc"])
    c.set_registered_model_alias(s["model"], "Production", 1)
    c.set_registered_model_alias(s["model"], "Staging", 2)  # by hand, on an undeclared version
    c.create_registered_model(
        s["orphan"], tags={"regctl.managed": "true"}, description=s["model_desc_old"]
    )

    repo = root / "repo"
    (repo / "manifests").mkdir(parents=True)
    (repo / "policies").mkdir()
    (repo / "policies" / "gate.yaml").write_text(POLICY)
    run_dir = repo / "runs" / s["run4"]
    run_dir.mkdir(parents=True)
    config = {"model_type": "lgbm", "target": "y", "objective": "huber", "dataset": s["param"]}
    (run_dir / "pipeline_config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text(json.dumps({"rmse_test": 0.05}))
    (run_dir / "model.txt").write_text("tree\n")
    (repo / "manifests" / f"{s['manifest']}.yaml").write_text(
        "apiVersion: regctl/v1\n"
        "kind: RegisteredModel\n"
        f"name: {_q(s['model'])}\n"
        f"description: {_q(s['model_desc_new'])}\n"
        f"experiment: {_q(s['experiment'])}\n"
        f"tags: {{owner: {_q(s['tag_new'])}}}\n"
        "versions:\n"
        f"  - run: {_q(s['run1'])}\n"
        f"    description: {_q(s['v1_desc_new'])}\n"
        f"  - run: {_q(s['run2'])}\n"
        f"    description: {_q(s['v2_desc'])}\n"
        "    aliases: [Production]\n"
        f"  - run: {_q(s['run4'])}\n"
        f"    run_dir: {_q('runs/' + s['run4'])}\n"
    )
    return World(s, repo, url)


COMMANDS: dict[str, tuple[str, ...]] = {
    "diff": ("diff",),
    "diff-md": ("diff", "--format", "markdown"),
    "diff-json": ("diff", "--format", "json"),
    "check": ("check",),
    "check-md": ("check", "--format", "markdown"),
    "check-github": ("check", "--format", "github"),
    "check-json": ("check", "--format", "json"),
}


def _capture(w: World) -> World:
    for key, cmd in COMMANDS.items():
        w.out[key] = _cli(w.args(*cmd))
    target = f"{w.s['model']}@Production"
    w.out["resolve"] = _cli(w.args("resolve", target))
    w.out["resolve-json"] = _cli(w.args("resolve", target, "--format", "json"))
    return w


def _remove(w: World) -> None:
    from mlflow import MlflowClient

    c = MlflowClient(w.url, w.url)
    for name in (w.s["model"], w.s["orphan"]):
        with contextlib.suppress(Exception):
            c.delete_registered_model(name)
    exp = c.get_experiment_by_name(w.s["experiment"])
    if exp is not None:
        c.delete_experiment(exp.experiment_id)


@pytest.fixture(scope="module")
def worlds(
    mlflow_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, World]]:
    """(benign, hostile): the benign world is built, rendered and removed before the
    hostile one is built, so each render sees only its own models (plus whatever other
    tests left on the shared server, the same both times)."""
    uniq = f"i{uuid.uuid4().hex[:8]}"
    benign = _build(mlflow_server.url, tmp_path_factory.mktemp("benign"), _strings(uniq, False))
    try:
        _capture(benign)
    finally:
        _remove(benign)
    hostile = _build(mlflow_server.url, tmp_path_factory.mktemp("hostile"), _strings(uniq, True))
    try:
        yield benign, _capture(hostile)
    finally:
        _remove(hostile)


# markers of the payloads: wherever one occurs in rendered markdown, it must be code
MARKERS = ("@octocat", "evil.example", "onerror", "<details>", "pwned", "**bold**", "_em_")
ELEMENTS = {"link_open", "image", "html_inline", "html_block", "code_block"}
SCREEN = re.compile(rb"[\x1b\x07\x9b]")


def _tokens(text: str) -> list[Token]:
    return _children(md().parse(text))


def _cell_counts(text: str) -> list[int]:
    """Cells per table row as GFM splits the source: on every `|` not escaped as `\\|`."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [len(re.split(r"(?<!\\)\|", row.strip())) - 2 for row in rows]


@pytest.mark.server
@pytest.mark.parametrize("key", ["diff-md", "check-md"])
def test_markdown_hostile_values_create_no_element(worlds: tuple[World, World], key: str) -> None:
    benign, hostile = worlds
    (code_b, out_b, _), (code_h, out_h, err_h) = benign.out[key], hostile.out[key]
    assert code_h == code_b == 3, err_h  # the gate denies the same candidate in both
    types_b = collections.Counter(t.type for t in _tokens(out_b))
    types_h = collections.Counter(t.type for t in _tokens(out_h))
    assert types_h == types_b  # no link, image, HTML, heading, emphasis, fence or cell more
    assert not ELEMENTS & set(types_h)
    assert not FORBIDDEN_TEXT.search(out_h)  # no bidi trick in the comment, fence included
    assert {t.info for t in _tokens(out_h) if t.type == "fence"} <= {"diff", "mermaid"}
    charts = [t.content for t in _tokens(out_h) if t.type == "fence" and t.info == "mermaid"]
    assert len(charts) == (1 if key == "diff-md" else 0)  # the alias move's (issue 15)
    for chart in charts:  # names as entity codes: regctl's own %% and quotes only
        assert f'title "{escape.mermaid(hostile.s["model"], 40)} Production, ' in chart
        assert chart.count("%%") == 2 and "`" not in chart and "-->" not in chart
        lines = chart.splitlines()
        heads = [line.split()[0] for line in lines]
        assert heads == ["%%{init:", "xychart-beta", "title", "x-axis", "y-axis", "line"]
        assert lines[2].count('"') == 2  # the title stays one string
    # each table row has as many cells as its header, split the way GitHub splits it
    assert _cell_counts(out_h) == _cell_counts(out_b)
    assert len(set(_cell_counts(out_h))) <= 2  # the plan's 4-column and the policy's 8
    leaves = [t for t in _tokens(out_h) if t.children is None and t.type != "inline"]
    for t in leaves:
        if any(m in t.content for m in MARKERS):
            assert t.type in ("code_inline", "fence"), (t.type, t.content)
    # ...and the values are shown, whole: the model name and the run names as code
    codes = {t.content for t in leaves if t.type == "code_inline"}
    s = hostile.s
    assert escape.text(s["model"]) in codes
    assert escape.text(s["run2"]) in codes
    if key == "diff-md":
        assert escape.text(s["orphan"]) in codes  # a heading of its own, as code
        assert escape.text(s["run1"]) in codes  # the incumbent of the alias move
        assert escape.text(s["metric"]) in codes
        fences = "".join(t.content for t in leaves if t.type == "fence")
        assert escape.text(s["run4"]) in fences and escape.text(s["experiment"]) in fences
    assert "@octocat" in "".join(codes)


@pytest.mark.server
@pytest.mark.parametrize("key", ["diff", "check", "resolve"])
def test_text_carries_no_control_character(worlds: tuple[World, World], key: str) -> None:
    benign, hostile = worlds
    (code_b, out_b, err_b), (code_h, out_h, err_h) = benign.out[key], hostile.out[key]
    assert code_h == code_b, err_h
    assert not FORBIDDEN_TEXT.search(out_h + err_h)
    assert len(out_h.splitlines()) == len(out_b.splitlines())  # no line of a value's own
    # resolve warns (stderr, one line) that the version has no content record
    assert len(err_h.splitlines()) == len(err_b.splitlines()) == (key == "resolve")
    assert all(line.startswith("warning: ") for line in err_h.splitlines())
    s = hostile.s
    assert escape.text(s["run2" if key != "resolve" else "run1"]) in out_h
    if key == "resolve":
        assert "\\x1b]0;pwned\\x07" in out_h  # the description, the tags and the param


@pytest.mark.server
def test_github_annotations_stay_one_command_each(worlds: tuple[World, World]) -> None:
    benign, hostile = worlds
    (_, out_b, _), (code, out, err) = benign.out["check-github"], hostile.out["check-github"]
    assert code == 3, err
    assert len(out.splitlines()) == len(out_b.splitlines()) == 4
    command = re.compile(r"^::(error|warning|notice) ([a-z]+=[^,:]*(?:,[a-z]+=[^,:]*)*)::(.*)$")
    *commands, summary = out.splitlines()
    assert summary.startswith("policy check: ")
    for line in commands:
        m = command.match(line)
        assert m, line
        assert not re.search(r"%(?!25|0D|0A|3A|2C)", m.group(3))
    assert not FORBIDDEN_TEXT.search(out) and "\r" not in out
    assert "@octocat" in out  # the values are there, escaped
    manifest = f"manifests/{hostile.s['manifest']}.yaml"  # a file name is hostile too
    assert f"::error file={escape.annotation_property(manifest)},line=" in out


@pytest.mark.server
@pytest.mark.parametrize("key", ["diff-json", "check-json", "resolve-json"])
def test_json_is_inert_and_holds_the_values(worlds: tuple[World, World], key: str) -> None:
    _, hostile = worlds
    code, out, err = hostile.out[key]
    assert not FORBIDDEN_TEXT.search(out), err
    doc = json.loads(out)
    s = hostile.s
    if key == "diff-json":
        assert code == 3 and doc["models"] == [s["model"]]
        by_action = {c["action"]: c for c in doc["changes"]}
        assert by_action["set_model_description"]["old"] == s["model_desc_old"]
        assert by_action["sync_run"]["run_name"] == s["run4"]
    elif key == "check-json":
        assert code == 3 and {r["run"] for r in doc["results"]} >= {s["run1"], s["run2"]}
    else:
        assert code == 0 and doc["run"]["name"] == s["run1"]
        assert doc["description"] == s["v1_desc_old"]
        assert doc["params"]["note"] == s["param"]


def _on_a_terminal(args: list[str]) -> bytes:
    """What `regctl ARGS` writes to a pseudo-terminal (stdout and stderr): colour on."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO / "controller"), "MLFLOW_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "regctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while select.select([master], [], [], 300)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    return b"".join(chunks)


@pytest.mark.server
def test_colour_on_a_terminal_is_the_only_raw_escape(worlds: tuple[World, World]) -> None:
    _, hostile = worlds
    out = _on_a_terminal(hostile.args("diff", color=True))
    assert b"\x1b[33m" in out and b"\x1b[0m" in out  # colour is on
    assert escape.text(hostile.s["run2"]).encode() in out
    rest = SGR.sub("", out.decode("utf-8"))
    assert not FORBIDDEN_TEXT.search(rest)
    assert not SCREEN.search(rest.encode("utf-8"))


@pytest.mark.server
def test_error_lines_are_escaped(worlds: tuple[World, World], tmp_path: Path) -> None:
    _, hostile = worlds
    # the server's own message quotes the name it refuses
    name = "a:b\x1b]0;pwned\x07\n# x"
    code, out, err = _cli(hostile.args("resolve", f"{name}@Production"))
    assert code == 1 and not out
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not FORBIDDEN_TEXT.search(err)
    # problems name files and keys: one escaped line per problem
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    for evil in ("\x1b]0;pwned\x07", "\u202e\n# x"):
        (repo / "manifests" / f"m{evil}.yaml").write_text(
            'apiVersion: regctl/v1\nkind: RegisteredModel\nname: "m\\e[2J"\n'
            '"bad\\e[2J\\nerror: fake": 1\nversions: []\n'
        )
    code, out, err = _cli(["--repo", str(repo), "validate"])
    assert code == 1
    assert not FORBIDDEN_TEXT.search(err)
    lines = err.splitlines()
    assert lines and all(line.startswith("error: manifests/m") for line in lines), err
    assert "m\\x1b]0;pwned\\x07.yaml" in err and "m\\u202e\\n# x.yaml" in err
