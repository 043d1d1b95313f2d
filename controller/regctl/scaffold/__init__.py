"""regctl.scaffold: the files `regctl init` writes into a team's repository (package data).

- `policies/`: the policies that implement the metadata schema (LGBM regression and
  classification, HMM, the registry conventions). These are the canonical copies;
  regctl's own repository keeps byte-equal copies in its `policies/` for its main job
  (`tests/test_init.py` keeps them equal; git cannot hold a symbolic link here, since
  the loader refuses links).
- `workflows/`: the GitHub Actions workflows (plan, apply, drift), with `@@ACTION@@`
  where the regctl action's reference goes; regctl's own `.github/workflows/` are these
  rendered with the local action `./` (also kept equal by a test).
- `README.md.txt`, `gitignore.txt`, `manifests-README.md.txt`: the team's README, its
  `.gitignore` and the note in its `manifests/` folder (`.txt` so that no tool reads
  them as this package's own).

No code lives here: `regctl.commands.init` reads these with importlib.resources.
"""
