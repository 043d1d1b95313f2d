"""Promotion history of one model, computed from its manifest's git history.

Pure: the caller hands in `(Commit, text)` pairs (from `gitinfo.file_history`); this
module parses each text, compares each state with the previous one and reports the
commits that moved an alias or added or removed a version entry. Descriptions, tags
and pins are not promotions and produce no event.

Historic files are read leniently: a file that was invalid YAML at some commit is
skipped with a note, and the next readable state is compared with the last readable
one, so no move is lost, only attributed to the commit that made the file valid again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regctl.adapters.yamlfile import parse_documents
from regctl.errors import InputError

if TYPE_CHECKING:
    # Only for annotations: importing gitinfo at run time is harmless (it imports git
    # lazily), but this module needs nothing from it but the shape of a Commit.
    from regctl.adapters.git import Commit

NONE = "(none)"


@dataclass(frozen=True, slots=True)
class Event:
    """A commit that changed the model's promotions, with what it moved.

    `moves` read like `Production: 3 -> 4`, `Staging: (none) -> run_x`,
    `+ version run_c` or `- version run_a`: new entries first, then alias moves by alias
    name, then removed entries, the order apply uses. `notes` explain gaps, such as a
    manifest that could not be parsed at this commit.
    """

    commit: Commit
    moves: tuple[str, ...]
    notes: tuple[str, ...] = ()


class _Unreadable(Exception):
    pass


_Key = tuple[str, str, str]  # ("run" | "run_id" | "index", value, artifact_path)


@dataclass(frozen=True, slots=True)
class _Entry:
    key: _Key
    label: str  # how moves name the entry: the pin, else the run
    added: str  # how `+`/`-` lines name it: the pin with its run


@dataclass(frozen=True, slots=True)
class _State:
    entries: tuple[_Entry, ...]
    aliases: dict[str, _Key]

    def entry(self, key: _Key | None) -> _Entry | None:
        for e in self.entries:
            if e.key == key:
                return e
        return None


_ABSENT = _State((), {})


def _entry(i: int, raw: Any) -> tuple[_Entry, list[str]]:
    if not isinstance(raw, dict):
        raise _Unreadable(f"versions[{i}] is not a mapping")
    run, run_id = raw.get("run"), raw.get("run_id")
    path = raw.get("artifact_path") or ""
    if not isinstance(path, str):
        raise _Unreadable(f"versions[{i}].artifact_path is not a string")
    path = path.strip("/")
    # An entry is identified as apply identifies it: by its run and artifact path, so
    # adding a `version:` pin later is not a new entry.
    if isinstance(run, str) and run:
        key: _Key = ("run", run, path)
        name = run
    elif isinstance(run_id, str) and run_id:
        key = ("run_id", run_id, path)
        name = run_id
    else:
        key = ("index", str(i), path)
        name = f"versions[{i}]"
    if path:
        name = f"{name}/{path}"
    pin = raw.get("version")
    pinned = isinstance(pin, int) and not isinstance(pin, bool)
    label = str(pin) if pinned else name
    added = f"{pin} ({name})" if pinned else name
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise _Unreadable(f"versions[{i}].aliases is not a list of names")
    return _Entry(key, label, added), aliases


def _read(model: str, text: str | None, display: str) -> _State:
    """The model's entries and aliases in `text`; _ABSENT if the file does not declare it."""
    if text is None:
        return _ABSENT
    try:
        docs = parse_documents(text, display)
    except InputError as err:
        first = err.problems[0] if err.problems else None
        where = f"line {first.location.line}: " if first and first.location.line else ""
        raise _Unreadable(where + (first.message if first else "invalid YAML")) from None
    for doc in docs:
        value = doc.value
        if (
            isinstance(value, dict)
            and value.get("kind") == "RegisteredModel"
            and value.get("name") == model
        ):
            break
    else:
        return _ABSENT
    versions = value.get("versions") or []
    if not isinstance(versions, list):
        raise _Unreadable("versions is not a list")
    entries: list[_Entry] = []
    aliases: dict[str, _Key] = {}
    seen: set[_Key] = set()
    for i, raw in enumerate(versions):
        entry, names = _entry(i, raw)
        # An invalid historic file may repeat an entry or an alias: the first one wins,
        # so the state is still well defined.
        if entry.key not in seen:
            seen.add(entry.key)
            entries.append(entry)
        for name in names:
            aliases.setdefault(name, entry.key)
    return _State(tuple(entries), aliases)


def _moves(old: _State, new: _State) -> list[tuple[str | None, str]]:
    """(alias or None, move text) from `old` to `new`, in apply order."""
    out: list[tuple[str | None, str]] = []
    old_keys = {e.key for e in old.entries}
    new_keys = {e.key for e in new.entries}
    out += [(None, f"+ version {e.added}") for e in new.entries if e.key not in old_keys]
    for alias in sorted(set(old.aliases) | set(new.aliases), key=lambda a: (a.casefold(), a)):
        was, now = old.aliases.get(alias), new.aliases.get(alias)
        if was == now:
            continue
        before, after = old.entry(was), new.entry(now)
        out.append(
            (
                alias,
                f"{alias}: {before.label if before else NONE} -> {after.label if after else NONE}",
            )
        )
    out += [(None, f"- version {e.added}") for e in old.entries if e.key not in new_keys]
    return out


def promotions(
    model: str,
    history: Iterable[tuple[Commit, str | None]],
    alias: str | None = None,
) -> list[Event]:
    """The commits of `history` (oldest first) that moved the model's aliases or versions.

    With `alias`, only the commits that moved that alias, each with only that alias's
    move (matched ignoring case, as the manifest forbids case-only twins). Notes about
    unreadable commits are kept either way: a move may hide behind them.
    """
    events: list[Event] = []
    state = _ABSENT
    wanted = alias.casefold() if alias is not None else None
    for commit, text in history:
        try:
            new = _read(model, text, f"{model}@{commit.short}")
        except _Unreadable as why:
            events.append(Event(commit, (), (f"unparseable at {commit.short}: {why}",)))
            continue
        notes: tuple[str, ...] = ()
        if new is _ABSENT and state is not _ABSENT:
            notes = ("manifest deleted",) if text is None else (f"{model} no longer declared",)
        moves = [
            text_
            for name, text_ in _moves(state, new)
            if wanted is None or (name is not None and name.casefold() == wanted)
        ]
        state = new
        if moves:
            events.append(Event(commit, tuple(moves), notes))
    return events
