"""The manifest texts `regctl import` writes, and how it writes them.

A new manifest is rendered whole (`new_manifest`); an existing one is edited in place
through `regctl.adapters.yamledit` (`Update`), so it keeps its comments, key order and
formatting and only the values that differ change. `write_atomic` puts a text in place
(a temporary file, then a rename). What to write is decided in `regctl.core.importplan`;
when to write (after every text is checked) in `regctl.commands.import_models`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from regctl.adapters.manifests import API_VERSION
from regctl.adapters.yamledit import Editor, Layout, render_item, render_pair
from regctl.core.importplan import (
    Declarable,
    Existing,
    Lookups,
    StageNote,
    entry_differs,
    entry_pairs,
    keep_versions,
    match_entries,
    model_tags,
    run_pair,
    shared_experiment,
    stage_comments,
)
from regctl.core.model import DesiredVersion, ObservedModel
from regctl.errors import InputError, Location, Problem

SCHEMA_FILE = "schema/regctl.schema.json"
"""Where the JSON Schema lives in a repository (see `regctl.commands.schema`)."""

_ENTRY_ORDER = (
    "run",
    "run_id",
    "run_dir",
    "artifact_path",
    "version",
    "description",
    "aliases",
    "digest",
)
_MODEL_ORDER = (
    "apiVersion",
    "kind",
    "name",
    "description",
    "experiment",
    "tags",
    "prune",
    "versions",
)


def schema_ref(out_dir: Path, repo: Path) -> str:
    return Path(os.path.relpath(repo / SCHEMA_FILE, out_dir)).as_posix()


def new_manifest(
    model: ObservedModel,
    versions: Sequence[Declarable],
    lk: Lookups,
    stages: Mapping[int, StageNote],
    schema_ref: str,
) -> str:
    """The text of a new manifest declaring `model` as the registry holds it."""
    layout = Layout()
    experiment = shared_experiment(versions)
    parts = [
        f"# yaml-language-server: $schema={schema_ref}\n",
        render_pair("apiVersion", API_VERSION, 0),
        render_pair("kind", "RegisteredModel", 0),
        render_pair("name", model.name, 0),
        render_pair("description", model.description, 0),
    ]
    if experiment is not None:
        parts.append(render_pair("experiment", experiment, 0))
    tags = model_tags(model)
    if tags:
        parts.append(_tags_text(tags, layout))
    if versions:
        parts.append("versions:\n")
        for v in versions:
            parts.append(
                render_item(
                    entry_pairs(v, experiment, lk),
                    layout.offset,
                    layout,
                    comments=stage_comments(v, stages),
                )
            )
    return "".join(parts)


def _tags_text(tags: Mapping[str, str], layout: Layout, col: int = 0) -> str:
    flow = render_pair("tags", tags, col)
    if len(flow.rstrip("\n")) <= 100:
        return flow
    return render_pair("tags", tags, col, block=True, layout=layout)


class Update:
    """Edits that bring an existing manifest to what the registry holds."""

    def __init__(
        self, ex: Existing, model: ObservedModel, lk: Lookups, stages: Mapping[int, StageNote]
    ) -> None:
        self.ex = ex
        self.spec = ex.model
        self.model = model
        self.lk = lk
        self.stages = stages
        self.ed = Editor(ex.text, ex.display)
        self.root = self.ed.root
        self.changes: list[str] = []

    def _before(self, mapping: MappingNode, key: str, order: Sequence[str]) -> str | None:
        """The first existing key that the canonical order puts after `key`."""
        later = order[order.index(key) + 1 :]
        present = [name for name, _, _ in self.ed.pairs(mapping)]
        return next((k for k in present if k in later), None)

    def _insert(self, mapping: MappingNode, key: str, text: str, order: Sequence[str]) -> None:
        self.ed.insert_pair(mapping, text, before=self._before(mapping, key, order))

    def _key_col(self, mapping: MappingNode) -> int:
        return self.ed.column(mapping.value[0][0].start_mark.index)

    def model_fields(self) -> None:
        spec, model, ed = self.spec, self.model, self.ed
        node = ed.get(self.root, "description")
        if node is not None and spec.description != model.description:
            ed.set_scalar(node, model.description)
            self.changes.append("description")
        self._tags()

    def _tags(self) -> None:
        want = model_tags(self.model)
        have = dict(self.spec.tags)
        if want == have:
            return
        self.changes.append("tags")
        node = self.ed.get(self.root, "tags")
        if node is None:
            layout = self.ed.layout(None, 0, None)
            self._insert(self.root, "tags", _tags_text(want, layout), _MODEL_ORDER)
            return
        if not want:
            self.ed.delete_pair(self.root, "tags")
            return
        if not isinstance(node, MappingNode) or node.flow_style:
            order = [k for k in have if k in want] + sorted(k for k in want if k not in have)
            self.ed.replace_flow(node, {k: want[k] for k in order})
            return
        col = self._key_col(node)
        for key, _, value in self.ed.pairs(node):
            if key not in want:
                self.ed.delete_pair(node, key)
            elif want[key] != have.get(key):
                self.ed.set_scalar(value, want[key])
        for key in sorted(k for k in want if k not in have):
            self.ed.insert_pair(node, render_pair(key, want[key], col))

    def versions(self, candidates: Sequence[Declarable], warnings: list[str]) -> int:
        """Edit the entries; returns how many entries the file declares afterwards."""
        spec, ed = self.spec, self.ed
        by_number = {v.number: v for v in candidates}
        bound = match_entries(spec, by_number, self.model.versions.keys(), self.lk)
        versions = keep_versions(self.model, candidates, set(bound.values()), warnings)
        declared = {v.number: v for v in versions}
        kept = {i: n for i, n in bound.items() if n in declared}
        claimed = set(kept.values())
        new = [v for v in versions if v.number not in claimed]
        removed = [v for v in spec.versions if v.index not in kept]
        for dv in removed:
            where = bound.get(dv.index)
            why = (
                f"version {where} cannot be declared"
                if where is not None
                else "its version is not in the registry"
            )
            self.changes.append(f"- versions[{dv.index}] ({dv.run_ref}): {why}")
        for v in new:
            self.changes.append(f"+ version {v.number}")
        node = ed.get(self.root, "versions")
        if not isinstance(node, SequenceNode) or node.flow_style or not node.value:
            self._replace_all(node, versions, kept, removed)
        else:
            self._edit_entries(node, declared, kept, new)
        return len(kept) + len(new)

    def _replace_all(
        self,
        node: Node | None,
        versions: Sequence[Declarable],
        kept: Mapping[int, int],
        removed: Sequence[DesiredVersion],
    ) -> None:
        # `versions` absent, empty or a flow list: only an empty one can be rewritten
        if kept or (removed and versions):
            raise InputError(
                [
                    _problem(
                        self.ex.display,
                        "versions is a flow list ([...]); write it as a block list for "
                        "import to update it",
                    )
                ]
            )
        layout = Layout()
        items = "".join(
            render_item(
                entry_pairs(v, self.spec.experiment, self.lk),
                layout.offset,
                layout,
                comments=stage_comments(v, self.stages),
            )
            for v in versions
        )
        if node is None:
            if items:
                self._insert(self.root, "versions", "versions:\n" + items, _MODEL_ORDER)
        elif items:
            self.ed.replace_with_block(self.root, "versions", items)
        elif removed:
            self.ed.replace_flow(node, [])

    def _edit_entries(
        self,
        seq: SequenceNode,
        by_number: Mapping[int, Declarable],
        kept: Mapping[int, int],
        new: Sequence[Declarable],
    ) -> None:
        ed, spec = self.ed, self.spec
        layout = ed.layout(seq, 0, None)
        dash = ed.dash_column(seq.value[0])
        for i, item in enumerate(seq.value):
            if i not in kept:
                ed.delete_item(seq, i)
            else:
                self._entry(i, item, spec.versions[i], by_number[kept[i]])
        # a new version goes before the first kept entry with a higher number
        slots: dict[int, list[Declarable]] = {}
        for v in new:
            at = next(
                (i for i in sorted(kept) if kept[i] > v.number),
                len(seq.value),
            )
            slots.setdefault(at, []).append(v)
        for at, group in sorted(slots.items()):
            text = "".join(
                render_item(
                    entry_pairs(v, spec.experiment, self.lk),
                    dash,
                    layout,
                    comments=stage_comments(v, self.stages),
                )
                for v in group
            )
            ed.insert_items(seq, at, text)

    def _entry(self, i: int, item: Node, dv: DesiredVersion, v: Declarable) -> None:
        ed = self.ed
        if not isinstance(item, MappingNode) or item.flow_style:
            if entry_differs(dv, v, self.spec.experiment, self.lk):
                raise InputError(
                    [
                        _problem(
                            self.ex.display,
                            f"versions[{i}] is a flow mapping ({{...}}); write it as a block "
                            "mapping for import to update it",
                        )
                    ]
                )
            return
        label = f"versions[{i}]"
        col = self._key_col(item)
        if self.lk.resolve(self.spec.experiment, dv) != v.run_id:
            key, value = run_pair(v, self.spec.experiment, self.lk)
            old = "run" if dv.run is not None else "run_id"
            ed.replace_pair(item, old, key, value)
            if dv.run_dir is not None:
                ed.delete_pair(item, "run_dir")
            self.changes.append(f"{label}: {key} {value}")
        # v.path: None when the source does not say (then the entry must not give one),
        # "" for the run's root
        node = ed.get(item, "artifact_path")
        if node is not None and (v.path is None or (v.path == "" and dv.artifact_path)):
            ed.delete_pair(item, "artifact_path")
            self.changes.append(f"{label}: artifact_path")
        elif node is not None and v.path and dv.artifact_path != v.path:
            ed.set_scalar(node, v.path)
            self.changes.append(f"{label}: artifact_path")
        elif node is None and v.path:
            text = render_pair("artifact_path", v.path, col)
            self._insert(item, "artifact_path", text, _ENTRY_ORDER)
            self.changes.append(f"{label}: artifact_path")
        node = ed.get(item, "version")
        if node is not None and dv.version != v.number:
            ed.set_scalar(node, v.number)
            self.changes.append(f"{label}: version {v.number}")
        node = ed.get(item, "description")
        if node is not None and dv.description != v.description:
            ed.set_scalar(node, v.description)
            self.changes.append(f"{label}: description")
        self._aliases(item, dv, v, col, label)
        if v.digest is not None and dv.digest != v.digest:
            node = ed.get(item, "digest")
            if node is not None:
                ed.set_scalar(node, v.digest)
            else:
                self._insert(item, "digest", render_pair("digest", v.digest, col), _ENTRY_ORDER)
            self.changes.append(f"{label}: digest")

    def _aliases(
        self, item: MappingNode, dv: DesiredVersion, v: Declarable, col: int, label: str
    ) -> None:
        want = set(v.aliases)
        have = list(dv.aliases)
        order = [a for a in have if a in want] + sorted(want - set(have))
        if order == have:
            return
        self.changes.append(f"{label}: aliases")
        ed = self.ed
        node = ed.get(item, "aliases")
        if not order:
            ed.delete_pair(item, "aliases")
        elif node is None:
            self._insert(item, "aliases", render_pair("aliases", order, col), _ENTRY_ORDER)
        elif not isinstance(node, SequenceNode) or node.flow_style:
            ed.replace_flow(node, order)
        else:
            dash = ed.dash_column(node.value[0]) if node.value else col + 2
            for j, alias in enumerate(have):
                if alias not in want:
                    ed.delete_item(node, j)
            added = [a for a in order if a not in have]
            if added:
                text = "".join(f"{' ' * dash}- {_flow_scalar(a)}\n" for a in added)
                ed.insert_items(node, len(node.value), text)

    def result(self) -> str:
        return self.ed.result()


def _flow_scalar(value: str) -> str:
    return render_pair("k", [value], 0)[len("k: [") :].rstrip("\n")[:-1]


def _problem(display: str, message: str) -> Problem:
    return Problem(Location(display), "", message)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
