"""Child-process entry points of the benchmarks: regctl and the baselines it is compared with.

    probe.py MODE OUT.json [ARGS...]

Each mode does its work and writes OUT.json: what it counted (HTTP requests through
`requests`, by method, path, query and body) and what it found. Baselines are the
scripts people write today with `MlflowClient`; each imports mlflow like regctl does.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Call = list[str]
START = time.perf_counter()


def count_requests() -> list[Call]:
    """Record every request sent through `requests` (the server still answers it).

    `Session.send` is wrapped rather than the adapter's, so that the time includes
    reading the response body (the adapter returns once the headers are in).
    """
    from urllib.parse import urlsplit

    import requests

    calls: list[Call] = []
    original = requests.Session.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url)
        body = request.body
        if isinstance(body, bytes):
            body = body[:400].decode("utf-8", "replace")
        text = body[:400] if isinstance(body, str) else ""
        size = len(request.body) if isinstance(request.body, str | bytes) else -1
        if request.method == "PUT":
            size = int(request.headers.get("Content-Length", 0) or 0)
        t0 = time.perf_counter()
        try:
            return original(self, request, *args, **kwargs)
        finally:
            took = time.perf_counter() - t0
            thread = threading.current_thread().name
            timing = [f"{t0 - START:.4f}", f"{took:.4f}", thread]
            calls.append([request.method, parts.path, parts.query[:400], text, str(size), *timing])

    requests.Session.send = send  # type: ignore[method-assign]
    return calls


def mlflow_imported() -> bool:
    return any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules)


def regctl(args: list[str]) -> dict[str, Any]:
    """`regctl ARGS` in this process; `--count` first counts its requests."""
    calls: list[Call] | None = None
    if args and args[0] == "--count":
        args = args[1:]
        calls = count_requests()
    from regctl.cli import main

    t0 = time.perf_counter()
    try:
        rc = main(args)
    except SystemExit as exc:  # click's --help/--version
        rc = int(exc.code or 0)
    return {
        "rc": rc,
        "seconds": time.perf_counter() - t0,
        "calls": calls or [],
        "mlflow_imported": mlflow_imported(),
    }


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(url, url)


def _pages(fetch: Callable[[str | None], Any]) -> int:
    token, items = None, 0
    while True:
        page = fetch(token)
        items += len(page)
        token = page.token
        if not token:
            return items


def floor(url: str, experiments_file: str) -> dict[str, Any]:
    """Only the paginated searches a full observe needs, with nothing done to the results."""
    calls = count_requests()
    from mlflow.entities import ViewType

    c = _client(url)
    wanted = set(Path(experiments_file).read_text().split())
    models = _pages(lambda t: c.search_registered_models(max_results=1000, page_token=t))
    versions = _pages(lambda t: c.search_model_versions(max_results=200_000, page_token=t))
    exps = []
    token = None
    while True:
        page = c.search_experiments(ViewType.ACTIVE_ONLY, max_results=50_000, page_token=token)
        exps += [e for e in page if e.name in wanted]
        token = page.token
        if not token:
            break
    runs = 0
    for e in exps:
        runs += _pages(
            lambda t, e=e: c.search_runs([e.experiment_id], max_results=50_000, page_token=t)
        )
    return {"calls": calls, "models": models, "versions": versions, "runs": runs}


def _sample(names_file: str, limit: str) -> tuple[list[str], int]:
    names = Path(names_file).read_text().split()
    return (names[: int(limit)] if int(limit) > 0 else names), len(names)


def loop(url: str, names_file: str, limit: str = "0") -> dict[str, Any]:
    """The per-model loop: get_registered_model + search_model_versions for every model
    (or the first `limit`: `setup` and `loop` seconds let the caller extrapolate)."""
    calls = count_requests()
    c = _client(url)
    names, total = _sample(names_file, limit)
    versions = 0
    t0 = time.perf_counter()
    for name in names:
        c.get_registered_model(name)
        versions += len(c.search_model_versions(f"name = '{name}'"))
    took = time.perf_counter() - t0
    return {
        "calls": calls,
        "versions": versions,
        "setup": t0 - START,
        "loop": took,
        "done": len(names),
        "total": total,
    }


def client_apply(
    url: str,
    names_file: str,
    alias: str,
    version: str,
    described: str,
    text: str,
    limit: str = "0",
) -> dict[str, Any]:
    """A sequential MlflowClient loop: move one alias and set one description per model
    (or in the first `limit` models, as `loop` does)."""
    calls = count_requests()
    c = _client(url)
    names, total = _sample(names_file, limit)
    t0 = time.perf_counter()
    for name in names:
        c.set_registered_model_alias(name, alias, version)
        c.update_model_version(name, described, description=text)
    took = time.perf_counter() - t0
    return {"calls": calls, "setup": t0 - START, "loop": took, "done": len(names), "total": total}


def log_artifacts(url: str, experiment: str, dirs_file: str) -> dict[str, Any]:
    """One run per directory, `log_artifacts` of the whole directory, sequentially."""
    calls = count_requests()
    c = _client(url)
    exp = c.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
    for line in Path(dirs_file).read_text().splitlines():
        d = Path(line)
        run = c.create_run(exp_id, run_name=d.name)
        c.log_artifacts(run.info.run_id, str(d))
        c.set_terminated(run.info.run_id)
    return {"calls": calls}


def parse(folder: str) -> dict[str, Any]:
    """Merely parse every manifest with ruamel.yaml's safe loader."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    n = 0
    for path in sorted(Path(folder).glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            yaml.load(f)
        n += 1
    return {"files": n}


def validate_pair(repo: str, repeat: str) -> dict[str, Any]:
    """In one warm process: regctl's validate vs the safe-loader parse, interleaved."""
    from ruamel.yaml import YAML

    from regctl import config
    from regctl.commands import validate as validating

    settings = config.Settings(Path(repo))
    files = sorted((Path(repo) / "manifests").glob("*.yaml"))

    def safe() -> None:
        yaml = YAML(typ="safe")
        for path in files:
            with path.open(encoding="utf-8") as f:
                yaml.load(f)

    def validate() -> None:
        validating.validate(settings)

    times: dict[str, list[float]] = {"regctl": [], "parse": []}
    validate()
    safe()
    for i in range(int(repeat)):
        order = [("regctl", validate), ("parse", safe)]
        for name, fn in order if i % 2 == 0 else reversed(order):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


MODES: dict[str, Callable[..., dict[str, Any]]] = {
    "floor": floor,
    "loop": loop,
    "client-apply": client_apply,
    "log-artifacts": log_artifacts,
    "parse": parse,
    "validate-pair": validate_pair,
}


def main(argv: list[str]) -> int:
    mode, out, *rest = argv
    result = regctl(rest) if mode == "regctl" else MODES[mode](*rest)
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
