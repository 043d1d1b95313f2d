"""`regctl controller`: the click command `regctl.cli` adds; parse, start the listener,
run `regctl.commands.controller.Controller` until SIGTERM or SIGINT, exit 0.

Secrets come from the environment only (a flag would show in `ps`):
`REGCTL_GIT_WEBHOOK_SECRET`, `REGCTL_MLFLOW_WEBHOOK_SECRET`, `REGCTL_GIT_TOKEN`, and
MLflow's own `MLFLOW_TRACKING_TOKEN` (or username and password).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from regctl.errors import ExitCode


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, not {value!r}", param_hint="--listen")
    return host.strip("[]"), int(port)


@click.command(name="controller")
@click.option("--source", required=True, metavar="GIT_URL", help="The manifests repository.")
@click.option("--branch", default="main", show_default=True)
@click.option("--path", "subdir", default="", metavar="SUBDIR", help="The repository's folder.")
@click.option("--interval", type=click.FloatRange(1, 86400), default=60.0, show_default=True)
@click.option(
    "--sweep-interval", type=click.FloatRange(5, 86400 * 7), default=600.0, show_default=True
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT")
@click.option("--self-heal", is_flag=True, help="Revert drift (else report it).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".regctl-controller"),
    show_default=True,
)
@click.option(
    "--public-url", default=None, metavar="URL", help="This controller, as MLflow reaches it."
)
@click.option(
    "--log-format", type=click.Choice(("text", "json")), default="text", show_default=True
)
@click.pass_context
def controller(
    ctx: click.Context,
    source: str,
    branch: str,
    subdir: str,
    interval: float,
    sweep_interval: float,
    listen: str,
    self_heal: bool,
    state_dir: Path,
    public_url: str | None,
    log_format: str,
) -> int:
    """Keep the registry converged to a git branch: pull, judge, apply; heal drift."""
    from regctl.adapters.httpserve import Listener
    from regctl.commands.controller import Controller, ControllerOptions
    from regctl.commands.controller_http import routes
    from regctl.commands.controller_state import ControllerLog, Metrics
    from regctl.config import Settings, resolve_tracking

    host, port = _listen(listen)
    given = ctx.obj.settings
    state = state_dir.resolve()
    # resolved once: every commit's checkout must reach the same registry (the embedded
    # default, sqlite:///mlflow.db, lives in the state directory, not in a checkout)
    uri, _ = resolve_tracking(Settings(state, given.tracking_uri, given.registry_uri))
    settings = Settings(state, uri, given.registry_uri)
    options = ControllerOptions(
        source=source,
        state_dir=state,
        branch=branch,
        path=subdir,
        interval=interval,
        sweep_interval=sweep_interval,
        self_heal=self_heal,
        tracking_uri=settings.tracking_uri,
        registry_uri=settings.registry_uri,
        public_url=public_url,
        mlflow_secret=os.environ.get("REGCTL_MLFLOW_WEBHOOK_SECRET", ""),
    )
    log = ControllerLog(log_format)
    metrics = Metrics()
    ctl = Controller(options, log, metrics)
    table = routes(
        ctl.status,
        metrics,
        branch=branch,
        git_secret=os.environ.get("REGCTL_GIT_WEBHOOK_SECRET", ""),
        mlflow_secret=options.mlflow_secret,
        poke_git=ctl.poke_git,
        poke_models=ctl.poke_models,
        log=log.event,
    )
    try:
        listener = Listener(host, port, table)
    except OSError as exc:
        raise click.ClickException(f"--listen {listen}: {exc.strerror}") from None

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.event("signal", detail=signal.Signals(signum).name)
        ctl.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.event("started", detail=f"{ctl.source.shown} on {host}:{listener.port}", pid=os.getpid())
    try:
        code = ctl.run()
    finally:
        listener.close()
    sys.stderr.flush()
    return code if code else ExitCode.OK
