"""`regctl verify ...` and the download progress `regctl resolve --download` shares: the
click command `regctl.cli` adds; parse, one call into `regctl.commands.verify`, print.

A module of its own so that cli.py stays readable; it sits beside `cli_github` between
`cli` and `commands` in the layers contract. Errors go up to `regctl.cli.main`, which
shows them once (a VerifyFailed or ContentMismatch one line per file).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from regctl import escape
from regctl.engine.resolved import Progress

DIGEST_HELP = "Also require this tree digest (sha256:..., e.g. the manifest's pin)."


def download_progress(stream: Any = None) -> Progress | None:
    """`files done/total` on stderr while downloading, when stderr is a terminal."""
    err = stream if stream is not None else sys.stderr
    if not bool(getattr(err, "isatty", lambda: False)()):
        return None

    def show(done: int, total: int, path: str) -> None:
        click.echo(f"\r  downloading and hashing: {done}/{total} files", err=True, nl=False)
        if done == total:
            click.echo("", err=True)

    return show


@click.command(name="verify")
@click.argument("target", metavar="DIR|NAME@ALIAS|NAME/VERSION")
@click.option("--digest", metavar="sha256:HEX", default=None, help=DIGEST_HELP)
@click.option(
    "--record",
    is_flag=True,
    help="Record the content digest of NAME/VERSION's stored files (a version with no "
    "record, after a person has checked its files).",
)
@click.pass_context
def verify(ctx: click.Context, target: str, digest: str | None, record: bool) -> int:
    """Check files against their content digest: DIR (a download) against its lock,
    offline; NAME@ALIAS or NAME/VERSION: the stored artifacts against the registry's
    record."""
    from regctl.commands.verify import verify_command

    settings = ctx.obj.settings
    text, code = verify_command(
        settings, target, digest=digest, record=record, progress=download_progress()
    )
    click.echo(escape.text(text))
    return code
