"""libyaml (fast) and ruamel (reference) event streams build identical documents.

`regctl.adapters.yamlfile` reads events from libyaml's C parser when PyYAML has it and falls back
to ruamel's parser for anything libyaml refuses. These tests hold the two paths equal on
every YAML file of the repository and on a set of tricky inputs: same values, same
positions, same scalar tags, or the same error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regctl.adapters.yamlfile import _fast_events, parse_documents
from regctl.errors import InputError

REPO = Path(__file__).resolve().parents[1]

TRICKY = [
    "a: 1\nb: '017'\nc: 017\nd: yes\ne: ~\nf:\ng: 2025-10-09\nh: 1e3\ni: .inf\n",
    "q: \"tab\\tquote\\\" slash\\/ unicode \\u00e9\"\nr: 'it''s'\n",
    "block: |\n  line one\n  line two\nfolded: >-\n  folded\n  text\n",
    "flow: {a: 1, b: [x, y, {c: d}]}\nseq:\n- 1\n- - nested\n  - more\n",
    "---\nname: one\n...\n---\nname: two\n",
    "# comment only\n",
    "",
    "key: value # trailing comment\nother:   spaced   \n",
    "a: &anchor 1\nb: *anchor\n",
    "a: !!python/object:os.system x\n",
    "a: ! plain\n",
    "a: 1\na: 2\n",
    "<<: {a: 1}\n",
    "a:\n\tb: tab\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "%YAML 1.2\n---\na: 1\n",
    "%YAML 1.1\n---\na: 1\n",
    "é: ü\nnon_bmp: \U0001f600\n",
    "a: \x85 next line\n",
    "key with spaces: v\n'quoted key': v\n? complex\n: v\n",
    "[1, 2]\n",
    "- a\n- b: c\n  d: e\n",
    "x: " + "[" * 40 + "]" * 40 + "\n",
    "a: 'multi\n  line'\nb: plain\n  continued\n",
]


def _both(text: str) -> tuple[object, object]:
    out = []
    for fast in (True, False):
        try:
            out.append(parse_documents(text, "f.yaml", fast=fast))
        except InputError as exc:
            out.append(("error", [str(p) for p in exc.problems]))
    return out[0], out[1]


def test_libyaml_is_used() -> None:
    assert _fast_events("a: 1\n") is not None


def _repo_yaml() -> list[Path]:
    skip = {".git", ".venv", "venv", "node_modules"}
    return sorted(
        p
        for p in REPO.rglob("*.y*ml")
        if not skip.intersection(p.relative_to(REPO).parts) and p.stat().st_size < 1 << 20
    )


@pytest.mark.parametrize("path", _repo_yaml(), ids=lambda p: str(p.relative_to(REPO)))
def test_repository_files_parse_the_same(path: Path) -> None:
    fast, ref = _both(path.read_text(encoding="utf-8"))
    assert fast == ref


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_inputs_parse_the_same(text: str) -> None:
    fast, ref = _both(text)
    assert fast == ref


_scalar = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
_values = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_values, st.sampled_from(["block", "flow"]))
def test_generated_documents_parse_the_same(value: object, style: str) -> None:
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = style == "flow"
    buf = StringIO()
    yaml.dump(value, buf)
    fast, ref = _both(buf.getvalue())
    assert fast == ref
