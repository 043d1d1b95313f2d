"""The controller's git source: a private clone it fetches, and one checkout per commit.

`regctl controller --source URL` clones URL into `<state-dir>/repo` once and fetches the
branch every interval; each commit it plans from gets its own checkout (`git worktree`,
detached, under `<state-dir>/trees/<sha>`), so the last good commit's files stay on disk
while a new head is judged, and a real git checkout names its commit in provenance.

The `git` command line, run as a child with a timeout (gitpython's `Repo.clone_from`
offers nothing more here, and a hung fetch must not hang the controller):

- file://, a local path, ssh (keys and `GIT_SSH_COMMAND` from the environment) and https.
  For https, a token comes from `REGCTL_GIT_TOKEN` (user `REGCTL_GIT_USERNAME`, default
  `x-access-token`, GitHub's convention) and reaches git as an `http.extraHeader` through
  `GIT_CONFIG_*` variables: never on a command line (`ps` shows those), never in
  `.git/config`. A URL with user info in it (a password, or a token given as the user)
  is refused, so no secret lands in the clone or in a log line.
- Nothing git prints is trusted: errors are cut to one line and escaped by the caller.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from regctl.errors import RegctlError

__all__ = ["GitSource", "SourceError", "shown_url"]

_SHA = re.compile(r"^[0-9a-f]{40}$")
_TIMEOUT: Final = 120.0
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


class SourceError(RegctlError):
    """The source cannot be cloned or fetched (unreachable, refused, not a repository)."""


def shown_url(url: str) -> str:
    """The URL without any user info (for logs and metrics)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=host).geturl()
    return url


class GitSource:
    """One source repository and branch, cloned under `state_dir`."""

    def __init__(
        self,
        url: str,
        branch: str,
        state_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and "@" in parts.netloc:
            # a password, or a token given as the user (GitHub takes `ghp_...@github.com`)
            raise SourceError(
                f"{shown_url(url)}: user info in the URL would be stored in the clone; give "
                "the token in REGCTL_GIT_TOKEN (and the user in REGCTL_GIT_USERNAME) instead"
            )
        if not _BRANCH.match(branch) or branch.startswith("-") or ".." in branch:
            raise SourceError(f"--branch {branch!r} is not a branch name")
        self.url = url
        self.branch = branch
        self.state_dir = state_dir
        self.repo = state_dir / "repo"
        self.trees = state_dir / "trees"
        self._made: set[str] = set()
        self._env = self._environment(dict(env if env is not None else os.environ), parts.scheme)

    @property
    def shown(self) -> str:
        return f"{shown_url(self.url)}@{self.branch}"

    def _environment(self, env: dict[str, str], scheme: str) -> dict[str, str]:
        env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password on a terminal
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        token = env.pop("REGCTL_GIT_TOKEN", "")
        user = env.pop("REGCTL_GIT_USERNAME", "x-access-token")
        if token and scheme == "https":
            basic = base64.b64encode(f"{user}:{token}".encode()).decode()
            n = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
            env["GIT_CONFIG_COUNT"] = str(n + 1)
            env[f"GIT_CONFIG_KEY_{n}"] = "http.extraHeader"
            env[f"GIT_CONFIG_VALUE_{n}"] = f"Authorization: Basic {basic}"
        return env

    def _git(self, args: Sequence[str], cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceError(f"{self.shown}: git {args[0]} took over {_TIMEOUT:g} s") from None
        except OSError as exc:
            raise SourceError(f"cannot run git: {exc.strerror}") from None
        if done.returncode != 0:
            lines = [x.strip() for x in (done.stderr or done.stdout).splitlines() if x.strip()]
            # git's own verdict ("fatal: ..."), not the hint lines after it
            fatal = [x for x in lines if x.startswith(("fatal:", "error:"))]
            why = (fatal or lines or [f"exit code {done.returncode}"])[0]
            raise SourceError(f"{self.shown}: git {args[0]} failed: {why}")
        return done.stdout

    def fetch(self) -> str:
        """Clone when there is no clone yet, else fetch; the branch's head commit."""
        if not (self.repo / ".git").exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            partial = self.state_dir / "repo.partial"
            shutil.rmtree(partial, ignore_errors=True)
            self._git(["clone", "--no-checkout", "--quiet", "--", self.url, str(partial)])
            partial.rename(self.repo)
        ref = f"refs/remotes/origin/{self.branch}"
        self._git(
            ["fetch", "--quiet", "--prune", "origin", f"+refs/heads/{self.branch}:{ref}"], self.repo
        )
        sha = self._git(
            ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], self.repo
        ).strip()
        if not _SHA.match(sha):
            raise SourceError(f"{self.shown}: branch {self.branch!r} has no commit")
        return sha

    def checkout(self, sha: str) -> Path:
        """The files of commit `sha` (a detached worktree, made once per commit)."""
        if not _SHA.match(sha):
            raise SourceError(f"not a commit id: {sha!r}")
        tree = self.trees / sha
        if sha in self._made and (tree / ".git").exists():
            return tree
        # made anew once per process: a checkout a kill cut short, or one edited on disk,
        # must not be what a restarted controller plans from
        self.trees.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        self._git(["worktree", "prune"], self.repo)
        self._git(["worktree", "add", "--detach", "--force", "--quiet", str(tree), sha], self.repo)
        self._made.add(sha)
        return tree

    def keep_only(self, keep: set[str]) -> None:
        """Remove the checkouts of every commit not in `keep`."""
        if not self.trees.is_dir():
            return
        for tree in self.trees.iterdir():
            if tree.name not in keep:
                shutil.rmtree(tree, ignore_errors=True)
                self._made.discard(tree.name)
        self._git(["worktree", "prune"], self.repo)
