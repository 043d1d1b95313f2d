"""The git boundary: provenance of an apply, manifests at a ref, changed files, history.

This is the only module of regctl that imports `git` (GitPython). It imports it inside
the functions, for two reasons: `import git` raises ImportError on a machine without a
git executable, and `provenance()` must work there (a tarball checkout in CI); and
`regctl --help` should not pay for it.

Paths are POSIX and relative to the `repo` directory given, which may be a subfolder of
the git working tree (a monorepo): the conversion to and from the toplevel happens
here, once.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters.yamlfile import MAX_FILE_BYTES
from regctl.errors import InputError, Location, Problem, RegctlError

if TYPE_CHECKING:
    import git

YAML_SUFFIXES = (".yaml", ".yml")

_STATUS_RE = re.compile(r"^[ACDMRTUXB]\d*$")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who applied what, from where: recorded with every change apply makes.

    `commit` is the full sha of the checked-out commit ("" outside git); `dirty` says
    the working tree differs from it (tracked changes anywhere, or untracked files under
    manifests/ or policies/), so the commit alone does not describe what was applied.
    `ref` is a full ref name (`refs/heads/main`), "" when detached; `run_url` links the
    GitHub Actions run or the GitLab CI job, "" elsewhere.
    """

    commit: str
    short: str
    actor: str
    dirty: bool
    ref: str
    run_url: str


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit as history shows it. `date` is the committer date, ISO 8601 with offset."""

    sha: str
    short: str
    date: str
    author: str
    subject: str


@dataclass(frozen=True, slots=True)
class _Repo:
    """An open repository plus where the regctl repo sits inside its working tree."""

    repo: git.Repo
    prefix: str  # "" when the regctl repo is the toplevel

    def to_top(self, path: str) -> str:
        path = path.strip("/")
        if path in ("", "."):
            return self.prefix
        return f"{self.prefix}/{path}" if self.prefix else path

    def from_top(self, path: str) -> str | None:
        """The path relative to the regctl repo, or None when it lies outside it."""
        if not self.prefix:
            return path
        if path.startswith(self.prefix + "/"):
            return path[len(self.prefix) + 1 :]
        return None


@contextmanager
def _open(repo: Path) -> Iterator[_Repo]:
    try:
        import git
    except ImportError as exc:
        raise RegctlError(f"cannot run git (is it installed and on PATH?): {_first(exc)}") from exc
    try:
        r = git.Repo(repo, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise RegctlError(f"{repo} is not inside a git repository") from exc
    try:
        top = r.working_tree_dir
        if top is None:
            raise RegctlError(f"{repo} is a bare git repository; regctl needs a working tree")
        try:
            prefix = repo.resolve().relative_to(Path(top).resolve()).as_posix()
        except ValueError:
            prefix = ""
        yield _Repo(r, "" if prefix == "." else prefix)
    finally:
        # Repo keeps `git cat-file` helper processes alive; end them now, not at GC.
        r.close()


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _git_error(exc: Exception) -> str:
    """The first line git printed on stderr, else the exception's first line."""
    # GitPython formats stderr as "\n  stderr: '<text>'"; undo exactly that quoting.
    stderr = str(getattr(exc, "stderr", "") or "").strip()
    if stderr.startswith("stderr: '") and stderr.endswith("'"):
        stderr = stderr[len("stderr: '") : -1]
    for line in stderr.splitlines():
        line = line.strip()
        for noise in ("fatal: ", "error: "):
            line = line.removeprefix(noise)
        if line:
            return line
    return _first(exc)


def _resolve(g: _Repo, ref: str) -> str:
    """The full sha of the commit `ref` names; RegctlError naming the ref otherwise."""
    import git

    # A ref starting with "-" would be read as an option by git: refuse it here rather
    # than rely on --end-of-options, which older gits lack.
    if not ref or ref.startswith("-"):
        raise RegctlError(f"git: {ref!r} is not a valid revision")
    try:
        # rev-parse, not GitPython's own parser, so every revision syntax git accepts
        # works (`main@{1}`, `HEAD^2`, `:/fix`), and `^{commit}` refuses trees and blobs.
        return str(g.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")).strip()
    except git.GitCommandError as exc:
        why = _git_error(exc) if exc.stderr and str(exc.stderr).strip() else "unknown revision"
        remote_like = "/" in ref and not ref.startswith(":")
        hint = " (fetched? a shallow clone may lack it)" if remote_like else ""
        raise RegctlError(f"git: cannot resolve {ref!r} to a commit: {why}{hint}") from exc


def _actor_from_git(repo: Path) -> str:
    try:
        import git
    except ImportError:
        return ""
    cwd = str(repo) if repo.is_dir() else None
    cmd = git.Git(cwd)
    parts: dict[str, str] = {}
    for key in ("user.name", "user.email"):
        try:
            # `git config` rather than GitPython's config reader: it honours every git
            # rule (includes, GIT_CONFIG_GLOBAL, system config) exactly as `git commit` does.
            parts[key] = str(cmd.config("--get", key)).strip()
        except (git.GitCommandError, OSError):
            parts[key] = ""
    name, email = parts["user.name"], parts["user.email"]
    if name and email:
        return f"{name} <{email}>"
    if email:
        return f"<{email}>"
    return name


def _os_user(env: Mapping[str, str]) -> str:
    for key in ("USER", "LOGNAME", "USERNAME"):
        if env.get(key):
            return env[key]
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        # getuser() fails in containers whose uid has no passwd entry.
        return "unknown"


def _head(repo: Path) -> tuple[str, str, bool, str]:
    """(sha, short, dirty, ref) of HEAD; empty values outside git, never raises."""
    try:
        import git
    except ImportError:
        return "", "", False, ""
    try:
        with _open(repo) as g:
            r = g.repo
            ref = ""
            if not r.head.is_detached:
                ref = r.head.reference.path
            try:
                sha = r.head.commit.hexsha
            except ValueError:
                return "", "", False, ref  # unborn branch: no commit yet
            short = str(r.git.rev_parse("--short", sha)).strip()
            scope = g.prefix or None
            dirty = r.is_dirty(index=True, working_tree=True, untracked_files=False, path=scope)
            if not dirty:
                # Untracked files elsewhere (mlflow.db, caches) do not change what is
                # applied; an untracked manifest or policy does.
                inputs = [g.to_top("manifests"), g.to_top("policies")]
                dirty = bool(r.git.ls_files("--others", "--exclude-standard", "--", *inputs))
            return sha, short, dirty, ref
    except (RegctlError, git.GitError, ValueError, OSError):
        # e.g. git's "dubious ownership" refusal in a CI container: provenance is
        # best effort and falls back to the CI environment.
        return "", "", False, ""


def provenance(repo: Path, env: Mapping[str, str]) -> Provenance:
    """Who is applying which commit: from git, the CI environment and the OS.

    The commit is the checked-out HEAD (what is being applied), else `GITHUB_SHA`.
    The actor is `GITHUB_ACTOR` in GitHub Actions, `GITLAB_USER_LOGIN` in GitLab CI
    (the user who started the pipeline or the manual job), else git's
    `user.name <user.email>`, else the OS user; a CI job's container has no git identity,
    and its OS user (`root`) names nobody. The run URL is the Actions run, or GitLab's
    `CI_JOB_URL`. Never raises: outside git the commit is "".
    """
    sha, short, dirty, ref = _head(repo)
    if not sha and env.get("GITHUB_SHA"):
        sha = env["GITHUB_SHA"]
        short = sha[:7]
    gitlab = env.get("GITLAB_CI") == "true"
    actor = (
        env.get("GITHUB_ACTOR", "")
        or (env.get("GITLAB_USER_LOGIN", "") if gitlab else "")
        or _actor_from_git(repo)
        or _os_user(env)
    )
    run_url = ""
    server, repository, run_id = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID", ""),
    )
    if server and repository and run_id:
        run_url = f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"
    elif gitlab:
        run_url = env.get("CI_JOB_URL", "")
    return Provenance(
        commit=sha,
        short=short,
        actor=actor,
        dirty=dirty,
        ref=env.get("GITHUB_REF", "") or ref,
        run_url=run_url,
    )


def is_ancestor(repo: Path, commit: str, ref: str = "HEAD") -> bool:
    """Whether `commit` is `ref` or one of its ancestors; False when either cannot be
    resolved (not a git repository, a commit not fetched, a forged sha)."""
    import git

    try:
        with _open(repo) as g:
            a, b = _resolve(g, commit), _resolve(g, ref)
            g.repo.git.merge_base("--is-ancestor", a, b)
            return True
    except (RegctlError, git.GitCommandError):
        return False


def files_at(repo: Path, ref: str, folder: str) -> dict[str, str]:
    """The text of every `*.yaml`/`*.yml` file directly in `folder` at git ref `ref`.

    Keys are POSIX paths relative to `repo`, sorted. A folder missing at that ref gives
    {}. Symlinks are skipped (their target is not resolved at a ref). A bad ref raises
    RegctlError naming it; a file that is not UTF-8 or too large raises InputError
    located as `ref:path`, as the working-tree loader does.
    """
    with _open(repo) as g:
        sha = _resolve(g, ref)
        tree = g.repo.commit(sha).tree
        where = g.to_top(folder)
        if where:
            try:
                sub = tree / where
            except KeyError:
                return {}
            if sub.type != "tree":
                return {}
        else:
            sub = tree
        out: dict[str, str] = {}
        for blob in sub.blobs:
            if blob.mode == blob.link_mode or not blob.name.endswith(YAML_SUFFIXES):
                continue
            path = g.from_top(os.fspath(blob.path))
            if path is None:
                continue
            shown = Location(f"{ref}:{path}")
            if blob.size > MAX_FILE_BYTES:
                raise InputError(
                    [
                        Problem(
                            shown,
                            "",
                            f"file is {blob.size} bytes, over the limit of {MAX_FILE_BYTES}",
                        )
                    ]
                )
            try:
                out[path] = blob.data_stream.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError([Problem(shown, "", "not UTF-8 text")]) from exc
        return dict(sorted(out.items()))


def changed_files(
    repo: Path,
    base: str,
    *,
    untracked_under: Sequence[str] = ("manifests",),
    merge_base: bool = False,
) -> set[str]:
    """Paths (relative to `repo`) that differ between `base` and the working tree.

    Committed, staged and unstaged changes all count; a rename counts as both paths.
    Untracked (not ignored) files count only under `untracked_under`, so build output
    elsewhere is not a change. With `merge_base`, compare against the merge base of
    `base` and HEAD instead (what a pull request changed, as GitHub shows it), so
    commits that landed on `base` after the branch was cut are not reported.
    """
    with _open(repo) as g:
        import git  # importable: _open checked

        sha = _resolve(g, base)
        if merge_base:
            try:
                sha = str(g.repo.git.merge_base(sha, "HEAD")).strip()
            except git.GitCommandError as exc:
                raise RegctlError(f"git: {base!r} and HEAD have no common ancestor") from exc
        scope = [g.prefix] if g.prefix else []
        # -z: paths verbatim (no C-quoting of non-ASCII names); --no-renames: a rename
        # changes both the old and the new path.
        diff = str(
            g.repo.git.diff("--name-only", "--no-renames", "--no-ext-diff", "-z", sha, "--", *scope)
        )
        found = [p for p in diff.split("\0") if p]
        folders = [g.to_top(f) or "." for f in untracked_under]  # "" is no pathspec
        if folders:
            others = str(
                g.repo.git.ls_files("--others", "--exclude-standard", "-z", "--", *folders)
            )
            found += [p for p in others.split("\0") if p]
        return {rel for rel in (g.from_top(p) for p in found) if rel is not None}


def _subject(message: str | bytes) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    # git's %s: the first paragraph, its lines joined by spaces.
    first = text.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines())


def _commit(c: git.Commit, short: str) -> Commit:
    return Commit(
        sha=c.hexsha,
        short=short,
        date=c.committed_datetime.isoformat(),
        author=f"{c.author.name} <{c.author.email}>",
        subject=_subject(c.message),
    )


def _text_at(c: git.Commit, path: str) -> str | None:
    try:
        blob = c.tree / path
    except KeyError:
        return None
    if blob.type != "blob":
        return None
    # History is informational: a stray non-UTF-8 byte should not hide a promotion.
    return bytes(blob.data_stream.read()).decode("utf-8", "replace")


def file_history(
    repo: Path, path: str, *, first_parent: bool = True
) -> list[tuple[Commit, str | None]]:
    """The commits that touched `path`, oldest first, each with the file's text then.

    Renames are followed (`git log --follow`). The text is None at a commit that
    deleted the file. By default only the first-parent chain is walked: each merge is
    one step, diffed against the branch it landed on, so the history is the sequence
    of states that branch (and the registry applied from it) went through, without
    interleaving commits from side branches. Pass `first_parent=False` for every commit.
    """
    with _open(repo) as g:
        import git  # importable: _open checked

        if not g.repo.head.is_valid():
            return []  # no commit yet: no history, not an error
        top_path = g.to_top(path)
        args = ["--follow", "--name-status", "-z", "--format=%x1e%H %h"]
        if first_parent:
            # -m: older gits show no diff for merges unless asked (2.31+ imply it).
            args += ["--first-parent", "-m"]
        try:
            out = str(g.repo.git.log(*args, "--", top_path))
        except git.GitCommandError as exc:
            raise RegctlError(f"git log {path}: {_git_error(exc)}") from exc
        records = _parse_log(out)
        history: list[tuple[Commit, str | None]] = []
        current = top_path  # the file's path at the commit being read, walking back
        for sha, short, statuses in records:
            c = g.repo.commit(sha)
            if not statuses:
                # A merge without a diff shown: the file kept its current path.
                history.append((_commit(c, short), _text_at(c, current)))
                continue
            status, paths = statuses[-1]
            here = paths[-1]
            text = None if status.startswith("D") else _text_at(c, here)
            history.append((_commit(c, short), text))
            current = paths[0] if status[0] in "RC" else here
        history.reverse()
        return history


def _parse_log(out: str) -> list[tuple[str, str, list[tuple[str, list[str]]]]]:
    """Split `git log -z --name-status --format=%x1e%H %h` output into records."""
    records: list[tuple[str, str, list[tuple[str, list[str]]]]] = []
    tokens = out.split("\0")
    i = 0
    while i < len(tokens):
        tok = tokens[i].lstrip("\n")
        i += 1
        if tok.startswith("\x1e"):
            sha, _, short = tok[1:].partition(" ")
            records.append((sha, short.strip(), []))
        elif _STATUS_RE.match(tok) and records:
            count = 2 if tok[0] in "RC" else 1
            records[-1][2].append((tok, tokens[i : i + count]))
            i += count
    return records
