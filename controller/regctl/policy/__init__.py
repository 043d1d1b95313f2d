"""regctl.policy: policies and waivers, rules over a version's run data judged before
anything is applied (SPEC section 4; `policies/*.yaml` holds `kind: Policy` and
`kind: Waiver` documents).

Modules, in the order they depend on each other:

- `values`: the frozen values (checks, Rule, Policy, Waiver, PolicySet, Subject, Result,
  PolicyReport, ComparisonRow, SeriesPoint, MetricSeries, Comparison, Review) and the
  `run_name` placeholder syntax.
- `specs`: the pydantic schemas of the YAML documents (PolicySpec, WaiverSpec, ...).
- `loading`: `policy_files` and `load_policies`, which validate the documents, report
  every problem with its `file:line` and turn the specs into values.
- `checks`: one handler per check type; `judge` dispatches on the type in one place.
- `evaluation`: `evaluate`, which policies and rules apply, verdicts, waivers.
- `comparison`: `alias_comparison`, the metric rows of an alias move; `charted_metric`,
  `chart_versions` and `metric_series`, the data of its chart.

Rendering a report is `regctl.render.policy` (render imports policy, never the reverse).

Imports: this folder uses `regctl.errors`, `regctl.escape` and `regctl.core` only, and no
ports (it is a pure function of values). `loading` alone reads files, through
`regctl.adapters.yamlfile` and `regctl.adapters.manifests`. Nothing is re-exported here:
import from the module that defines a name.
"""
