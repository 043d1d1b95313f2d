"""regctl.render: text, markdown, JSON and GitHub annotations, one module per subject.

- `plan`: the plan (text, JSON, the PR comment's markdown), with its review.
- `chart`: the mermaid chart of an alias move's primary metric (markdown only).
- `policy`: a policy report in every format.
- `resolve`: what `regctl resolve` prints.
- `importing`: the import report.
- `history`: what `regctl log` prints.
- `github`: the pull-request comment and the drift issue (`regctl github`).

Every string from the registry, a run directory or a plan file is hostile: it goes
through `regctl.escape` (one module, used by every format) for the format it lands in.
Imports: policy, core, ports, errors, escape; never the engine, adapters or commands.
"""
