"""Evaluation: which policies and rules judge a version, and the verdict of each check.

`evaluate` is a pure function of values (the policies, the versions to judge, a lookup
of the current alias holders and today's date) and returns a PolicyReport whose
`exit_code` is the command's. The checks themselves are `regctl.policy.checks`; here are
`match`, `aliases:` scoping, severities, waivers and the gate results regctl gives itself.

Decisions taken where SPEC section 4 is silent (each is repeated where it is made):

- A rule holds exactly one check: `require_params`, `require_metrics`, `run_name`,
  `metrics` (absolute `min`/`max`), `metrics` + `compare_to` (relative `max_increase`/
  `max_decrease`), `require_description`, `allowed_aliases` or `allowed_params`.
- Fail closed. When a version's params are unavailable, every policy is judged (its
  `match` cannot be decided) and every rule that needs run data fails with "no run data".
  A run that lacks a `match` key gives a deny of `regctl/match` (missing data), unless
  another key rules the policy out. An alias that any rule scopes (`aliases:`) is
  protected: a version that is to hold it and that no policy with a non-empty `match`
  judges is denied (`regctl/protected-alias`). `regctl/...` results cannot be waived.
- `match` and `allowed_params` compare `model_type`, `objective` and `primary_metric`
  ignoring case, as sync's derivation reads them; other params exactly.
- A missing param or metric fails the rule. NaN, +-Infinity and MLflow's stand-in for
  them (+-1.797e308) fail every bound, absolute or relative, and the message names the
  value. An incumbent that lacks the compared metric fails the rule too.
- A failing rule's outcome is its severity (`deny` or `warn`), missing data included.
- `aliases:` scoping compares names case-insensitively, so a rule written for
  `Production` also judges `production` (which `allowed_aliases` then denies anyway).
  `allowed_aliases` itself compares exactly, as MLflow does.
- `run_name` is searched with `re.search`: anchor it with `^...$` (the shipped ones are).
- Bounds are inclusive, with a relative tolerance of 1e-9 so that a value equal to the
  bound up to float rounding passes. A percentage is taken of the incumbent's absolute
  value, so it works for negative metrics such as log-likelihoods.
- A waiver holds through its `expires` day. An expired waiver of a `deny` rule is the
  outcome `expired-waiver` (a deny); of a `warn` rule it stays a warning. A waiver binds
  to one run: `run_id`, or `run` (a name in the model's experiment) plus `digest` (the
  run's content digest). A waiver that names the run's name but not its digest, or whose
  digest or experiment differs, is not applied and the result says why (`waiver_note`);
  every failing result says how to bind a waiver to exactly its run (`waive_with`). Two
  waivers for the same (policy, rule, model, run) are an error, as are waivers naming an
  unknown policy or rule.
- Metric rules give one result per metric; `allowed_params` one per param; every other
  rule one result. Results follow subjects (model, run, version), then policies by name,
  then rules in file order: reports are byte-stable for golden files and PR comments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

from regctl import escape
from regctl.policy.checks import Finding, Lookup, judge, normalise
from regctl.policy.values import (
    Incumbents,
    Outcome,
    Policy,
    PolicyReport,
    PolicySet,
    Result,
    Rule,
    Severity,
    Subject,
    Waiver,
)

__all__ = ["GATE_POLICY", "evaluate", "protected_aliases", "waiver_binding"]


GATE_POLICY: Final = "regctl"
"""The policy name of the results regctl itself gives (protected aliases, undecidable
matches): no waiver can name it, so they cannot be waived."""


def protected_aliases(policies: PolicySet) -> frozenset[str]:
    """Aliases (case-folded) that some rule scopes: a version holding one must be judged by
    at least one policy with a non-empty `match`."""
    return frozenset(a.casefold() for p in policies.policies for r in p.rules for a in r.aliases)


def evaluate(
    policies: PolicySet,
    subjects: Sequence[Subject],
    incumbents: Incumbents,
    today: dt.date,
) -> PolicyReport:
    """Judge every subject by every policy that applies to it; a pure function.

    `incumbents(model, alias)` gives the version that holds `alias` before the change (the
    holder the base manifests declare), with its params and metrics, for `compare_to`
    rules. Waivers bound to the subject's run turn failures into `waived` results (or
    `expired-waiver` denies after `expires`).

    Fail closed (SPEC section 4): a policy whose `match` cannot be decided because the
    run lacks a match key gives a deny (missing data), and a version that is to hold a
    protected alias but is judged by no policy with a non-empty `match` is denied.
    """
    lookup = _incumbent_lookup(incumbents)
    protected = protected_aliases(policies)
    waivers: dict[tuple[str, str, str], list[Waiver]] = {}
    for w in policies.waivers:
        waivers.setdefault((w.policy, w.rule, w.model), []).append(w)
    results: list[Result] = []
    for subject in sorted(subjects, key=_subject_key):
        judged_by_match = False
        for policy in policies.policies:
            applies, missing = _applies(policy, subject)
            if missing:
                results.append(_undecided(subject, policy, missing))
                continue
            if not applies:
                continue
            if policy.match:
                judged_by_match = True
            for rule in policy.rules:
                if not _in_scope(rule, subject):
                    continue
                candidates = waivers.get((policy.name, rule.name, subject.model), [])
                for finding in judge(rule.check, subject, lookup):
                    results.append(_result(subject, policy, rule, finding, candidates, today))
        held = [a for a in subject.aliases if a.casefold() in protected]
        if held and not judged_by_match:
            results.append(_unjudged(subject, held))
    return PolicyReport(tuple(results))


def _incumbent_lookup(incumbents: Incumbents) -> Lookup:
    """A lookup by model and alias, the alias compared ignoring case as `aliases:` scoping
    compares it (so `compare_to: production` finds the holder of `Production`)."""
    if not isinstance(incumbents, Mapping):
        call = incumbents

        def ask(model: str, alias: str) -> tuple[Subject, ...]:
            found = call(model, alias)
            if found is None:
                return ()
            return (found,) if isinstance(found, Subject) else tuple(found)

        return ask
    table: dict[tuple[str, str], tuple[Subject, ...]] = {}
    for (model, alias), found in incumbents.items():
        many = (found,) if isinstance(found, Subject) else tuple(found)
        table.setdefault((model, alias.casefold()), ())
        table[(model, alias.casefold())] += many
    return lambda model, alias: table.get((model, alias.casefold()), ())


def _subject_key(s: Subject) -> tuple[str, str, int, str]:
    return (s.model, s.run, s.version if s.version is not None else 0, s.location)


def _applies(policy: Policy, subject: Subject) -> tuple[bool, list[str]]:
    """(applies, missing match keys). A key the run lacks is missing data, never a skip:
    the match is undecidable unless another key already rules the policy out."""
    if subject.params is None:
        return True, []  # fail closed: every rule then fails with "no run data"
    missing = []
    for key, values in policy.match.items():
        value = subject.params.get(key)
        if value is None:
            missing.append(key)
        elif normalise(key, value) not in {normalise(key, v) for v in values}:
            return False, []
    return not missing, missing


def _verdict(
    subject: Subject,
    policy: str,
    rule: str,
    severity: Severity,
    outcome: Outcome,
    finding: Finding,
    suffix: str = "",
    **extra: Any,
) -> Result:
    """A Result whose one-line message names the model, version, run, policy, rule, the
    finding with its observed value and bound, and `suffix` (waivers)."""
    version = f"v{subject.version}" if subject.version is not None else "(new version)"
    message = (
        f"{subject.model} {version}, run {subject.run}: {policy}/{rule}: "
        f"{finding.detail} (observed {finding.observed}; bound {finding.bound}){suffix}"
    )
    return Result(
        model=subject.model,
        run=subject.run,
        run_id=subject.run_id,
        version=subject.version,
        location=subject.location,
        policy=policy,
        rule=rule,
        check=finding.check,
        severity=severity,
        outcome=outcome,
        observed=_oneline(finding.observed),
        bound=_oneline(finding.bound),
        detail=_oneline(finding.detail),
        message=_oneline(message),
        **extra,
    )


def _gate_result(subject: Subject, rule: str, observed: str, bound: str, detail: str) -> Result:
    finding = Finding("", False, observed, bound, detail)
    return _verdict(subject, GATE_POLICY, rule, "deny", "deny", finding)


def _undecided(subject: Subject, policy: Policy, missing: list[str]) -> Result:
    keys = ", ".join(missing)
    return _gate_result(
        subject,
        "match",
        f"param {keys} missing",
        f"policy {policy.name} match " + ", ".join(sorted(policy.match)),
        f"cannot tell whether policy {policy.name} judges this version: the run has no "
        f"param {keys} (missing data fails closed)",
    )


def _unjudged(subject: Subject, aliases: list[str]) -> Result:
    version = f"v{subject.version}" if subject.version is not None else "(new version)"
    run = subject.run_id or subject.run
    names = ", ".join(aliases)
    return _gate_result(
        subject,
        "protected-alias",
        "no policy with a non-empty match applies",
        f"{names} is scoped by a policy rule",
        f"no policy judges {subject.model} {version} (run {run}) for {names}",
    )


def _in_scope(rule: Rule, subject: Subject) -> bool:
    if not rule.aliases:
        return True
    wanted = {a.casefold() for a in rule.aliases}
    return any(a.casefold() in wanted for a in subject.aliases)


def waiver_binding(waiver: Waiver, subject: Subject) -> tuple[bool, str | None]:
    """(applies, why not) for a waiver of the subject's model, policy and rule.

    A waiver binds to one run: by `run_id`, or by run name inside the model's experiment
    plus the run's content digest. A waiver for another run is simply not about this one
    (no note); one that names this run's name but whose id, experiment or digest does not
    fit is not applied, and the note says why.
    """
    if waiver.run_id is not None:
        return waiver.run_id == subject.run_id, None
    if waiver.run != subject.run:
        return False, None
    where = f"waiver at {waiver.location} for run {waiver.run}"
    if not subject.in_experiment:
        return False, f"{where} not applied: this run is not in the model's experiment"
    if waiver.digest is None:
        return False, (
            f"{where} not applied: it names the run by name only; bind it to this run with "
            f"{_binding_hint(subject)}"
        )
    if subject.digest is None:
        return False, (
            f"{where} not applied: this run's content digest is not known (logged without a "
            f"run directory); bind it with {_binding_hint(subject)}"
        )
    if waiver.digest != subject.digest:
        return False, (
            f"{where} not applied: its digest {waiver.digest} is not this run's "
            f"{subject.digest} (another run of that name, or the run directory changed)"
        )
    return True, None


def _binding_hint(subject: Subject) -> str:
    if subject.run_id is not None:
        return f"run_id: {subject.run_id}"
    if subject.digest is not None:
        return f"run: {subject.run}, digest: {subject.digest}"
    return "run_id: <the run's id>"


def _result(
    subject: Subject,
    policy: Policy,
    rule: Rule,
    finding: Finding,
    waivers: Sequence[Waiver],
    today: dt.date,
) -> Result:
    outcome: Outcome = "pass"
    suffix = ""
    used = None
    notes: list[str] = []
    if not finding.ok:
        outcome = rule.severity
        for candidate in waivers:
            applies, note = waiver_binding(candidate, subject)
            if note is not None:
                notes.append(note)
            if applies and (used is None or candidate.expires > used.expires):
                used = candidate
        if used is not None:
            notes = []
            if used.expires >= today:
                outcome = "waived"
                suffix = f"; waived until {used.expires.isoformat()}: {used.reason}"
            else:
                outcome = "expired-waiver" if rule.severity == "deny" else "warn"
                suffix = f"; waiver expired on {used.expires.isoformat()} ({used.reason})"
        elif notes:
            suffix = "; " + "; ".join(notes)
    return _verdict(
        subject,
        policy.name,
        rule.name,
        rule.severity,
        outcome,
        finding,
        suffix,
        waiver_reason=used.reason if used else None,
        waiver_expires=used.expires if used else None,
        waiver_note=_oneline("; ".join(notes)) if notes else None,
        waive_with=None if finding.ok else _oneline(_binding_hint(subject)),
    )


def _oneline(text: str) -> str:
    """Escape control characters so that a message stays one line (`escape.text`)."""
    return escape.text(text)
