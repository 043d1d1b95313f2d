"""Reading `policies/*.yaml`: every document validated, checked and turned into values.

`load_policies` is the only function of regctl.policy that reads files. Each document
is validated against its spec (`regctl.policy.specs`), then checked for what a schema
cannot say (one check per rule, bounds that fit `compare_to`, aliases MLflow accepts,
waivers that name a known policy, rule and run); every problem carries its `file:line`
and all of them are raised together as one InputError. The valid specs become
`regctl.policy.values`. This is the one module of the folder that imports adapters
(`yamlfile` to parse, `manifests` for the shared loading rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from regctl.adapters.manifests import (
    alias_problem,
    display_path,
    validate_document,
    yaml_files,
)
from regctl.adapters.yamlfile import Document, Path_, dotted, load_documents
from regctl.errors import InputError, Location, Problem
from regctl.policy.specs import PolicySpec, RuleSpec, WaiverSpec
from regctl.policy.values import (
    AllowedAliases,
    AllowedParams,
    Bound,
    Check,
    CompareTo,
    MetricBounds,
    Policy,
    PolicySet,
    RelativeBound,
    RequireDescription,
    RequireMetrics,
    RequireParams,
    Rule,
    RunNamePattern,
    Waiver,
    expand_placeholders,
    format_number,
    placeholders,
)

__all__ = ["load_policies", "policy_files"]


_CHECK_FIELDS: Final = (
    "require_params",
    "require_metrics",
    "run_name",
    "metrics",
    "require_description",
    "allowed_aliases",
    "allowed_params",
)


def policy_files(repo: Path) -> list[Path]:
    """The policy files of a repository (`policies/*.yaml` and `*.yml`, the suffix in any
    case), sorted. Any other entry is an InputError, as in manifests/ (`yaml_files`): a
    skipped file would silently drop the policy it holds."""
    return yaml_files(repo / "policies", repo)


def load_policies(repo: Path, files: Sequence[Path] | None = None) -> PolicySet:
    """Load every policy and waiver under `repo/policies` (or `files`).

    A file may hold several documents (`---`). Every file is read and every problem is
    collected before raising one InputError (`file:line:col: field.path: message`).
    """
    paths = policy_files(repo) if files is None else list(files)
    problems: list[Problem] = []
    declared: dict[str, Location] = {}
    specs: dict[str, PolicySpec] = {}
    policies: list[Policy] = []
    waivers: list[tuple[WaiverSpec, Document]] = []
    # A file that does not parse, or a policy without a readable name, may declare a
    # policy we cannot see; waivers naming an unknown policy are then not blamed for it.
    names_complete = True
    for path in paths:
        shown = display_path(path, repo)
        try:
            docs = load_documents(path, shown)
        except InputError as err:
            problems.extend(err.problems)
            names_complete = False
            continue
        for doc in docs:
            if doc.value is None:  # an empty document, e.g. after a trailing `---`
                continue
            kind = doc.value.get("kind") if isinstance(doc.value, dict) else None
            if kind == "Waiver":
                wspec, found = validate_document(doc, WaiverSpec)
                problems.extend(found)
                if wspec is not None:
                    waivers.append((wspec, doc))
                continue
            if kind != "Policy" and isinstance(doc.value, dict):
                problems.append(_kind_problem(doc, kind))
                names_complete = False
                continue
            # Duplicates are found by the name as written, even in an invalid policy.
            name = doc.value.get("name") if isinstance(doc.value, dict) else None
            if isinstance(name, str) and name in declared:
                problems.append(
                    _at(doc, ("name",), f"policy {name!r} is already declared in {declared[name]}")
                )
                continue
            if isinstance(name, str):
                declared[name] = doc.location(("name",))
            else:
                names_complete = False
            pspec, found = validate_document(doc, PolicySpec)
            problems.extend(found)
            if pspec is None:
                continue
            specs[pspec.name] = pspec
            found = _check_policy(pspec, doc)
            problems.extend(found)
            if not found:
                policies.append(_to_policy(pspec, doc))
    waiver_values, found = _check_waivers(waivers, declared, specs, complete=names_complete)
    problems.extend(found)
    if problems:
        raise InputError(problems)
    return PolicySet(
        tuple(sorted(policies, key=lambda p: p.name)),
        tuple(sorted(waiver_values, key=lambda w: (w.policy, w.rule, w.model, w.names))),
    )


def _at(doc: Document, path: Path_, message: str, *, key: bool = False) -> Problem:
    return Problem(doc.location(path, key=key), dotted(path), message)


def _kind_problem(doc: Document, kind: Any) -> Problem:
    if kind is None:
        return Problem(doc.location(()), "kind", "required field is missing (Policy or Waiver)")
    return _at(doc, ("kind",), f"must be 'Policy' or 'Waiver' in policies/, got {kind!r}")


def _check_policy(spec: PolicySpec, doc: Document) -> list[Problem]:
    problems: list[Problem] = []
    if not spec.rules:
        problems.append(_at(doc, ("rules",), "a policy needs at least one rule"))
    seen: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        base: Path_ = ("rules", i)
        if rule.name in seen:
            problems.append(
                _at(
                    doc,
                    (*base, "name"),
                    f"rule {rule.name!r} is already declared in this policy "
                    f"(line {seen[rule.name]})",
                )
            )
        else:
            seen[rule.name] = doc.location((*base, "name")).line
        problems.extend(_check_rule(rule, doc, base))
    return problems


class _Report(Protocol):
    """Records a problem at `path` below the rule being checked."""

    def __call__(self, path: Path_, message: str, *, key: bool = False) -> None: ...


def _check_rule(rule: RuleSpec, doc: Document, base: Path_) -> list[Problem]:
    problems: list[Problem] = []

    def at(path: Path_, message: str, *, key: bool = False) -> None:
        problems.append(_at(doc, (*base, *path), message, key=key))

    # In this order: the problems of a rule read top to bottom as its fields are listed.
    _check_one_check(rule, at)
    _check_aliases(rule, at)
    _check_values(rule, at)
    if rule.metrics is not None:
        problems.extend(_check_metrics(rule, doc, base))
    return problems


def _check_one_check(rule: RuleSpec, at: _Report) -> None:
    """Exactly one check field, and `compare_to` only beside `metrics`."""
    present = [f for f in _CHECK_FIELDS if getattr(rule, f) is not None]
    if not present:
        if rule.compare_to is not None:
            at(
                ("compare_to",),
                "compare_to needs `metrics` with max_increase/max_decrease",
                key=True,
            )
        else:
            at((), "a rule needs one check: " + ", ".join(_CHECK_FIELDS))
    for extra in present[1:]:
        at(
            (extra,),
            f"a rule holds exactly one check; this one has {present[0]!r} and {extra!r} "
            "(split it into two rules)",
            key=True,
        )
    if rule.compare_to is not None and rule.metrics is None and present:
        at(("compare_to",), "compare_to goes with `metrics` (relative bounds) only", key=True)


def _check_aliases(rule: RuleSpec, at: _Report) -> None:
    """Every alias a rule names (`aliases`, `allowed_aliases`, `compare_to`) is valid."""
    for alias_field in ("aliases", "allowed_aliases"):
        names: list[str] | None = getattr(rule, alias_field)
        if names is not None and not names:
            at((alias_field,), "give at least one alias")
        for j, alias in enumerate(names or ()):
            why = alias_problem(alias)
            if why:
                at((alias_field, j), why)
    if rule.compare_to is not None:
        why = alias_problem(rule.compare_to)
        if why:
            at(("compare_to",), why)


def _check_values(rule: RuleSpec, at: _Report) -> None:
    """The other checks hold something to check: names, `true`, a valid regex, params."""
    for list_field in ("require_params", "require_metrics"):
        if getattr(rule, list_field) == []:
            at((list_field,), "give at least one name")
    if rule.require_description is False:
        at(("require_description",), "set it to true, or remove the rule")
    if rule.run_name is not None:
        try:
            re.compile(expand_placeholders(rule.run_name, lambda _name: "x"))
        except re.error as exc:
            at(("run_name",), f"invalid regular expression: {exc}")
    if rule.allowed_params is not None and not rule.allowed_params:
        at(("allowed_params",), "give at least one param")


def _check_metrics(rule: RuleSpec, doc: Document, base: Path_) -> list[Problem]:
    problems: list[Problem] = []
    assert rule.metrics is not None
    if not rule.metrics:
        problems.append(_at(doc, (*base, "metrics"), "give at least one metric"))
    relative = rule.compare_to is not None
    for metric, b in rule.metrics.items():
        path: Path_ = (*base, "metrics", metric)
        if relative:
            for key in ("min", "max"):
                if getattr(b, key) is not None:
                    problems.append(
                        _at(
                            doc,
                            (*path, key),
                            f"{key} is an absolute bound: put it in a rule without compare_to",
                            key=True,
                        )
                    )
            if (
                b.max_increase is None
                and b.max_decrease is None
                and b.min is None
                and b.max is None
            ):
                problems.append(_at(doc, path, "give max_increase, max_decrease or both"))
        else:
            for key in ("max_increase", "max_decrease"):
                if getattr(b, key) is not None:
                    problems.append(
                        _at(
                            doc,
                            (*path, key),
                            f"{key} is relative to an incumbent: add `compare_to: <alias>` to "
                            "the rule, or use min/max",
                            key=True,
                        )
                    )
            if (
                b.min is None
                and b.max is None
                and b.max_increase is None
                and b.max_decrease is None
            ):
                problems.append(_at(doc, path, "give min, max or both"))
            if b.min is not None and b.max is not None and b.min > b.max:
                problems.append(
                    _at(
                        doc,
                        (*path, "min"),
                        f"min {format_number(b.min)} is above max {format_number(b.max)}",
                    )
                )
    return problems


def _to_policy(spec: PolicySpec, doc: Document) -> Policy:
    rules = tuple(
        Rule(
            name=r.name,
            severity=r.severity,
            aliases=tuple(r.aliases or ()),
            check=_to_check(r),
            location=doc.location(("rules", i)),
        )
        for i, r in enumerate(spec.rules)
    )
    match = MappingProxyType(dict(sorted(spec.match.params.items())))
    return Policy(spec.name, match, rules, doc.location(("name",)))


def _to_check(r: RuleSpec) -> Check:
    # _check_rule has made sure exactly one check is present.
    if r.require_params is not None:
        return RequireParams(tuple(r.require_params))
    if r.require_metrics is not None:
        return RequireMetrics(tuple(r.require_metrics))
    if r.run_name is not None:
        return RunNamePattern(r.run_name, placeholders(r.run_name))
    if r.metrics is not None and r.compare_to is not None:
        return CompareTo(
            r.compare_to,
            tuple(RelativeBound(m, b.max_increase, b.max_decrease) for m, b in r.metrics.items()),
        )
    if r.metrics is not None:
        return MetricBounds(tuple(Bound(m, b.min, b.max) for m, b in r.metrics.items()))
    if r.allowed_aliases is not None:
        return AllowedAliases(tuple(r.allowed_aliases))
    if r.allowed_params is not None:
        return AllowedParams(MappingProxyType(dict(r.allowed_params)))
    return RequireDescription()


def _check_waivers(
    specs: Iterable[tuple[WaiverSpec, Document]],
    declared: Mapping[str, Location],
    policies: Mapping[str, PolicySpec],
    *,
    complete: bool,
) -> tuple[list[Waiver], list[Problem]]:
    problems: list[Problem] = []
    out: dict[tuple[str, str, str, str], Waiver] = {}
    for spec, doc in specs:
        if spec.policy not in declared and complete:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(
                _at(doc, ("policy",), f"no policy named {spec.policy!r} (known: {known})")
            )
            continue
        policy = policies.get(spec.policy)
        if policy is None:
            # The policy is invalid (already reported) or unreadable: say nothing rather
            # than blame the waiver for another document's error.
            continue
        if all(r.name != spec.rule for r in policy.rules):
            known = ", ".join(r.name for r in policy.rules)
            problems.append(
                _at(doc, ("rule",), f"policy {spec.policy!r} has no rule {spec.rule!r} ({known})")
            )
            continue
        if (spec.run is None) == (spec.run_id is None):
            problems.append(
                _at(
                    doc,
                    ("run_id",) if spec.run_id is not None else (),
                    "give the run: `run_id`, or `run` (its name) with `digest` "
                    "(regctl check prints both)",
                    key=spec.run_id is not None,
                )
            )
            continue
        if spec.run_id is not None and spec.digest is not None:
            problems.append(
                _at(
                    doc,
                    ("digest",),
                    "`digest` goes with `run` (a run id names one run already)",
                    key=True,
                )
            )
            continue
        waiver = Waiver(
            spec.policy,
            spec.rule,
            spec.model,
            spec.run,
            spec.reason,
            spec.expires,
            doc.location(()),
            run_id=spec.run_id,
            digest=spec.digest,
        )
        key = (spec.policy, spec.rule, spec.model, waiver.names)
        if key in out:
            problems.append(
                _at(
                    doc,
                    (),
                    f"a waiver of {spec.policy}/{spec.rule} for {spec.model} {waiver.names} "
                    f"is already declared in {out[key].location}",
                )
            )
        else:
            out[key] = waiver
    return list(out.values()), problems
