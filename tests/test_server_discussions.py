"""Pull requests and discussions on the local hub, through the unmodified huggingface_hub client:
`create_pr=True` opens `refs/pr/N`, every read API serves it, discussions list, filter, paginate and
change as on the Hub, merges land as one commit (a conflict is a 409 that changes nothing), and the
access rules match huggingface.co (strangers may propose, only writers merge, read tokens do neither)."""

from __future__ import annotations

import sqlite3

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubckpt.server import LocalHubServer


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_create_pr_opens_refs_pr_n_that_every_read_api_serves(api, repo_id, cache_dir, tmp_path):
    api.upload_file(path_or_fileobj=b"v1\n", path_in_repo="a.txt", repo_id=repo_id)
    main_head = api.repo_info(repo_id).sha
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00weights" * 100)  # an LFS file (by .gitattributes)
    (folder / "a.txt").write_bytes(b"v2\n")
    info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="Propose v2", create_pr=True)
    assert info.pr_revision == "refs/pr/1" and info.pr_num == 1
    assert info.pr_url.endswith(f"/{repo_id}/discussions/1")

    # main did not move; the PR ref serves the proposed files through every download API
    assert api.repo_info(repo_id).sha == main_head
    assert api.list_repo_files(repo_id, revision="refs/pr/1") == [".gitattributes", "a.txt", "model.safetensors"]
    got = hf_hub_download(repo_id, "model.safetensors", revision="refs/pr/1", cache_dir=cache_dir)
    assert _read(got) == b"\x00weights" * 100
    snap = snapshot_download(repo_id, revision="refs/pr/1", cache_dir=cache_dir)
    assert _read(f"{snap}/a.txt") == b"v2\n"
    assert _read(hf_hub_download(repo_id, "a.txt", cache_dir=cache_dir)) == b"v1\n"

    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", info.oid)]
    assert [b.name for b in refs.branches] == ["main"]  # a PR is not a branch
    assert api.list_repo_refs(repo_id).pull_requests is None

    commits = api.list_repo_commits(repo_id, revision="refs/pr/1")
    assert commits[0].title == "Propose v2" and commits[0].commit_id == info.oid
    assert commits[0].authors == [api.whoami()["name"]]
    assert commits[1].commit_id == main_head

    # pushing more commits to the PR, as the client does with revision="refs/pr/1"
    second = api.upload_file(path_or_fileobj=b"v3\n", path_in_repo="a.txt", repo_id=repo_id, revision="refs/pr/1")
    details = api.get_discussion_details(repo_id, 1)
    assert details.is_pull_request and details.status == "open" and details.target_branch == "refs/heads/main"
    assert [e.type for e in details.events] == ["comment", "commit", "commit"]
    assert [e.oid for e in details.events if e.type == "commit"] == [info.oid, second.oid]
    assert "diff --git a/a.txt b/a.txt" in details.diff and "-v1\n+v3\n" in details.diff
    assert "diff --git a/model.safetensors b/model.safetensors\nnew file mode 100644" in details.diff
    with pytest.raises(HfHubHTTPError):
        api.delete_branch(repo_id, branch="refs/pr/1")


def test_merge_pull_request_lands_one_commit_on_the_target(api, repo_id, cache_dir, local_hub):
    api.upload_file(path_or_fileobj=b"keep\n", path_in_repo="keep.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"old\n", path_in_repo="gone.txt", repo_id=repo_id)
    pr = api.create_commit(
        repo_id,
        [CommitOperationAdd("new.txt", b"new\n"), CommitOperationDelete("gone.txt")],
        commit_message="Add new, drop gone",
        create_pr=True,
    )
    # main moves on meanwhile, on another file: no conflict
    api.upload_file(path_or_fileobj=b"other\n", path_in_repo="other.txt", repo_id=repo_id)
    assert api.get_discussion_details(repo_id, pr.pr_num).conflicting_files == []

    api.merge_pull_request(repo_id, pr.pr_num, comment="Thanks!")
    details = api.get_discussion_details(repo_id, pr.pr_num)
    head = api.repo_info(repo_id).sha
    assert details.status == "merged" and details.merge_commit_oid == head
    assert [e.type for e in details.events][-2:] == ["comment", "status-change"]
    assert details.events[-1].new_status == "merged"
    assert api.list_repo_files(repo_id) == [".gitattributes", "keep.txt", "new.txt", "other.txt"]
    assert _read(hf_hub_download(repo_id, "new.txt", cache_dir=cache_dir)) == b"new\n"
    log = api.list_repo_commits(repo_id)
    assert log[0].title == f"Merge pull request #{pr.pr_num}: Add new, drop gone"
    assert log[1].title == "Upload other.txt with huggingface_hub"  # one commit, on top of main's head
    # The merge commit records both parents, as git does: main's head, then the PR's head. The listing
    # follows first parents only (huggingface.co's commits API has no parent field).
    store = local_hub.ctx.store
    merge = store.commit(store.get_repo(*repo_id.split("/")), head)
    assert merge is not None and merge.parents == (log[1].commit_id, pr.oid)
    assert pr.oid not in [c.commit_id for c in log] and len(log) == 5  # initial, keep, gone, other, merge
    with pytest.raises(HfHubHTTPError, match="merged"):
        api.merge_pull_request(repo_id, pr.pr_num)
    with pytest.raises(HfHubHTTPError):
        api.upload_file(path_or_fileobj=b"late\n", path_in_repo="x.txt", repo_id=repo_id, revision=pr.pr_revision)


def test_conflicting_merge_answers_409_and_changes_nothing(api, repo_id):
    api.upload_file(path_or_fileobj=b"base\n", path_in_repo="card.md", repo_id=repo_id)
    pr = api.upload_file(path_or_fileobj=b"pr side\n", path_in_repo="card.md", repo_id=repo_id, create_pr=True)
    api.upload_file(path_or_fileobj=b"main side\n", path_in_repo="card.md", repo_id=repo_id)
    head = api.repo_info(repo_id).sha
    assert api.get_discussion_details(repo_id, pr.pr_num).conflicting_files == ["card.md"]

    with pytest.raises(HfHubHTTPError) as e:
        api.merge_pull_request(repo_id, pr.pr_num)
    assert e.value.response.status_code == 409 and "card.md" in str(e.value)
    assert api.repo_info(repo_id).sha == head
    details = api.get_discussion_details(repo_id, pr.pr_num)
    assert details.status == "open" and [ev.type for ev in details.events] == ["comment", "commit"]

    # resolving on the PR branch (same content as main) makes it mergeable
    api.upload_file(path_or_fileobj=b"main side\n", path_in_repo="card.md", repo_id=repo_id, revision=pr.pr_revision)
    assert api.get_discussion_details(repo_id, pr.pr_num).conflicting_files == []
    api.merge_pull_request(repo_id, pr.pr_num)


def test_discussions_list_filter_paginate_and_change(api, repo_id, local_hub, monkeypatch):
    me = api.whoami()["name"]
    first = api.create_discussion(repo_id, title="Question about the data", description="Which split?")
    draft = api.create_pull_request(repo_id, title="Card tweaks", description="WIP")
    assert (first.num, first.is_pull_request, first.status) == (1, False, "open")
    assert (draft.num, draft.is_pull_request, draft.status) == (2, True, "draft")
    assert api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests[0].ref == "refs/pr/2"
    for i in range(3):
        api.create_discussion(repo_id, title=f"Topic {i}")

    comment = api.comment_discussion(repo_id, 1, "The *train* split.")
    assert comment.content == "The *train* split." and "<em>train</em>" in comment.rendered
    edited = api.edit_discussion_comment(repo_id, 1, comment.id, "The validation split.")
    assert edited.content == "The validation split." and edited.edited and edited.number_of_edits == 2
    renamed = api.rename_discussion(repo_id, 1, "Which split?")
    assert (renamed.old_title, renamed.new_title) == ("Question about the data", "Which split?")
    closed = api.change_discussion_status(repo_id, 1, "closed", comment="Answered")
    assert closed.new_status == "closed"
    details = api.get_discussion_details(repo_id, 1)
    assert details.title == "Which split?" and details.status == "closed"
    assert [e.type for e in details.events] == ["comment", "comment", "title-change", "comment", "status-change"]
    assert details.events[1].content == "The validation split." and details.events[0].content == "Which split?"
    assert details.diff is None and details.target_branch is None

    monkeypatch.setattr(local_hub.ctx, "discussions_page_size", 2)  # 5 discussions over 3 pages
    assert [d.num for d in api.get_repo_discussions(repo_id)] == [5, 4, 3, 2, 1]
    assert [d.num for d in api.get_repo_discussions(repo_id, discussion_type="pull_request")] == [2]
    assert [d.num for d in api.get_repo_discussions(repo_id, discussion_status="closed")] == [1]
    assert [
        d.num for d in api.get_repo_discussions(repo_id, discussion_type="discussion", discussion_status="open")
    ] == [5, 4, 3]
    assert [d.num for d in api.get_repo_discussions(repo_id, author=me)] == [5, 4, 3, 2, 1]
    assert list(api.get_repo_discussions(repo_id, author="nobody-else")) == []

    with pytest.raises(HfHubHTTPError) as e:
        api.get_discussion_details(repo_id, 99)
    assert e.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError, match="discussion, not a pull request"):
        api.merge_pull_request(repo_id, 1)


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory):
    with LocalHubServer(tmp_path_factory.mktemp("pr-token-hub")) as hub:
        store = hub.ctx.store
        for user in ("alice", "bob", "carol"):
            store.add_account(user, "user")
        tokens = {
            "alice": store.create_token("alice", "write", "ci")[1],
            "alice_read": store.create_token("alice", "read", "laptop")[1],
            "bob": store.create_token("bob", "write", "bob")[1],
            "carol": store.create_token("carol", "write", "carol")[1],
        }
        yield hub, {who: HfApi(endpoint=hub.url, token=t) for who, t in tokens.items()}


def test_strangers_propose_writers_merge_read_tokens_do_neither(token_hub):
    hub, apis = token_hub
    alice, bob, carol, reader = apis["alice"], apis["bob"], apis["carol"], apis["alice_read"]
    alice.create_repo("alice/public")
    alice.create_repo("alice/secret", private=True)

    # bob cannot write to alice/public, but can open a PR on it (LFS file included) and push to it
    with pytest.raises(HfHubHTTPError):
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/public")
    pr = bob.upload_file(
        path_or_fileobj=b"\x01" * 2000, path_in_repo="w.safetensors", repo_id="alice/public", create_pr=True
    )
    bob.upload_file(path_or_fileobj=b"fix\n", path_in_repo="fix.txt", repo_id="alice/public", revision=pr.pr_revision)
    assert [c.authors for c in bob.list_repo_commits("alice/public", revision=pr.pr_revision)][:2] == [["bob"], ["bob"]]
    assert bob.get_discussion_details("alice/public", pr.pr_num).author == "bob"
    remark = carol.comment_discussion("alice/public", pr.pr_num, "Looks good")
    with pytest.raises(HfHubHTTPError) as e:
        bob.edit_discussion_comment("alice/public", pr.pr_num, remark.id, "carol did not write this")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e, pytest.warns(UserWarning, match="irreversible"):
        carol.hide_discussion_comment("alice/public", pr.pr_num, remark.id)
    assert e.value.response.status_code == 403
    with pytest.warns(UserWarning, match="irreversible"):  # the client's own warning
        hidden = alice.hide_discussion_comment("alice/public", pr.pr_num, remark.id)
    assert hidden.hidden and hidden.content == ""

    # others' PRs, merging, hiding: not for strangers; read tokens cannot open, comment or merge
    with pytest.raises(HfHubHTTPError) as e:
        carol.upload_file(path_or_fileobj=b"y", path_in_repo="y.txt", repo_id="alice/public", revision=pr.pr_revision)
    assert e.value.response.status_code == 403
    for who in (bob, carol, reader):
        with pytest.raises(HfHubHTTPError) as e:
            who.merge_pull_request("alice/public", pr.pr_num)
        assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        carol.change_discussion_status("alice/public", pr.pr_num, "closed")
    assert e.value.response.status_code == 403
    for call in (
        lambda: reader.create_discussion("alice/public", title="hi"),
        lambda: reader.comment_discussion("alice/public", pr.pr_num, "hi"),
        lambda: reader.upload_file(path_or_fileobj=b"z", path_in_repo="z", repo_id="alice/public", create_pr=True),
    ):
        with pytest.raises(HfHubHTTPError) as e:
            call()
        assert e.value.response.status_code == 403
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert [d.num for d in anonymous.get_repo_discussions("alice/public")] == [pr.pr_num]
    with pytest.raises(HfHubHTTPError) as e:
        anonymous.create_discussion("alice/public", title="hi")
    assert e.value.response.status_code == 401
    assert len(list(alice.get_repo_discussions("alice/public"))) == 1  # no trace of the refused attempts

    alice.merge_pull_request("alice/public", pr.pr_num)
    assert alice.list_repo_commits("alice/public")[0].authors == ["alice"]
    assert alice.list_repo_files("alice/public") == [".gitattributes", "fix.txt", "w.safetensors"]

    # private repos stay invisible, their discussions included
    alice.create_discussion("alice/secret", title="internal")
    for who in (bob, anonymous):
        with pytest.raises(RepositoryNotFoundError):
            list(who.get_repo_discussions("alice/secret"))
        with pytest.raises(RepositoryNotFoundError):
            who.get_discussion_details("alice/secret", 1)
        with pytest.raises(RepositoryNotFoundError):
            who.upload_file(path_or_fileobj=b"z", path_in_repo="z", repo_id="alice/secret", create_pr=True)
    assert [d.title for d in reader.get_repo_discussions("alice/secret")] == ["internal"]


def test_a_hub_folder_from_before_pull_requests_opens_and_takes_them(tmp_path):
    root = tmp_path / "old-hub"
    with LocalHubServer(root) as hub:
        api = HfApi(endpoint=hub.url, token="unused")
        api.create_repo("local/old")
        api.upload_file(path_or_fileobj=b"1\n", path_in_repo="a.txt", repo_id="local/old")
    db = sqlite3.connect(root / "hub.sqlite3")  # as schema 2 left it: no discussion tables
    db.executescript(
        "DROP TABLE discussions; DROP TABLE discussion_events; UPDATE meta SET value='2' WHERE key='schema_version';"
    )
    db.close()
    with LocalHubServer(root) as hub:
        api = HfApi(endpoint=hub.url, token="unused")
        assert api.list_repo_files("local/old") == [".gitattributes", "a.txt"]
        pr = api.upload_file(path_or_fileobj=b"2\n", path_in_repo="a.txt", repo_id="local/old", create_pr=True)
        assert pr.pr_revision == "refs/pr/1"
        api.merge_pull_request("local/old", 1)
        assert hub.ctx.store.meta_get("schema_version") == "4"


def test_a_schema_3_hub_folder_opens_keeps_its_history_and_counts_commits(tmp_path):
    """Schema 4 added the commit budget's window and merge commits' second parent: a schema-3 folder
    (no such table or column) opens, lists its history as before, merges with two parents, counts commits."""
    root = tmp_path / "v3-hub"
    with LocalHubServer(root) as hub:
        api = HfApi(endpoint=hub.url, token="unused")
        api.create_repo("local/v3")
        api.upload_file(path_or_fileobj=b"1\n", path_in_repo="a.txt", repo_id="local/v3")
        api.upload_file(path_or_fileobj=b"2\n", path_in_repo="b.txt", repo_id="local/v3", create_pr=True)
        before = [c.commit_id for c in api.list_repo_commits("local/v3")]
    db = sqlite3.connect(root / "hub.sqlite3")  # as schema 3 left it
    db.executescript(
        "DROP TABLE commit_window; ALTER TABLE commits DROP COLUMN merge_parent;"
        "UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    db.close()
    with LocalHubServer(root, commit_rate="2/min") as hub:
        api = HfApi(endpoint=hub.url, token="unused")
        assert [c.commit_id for c in api.list_repo_commits("local/v3")] == before
        assert api.list_repo_files("local/v3") == [".gitattributes", "a.txt"]
        api.merge_pull_request("local/v3", 1)
        store = hub.ctx.store
        repo = store.get_repo("local", "v3")
        assert repo is not None
        merge = store.commit(repo, api.repo_info("local/v3").sha)
        assert merge is not None and merge.parents == (before[0], store.ref(repo, "branch", "refs/pr/1"))
        for n in range(2):
            api.upload_file(path_or_fileobj=b"x", path_in_repo=f"c{n}.txt", repo_id="local/v3")
        with pytest.raises(HfHubHTTPError) as caught:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="c2.txt", repo_id="local/v3")
        assert caught.value.response.status_code == 429
        assert store.meta_get("schema_version") == "4"


def _page(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_web_pages_list_discussions_and_show_a_prs_files_and_diff_escaped(api, repo_id, local_hub):
    hostile = '<script>alert("x")</script>'
    api.upload_file(path_or_fileobj=b"line one\n", path_in_repo="notes.txt", repo_id=repo_id)
    pr = api.upload_file(
        path_or_fileobj=f"line one\n{hostile}\n".encode(),
        path_in_repo="notes.txt",
        repo_id=repo_id,
        create_pr=True,
        commit_message=f"Title {hostile}",
    )
    api.create_discussion(repo_id, title="A question", description=hostile)

    status, listing = _page(f"{local_hub.url}/{repo_id}/discussions")
    assert status == 200 and "A question" in listing and "pull request" in listing
    assert f'href="/{repo_id}/discussions/{pr.pr_num}"' in listing
    assert hostile not in listing and "&lt;script&gt;" in listing

    status, detail = _page(f"{local_hub.url}/{repo_id}/discussions/{pr.pr_num}")
    assert status == 200 and hostile not in detail
    assert '<td class="mono">notes.txt</td><td>modified</td>' in detail
    assert "+&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in detail  # the diff, escaped
    assert "refs/pr/1" in detail
    status, other = _page(f"{local_hub.url}/{repo_id}/discussions/2")
    assert status == 200 and hostile not in other and "&lt;script&gt;" in other
    assert _page(f"{local_hub.url}/{repo_id}/discussions/9")[0] == 404


def test_a_pr_without_description_says_so_on_its_page(api, repo_id, local_hub):
    """As on huggingface.co: an opening comment with no text reads "No description provided.", muted."""
    # create_commit(create_pr=True) without a commit_description opens a PR with an empty opening comment
    # (create_discussion / create_pull_request always send a default text).
    bare = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, create_pr=True)
    described = api.upload_file(
        path_or_fileobj=b"y", path_in_repo="y.txt", repo_id=repo_id, create_pr=True, commit_description="Some words"
    )
    status, page = _page(f"{local_hub.url}/{repo_id}/discussions/{bare.pr_num}")
    assert status == 200
    assert '<em class="muted" id="no-description">No description provided.</em>' in page
    status, page = _page(f"{local_hub.url}/{repo_id}/discussions/{described.pr_num}")
    assert status == 200 and "Some words" in page and "No description provided." not in page


def test_bad_input_is_refused_with_a_4xx_and_leaves_no_trace(api, repo_id, local_hub):
    import urllib.error
    import urllib.request

    def post(path: str, body: bytes) -> int:
        request = urllib.request.Request(f"{local_hub.url}/api/models/{repo_id}{path}", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    huge = "9" * 30  # past SQLite's integers
    assert post(f"/discussions/{huge}/comment", b'{"comment": "x"}') == 400
    assert post("/discussions", b'{"title": "   "}') == 400
    assert post("/discussions", b'{"title": ["not", "text"]}') == 400
    assert post("/discussions", b"not json") == 400
    assert post("/discussions", ('{"title": "%s"}' % ("t" * 501)).encode()) == 400
    with pytest.raises(HfHubHTTPError) as e:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision=f"refs/pr/{huge}")
    assert e.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as e:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="refs/pr/1")
    assert e.value.response.status_code == 404
    draft = api.create_pull_request(repo_id, title="Nothing yet")
    with pytest.raises(HfHubHTTPError, match="changes nothing"):
        api.merge_pull_request(repo_id, draft.num)
    assert [d.num for d in api.get_repo_discussions(repo_id)] == [draft.num]
    assert len(api.list_repo_commits(repo_id)) == 1


@pytest.mark.slow  # importing transformers
def test_transformers_push_to_hub_create_pr_and_generation_config_on_the_pr(api, repo_id, tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    pushed = model.push_to_hub(repo_id, create_pr=True)
    assert pushed.pr_revision == "refs/pr/1"
    transformers.GenerationConfig(max_new_tokens=3).push_to_hub(repo_id, revision="refs/pr/1")
    assert api.list_repo_files(repo_id) == [".gitattributes"]  # main untouched until the merge

    cache = tmp_path / "cache"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(repo_id, revision="refs/pr/1", cache_dir=cache)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert loaded.generation_config.max_new_tokens == 3
    api.merge_pull_request(repo_id, 1)
    assert "model.safetensors" in api.list_repo_files(repo_id)
    again = transformers.GenerationConfig.from_pretrained(repo_id, cache_dir=cache)
    assert again.max_new_tokens == 3
