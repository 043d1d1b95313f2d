"""Command line: parse, one call into `regctl.commands.app`, render, exit code.

Errors are shown once, here, one line each; `--debug` adds the traceback.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from regctl import escape
from regctl.cli_controller import controller
from regctl.cli_github import github
from regctl.cli_verify import DIGEST_HELP, download_progress, verify
from regctl.errors import ExitCode, InputError, PlanError, RegctlError

if TYPE_CHECKING:
    from regctl import config
    from regctl.commands.apply import ApplyOutcome
    from regctl.core.plan import Change, Plan
    from regctl.engine.sync import Progress
    from regctl.policy.values import Review

# Start-up: everything below click and errors is imported inside the command that needs
# it, so `regctl --help` stays a fraction of `import mlflow` (issue 7, target 1) and the
# commands that never talk to MLflow (validate, log) never import it.

LOCK_TIMEOUT = 60.0
F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("text", "json", "markdown")
CHECK_FORMATS = ("text", "json", "markdown", "github")
RESOLVE_FORMATS = ("text", "json")  # regctl.render.resolve.FORMATS (a test keeps them equal)


@dataclass
class Opts:
    settings: config.Settings
    verbose: int
    color: bool
    debug: bool


def _err(message: str) -> None:
    # Messages quote registry and file values: one line, no terminal escapes.
    click.echo(escape.text(message), err=True)


def _one_line(text: object) -> str:
    """An error message as one line: newlines, ESC and other control characters escaped
    (a file name or a server's message may hold them)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def _is_tty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def prune_options(fn: F) -> F:
    """--prune and --allow-mass-delete, shared by diff and apply."""
    fn = click.option(
        "--allow-mass-delete",
        is_flag=True,
        help="With --prune, allow deleting more than half of the managed objects.",
    )(fn)
    return click.option(
        "--prune",
        is_flag=True,
        help="Delete undeclared versions of models with `prune: true`, and managed models "
        "that no manifest declares.",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--tracking-uri",
    envvar=None,
    help="MLflow tracking URI (default: "
    "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the repo).",
)
@click.option("--registry-uri", help="MLflow registry URI (default: the tracking URI).")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository root (default: the nearest folder with manifests/).",
)
@click.option("-v", "--verbose", count=True, help="More detail.")
@click.option("--no-color", is_flag=True, help="No colour, even on a terminal.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="regctl")
@click.pass_context
def cli(
    ctx: click.Context,
    tracking_uri: str | None,
    registry_uri: str | None,
    repo: Path | None,
    verbose: int,
    no_color: bool,
    debug: bool,
) -> None:
    """regctl keeps an MLflow Model Registry in the state that reviewed YAML manifests
    in git describe."""
    from regctl import config

    root = repo.resolve() if repo is not None else config.find_repo()
    ctx.obj = Opts(
        config.Settings(root, tracking_uri, registry_uri),
        verbose,
        color=not no_color and _is_tty(sys.stdout),
        debug=debug,
    )


@cli.command()
@click.argument("models", nargs=-1)
@click.pass_obj
def validate(opts: Opts, models: tuple[str, ...]) -> int:
    """Offline checks: manifests and the run directories they reference."""
    from regctl.commands import validate as validating

    report = validating.validate(opts.settings, models)
    for w in report.warnings:
        _err(f"warning: {w}")
    click.echo(
        f"{report.models} manifests valid: {report.versions} versions, "
        f"{report.run_dirs} run directories; {report.policies} policies, "
        f"{report.waivers} waivers."
    )
    return ExitCode.OK


def _progress_printer(enabled: bool) -> Progress | None:
    if not enabled:
        return None

    def show(files: int, total: int, done_bytes: int, total_bytes: int) -> None:
        end = "\n" if files == total else ""
        click.echo(
            f"\r  uploading: {files}/{total} files, {done_bytes / 1e6:.1f}/"
            f"{total_bytes / 1e6:.1f} MB",
            err=True,
            nl=False,
        )
        if end:
            click.echo("", err=True)

    return show


@cli.command(name="sync")
@click.argument("models", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Say what would be logged; write nothing.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Uploads in flight at once (default: 8 against a server, 1 for sqlite:///).",
)
@click.option(
    "--lock-timeout",
    type=float,
    default=LOCK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for another writer's lease.",
)
@click.pass_obj
def sync_cmd(
    opts: Opts,
    models: tuple[str, ...],
    dry_run: bool,
    concurrency: int | None,
    lock_timeout: float,
) -> int:
    """Log the run directories that manifests reference as MLflow runs."""
    from regctl import config
    from regctl.commands import sync as syncing

    registry = config.open_registry(opts.settings)
    try:
        options = syncing.SyncOptions(models, dry_run, lock_timeout, concurrency)
        # sync keeps SIGTERM's default (it stops at once; the next sync resumes)
        report = syncing.run_sync(
            opts.settings, registry, options, _ClickConsole(opts, sigterm=False)
        )
    finally:
        registry.close()
    for w in report.warnings:
        _err(f"warning: {w}")
    if dry_run:
        for name in report.pending:
            click.echo(escape.text(f"  + {name}"))
        click.echo(
            f"would log or resume {len(report.pending)} run(s); "
            f"{len(report.skipped)} already logged"
        )
        return ExitCode.OK
    click.echo(
        f"synced: {len(report.created)} logged, {len(report.resumed)} resumed, "
        f"{len(report.skipped)} already logged; uploaded {report.files} files "
        f"({report.bytes} bytes)"
    )
    return ExitCode.OK


@cli.command(name="diff")
@click.argument("models", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are changes.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the plan as JSON for `regctl apply PLAN.json`.",
)
@prune_options
@click.option(
    "--base",
    metavar="REF",
    help="Only the models whose manifests differ from git REF (a pull request's scope).",
)
@click.pass_obj
def diff_cmd(
    opts: Opts,
    models: tuple[str, ...],
    fmt: str,
    exit_code: bool,
    out: Path | None,
    prune: bool,
    allow_mass_delete: bool,
    base: str | None,
) -> int:
    """Show what apply would change, with the policy verdict of the versions it touches.

    Exit 3 when a policy denies a touched version; with --exit-code, 2 when there are
    changes and 0 when the registry matches.
    """
    from regctl import config
    from regctl.commands import diff as differ
    from regctl.render.plan import render

    registry = config.open_registry(opts.settings)
    try:
        report = differ.diff(
            opts.settings,
            registry,
            models,
            prune=prune,
            base=base,
            allow_mass_delete=allow_mass_delete,
            changes_exit=exit_code,
            charts=fmt != "text",  # the text plan has no chart: no reads for one
        )
    finally:
        registry.close()
    plan = report.planned.plan
    click.echo(render(plan, fmt, color=opts.color, review=report.review), nl=False)
    if out is not None:
        try:
            out.write_text(render(plan, "json"), encoding="utf-8")
        except OSError as exc:
            raise RegctlError(
                f"--out {out}: cannot write the plan: {exc.strerror or exc}"
            ) from None
    return report.exit_code


@cli.command(name="check")
@click.argument("models", nargs=-1)
@click.option(
    "--format", "fmt", type=click.Choice(CHECK_FORMATS), default="text", show_default=True
)
@click.pass_obj
def check_cmd(opts: Opts, models: tuple[str, ...], fmt: str) -> int:
    """Policy verdicts for every version the manifests declare (exit 3 on a deny)."""
    from regctl import config
    from regctl.commands import review as reviewing
    from regctl.render.policy import render_report

    registry = config.open_registry(opts.settings)
    try:
        report = reviewing.check(opts.settings, registry, models)
    finally:
        registry.close()
    click.echo(render_report(report, fmt, verbose=opts.verbose > 0), nl=False)
    return report.exit_code


@cli.command(name="apply")
@click.argument("args", nargs=-1)
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@prune_options
@click.option("--no-sync", is_flag=True, help="Do not log run directories first.")
@click.option(
    "--lock-timeout",
    type=float,
    default=LOCK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for another writer's lease before giving up.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Writes and uploads in flight at once (default: 8 against a server, 1 for sqlite:///).",
)
@click.pass_obj
def apply_cmd(
    opts: Opts,
    args: tuple[str, ...],
    auto_approve: bool,
    prune: bool,
    no_sync: bool,
    lock_timeout: float,
    allow_mass_delete: bool,
    concurrency: int | None,
) -> int:
    """Make the registry match the manifests: [PLAN.json] [MODEL...]."""
    from regctl import config
    from regctl.commands import apply as applying

    plan_file = None
    models = list(args)
    if models and models[0].endswith(".json"):
        plan_file = Path(models.pop(0))
    options = applying.ApplyOptions(
        models=models,
        plan_file=plan_file,
        prune=prune,
        no_sync=no_sync,
        lock_timeout=lock_timeout,
        auto_approve=auto_approve,
        concurrency=concurrency,
        allow_mass_delete=allow_mass_delete,
    )
    console = _ClickConsole(opts)
    registry = config.open_registry(opts.settings)
    try:
        outcome = applying.apply(opts.settings, registry, options, console)
    finally:
        console.restore()
        registry.close()
    return _applied(opts, outcome)


def _applied(opts: Opts, outcome: ApplyOutcome) -> int:
    """Print what apply did; the exit code."""
    from regctl.render.plan import render_text, summary_line

    if outcome.report is None:
        click.echo(render_text(outcome.plan, color=opts.color), nl=False)
        return outcome.exit_code
    if outcome.sync is not None and (outcome.sync.created or outcome.sync.resumed):
        click.echo(
            f"Synced {len(outcome.sync.created) + len(outcome.sync.resumed)} run(s), "
            f"{outcome.sync.files} files."
        )
    click.echo(f"Apply complete: {outcome.report.done} of {outcome.report.total} changes applied.")
    if outcome.after is not None and not outcome.after.empty:
        click.echo(render_text(outcome.after, color=opts.color), nl=False)
        _err(
            "error: the registry still differs from the manifests after apply "
            f"({summary_line(outcome.after)})"
        )
    else:
        click.echo("Verified: the registry matches the manifests.")
    return outcome.exit_code


class _ClickConsole:
    """The console port on a terminal: the plan, the confirmation prompt, progress on
    stderr; SIGTERM asks apply to stop after the writes in flight (then the lease is
    released)."""

    def __init__(self, opts: Opts, *, sigterm: bool = True) -> None:
        self.opts = opts
        self._printer = _progress_printer(_is_tty(sys.stderr))
        self._stop = _StopOnSigterm() if sigterm else None

    def show(self, plan: Plan, review: Review) -> None:
        from regctl.render.plan import render_text

        click.echo(render_text(plan, color=self.opts.color, review=review), nl=False)

    def confirm(self, plan: Plan) -> bool:
        if not _is_tty(sys.stdin):
            raise RegctlError(
                "apply needs confirmation: run it on a terminal or pass --auto-approve"
            )
        return click.confirm("Apply these changes?", default=False)

    def progress(self, done: int, total: int, change: Change) -> None:
        if self.opts.verbose:
            what = change.model or getattr(change, "run_name", "")  # a sync step: its run
            _err(escape.text(f"  [{done}/{total}] {change.verb} {what}"))

    def sync_progress(self, files: int, files_total: int, size: int, size_total: int) -> None:
        if self._printer is not None:
            self._printer(files, files_total, size, size_total)

    def should_stop(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def restore(self) -> None:
        if self._stop is not None:
            self._stop.restore()


class _StopOnSigterm:
    """SIGTERM asks apply to stop after the write in flight (then the lease is released)."""

    def __init__(self) -> None:
        self._set = False
        self._previous: Any = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. embedded): no handler
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        _err("SIGTERM: stopping after the current write")
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@cli.command(name="log")
@click.argument("model")
@click.option("--alias", help="Only the moves of this alias.")
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
@click.pass_obj
def log_cmd(opts: Opts, model: str, alias: str | None, fmt: str) -> int:
    """Promotion history of MODEL from the git history of its manifest."""
    from regctl.commands import log as history

    click.echo(history.log(opts.settings, model, alias, fmt), nl=False)
    return ExitCode.OK


@cli.command(name="unlock")
@click.argument("lease_id")
@click.pass_obj
def unlock_cmd(opts: Opts, lease_id: str) -> int:
    """Break a stale apply lease, by its id only."""
    from regctl import config
    from regctl.commands import lease as leasing

    registry = config.open_registry(opts.settings)
    try:
        lease = leasing.unlock(registry, lease_id)
    finally:
        registry.close()
    click.echo(escape.text(f"Broke lease {lease.id} held by {lease.holder}."))
    return ExitCode.OK


@cli.command(name="resolve")
@click.argument("target")
@click.option(
    "--format", "fmt", type=click.Choice(RESOLVE_FORMATS), default="text", show_default=True
)
@click.option(
    "--download",
    type=click.Path(path_type=Path),
    metavar="DIR",
    default=None,
    help="Download the version's files into DIR (absent or empty), checked against the "
    "registry's content record.",
)
@click.option("--digest", metavar="sha256:HEX", default=None, help=DIGEST_HELP)
@click.pass_obj
def resolve_cmd(
    opts: Opts, target: str, fmt: str, download: Path | None, digest: str | None
) -> int:
    """Show what NAME@ALIAS or NAME/VERSION resolves to; --download fetches its files."""
    from regctl.commands.resolve import resolve_command

    report = resolve_command(
        opts.settings, target, fmt, download, digest=digest, progress=download_progress()
    )
    for warning in report.warnings:
        _err(f"warning: {warning}")
    click.echo(report.text)
    return report.exit_code


@cli.command(name="import")
@click.argument("models", nargs=-1)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write manifests here (default: the repository's manifests/).",
)
@click.pass_obj
def import_cmd(opts: Opts, models: tuple[str, ...], out: Path | None) -> int:
    """Write manifests from the live registry (updating edited files in place)."""
    from regctl.commands import import_models

    text, code = import_models.import_command(opts.settings, models, out)
    click.echo(text, nl=False)
    return code


@cli.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--import", "import_", is_flag=True, help="Fill manifests/ from the registry.")
@click.option("--action", metavar="OWNER/REPO@REF", help="The regctl action the workflows use.")
@click.option("--force", is_flag=True, help="Overwrite the scaffold's files that exist.")
@click.pass_obj
def init_cmd(opts: Opts, directory: Path, import_: bool, action: str | None, force: bool) -> int:
    """Scaffold a team's manifests repository in DIRECTORY (default: here)."""
    from regctl import config
    from regctl.commands import init as scaffold

    root = directory.resolve()
    source = config.Settings(root, opts.settings.tracking_uri, opts.settings.registry_uri)
    chosen = scaffold.check_action(action or scaffold.default_action())
    origin = source if import_ else None
    report = scaffold.init(root, action=chosen, force=force, import_from=origin)
    text = scaffold.render_init(report, chosen)
    shown = "\n".join(escape.text(line) for line in text.splitlines())
    click.echo(shown, err=report.exit_code != 0 and not report.written)
    return report.exit_code


@cli.command(name="schema")
@click.pass_obj
def schema_cmd(opts: Opts) -> int:
    """JSON Schema of manifests, policies and waivers (for editors and CI)."""
    from regctl.commands import schema

    text, code = schema.schema_command(opts.settings)
    click.echo(text, nl=False)
    return code


cli.add_command(github)
cli.add_command(verify)
cli.add_command(controller)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI and turn every outcome into an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="regctl", standalone_mode=False
        )
    except click.exceptions.Abort:
        _err("interrupted")
        return ExitCode.INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return ExitCode.ERROR
    except (InputError, PlanError) as exc:
        if debug:
            traceback.print_exc()
        for problem in exc.problems:
            _err(f"error: {_one_line(problem)}")
        return exc.exit_code
    except RegctlError as exc:
        if debug:
            traceback.print_exc()
        for line in getattr(exc, "lines", None) or (str(exc),):  # one per file named
            _err(f"error: {_one_line(line)}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: say so plainly, with a way to see more
        if debug:
            traceback.print_exc()
        _err(
            f"internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run with --debug for a traceback)"
        )
        return ExitCode.ERROR
    return int(result) if isinstance(result, int) else ExitCode.OK
