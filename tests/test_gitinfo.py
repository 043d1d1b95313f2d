"""The git boundary and promotion history, on real git repositories in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import git
import pytest

from regctl.adapters.git import Commit, changed_files, file_history, files_at, provenance
from regctl.core.history import Event, promotions
from regctl.errors import InputError, RegctlError
from regctl.render.history import render_log

CONTROLLER = Path(__file__).resolve().parents[1] / "controller"

ALICE = "Alice Example <alice@example.com>"
BOB = "Bob Builder <bob@example.com>"


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No global or system git config leaks in (signing, hooks paths, user identity)."""
    home = tmp_path / "home"
    home.mkdir()
    empty = home / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
    ):
        monkeypatch.delenv(var, raising=False)


def make_repo(
    path: Path, name: str = "Alice Example", email: str = "alice@example.com"
) -> git.Repo:
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", name)
        cfg.set_value("user", "email", email)
    return repo


def commit(
    repo: git.Repo,
    message: str,
    day: int,
    files: dict[str, str | None],
    *,
    author: str | None = None,
) -> str:
    """Write (or delete, for None) files, commit everything at a fixed date, return the sha."""
    top = Path(repo.working_tree_dir or "")
    for rel, text in files.items():
        path = top / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    repo.git.add("-A")
    when = f"2025-03-{day:02d}T10:00:00+02:00"
    args = ["-q", "-m", message]
    if author:
        args += ["--author", author]
    repo.git.commit(*args, env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when})
    return repo.head.commit.hexsha


def manifest(versions: str, description: str = "A model.") -> str:
    head = f"""\
apiVersion: regctl/v1
kind: RegisteredModel
name: churn
description: {description}
experiment: churn-exp
versions:
"""
    return head + textwrap.indent(textwrap.dedent(versions).strip("\n"), "  ") + "\n"


# --- provenance ---------------------------------------------------------------------------


def test_provenance_in_a_clean_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    sha = commit(repo, "first", 1, {"manifests/a.yaml": "x: 1\n"})

    p = provenance(tmp_path / "r", {"USER": "nobody"})

    assert p.commit == sha
    assert sha.startswith(p.short) and len(p.short) >= 7
    assert p.actor == ALICE
    assert p.dirty is False
    assert p.ref == "refs/heads/main"
    assert p.run_url == ""


def test_provenance_dirty_counts_tracked_changes_and_untracked_inputs_only(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "r")
    commit(repo, "first", 1, {"manifests/a.yaml": "x: 1\n", "README.md": "hi\n"})
    root = tmp_path / "r"

    (root / "mlflow.db").write_text("not an input")
    assert provenance(root, {}).dirty is False

    (root / "manifests" / "new.yaml").write_text("x: 2\n")
    assert provenance(root, {}).dirty is True
    (root / "manifests" / "new.yaml").unlink()

    (root / "README.md").write_text("edited\n")
    assert provenance(root, {}).dirty is True


def test_provenance_detached_head_has_no_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    first = commit(repo, "first", 1, {"a.txt": "1\n"})
    commit(repo, "second", 2, {"a.txt": "2\n"})
    repo.git.checkout("-q", "--detach", first)

    p = provenance(tmp_path / "r", {})

    assert (p.commit, p.ref) == (first, "")


def test_provenance_outside_git_never_raises(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    p = provenance(plain, {"USER": "carol"})
    assert (p.commit, p.short, p.dirty, p.ref, p.run_url) == ("", "", False, "", "")
    assert p.actor == "carol"  # no git identity configured anywhere: the OS user

    missing = provenance(tmp_path / "does-not-exist", {"USER": "carol"})
    assert missing.commit == ""


def test_provenance_in_an_empty_repo(tmp_path: Path) -> None:
    make_repo(tmp_path / "r")
    p = provenance(tmp_path / "r", {})
    assert p.commit == ""
    assert p.actor == ALICE
    assert p.ref == "refs/heads/main"
    assert file_history(tmp_path / "r", "manifests/a.yaml") == []


def test_provenance_in_github_actions(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    sha = commit(repo, "first", 1, {"a.txt": "1\n"})
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_SHA": sha,
        "GITHUB_REF": "refs/heads/release",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/registry",
        "GITHUB_RUN_ID": "42",
    }

    p = provenance(tmp_path / "r", env)

    assert p.actor == "octocat"
    assert p.commit == sha
    assert p.ref == "refs/heads/release"
    assert p.run_url == "https://github.com/acme/registry/actions/runs/42"


def test_provenance_in_gitlab_ci(tmp_path: Path) -> None:
    """GitLab's runner: the actor is the user who started the pipeline (the job's
    container has no git identity of its own), the run URL is the job's page."""
    repo = make_repo(tmp_path / "r")
    sha = commit(repo, "first", 1, {"a.txt": "1\n"})
    job_url = "https://gitlab.example.com/acme/registry/-/jobs/4242"
    env = {
        "GITLAB_CI": "true",
        "GITLAB_USER_LOGIN": "ada",
        "CI_JOB_URL": job_url,
        "USER": "root",
    }

    p = provenance(tmp_path / "r", env)

    assert (p.actor, p.run_url, p.commit) == ("ada", job_url, sha)
    # the same variables outside GitLab CI (left over in a shell) name nobody
    stray = provenance(tmp_path / "r", {k: v for k, v in env.items() if k != "GITLAB_CI"})
    assert (stray.actor, stray.run_url) == (ALICE, "")


def test_provenance_github_sha_is_the_fallback_outside_git(tmp_path: Path) -> None:
    plain = tmp_path / "tarball"
    plain.mkdir()
    sha = "0123456789abcdef0123456789abcdef01234567"

    p = provenance(plain, {"GITHUB_SHA": sha, "GITHUB_ACTOR": "octocat"})

    assert (p.commit, p.short, p.actor) == (sha, "0123456", "octocat")


def test_provenance_prefers_the_checked_out_commit_over_github_sha(tmp_path: Path) -> None:
    # A workflow may check out another ref than the one that triggered it: what is
    # applied is what is checked out.
    repo = make_repo(tmp_path / "r")
    sha = commit(repo, "first", 1, {"a.txt": "1\n"})
    p = provenance(tmp_path / "r", {"GITHUB_SHA": "f" * 40})
    assert p.commit == sha


def test_without_a_git_executable_provenance_degrades_and_the_rest_says_why(
    tmp_path: Path,
) -> None:
    # `import git` fails without a git binary; importing our modules must not, and
    # importing them must not import git at all (it is only needed by some commands).
    repo = make_repo(tmp_path / "r")
    commit(repo, "first", 1, {"a.txt": "1\n"})
    script = f"""
import sys
from pathlib import Path
import regctl.adapters.git as gi, regctl.core.history
from regctl.errors import RegctlError
assert "git" not in sys.modules
p = gi.provenance(Path({str(tmp_path / "r")!r}), {{"USER": "dana"}})
assert (p.commit, p.actor) == ("", "dana"), p
try:
    gi.files_at(Path({str(tmp_path / "r")!r}), "HEAD", "manifests")
except RegctlError as err:
    print(err)
"""
    env = dict(os.environ, PYTHONPATH=str(CONTROLLER), GIT_PYTHON_GIT_EXECUTABLE="/nonexistent/git")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("cannot run git (is it installed and on PATH?)")


# --- files_at -------------------------------------------------------------------------------


def test_files_at_reads_yaml_files_of_a_folder_at_a_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    commit(
        repo,
        "first",
        1,
        {
            "manifests/a.yaml": "v: 1\n",
            "manifests/b.yml": "v: b\n",
            "manifests/notes.txt": "skip\n",
            "manifests/sub/deep.yaml": "skip: true\n",
            "other/c.yaml": "skip: true\n",
        },
    )
    repo.create_tag("v1")
    commit(repo, "second", 2, {"manifests/a.yaml": "v: 2\n", "manifests/b.yml": None})
    root = tmp_path / "r"

    old = {"manifests/a.yaml": "v: 1\n", "manifests/b.yml": "v: b\n"}
    assert files_at(root, "HEAD~1", "manifests") == old
    assert files_at(root, "v1", "manifests/") == old
    assert files_at(root, "main", "manifests") == {"manifests/a.yaml": "v: 2\n"}
    assert files_at(root, repo.head.commit.hexsha[:10], "manifests") == {
        "manifests/a.yaml": "v: 2\n"
    }
    assert files_at(root, "HEAD", "policies") == {}


def test_files_at_a_bad_ref_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    commit(repo, "first", 1, {"manifests/a.yaml": "v: 1\n"})

    for ref in ("origin/main", "no-such-branch", "HEAD~5", "--output=/tmp/x"):
        with pytest.raises(RegctlError) as err:
            files_at(tmp_path / "r", ref, "manifests")
        assert repr(ref) in str(err.value)
        assert "\n" not in str(err.value)

    blob = repo.head.commit.tree["manifests/a.yaml"].hexsha
    with pytest.raises(RegctlError, match="cannot resolve"):
        files_at(tmp_path / "r", blob, "manifests")


def test_files_at_outside_git_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RegctlError, match="not inside a git repository"):
        files_at(tmp_path, "HEAD", "manifests")


def test_files_at_refuses_non_utf8_files_with_their_location(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    (tmp_path / "r" / "manifests").mkdir()
    (tmp_path / "r" / "manifests" / "bad.yaml").write_bytes(b"name: \xff\n")
    commit(repo, "binary", 1, {})

    with pytest.raises(InputError, match=r"HEAD:manifests/bad.yaml: not UTF-8 text"):
        files_at(tmp_path / "r", "HEAD", "manifests")


def test_paths_are_relative_to_a_repo_in_a_subfolder(tmp_path: Path) -> None:
    mono = make_repo(tmp_path / "mono")
    commit(
        mono,
        "first",
        1,
        {"ml/manifests/a.yaml": "v: 1\n", "manifests/elsewhere.yaml": "v: 0\n"},
    )
    commit(mono, "second", 2, {"ml/manifests/a.yaml": "v: 2\n", "manifests/elsewhere.yaml": None})
    ml = tmp_path / "mono" / "ml"

    assert files_at(ml, "HEAD~1", "manifests") == {"manifests/a.yaml": "v: 1\n"}
    assert changed_files(ml, "HEAD~1") == {"manifests/a.yaml"}
    assert [text for _, text in file_history(ml, "manifests/a.yaml")] == ["v: 1\n", "v: 2\n"]


# --- changed_files --------------------------------------------------------------------------


def test_changed_files_committed_staged_unstaged_and_untracked(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    root = tmp_path / "r"
    commit(
        repo,
        "base",
        1,
        {
            ".gitignore": "manifests/ignored.yaml\n",
            "manifests/committed.yaml": "v: 1\n",
            "manifests/unstaged.yaml": "v: 1\n",
            "manifests/old-name.yaml": "v: 1\n",
            "manifests/same.yaml": "v: 1\n",
        },
    )
    repo.create_tag("base")
    commit(repo, "edit", 2, {"manifests/committed.yaml": "v: 2\n"})
    repo.git.mv("manifests/old-name.yaml", "manifests/new-name.yaml")
    (root / "manifests" / "staged.yaml").write_text("v: new\n")
    repo.git.add("manifests/staged.yaml")
    (root / "manifests" / "unstaged.yaml").write_text("v: 2\n")
    (root / "manifests" / "untracked.yaml").write_text("v: new\n")
    (root / "manifests" / "ignored.yaml").write_text("v: ignored\n")
    (root / "build.log").write_text("untracked, but not under manifests/\n")

    assert changed_files(root, "base") == {
        "manifests/committed.yaml",
        "manifests/new-name.yaml",
        "manifests/old-name.yaml",
        "manifests/staged.yaml",
        "manifests/unstaged.yaml",
        "manifests/untracked.yaml",
    }
    assert "build.log" in changed_files(root, "base", untracked_under=("manifests", "."))
    assert changed_files(root, "HEAD", untracked_under=()) == {
        "manifests/new-name.yaml",
        "manifests/old-name.yaml",
        "manifests/staged.yaml",
        "manifests/unstaged.yaml",
    }


def test_changed_files_against_the_merge_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    root = tmp_path / "r"
    commit(repo, "base", 1, {"manifests/a.yaml": "v: 1\n", "manifests/b.yaml": "v: 1\n"})
    repo.git.checkout("-q", "-b", "promote")
    commit(repo, "promote a", 2, {"manifests/a.yaml": "v: 2\n"})
    repo.git.checkout("-q", "main")
    commit(repo, "meanwhile on main", 3, {"manifests/b.yaml": "v: 2\n"})
    repo.git.checkout("-q", "promote")

    assert changed_files(root, "main") == {"manifests/a.yaml", "manifests/b.yaml"}
    assert changed_files(root, "main", merge_base=True) == {"manifests/a.yaml"}


def test_changed_files_bad_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    commit(repo, "base", 1, {"a.txt": "1\n"})
    with pytest.raises(RegctlError, match="'origin/main'"):
        changed_files(tmp_path / "r", "origin/main")


# --- file_history ---------------------------------------------------------------------------


def test_file_history_follows_renames_and_deletions(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    root = tmp_path / "r"
    s1 = commit(repo, "add", 1, {"manifests/old.yaml": "v: 1\n", "other.txt": "x\n"})
    commit(repo, "unrelated", 2, {"other.txt": "y\n"})
    s3 = commit(repo, "edit", 3, {"manifests/old.yaml": "v: 2\n"}, author=BOB)
    repo.git.mv("manifests/old.yaml", "manifests/new.yaml")
    s4 = commit(repo, "rename\n\nwith a body", 4, {})
    s5 = commit(repo, "delete", 5, {"manifests/new.yaml": None})
    s6 = commit(repo, "recreate", 6, {"manifests/new.yaml": "v: 3\n"})

    history = file_history(root, "manifests/new.yaml")

    assert [(c.sha, text) for c, text in history] == [
        (s1, "v: 1\n"),
        (s3, "v: 2\n"),
        (s4, "v: 2\n"),
        (s5, None),
        (s6, "v: 3\n"),
    ]
    first, edit = history[0][0], history[1][0]
    assert first == Commit(
        sha=s1, short=first.short, date="2025-03-01T10:00:00+02:00", author=ALICE, subject="add"
    )
    assert s1.startswith(first.short)
    assert edit.author == BOB
    assert history[2][0].subject == "rename"
    assert file_history(root, "manifests/never.yaml") == []


def test_file_history_walks_the_first_parent_chain_by_default(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    root = tmp_path / "r"
    s1 = commit(repo, "add", 1, {"manifests/a.yaml": "v: 1\n", "o.txt": "1\n"})
    repo.git.checkout("-q", "-b", "feature")
    s2 = commit(repo, "promote on a branch", 2, {"manifests/a.yaml": "v: 2\n"}, author=BOB)
    repo.git.checkout("-q", "main")
    commit(repo, "main moves on", 3, {"o.txt": "2\n"})
    when = "2025-03-04T10:00:00+02:00"
    repo.git.merge(
        "-q",
        "--no-ff",
        "feature",
        "-m",
        "Merge pull request #7",
        env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when},
    )
    merge = repo.head.commit.hexsha

    assert [(c.sha, t) for c, t in file_history(root, "manifests/a.yaml")] == [
        (s1, "v: 1\n"),
        (merge, "v: 2\n"),
    ]
    every = file_history(root, "manifests/a.yaml", first_parent=False)
    assert [c.sha for c, _ in every] == [s1, s2]


# --- promotions over real history -----------------------------------------------------------


def promotion_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A model's life: Staging on v1, v2 to Production, Production 2 -> 3, v1 removed."""
    repo = make_repo(tmp_path / "r")
    path = "manifests/churn.yaml"
    v1 = "- run: run_a\n  version: 1\n  aliases: [Staging]\n"
    v2 = "- run: run_b\n  version: 2\n  aliases: [Production]\n"
    v2_plain = "- run: run_b\n  version: 2\n"
    v3 = "- run: run_c\n  version: 3\n  aliases: [Production]\n"
    shas = [
        commit(repo, "Add churn with v1 in Staging", 1, {path: manifest(v1)}),
        commit(repo, "Promote v2 to Production", 2, {path: manifest(v1 + v2)}, author=BOB),
        commit(repo, "Reword", 3, {path: manifest(v1 + v2, "Churn model.")}),
        commit(repo, "Production 2 -> 3", 4, {path: manifest(v1 + v2_plain + v3, "Churn model.")}),
        commit(repo, "Oops", 5, {path: "versions: [\n"}),
        commit(repo, "Retire v1", 6, {path: manifest(v2_plain + v3, "Churn model.")}),
    ]
    return tmp_path / "r", shas


def test_promotions_over_a_sequence_of_commits(tmp_path: Path) -> None:
    root, shas = promotion_repo(tmp_path)

    events = promotions("churn", file_history(root, "manifests/churn.yaml"))

    assert [(e.commit.sha, e.moves) for e in events] == [
        (shas[0], ("+ version 1 (run_a)", "Staging: (none) -> 1")),
        (shas[1], ("+ version 2 (run_b)", "Production: (none) -> 2")),
        # shas[2] changed only the description: no event
        (shas[3], ("+ version 3 (run_c)", "Production: 2 -> 3")),
        (shas[4], ()),  # invalid YAML: a note, and the next commit compares with shas[3]
        (shas[5], ("Staging: 1 -> (none)", "- version 1 (run_a)")),
    ]
    assert [e.notes for e in events[:3]] + [events[4].notes] == [(), (), (), ()]
    assert events[3].notes[0].startswith(f"unparseable at {events[3].commit.short}: line 2: ")
    assert "invalid YAML" in events[3].notes[0]
    assert events[1].commit.author == BOB
    assert shas[1].startswith(events[1].commit.short)


def test_promotions_filtered_by_alias(tmp_path: Path) -> None:
    root, shas = promotion_repo(tmp_path)
    history = file_history(root, "manifests/churn.yaml")

    production = promotions("churn", history, alias="production")

    assert [(e.commit.sha, e.moves) for e in production if e.moves] == [
        (shas[1], ("Production: (none) -> 2",)),
        (shas[3], ("Production: 2 -> 3",)),
    ]
    # the unreadable commit stays visible: a move could hide behind it
    assert [e.commit.sha for e in production if not e.moves] == [shas[4]]
    staging = promotions("churn", history, alias="Staging")
    assert [e.moves for e in staging if e.moves] == [
        ("Staging: (none) -> 1",),
        ("Staging: 1 -> (none)",),
    ]


def test_render_log_text_and_json(tmp_path: Path) -> None:
    root, shas = promotion_repo(tmp_path)
    history = file_history(root, "manifests/churn.yaml")
    events = promotions("churn", history, alias="Production")

    text = render_log("churn", events, "text", alias="Production")
    short = events[0].commit.short
    assert text.startswith(
        f"2025-03-02T10:00:00+02:00  {BOB}  {short}  Promote v2 to Production\n"
        "    Production: (none) -> 2\n\n"
    )
    assert shas[3][: len(short)] in text
    assert "    ! unparseable at " in text

    doc = json.loads(render_log("churn", events, "json", alias="Production"))
    assert doc["format_version"] == 1
    assert (doc["model"], doc["alias"]) == ("churn", "Production")
    assert doc["events"][0] == {
        "commit": shas[1],
        "short": short,
        "date": "2025-03-02T10:00:00+02:00",
        "author": BOB,
        "subject": "Promote v2 to Production",
        "moves": ["Production: (none) -> 2"],
        "notes": [],
    }

    assert render_log("churn", [], "text") == "No promotions of churn in the git history.\n"
    with pytest.raises(ValueError, match="unknown format"):
        render_log("churn", events, "yaml")


# --- promotions: literal cases, no git --------------------------------------------------------


def fake(n: int, subject: str = "change") -> Commit:
    sha = f"{n:040x}"
    return Commit(sha, sha[-7:], f"2025-01-{n:02d}T00:00:00+00:00", ALICE, subject)


def test_promotions_name_unpinned_entries_by_run() -> None:
    history: list[tuple[Commit, str | None]] = [
        (fake(1), manifest("- {run: run_a, aliases: [Production]}")),
        (
            fake(2),
            manifest("- {run: run_a}\n- {run: run_b, aliases: [Production, Staging]}"),
        ),
        (fake(3), manifest("- {run: run_a, version: 1}\n- {run: run_b, aliases: [Production]}")),
        (fake(4), manifest("- {run_id: 4f1c0d9a, artifact_path: model/, aliases: [Staging]}")),
    ]

    assert [e.moves for e in promotions("churn", history)] == [
        ("+ version run_a", "Production: (none) -> run_a"),
        ("+ version run_b", "Production: run_a -> run_b", "Staging: (none) -> run_b"),
        # fake(3) pins run_a and drops Staging from run_b: a pin is not a new entry
        ("Staging: run_b -> (none)",),
        (
            "+ version 4f1c0d9a/model",
            "Production: run_b -> (none)",
            "Staging: (none) -> 4f1c0d9a/model",
            "- version 1 (run_a)",
            "- version run_b",
        ),
    ]


def test_promotions_of_a_deleted_or_renamed_model() -> None:
    two = manifest("- {run: run_a, aliases: [Production]}")
    events = promotions(
        "churn",
        [
            (fake(1), two),
            (fake(2), None),
            (fake(3), two),
            (fake(4), two.replace("name: churn", "name: churn-v2")),
            (fake(5), "apiVersion: regctl/v1\n"),  # some other document: nothing to compare
        ],
    )
    assert [(e.commit.sha[-1], e.moves, e.notes) for e in events] == [
        ("1", ("+ version run_a", "Production: (none) -> run_a"), ()),
        ("2", ("Production: run_a -> (none)", "- version run_a"), ("manifest deleted",)),
        ("3", ("+ version run_a", "Production: (none) -> run_a"), ()),
        ("4", ("Production: run_a -> (none)", "- version run_a"), ("churn no longer declared",)),
    ]


def test_promotions_tolerate_invalid_shapes_in_old_files() -> None:
    events = promotions(
        "churn",
        [
            (fake(1), manifest("- {run: run_a, aliases: [Production]}")),
            (fake(2), manifest("- just a string")),
            (fake(3), manifest("- {run: run_a, aliases: Production}")),
            (fake(4), "a: 1\na: 2\n"),
            (fake(5), manifest("- {run: run_b, aliases: [Production]}")),
        ],
    )
    assert [e.notes for e in events] == [
        (),
        ("unparseable at 0000002: versions[0] is not a mapping",),
        ("unparseable at 0000003: versions[0].aliases is not a list of names",),
        ("unparseable at 0000004: line 2: duplicate key (first defined at line 1)",),
        (),
    ]
    assert events[-1].moves == (
        "+ version run_b",
        "Production: run_a -> run_b",
        "- version run_a",
    )


def test_render_log_strips_terminal_escapes() -> None:
    sneaky = Event(
        Commit("a" * 40, "aaaaaaa", "2025-01-01T00:00:00+00:00", "Eve <e@x>", "\x1b[2Jhi"),
        ("Production: 1 -> 2",),
    )
    text = render_log("churn", [sneaky], "text")
    assert "\x1b" not in text
    assert "\\x1b[2Jhi" in text  # shown as an escape (regctl.escape.text)
