import pytest

from hubckpt.errors import InvalidNameError
from hubckpt.names import normalize_path_in_repo, split_repo_id, validate_ref_name


@pytest.mark.parametrize("name", ["main", "step-0001200", "feat/x", "step1000-tokens4B", "v1.0", "a@b", "release/2026-11"])
def test_valid_ref_names(name):
    assert validate_ref_name(name) == name


@pytest.mark.parametrize("name", ["", "@", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
                                  "a//b", "a.", ".a", "a/.b", "a.lock", "a/b.lock", "a@{1}", "refs/pr/1", "a\x01"])
def test_invalid_ref_names(name):
    with pytest.raises(InvalidNameError) as info:
        validate_ref_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("path,expected", [("a.txt", "a.txt"), ("./a/b.txt", "a/b.txt"),
                                           ("folder/..\\..\\file", "folder/..\\..\\file"), ("a/.b", "a/.b")])
def test_valid_paths(path, expected):
    assert normalize_path_in_repo(path) == expected


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "..\\ddd", "a\x00b", "a//b", "a/",
                                  ".git/config"])
def test_invalid_paths(path):
    with pytest.raises(InvalidNameError):
        normalize_path_in_repo(path)


def test_repo_ids():
    assert split_repo_id("__some_user__/repo-CaSe_Is_ImPoRtAnT-1795") == ("__some_user__", "repo-CaSe_Is_ImPoRtAnT-1795")
    for bad in ["noslash", "a/b/c", "a/-b", "a/b--c", "a/b.git", "a/" + "x" * 97]:
        with pytest.raises(InvalidNameError):
            split_repo_id(bad)
