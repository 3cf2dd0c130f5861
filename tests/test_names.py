import os
import shutil
import subprocess

import pytest

from hubckpt.errors import InvalidNameError
from hubckpt.names import normalize_path_in_repo, split_repo_id, validate_ref_name


@pytest.mark.parametrize(
    "name", ["main", "step-0001200", "feat/x", "step1000-tokens4B", "v1.0", "a@b", "release/2026-11"]
)
def test_valid_ref_names(name):
    assert validate_ref_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "@",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "/a",
        "a/",
        "a//b",
        "a.",
        ".a",
        "a/.b",
        "a.lock",
        "a/b.lock",
        "a@{1}",
        "refs/pr/1",
        "a\x01",
        "-x",
        "-",
        "--force",
        "HEAD",
        "a\x7f",
    ],
)
def test_invalid_ref_names(name):
    with pytest.raises(InvalidNameError) as info:
        validate_ref_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    "path,expected",
    [("a.txt", "a.txt"), ("./a/b.txt", "a/b.txt"), ("folder/..\\..\\file", "folder/..\\..\\file"), ("a/.b", "a/.b")],
)
def test_valid_paths(path, expected):
    assert normalize_path_in_repo(path) == expected


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "..\\ddd", "a\x00b", "a//b", "a/", ".git/config"]
)
def test_invalid_paths(path):
    with pytest.raises(InvalidNameError):
        normalize_path_in_repo(path)


def test_repo_ids():
    assert split_repo_id("__some_user__/repo-CaSe_Is_ImPoRtAnT-1795") == (
        "__some_user__",
        "repo-CaSe_Is_ImPoRtAnT-1795",
    )
    for bad in ["noslash", "a/b/c", "a/-b", "a/b--c", "a/b.git", "a/" + "x" * 97]:
        with pytest.raises(InvalidNameError):
            split_repo_id(bad)


# Names on both sides of git's rules; `git check-ref-format --branch` is the reference.
_GIT_CASES = [
    "main",
    "step-0001200",
    "feat/x",
    "v1.0",
    "a@b",
    "a/-x",
    "a-",
    "head",
    "HEAD/a",
    "a/HEAD",
    "a;b",
    "a{b}",
    "a#b",
    "a'b",
    "a!b",
    "\u00e9t\u00e9",
    "a.lockb",
    "x" * 200,
    "-x",
    "-",
    "--",
    "HEAD",
    "a b",
    " a",
    "a..b",
    ".a",
    "a/.b",
    "a.lock",
    "a.lock/b",
    "x/.lock",
    "a/",
    "/a",
    "a//b",
    "a.",
    "a*",
    "a?",
    "a[",
    "a\\b",
    "a~1",
    "a^",
    "a:b",
    "a@{b",
    "a\x7f",
    "a\x01",
    "a/./b",
]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_ref_names_follow_git_check_ref_format_branch(tmp_path):
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    for name in _GIT_CASES:
        git_ok = (
            subprocess.run(
                ["git", "check-ref-format", "--branch", name], cwd=tmp_path, env=env, capture_output=True
            ).returncode
            == 0
        )
        try:
            validate_ref_name(name)
            ours = True
        except InvalidNameError:
            ours = False
        assert ours == git_ok, f"{name!r}: git says {'valid' if git_ok else 'invalid'}"
