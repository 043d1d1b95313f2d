"""regctl.core: pure values and functions; no network, no git, no engine, no click.

- `model`: desired and observed state, the tag names regctl writes.
- `plan`: the Change types (each declares its verb, symbol, phase, lane and the version
  it touches), Plan, and the strict parser of a saved plan's JSON.
- `binding`: which registry version a manifest entry is (shared by diff and import).
- `diff`: desired + observed -> Plan.
- `runs`: run directory values (RunFile, RunRecord, the content digest); `runschema`: the
  metadata-schema derivation of params and metrics from parsed files.
- `importplan`: what `regctl import` would declare, and matching existing manifests.
- `history`: promotions from a manifest's git history.
- `uris`: tracking and registry URI checks.
- `spec`: `Strict`, the base of every YAML document schema.

Imports: `regctl.errors`, `regctl.escape`, `regctl.adapters.yamlfile` (parsing text with
line numbers) and each other. Tested without a server: tests/test_core_cases.py and
the golden folders in tests/cases/.
"""
