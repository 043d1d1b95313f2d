"""`regctl github ...`: the click group `regctl.cli` adds; parse, one call into
`regctl.commands.github`, print, exit with the report's code.

A module of its own so that cli.py stays readable; it sits between `cli` and `commands`
in the layers contract. Errors go up to `regctl.cli.main`, which shows them once.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from regctl import escape

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(name="github")
def github() -> None:
    """Post results to GitHub from CI: the pull-request comment, the drift issue.

    Reads GITHUB_TOKEN, GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_EVENT_PATH,
    GITHUB_SERVER_URL, GITHUB_RUN_ID, GITHUB_SHA and REGCTL_GITHUB_BOT.
    """


@github.command(name="comment")
@click.argument("file")
@click.option(
    "--marker",
    default="regctl-plan",
    show_default=True,
    metavar="NAME",
    help="Which comment of the bot this is (`<!-- regctl:NAME -->`).",
)
def comment_cmd(file: str, marker: str) -> int:
    """Post FILE's markdown (`-`: stdin) as the bot's one comment on the pull request,
    updating it in place; prints the comment's URL."""
    from regctl.commands import github as posting

    report = posting.comment(file, os.environ, marker=marker)
    for line in report.lines:
        click.echo(line)
    return report.exit_code


# an RC such as `-1` is the argument, not an unknown option: it is shown as `?`
@github.command(name="drift", context_settings={"ignore_unknown_options": True})
@click.argument("rc")
@click.option("--plan", type=_FILE, help="The drift check's markdown plan (drift.md).")
@click.option("--errors", type=_FILE, help="The drift check's error output (diff.err).")
@click.option("--label", default="regctl-drift", show_default=True, help="The issue's label.")
def drift_cmd(rc: str, plan: Path | None, errors: Path | None, label: str) -> int:
    """Open, update or close the drift issue for the exit code RC of
    `regctl diff --exit-code`; prints what it did."""
    from regctl.commands import github as posting

    report = posting.drift(rc, os.environ, plan=plan, errors=errors, label=label)
    for warning in report.warnings:
        click.echo(escape.text(f"warning: {warning}"), err=True)
    for line in report.lines:
        click.echo(line)
    return report.exit_code
