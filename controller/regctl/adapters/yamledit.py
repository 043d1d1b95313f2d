"""Edit YAML text in place: change what differs, keep every other byte as it was.

`regctl import` updates manifests that people have edited. A ruamel round-trip dump
would normalise what ruamel does not model (an explicit `---`, flow lists wrapped over
several lines, the spacing after a colon) and reattach comments to the wrong list item
when items are removed or inserted. So the editor works on the text: ruamel's composer
(round-trip mode) gives the exact position of every key and value, edits replace those
spans, and ruamel renders only the new pieces (quoting, block scalars, flow lists),
each checked by parsing it back.

Conventions, chosen so that a reviewer reads the change as a person would have made it:
a replaced value keeps its quote style when it can; a removed key or list item takes the
comment lines directly above it (at its own indentation) and its end-of-line comment
with it; a new key or item goes where the canonical order puts it, indented like its
siblings; comments anywhere else are never touched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from regctl.errors import InputError, Location, Problem

Value = str | int | Sequence[str] | Mapping[str, str]
"""What the editor writes: scalars, lists of strings (flow) and string maps."""

WIDE = 1 << 16
"""Line width for rendering: never fold a long value over lines."""

# Plain scalars that YAML 1.1 readers (PyYAML, many tools) take for booleans; YAML 1.2
# reads them as strings, but quoting them costs nothing and avoids the surprise.
_YAML11_BOOLS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false"})


@dataclass(frozen=True, slots=True)
class Layout:
    """Indentation of block collections: a list item's dash sits `offset` columns to the
    right of its parent key, its content `sequence` columns to the right of the dash;
    a nested mapping's keys sit `mapping` columns to the right of their parent key."""

    mapping: int = 2
    sequence: int = 2
    offset: int = 2


def _yaml(layout: Layout = Layout()) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = WIDE
    yaml.indent(mapping=layout.mapping, sequence=layout.sequence, offset=0)
    return yaml


def _dump(data: Any, layout: Layout = Layout()) -> str:
    out = io.StringIO()
    _yaml(layout).dump(data, out)
    return out.getvalue()


def _parse_one(text: str) -> Any:
    """The plain value of a one-document snippet, read as regctl reads manifests."""
    from regctl.adapters.yamlfile import parse_documents

    docs = parse_documents(text, "<render>")
    return docs[0].value if docs else None


# --------------------------------------------------------------------------- rendering


def styled(value: str, style: str | None = None) -> Any:
    """`value` as a ruamel scalar of the given style ('"', "'", '|', '>' or plain).

    A style that cannot hold the value (a line break in a single-quoted or folded
    string) gives way to one that can; a multi-line value becomes a literal block; a
    plain YAML 1.1 boolean (`yes`, `off`...) is quoted.
    """
    multiline = "\n" in value
    if style == '"':
        return DoubleQuotedScalarString(value)
    if multiline:
        return LiteralScalarString(value)
    if style == "'":
        return SingleQuotedScalarString(value)
    if style == ">" and value:
        return FoldedScalarString(value)
    if value.lower() in _YAML11_BOOLS:
        return SingleQuotedScalarString(value)
    return value


def _in_flow(value: str, style: str | None) -> Any:
    # a block scalar cannot stand inside [...] or {...}: line breaks are escaped instead
    return DoubleQuotedScalarString(value) if "\n" in value else styled(value, style)


def _flow(value: Sequence[str] | Mapping[str, str], styles: Mapping[str, str | None]) -> Any:
    if isinstance(value, Mapping):
        fm = CommentedMap((k, _in_flow(v, styles.get(k))) for k, v in value.items())
        fm.fa.set_flow_style()
        return fm
    fs = CommentedSeq(_in_flow(v, styles.get(v)) for v in value)
    fs.fa.set_flow_style()
    return fs


def _block_map(value: Mapping[str, str]) -> Any:
    return CommentedMap((k, styled(v)) for k, v in value.items())


def render_pair(
    key: str,
    value: Value,
    col: int,
    *,
    style: str | None = None,
    block: bool = False,
    layout: Layout = Layout(),
    styles: Mapping[str, str | None] | None = None,
) -> str:
    """`key: value` as lines indented by `col`, ending in a newline.

    Lists are flow lists; maps are flow maps unless `block`. Strings keep `style` when
    they can and fall back to double quotes when a rendering does not read back exactly;
    `styles` gives the style of a flow list's items (by item) or a flow map's values (by
    key), so that an edited list keeps the quotes its unchanged items had.
    """
    data: Any
    if isinstance(value, str):
        data = styled(value, style)
    elif isinstance(value, int):
        data = value
    elif isinstance(value, Mapping) and block:
        data = _block_map(value)
    else:
        data = _flow(value, styles or {})
    text = _dump(CommentedMap([(key, data)]), layout)
    if isinstance(value, str) and _parse_one(text) != {key: value}:
        text = _dump(CommentedMap([(key, DoubleQuotedScalarString(value))]), layout)
    if _parse_one(text) != {key: _plain(value)}:
        raise ValueError(f"cannot render {key!r} so that it reads back the same")
    return _shift(text, col)


def _plain(value: Value) -> Any:
    if isinstance(value, str | int):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    return list(value)


def render_item(
    pairs: Sequence[tuple[str, Value]],
    dash_col: int,
    layout: Layout = Layout(),
    *,
    comments: Sequence[str] = (),
) -> str:
    """One block-list item holding a mapping (`- key: value` ...), dash at `dash_col`.

    `comments` become `# ...` lines right above the dash.
    """
    lines = [f"{' ' * dash_col}# {c}\n" if c else f"{' ' * dash_col}#\n" for c in comments]
    content = dash_col + layout.sequence
    for i, (key, value) in enumerate(pairs):
        text = render_pair(key, value, content, layout=layout)
        if i == 0:
            text = " " * dash_col + "-" + " " * (layout.sequence - 1) + text[content:]
        lines.append(text)
    return "".join(lines)


def _shift(text: str, col: int) -> str:
    if col == 0:
        return text
    pad = " " * col
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


# --------------------------------------------------------------------------- editing


@dataclass(frozen=True, slots=True)
class _Edit:
    start: int
    end: int
    text: str
    order: int


class Editor:
    """Edits of one YAML document's text, applied together by `result()`.

    Nodes come from `root` (ruamel's composed tree): mapping values are reached with
    `get`, list items through `SequenceNode.value`. Every edit replaces a span of the
    original text; edits must not overlap, and insertions at one position keep the
    order they were made in.
    """

    def __init__(self, text: str, display: str = "<yaml>") -> None:
        self.display = display
        self.newline = "\r\n" if "\r\n" in text else "\n"
        if text and not text.endswith("\n"):
            text += self.newline
        self.text = text
        try:
            nodes = list(YAML(typ="rt").compose_all(text))
        except YAMLError as exc:
            raise InputError([Problem(Location(display), "", f"invalid YAML: {exc}")]) from None
        if len(nodes) != 1 or not isinstance(nodes[0], MappingNode):
            raise InputError(
                [Problem(Location(display), "", "expected one YAML document holding a mapping")]
            )
        if nodes[0].flow_style:
            raise InputError(
                [
                    Problem(
                        Location(display, 1, 1),
                        "",
                        "the document is a flow mapping ({...}); write it as block YAML "
                        "for regctl to edit it",
                    )
                ]
            )
        self.root: MappingNode = nodes[0]
        self._edits: list[_Edit] = []

    # -- navigation -----------------------------------------------------------------

    @staticmethod
    def pairs(mapping: MappingNode) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping, in file order."""
        return [(str(k.value), k, v) for k, v in mapping.value]

    def get(self, mapping: MappingNode, key: str) -> Node | None:
        for name, _, value in self.pairs(mapping):
            if name == key:
                return value
        return None

    def _pair(self, mapping: MappingNode, key: str) -> tuple[int, Node, Node]:
        for i, (name, knode, vnode) in enumerate(self.pairs(mapping)):
            if name == key:
                return i, knode, vnode
        raise KeyError(key)

    def column(self, index: int) -> int:
        return index - self._line_start(index)

    def dash_column(self, item: Node) -> int:
        """Column of the `-` that opens a block-list item."""
        i = item.start_mark.index - 1
        while i >= 0 and self.text[i] == " ":
            i -= 1
        if i >= 0 and self.text[i] == "-":
            return self.column(i)
        return self.column(item.start_mark.index)

    def layout(self, seq: Node | None, seq_parent_col: int, block_map: Node | None) -> Layout:
        """The indentation this file uses, read from a block list and a block mapping
        (each at top level, so their parent key is at column 0); defaults otherwise."""
        mapping, sequence, offset = 2, 2, 2
        if isinstance(seq, SequenceNode) and not seq.flow_style and seq.value:
            first = seq.value[0]
            dash = self.dash_column(first)
            offset = max(0, dash - seq_parent_col)
            sequence = max(2, self.column(first.start_mark.index) - dash)
        if isinstance(block_map, MappingNode) and not block_map.flow_style and block_map.value:
            mapping = max(1, self.column(block_map.value[0][0].start_mark.index))
        return Layout(mapping=mapping, sequence=sequence, offset=offset)

    # -- spans ----------------------------------------------------------------------

    def content_end(self, node: Node) -> int:
        """Index just past the last character of `node`'s own text (no trailing blanks)."""
        if isinstance(node, ScalarNode):
            if node.style in ("|", ">"):
                return self._trim_back(node.start_mark.index, node.end_mark.index)
            return int(node.end_mark.index)
        if isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
            last = node.value[-1]
            return self.content_end(last[1] if isinstance(last, tuple) else last)
        return int(node.end_mark.index)

    def _trim_back(self, start: int, end: int) -> int:
        # a block scalar's span runs to the next token: drop its trailing blank lines
        text = self.text
        i = end
        while True:
            j = i
            while j > start and text[j - 1] in "\r\n":
                j -= 1
            line_start = text.rfind("\n", 0, j) + 1
            if line_start > start and not text[line_start:j].strip(" \t"):
                i = line_start
                continue
            return j

    def _line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def _line_end(self, index: int) -> int:
        """Index just past the newline that ends the line holding `index - 1`."""
        nl = self.text.find("\n", max(0, index - 1))
        return len(self.text) if nl < 0 else nl + 1

    def _first_on_line(self, index: int) -> bool:
        return not self.text[self._line_start(index) : index].strip(" ")

    def _leading_start(self, first: int, col: int) -> int:
        """Start of the comment lines right above `first` that sit at column `col`."""
        start = self._line_start(first)
        while start > 0:
            prev = self._line_start(start - 1)
            line = self.text[prev:start].rstrip("\r\n")
            stripped = line.lstrip(" ")
            if not stripped.startswith("#") or len(line) - len(stripped) != col:
                break
            start = prev
        return start

    # -- edits ----------------------------------------------------------------------

    def _add(self, start: int, end: int, text: str) -> None:
        if self.newline != "\n":
            text = text.replace("\n", self.newline)
        self._edits.append(_Edit(start, end, text, len(self._edits)))

    def set_scalar(self, node: Node, value: str | int) -> None:
        """Replace a scalar value in place, keeping its quote or block style."""
        if not isinstance(node, ScalarNode):
            raise TypeError("set_scalar needs a scalar node")
        style = node.style if isinstance(value, str) else None
        rendered = render_pair("k", value, 0, style=style)[len("k: ") :].rstrip("\n")
        first, _, rest = rendered.partition("\n")
        if rest:
            rest = _shift(rest, self._line_indent(node.start_mark.index))
        self._add(
            node.start_mark.index, self.content_end(node), first + ("\n" + rest if rest else "")
        )

    def replace_flow(self, node: Node, value: Sequence[str] | Mapping[str, str]) -> None:
        """Replace a flow list or map by a flow rendering of `value`.

        Items (of a list) and keys (of a map) that were there keep their quote style.
        """
        styles: dict[str, str | None] = {}
        if isinstance(node, SequenceNode):
            styles = {str(n.value): n.style for n in node.value if isinstance(n, ScalarNode)}
        elif isinstance(node, MappingNode):
            styles = {str(k.value): v.style for k, v in node.value if isinstance(v, ScalarNode)}
        rendered = render_pair("k", value, 0, styles=styles)[len("k: ") :].rstrip("\n")
        self._add(node.start_mark.index, self.content_end(node), rendered)

    def replace_pair(self, mapping: MappingNode, key: str, new_key: str, value: str | int) -> None:
        """Replace `key: value` (a scalar) by `new_key: value` on the same line."""
        _, knode, vnode = self._pair(mapping, key)
        rendered = render_pair(new_key, value, 0).rstrip("\n")
        if "\n" in rendered:
            rendered = rendered.replace(
                "\n", "\n" + " " * self._line_indent(knode.start_mark.index)
            )
        self._add(knode.start_mark.index, self.content_end(vnode), rendered)

    def replace_with_block(self, mapping: MappingNode, key: str, block: str) -> None:
        """Put block lines (ending in a newline) in place of a key's flow or scalar value.

        The lines start on the line after the key; a line comment after the old value
        ends up after the block's last line.
        """
        _, knode, vnode = self._pair(mapping, key)
        colon = self.text.index(":", knode.end_mark.index)
        self._add(colon + 1, self.content_end(vnode), "\n" + block.rstrip("\n"))

    def delete_pair(self, mapping: MappingNode, key: str) -> None:
        """Remove a key with its value, the comments right above it and its line comment."""
        i, knode, vnode = self._pair(mapping, key)
        start = knode.start_mark.index
        pairs = self.pairs(mapping)
        if not self._first_on_line(start):
            # the first key of a list item shares the dash's line: the next key moves up
            if i + 1 >= len(pairs):
                raise ValueError(f"cannot remove {key!r}, the only key of a list item")
            self._add(start, pairs[i + 1][1].start_mark.index, "")
            return
        first = self._leading_start(start, self.column(start))
        self._remove(first, self._line_end(self.content_end(vnode)))

    def delete_item(self, seq: SequenceNode, index: int) -> None:
        """Remove a block-list item with the comments right above it."""
        item = seq.value[index]
        start = self._leading_start(item.start_mark.index, self.dash_column(item))
        self._remove(start, self._line_end(self.content_end(item)))

    def _remove(self, start: int, end: int) -> None:
        # a block set off by blank lines on both sides leaves one separator, not two
        before = self.text[self._line_start(start - 1) : start] if start else "\n"
        if not before.strip():
            while end < len(self.text):
                nxt = self._line_end(end + 1)
                if self.text[end:nxt].strip():
                    break
                end = nxt
        self._add(start, end, "")

    def insert_pair(self, mapping: MappingNode, text: str, *, before: str | None = None) -> None:
        """Insert lines (a rendered `key: value`) before key `before`, else at the end."""
        pairs = self.pairs(mapping)
        for name, knode, vnode in pairs:
            if name != before:
                continue
            start = knode.start_mark.index
            if self._first_on_line(start):
                pos = self._leading_start(start, self.column(start))
            else:  # the first key of a list item: the new key goes right after it
                pos = self._line_end(self.content_end(vnode))
            self._add(pos, pos, text)
            return
        pos = self._line_end(self.content_end(pairs[-1][2]))
        self._add(pos, pos, text)

    def insert_items(self, seq: SequenceNode, index: int, text: str) -> None:
        """Insert rendered list items before item `index` (or after the last item)."""
        items = seq.value
        if index < len(items):
            item = items[index]
            pos = self._leading_start(item.start_mark.index, self.dash_column(item))
        else:
            pos = self._line_end(self.content_end(items[-1]))
        self._add(pos, pos, text)

    def _line_indent(self, index: int) -> int:
        start = self._line_start(index)
        line = self.text[start:index]
        return len(line) - len(line.lstrip(" -"))

    @property
    def changed(self) -> bool:
        return bool(self._edits)

    def result(self) -> str:
        """The text with every edit applied."""
        merged: dict[tuple[int, int], _Edit] = {}
        for e in sorted(self._edits, key=lambda e: e.order):
            key = (e.start, e.end)
            if key in merged and e.start == e.end:
                old = merged[key]
                merged[key] = _Edit(e.start, e.end, old.text + e.text, old.order)
            elif key in merged:
                raise ValueError(f"two edits replace the same span at {e.start}")
            else:
                merged[key] = e
        # from the end backwards; at one position a removal goes before an insertion
        text = self.text
        limit = len(text)
        for e in sorted(merged.values(), key=lambda e: (e.start, e.end), reverse=True):
            if e.end > limit:
                raise ValueError(f"overlapping edits at {e.start}-{e.end}")
            text = text[: e.start] + e.text + text[e.end :]
            limit = e.start
        return text
