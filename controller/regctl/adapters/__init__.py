"""regctl.adapters: the world outside the process.

- `mlflow/`: the MLflow client, split by port (reads, writes, tracking, artifacts); the
  only package that imports mlflow. Transport errors become regctl errors here, once.
- `git`: the only module that imports git (history, files at a ref, provenance).
- `github`: GitHub's REST API (issue comments, issues, labels) with urllib; the only
  module that talks to GitHub.
- `manifests`: manifest files -> DesiredState, with file:line:col problems.
- `rundir`: the safe walk of a run directory (no links, size limits).
- `yamlfile`: YAML with line numbers and read limits; `yamledit`: comment-preserving writes.
- `planfile`: a saved plan's bytes (size limit, strict JSON).

Imports: core, ports, errors, escape; never engine, commands, config, render or policy
(checked by import-linter: a new module here is held to it too).
"""
