"""regctl.engine: what talks to MLflow, through the Protocols in `regctl.ports` only.

- `observe`: the registry side of a plan, in a few paginated reads.
- `apply`: the interpreter of a plan: one handler per Change type, phases in order, lanes
  of a phase concurrently, provenance recorded once per changed model.
- `sync`: `survey` (every read and check before any write) and `SyncExecutor` (log or
  resume one run directory; apply's interpreter runs it for each SyncRun).
- `proof`: whether a logged run is a run directory's run (content, not name).
- `lease` (with `generation`, the lease value, and `process`, who holds it): one writer.
- `download` (with `resolved`, its values): resolve an alias and fetch verified bytes.

Imports: ports, core, policy, render, the local-file adapters (run directories), errors;
never `regctl.adapters.mlflow`, `regctl.adapters.git`, config, commands or the CLI.
"""
