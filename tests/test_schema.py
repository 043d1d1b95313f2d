"""`regctl schema`: the committed JSON Schema is current and accepts the shipped files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.yamlfile import load_documents
from regctl.commands.schema import json_schema, render, schema_command
from regctl.config import Settings

from conftest import REPO, empty_sqlite

COMMITTED = REPO / "schema" / "regctl.schema.json"


def test_committed_schema_is_current() -> None:
    # regenerate with: regctl schema > schema/regctl.schema.json
    assert COMMITTED.read_text(encoding="utf-8") == render(json_schema())
    out, code = schema_command(Settings(REPO))
    assert code == 0 and out == COMMITTED.read_text(encoding="utf-8")
    assert out.endswith("}\n") and json.loads(out)["$schema"].endswith("/2020-12/schema")


def _plain(value: Any) -> Any:
    """A document as an editor's YAML-to-JSON view has it (dates are strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _documents() -> list[tuple[str, Any]]:
    out = []
    for folder in ("manifests", "policies", "examples"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                shown = path.relative_to(REPO).as_posix()
                out += [
                    (f"{shown}#{d.index}", _plain(d.value)) for d in load_documents(path, shown)
                ]
    return out


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (pip install jsonschema)"
    )
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_schema_accepts_every_shipped_document(validator: Any) -> None:
    docs = _documents()
    assert {name.split("/")[0] for name, _ in docs} >= {"manifests", "policies"}
    problems = {
        name: [e.message for e in validator.iter_errors(doc)]
        for name, doc in docs
        if not validator.is_valid(doc)
    }
    assert problems == {}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({"apiVersion": "regctl/v1", "kind": "Model", "name": "m"}, "'Model' is not one of"),
        ({"apiVersion": "regctl/v2", "kind": "RegisteredModel", "name": "m"}, "regctl/v1"),
        (
            {"apiVersion": "regctl/v1", "kind": "RegisteredModel", "name": "m", "owner": "x"},
            "Additional properties",
        ),
        (
            {
                "apiVersion": "regctl/v1",
                "kind": "RegisteredModel",
                "name": "m",
                "versions": [{"run": "a", "run_id": "b"}],
            },
            "is valid under each of",
        ),
        (
            {
                "apiVersion": "regctl/v1",
                "kind": "RegisteredModel",
                "name": "m",
                "description": None,
            },
            "None is not of type 'string'",
        ),
        (
            {
                "apiVersion": "regctl/v1",
                "kind": "Waiver",
                "policy": "p",
                "rule": "r",
                "model": "m",
                "run": "x",
                "reason": "because",
                "expires": "someday",
            },
            "is not a 'date'",
        ),
    ],
)
def test_schema_rejects(validator: Any, doc: dict[str, Any], why: str) -> None:
    messages = [m for e in validator.iter_errors(doc) for m in _messages(e)]
    assert any(why in m for m in messages), messages


def _messages(error: Any) -> list[str]:
    return [error.message] + [m for sub in error.context or () for m in _messages(sub)]


def test_schema_has_descriptions_for_editors() -> None:
    schema = json_schema()
    assert schema["$id"] and schema["title"] and schema["description"]
    kinds = [b["$ref"].rsplit("/", 1)[1] for b in schema["oneOf"]]
    assert kinds == ["ManifestSpec", "PolicySpec", "WaiverSpec"]
    version = schema["$defs"]["VersionSpec"]["properties"]
    assert all(p.get("description") for p in version.values())
    assert "Relative" not in schema["$defs"]  # nothing unreferenced


def test_imported_manifests_validate(validator: Any, tmp_path: Path) -> None:
    from regctl.commands.import_models import import_command

    from conftest import Backend

    b = Backend("sqlite", empty_sqlite(tmp_path / "i.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    runs = b.make_runs("exp", ["a"])
    b.client.create_registered_model("m", tags={"n": "1"}, description="multi\nline")
    b.client.create_model_version("m", f"runs:/{runs['a']}/model", run_id=runs["a"])
    b.client.set_registered_model_alias("m", "Production", "1")
    out, code = import_command(Settings(b.repo, b.uri), [], None)
    assert code == 0, out
    path = b.repo / "manifests" / "m.yaml"
    (doc,) = load_documents(path, "m.yaml")
    assert validator.is_valid(_plain(doc.value))
