"""regctl.commands: the use cases, one module per command, and the wiring they share.

- `planning`: load the inputs (manifests, policies, run directories), observe, prove the
  runs, diff: the plan that diff, check and apply start from.
- `review`: the policy review of a plan (subjects, incumbents, verdict) and `check`.
- `apply`, `sync`, `validate`, `log`, `lease` (take, provenance, unlock), `resolve`,
  `import_models` (with `importing`, the manifest writer), `schema`, `github` (the PR
  comment and the drift issue, from GitHub Actions' environment).
- `console`: the console port (show, confirm, progress, stop) the CLI implements.
- `diff`: the plan and its review (`DiffReport`); `printed`: the report of a command whose
  output is one text.

A use case takes `config.Settings`, an options value and ports, and returns a report; the
CLI renders it and exits with its code. Imports: everything below (config, engine,
adapters, render, policy, core, ports, errors); never `regctl.cli` or click.
"""
