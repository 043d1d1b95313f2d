"""Strict YAML reading with a position for every key and value.

Manifests, policies and waivers are reviewed input from people, so the loader refuses
what a reviewer could miss: duplicate keys, anchors and aliases, explicit tags (such as
`!!python/object`), deep nesting and oversized files. It reads YAML 1.2 (so `yes` is a
string) and keeps every scalar's resolved type, so a field that wants a string can say
"YAML reads 017 as a number: quote it" instead of silently taking 17.

One pass over the event stream builds the values and the position map; nothing is
composed twice and an alias bomb is refused at its first alias, before any expansion.

Events come from libyaml's C parser (through PyYAML, which mlflow-skinny already
installs) when it is there: about ten times faster than ruamel's pure-Python parser, so
1,000 manifests validate in a fraction of a second. Scalars are still resolved by
ruamel's YAML 1.2 resolver, and any input libyaml refuses is parsed again by ruamel, so
every error message (and every accepted document) is ruamel's. A test compares both
parsers' events on every YAML file of the repository and the test suite.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.nodes import ScalarNode

from regctl.errors import InputError, Location, Problem

MAX_FILE_BYTES = 1 << 20
"""Input files larger than this are refused unread (1 MiB: a manifest is a few KB)."""

MAX_DEPTH = 32
"""Nesting deeper than this is refused; no schema of ours goes past 6."""

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YAML11_BREAKS = re.compile("[\x85\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Scalar:
    """How a scalar was written, kept for messages about YAML's type guesses."""

    text: str
    tag: str
    quoted: bool


@dataclass(slots=True)
class Document:
    """One YAML document: plain Python values plus where each key and value stands."""

    file: str
    index: int
    value: Any
    start: tuple[int, int]
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    scalars: dict[Path_, Scalar] = field(default_factory=dict)

    def location(self, path: Path_, *, key: bool = False) -> Location:
        """Where `path` stands; falls back to the nearest parent that is known."""
        probe = tuple(path)
        while True:
            table = self.keys if key and probe in self.keys else self.values
            if probe in table:
                line, col = table[probe]
                return Location(self.file, line, col)
            if not probe:
                return Location(self.file, self.start[0], self.start[1])
            probe = probe[:-1]


def dotted(path: Path_) -> str:
    """`('versions', 0, 'aliases', 1)` -> `versions[0].aliases[1]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def _mark(ev: Event) -> tuple[int, int]:
    return (ev.start_mark.line + 1, ev.start_mark.column + 1)


def _scalar_value(tag: str, text: str) -> Any:
    if tag == _STR:
        return text
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _INT:
        t = text.replace("_", "")
        sign = -1 if t.startswith("-") else 1
        t = t.lstrip("+-")
        if t.startswith(("0x", "0X")):
            return sign * int(t[2:], 16)
        if t.startswith(("0o", "0O")):
            return sign * int(t[2:], 8)
        if t.startswith(("0b", "0B")):
            return sign * int(t[2:], 2)
        return sign * int(t)
    if tag == _FLOAT:
        t = text.replace("_", "").lower()
        if t in (".nan",):
            return math.nan
        if t.lstrip("+-") == ".inf":
            return -math.inf if t.startswith("-") else math.inf
        return float(t)
    if tag == _TIMESTAMP and _DATE_RE.match(text):
        return dt.date.fromisoformat(text)
    if tag == _TIMESTAMP:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    return text


class _Builder:
    """Consumes events of one document and builds values with positions."""

    def __init__(self, yaml: YAML, doc: Document) -> None:
        self.yaml = yaml
        self.doc = doc

    def loc(self, ev: Event) -> Location:
        line, col = _mark(ev)
        return Location(self.doc.file, line, col)

    def check(self, ev: Event, path: Path_) -> None:
        anchor = getattr(ev, "anchor", None)
        if anchor is not None:
            raise _Refused(
                Problem(
                    self.loc(ev),
                    dotted(path),
                    f"YAML anchor &{anchor} is not allowed (write the value out)",
                )
            )
        tag = getattr(ev, "tag", None)
        if tag is not None and tag != "!":
            raise _Refused(
                Problem(self.loc(ev), dotted(path), f"explicit YAML tag {tag} is not allowed")
            )

    def node(self, ev: Event, events: Iterator[Event], path: Path_, depth: int) -> Any:
        if isinstance(ev, AliasEvent):
            raise _Refused(
                Problem(
                    self.loc(ev),
                    dotted(path),
                    f"YAML alias *{ev.anchor} is not allowed (write the value out)",
                )
            )
        self.check(ev, path)
        if depth > MAX_DEPTH:
            raise _Refused(
                Problem(self.loc(ev), dotted(path), f"nesting deeper than {MAX_DEPTH} levels")
            )
        self.doc.values[path] = _mark(ev)
        if isinstance(ev, ScalarEvent):
            return self.scalar(ev, path)
        if isinstance(ev, SequenceStartEvent):
            return self.sequence(events, path, depth)
        if isinstance(ev, MappingStartEvent):
            return self.mapping(events, path, depth)
        raise _Refused(Problem(self.loc(ev), dotted(path), "unexpected YAML structure"))

    def scalar(self, ev: ScalarEvent, path: Path_) -> Any:
        """A scalar's value as YAML 1.2 resolves it; how it was written goes to `scalars`."""
        plain = bool(ev.implicit and ev.implicit[0]) and ev.style in (None, "")
        tag = (
            str(self.yaml.resolver.resolve(ScalarNode, ev.value, (plain, False))) if plain else _STR
        )
        self.doc.scalars[path] = Scalar(ev.value, tag, not plain)
        try:
            return _scalar_value(tag, ev.value)
        except ValueError:
            return ev.value

    def sequence(self, events: Iterator[Event], path: Path_, depth: int) -> list[Any]:
        """The items of a sequence whose start event was just read."""
        items: list[Any] = []
        while True:
            nxt = next(events)
            if isinstance(nxt, SequenceEndEvent):
                return items
            items.append(self.node(nxt, events, (*path, len(items)), depth + 1))

    def mapping(self, events: Iterator[Event], path: Path_, depth: int) -> dict[str, Any]:
        """The entries of a mapping whose start event was just read; keys are plain strings."""
        mapping: dict[str, Any] = {}
        while True:
            kev = next(events)
            if isinstance(kev, MappingEndEvent):
                return mapping
            if isinstance(kev, AliasEvent):
                self.node(kev, events, path, depth + 1)
            if not isinstance(kev, ScalarEvent):
                raise _Refused(
                    Problem(self.loc(kev), dotted(path), "mapping keys must be plain strings")
                )
            self.check(kev, path)
            key = kev.value
            if key in mapping:
                first = self.doc.keys[(*path, key)]
                raise _Refused(
                    Problem(
                        self.loc(kev),
                        dotted((*path, key)),
                        f"duplicate key (first defined at line {first[0]})",
                    )
                )
            if key == "<<":
                raise _Refused(
                    Problem(self.loc(kev), dotted(path), "YAML merge keys (<<) are not allowed")
                )
            self.doc.keys[(*path, key)] = _mark(kev)
            vev = next(events)
            mapping[key] = self.node(vev, events, (*path, key), depth + 1)
            if isinstance(vev, ScalarEvent) and vev.value == "" and not vev.style:
                # an empty value has no mark of its own (ruamel gives the next token's)
                self.doc.values[(*path, key)] = self.doc.keys[(*path, key)]


def read_text(path: Path, display: str) -> str:
    """Read an input file, refusing oversized, non-UTF-8 or non-regular files."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise InputError([Problem(Location(display), "", f"cannot read: {exc.strerror}")]) from exc
    if path.is_symlink() and not path.resolve().is_file():
        raise InputError([Problem(Location(display), "", "not a regular file")])
    if st.st_size > MAX_FILE_BYTES:
        raise InputError(
            [
                Problem(
                    Location(display),
                    "",
                    f"file is {st.st_size} bytes, over the limit of {MAX_FILE_BYTES}",
                )
            ]
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([Problem(Location(display), "", "not UTF-8 text")]) from exc
    except OSError as exc:
        raise InputError([Problem(Location(display), "", f"cannot read: {exc.strerror}")]) from exc


def read_limit(text: str, display: str) -> str:
    """Refuse text over the size limit (for input that does not come from a file)."""
    size = len(text.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        raise InputError(
            [
                Problem(
                    Location(display),
                    "",
                    f"file is {size} bytes, over the limit of {MAX_FILE_BYTES}",
                )
            ]
        )
    return text


def _fast_events(text: str) -> list[Event] | None:
    """The event stream from libyaml, as ruamel events; None when libyaml is missing or
    refuses the text (ruamel then parses it and reports the problem)."""
    try:
        import yaml as pyyaml  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - PyYAML comes with mlflow-skinny
        return None
    if not getattr(pyyaml, "__with_libyaml__", False):
        return None
    if _YAML11_BREAKS.search(text):
        return None  # line breaks in YAML 1.1 only: libyaml would read other lines
    out: list[Event] = []
    depth = 0
    try:
        for ev in pyyaml.parse(text, Loader=pyyaml.CSafeLoader):
            kind = type(ev).__name__
            if kind in _OPENS:
                depth += 1
                if depth > MAX_DEPTH:
                    # Too deep: the builder refuses it anyway, and stopping here matters.
                    # libyaml before 0.2.6 has no nesting limit and its scanner is
                    # quadratic in flow depth (a 1 MB line of `[` took 50 minutes).
                    return None
            elif kind in _CLOSES:
                depth -= 1
            out.append(_from_libyaml(ev))
    except Exception:  # any refusal: ruamel has the last word and the message
        return None
    return out


_OPENS = frozenset({"MappingStartEvent", "SequenceStartEvent"})
_CLOSES = frozenset({"MappingEndEvent", "SequenceEndEvent"})


def _from_libyaml(ev: Any) -> Event:
    kind = type(ev).__name__
    start, end = ev.start_mark, ev.end_mark
    if kind == "ScalarEvent":
        return ScalarEvent(ev.anchor, ev.tag, ev.implicit, ev.value, start, end, ev.style)
    if kind == "MappingStartEvent":
        return MappingStartEvent(ev.anchor, ev.tag, ev.implicit, start, end, ev.flow_style)
    if kind == "SequenceStartEvent":
        return SequenceStartEvent(ev.anchor, ev.tag, ev.implicit, start, end, ev.flow_style)
    if kind == "AliasEvent":
        return AliasEvent(ev.anchor, start, end)
    if kind == "DocumentStartEvent":
        return DocumentStartEvent(start, end, ev.explicit, ev.version, ev.tags)
    if kind == "DocumentEndEvent":
        return DocumentEndEvent(start, end, ev.explicit)
    simple: dict[str, type[Event]] = {
        "MappingEndEvent": MappingEndEvent,
        "SequenceEndEvent": SequenceEndEvent,
        "StreamStartEvent": StreamStartEvent,
        "StreamEndEvent": StreamEndEvent,
    }
    return simple[kind](start, end)


def parse_documents(text: str, display: str, *, fast: bool = True) -> list[Document]:
    """Parse every document of `text`; raise InputError at the first structural problem.

    `fast=False` forces ruamel's parser (the tests compare the two)."""
    yaml = YAML(typ="safe", pure=True)
    docs: list[Document] = []
    fast_events = _fast_events(text) if fast else None
    events = iter(fast_events if fast_events is not None else yaml.parse(text))
    try:
        for ev in events:
            if isinstance(ev, StreamStartEvent | StreamEndEvent | DocumentEndEvent):
                continue
            if isinstance(ev, DocumentStartEvent):
                root = next(events)
                doc = Document(display, len(docs), None, _mark(root))
                doc.value = _Builder(yaml, doc).node(root, events, (), 0)
                docs.append(doc)
                continue
    except _Refused as refused:
        raise InputError([refused.problem]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = (
            Location(display, mark.line + 1, mark.column + 1)
            if mark is not None
            else Location(display)
        )
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InputError([Problem(loc, "", f"invalid YAML: {what}")]) from None
    except YAMLError as exc:
        raise InputError([Problem(Location(display), "", f"invalid YAML: {exc}")]) from None
    return docs


def load_documents(path: Path, display: str) -> list[Document]:
    """Read and parse one YAML file."""
    return parse_documents(read_text(path, display), display)
