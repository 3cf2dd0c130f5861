"""`hubckpt mirror`: a published run copied between two real local hubs over loopback, checked by what the
target holds (branches, histories, files by oid, index, cards, tags) and by the bytes it received."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

import hubckpt
from hubckpt.errors import MirrorConflictError, MirrorIncompleteError
from hubckpt.hub.writer import STAGING_PREFIX
from hubckpt.publishing import Publisher

from .conftest import free_port
from .helpers import run_cli

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def dst_hub(tmp_path_factory):
    """The second hub, the mirror's target."""
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path_factory.mktemp("dst-hub"), port=free_port()) as hub:
        yield hub


def _publish(repo_id: str, hub: str, spool: Path, steps: list[int], *, final: int | None = None) -> None:
    """Revisions whose weights no other test has (the hub keeps objects across repos)."""
    salt = float(int(uuid.uuid4().hex[:5], 16))
    with Publisher(repo_id, hub=hub, spool_dir=spool, monitor="eval_loss") as pub:
        for step in steps:
            pub.publish(
                state_dict={"w": torch.full((2048,), float(step)), "b": torch.arange(64.0) * step + salt},
                step=step,
                metrics={"eval_loss": 10.0 / step if step != 3 else 99.0},
                final=step == final,
            ).result()


def _received(hub) -> int:
    return hub.ctx.stats["lfs_bytes_received"] + hub.ctx.stats.get("regular_bytes_received", 0)


def _copies(hub, repo_id: str) -> list[str]:
    """The source commit of every commit the target stores for `repo_id` (branch or not): each copy, once."""
    import re
    import sqlite3

    namespace, name = repo_id.split("/")
    with sqlite3.connect(f"file:{hub.ctx.store.path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT c.message FROM commits c JOIN repos r ON r.id = c.repo_id WHERE r.namespace = ? AND r.name = ?",
            (namespace, name),
        ).fetchall()
    return [m for (message,) in rows for m in re.findall(r"^Mirrored-From: ([0-9a-f]{40})$", message, re.MULTILINE)]


def _main_commits(api: HfApi, repo_id: str) -> int:
    """The commits of `main` after create_repo's (the publisher's index and card updates): each one copied."""
    return len(api.list_repo_commits(repo_id)) - 1


def _refs(api: HfApi, repo_id: str) -> tuple[dict[str, str], dict[str, str]]:
    refs = api.list_repo_refs(repo_id)
    return {b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags}


def _files(api: HfApi, repo_id: str, revision: str) -> dict[str, str]:
    """path → the object's identity (LFS sha256, else the git blob oid)."""
    return {
        f.path: (f.lfs.sha256 if f.lfs else f.blob_id)
        for f in api.list_repo_tree(repo_id, revision=revision, recursive=True)
        if hasattr(f, "blob_id")
    }


def _read(api: HfApi, repo_id: str, path: str, revision: str, tmp_path: Path) -> str:
    return Path(api.hf_hub_download(repo_id, path, revision=revision, cache_dir=tmp_path / "dl")).read_text()


def _front_matter(card: str) -> str:
    return card[: card.index("\n---\n", 4)]


def _assert_same_run(src: HfApi, dst: HfApi, repo: str, dst_repo: str, src_url: str, dst_url: str, tmp_path: Path):
    src_branches, src_tags = _refs(src, repo)
    dst_branches, dst_tags = _refs(dst, dst_repo)
    assert set(dst_branches) == set(src_branches) and not any(b.startswith(STAGING_PREFIX) for b in dst_branches)
    assert set(dst_tags) == set(src_tags)
    for name in src_branches:  # every branch, main included: as many commits, chained the same way
        src_history = src.list_repo_commits(repo, revision=name)
        dst_history = dst.list_repo_commits(dst_repo, revision=name)
        assert len(dst_history) == len(src_history), name
        assert [c.title for c in dst_history] == [c.title for c in src_history], name
        if name == "main":
            continue
        a, b = _files(src, repo, name), _files(dst, dst_repo, name)
        assert set(a) == set(b) and {p: a[p] for p in a if p != "README.md"} == {p: b[p] for p in b if p != "README.md"}
        src_card = _read(src, repo, "README.md", name, tmp_path / "a")
        dst_card = _read(dst, dst_repo, "README.md", name, tmp_path / "b")
        assert _front_matter(dst_card) == _front_matter(src_card)
        assert f"{src_url}/{repo}" not in dst_card and f"]({dst_url}/{dst_repo})" in dst_card
    for tag, commit in src_tags.items():  # each tag at the copy of the same revision
        src_name = next(n for n, c in src_branches.items() if c == commit and n != "main")
        assert dst_tags[tag] == dst_branches[src_name], tag
    src_index = json.loads(_read(src, repo, "revisions.json", "main", tmp_path / "a"))
    dst_index = json.loads(_read(dst, dst_repo, "revisions.json", "main", tmp_path / "b"))
    dst_commits = {r["name"]: r["commit"] for r in dst_index["revisions"]}
    for revision in src_index["revisions"]:  # a pruned revision has no branch: its copy's commit, unchecked here
        revision["commit"] = dst_commits[revision["name"]] if revision.get("pruned") else dst_branches[revision["name"]]
    assert dst_index == src_index
    a, b = _files(src, repo, "main"), _files(dst, dst_repo, "main")
    assert set(a) == set(b)
    assert {p: a[p] for p in a if p not in ("README.md", "revisions.json")} == {
        p: b[p] for p in b if p not in ("README.md", "revisions.json")
    }
    main_card = _read(dst, dst_repo, "README.md", "main", tmp_path / "b")
    assert f"{src_url}/{repo}" not in main_card and f"{dst_url}/{dst_repo}/tree/step-0000002" in main_card


def test_mirror_copies_a_run_then_moves_nothing_then_only_what_is_new(local_hub, dst_hub, api, tmp_path):
    repo = f"alice/mirror-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2, 3], final=3)
    api.create_tag(repo, tag="my-pick", revision="step-0000001")
    dst = HfApi(endpoint=dst_hub.url, token="unused")

    before = _received(dst_hub)
    events: list[hubckpt.MirrorProgress] = []
    result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url, progress=events.append)
    assert [e.revisions_done for e in events] == sorted(e.revisions_done for e in events)
    assert (events[-1].revisions_done, events[-1].revisions_total) == (3, 3)
    assert 0 < events[-1].bytes_done <= events[-1].bytes_total
    assert result.copied == ["step-0000001", "step-0000002", "step-0000003"]
    assert sorted(result.tags_moved) == ["best", "final", "my-pick"] and result.main_updated
    first = _received(dst_hub) - before
    # Each distinct object of the run's history is read from the source once (main's final weights are
    # step 3's: not read again).
    sizes = {
        (f.lfs.sha256 if f.lfs else f.blob_id): f.size
        for name in ("step-0000003", "main")
        for commit in api.list_repo_commits(repo, revision=name)
        for f in api.list_repo_tree(repo, revision=commit.commit_id, recursive=True)
        if hasattr(f, "blob_id") and f.path != ".gitattributes"
    }
    assert 0 < result.bytes_downloaded <= sum(sizes.values())
    assert first >= 3 * 2048 * 4  # every revision's weights arrived
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)
    assert not dst.model_info(repo).private

    # Again: nothing is downloaded from the source, nothing sent, no commit made.
    heads = _refs(dst, repo)
    before = _received(dst_hub)
    again = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    assert (again.commits, again.bytes_downloaded, again.copied, again.tags_moved) == (0, 0, [], [])
    assert _received(dst_hub) == before and _refs(dst, repo) == heads

    # A revision published later arrives with the next run, and only its bytes move.
    main_before = len(api.list_repo_commits(repo))
    _publish(repo, local_hub.url, tmp_path / "spool", [4])
    before = _received(dst_hub)
    later = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    main_commits = len(api.list_repo_commits(repo)) - main_before
    assert later.copied == ["step-0000004"] and main_commits >= 1
    assert later.commits == 1 + main_commits  # the revision, then main's own commits
    moved = _received(dst_hub) - before
    assert 2048 * 4 <= moved < first / 2
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path / "later")


def test_mirror_cli_to_another_name_keeps_a_private_repo_private(local_hub, dst_hub, tmp_path):
    repo = f"alice/private-{uuid.uuid4().hex[:6]}"
    src = HfApi(endpoint=local_hub.url, token="unused")
    src.create_repo(repo, private=True)
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    dst_repo = f"bob/copy-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=dst_hub.url, token="unused").create_repo(dst_repo)  # public, until the private run arrives
    out = run_cli("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url, "--to-repo", dst_repo)
    assert out.returncode == 0, out.stderr
    assert "mirrored step-0000001\nmirrored step-0000002\n" in out.stdout and "2 revisions mirrored" in out.stdout
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert dst.model_info(dst_repo).private
    _assert_same_run(src, dst, repo, dst_repo, local_hub.url, dst_hub.url, tmp_path)
    card = _read(dst, dst_repo, "README.md", "step-0000002", tmp_path / "c")
    assert f'"{dst_repo}"' in card and f'"{repo}"' not in card  # the snippets load the target repo


def test_conflicting_target_is_refused_unchanged_then_force_overwrites(local_hub, dst_hub, api, tmp_path):
    repo = f"alice/clash-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "a", [1, 2])
    _publish(repo, dst_hub.url, tmp_path / "b", [2])  # another run's step 2 on the target, same branch name
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    before, received = _refs(dst, repo), _received(dst_hub)

    with pytest.raises(MirrorConflictError) as caught:
        hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    assert [c.split()[0] for c in caught.value.conflicts] == ["step-0000002", "main"]
    assert _refs(dst, repo) == before and _received(dst_hub) == received

    out = run_cli("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url)
    assert out.returncode == 1 and "step-0000002" in out.stderr and "--force" in out.stderr
    assert "Traceback" not in out.stderr and _refs(dst, repo) == before

    out = run_cli("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url, "--force")
    assert out.returncode == 0, out.stderr
    assert _files(dst, repo, "step-0000002") == {
        **_files(api, repo, "step-0000002"),
        "README.md": _files(dst, repo, "step-0000002")["README.md"],
    }
    assert len(dst.list_repo_commits(repo, revision="step-0000002")) == len(
        api.list_repo_commits(repo, revision="step-0000002")
    )


def test_mirror_killed_midway_completes_each_revision_once(local_hub, dst_hub, api, tmp_path):
    repo = f"alice/killed-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2, 3])
    args = ("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url)
    out = run_cli(*args, env={"HUBCKPT_FAULT": "mirror.committed:kill"})
    assert out.returncode == -9, out.stderr
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    branches, _ = _refs(dst, repo)
    assert "step-0000001" not in branches and STAGING_PREFIX + "step-0000001" in branches  # the kill's trace

    before = dst_hub.ctx.stats["lfs_bytes_received"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    assert "3 revisions mirrored" in out.stdout
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)
    # Exactly once: the killed run's commit was reused, not made again, and its bytes not sent again.
    copies = _copies(dst_hub, repo)
    assert len(copies) == len(set(copies)) == 3 + _main_commits(api, repo)  # three revisions and main's own
    weights = {f.path: f.size for f in api.list_repo_tree(repo, revision="step-0000001")}["model.safetensors"]
    assert dst_hub.ctx.stats["lfs_bytes_received"] - before == 2 * weights  # steps 2 and 3 only


def test_a_killed_run_s_staging_branch_goes_even_when_its_revision_was_pruned_at_the_source_meanwhile(
    local_hub, dst_hub, api, tmp_path
):
    """Mirroring while training runs with retention: the revision a killed run was copying is pruned at the
    source before the rerun. No staging branch may stay, and its copied commit is reused, not made again."""
    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing.maintenance import prune
    from hubckpt.publishing.policies import Retention

    repo = f"alice/killed-pruned-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2, 3])
    args = ("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url)
    assert run_cli(*args, env={"HUBCKPT_FAULT": "mirror.committed:kill"}).returncode == -9
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert STAGING_PREFIX + "step-0000001" in _refs(dst, repo)[0]
    assert prune(HubTarget(resolve_hub(local_hub.url), repo), Retention(keep_last=1)).pruned == ["step-0000001"]

    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)  # no staging branch left
    copies = _copies(dst_hub, repo)
    assert len(copies) == len(set(copies))  # step 1's commit, copied by the killed run, was not copied again


def test_a_429_storm_past_the_retries_says_what_was_mirrored_and_a_rerun_continues(
    local_hub, dst_hub, api, tmp_path, monkeypatch
):
    from huggingface_hub import HfApi as Api
    from huggingface_hub.errors import HfHubHTTPError

    from hubckpt.hub import retries

    repo = f"alice/storm-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2, 3])
    real = Api.create_commit
    calls = {"n": 0}

    def limited(self, repo_id, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # the target's commit budget is spent for longer than the retries wait
            import httpx2

            response = httpx2.Response(
                429,
                headers={"Retry-After": "1", "X-Error-Message": "rate limit for repository commits (1 per hour)"},
                request=httpx2.Request("POST", f"{dst_hub.url}/api/models/{repo_id}/commit/x"),
            )
            raise HfHubHTTPError("429 rate limit for repository commits", response=response)
        return real(self, repo_id, *args, **kwargs)

    monkeypatch.setattr(Api, "create_commit", limited)
    monkeypatch.setattr(retries, "backoff_delay", lambda error, attempt, base: 0.0)
    with pytest.raises(MirrorIncompleteError) as caught:  # without a deadline it would wait, pacing itself
        hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url, deadline=3)
    assert caught.value.mirrored == ["step-0000001"]
    assert caught.value.pending == ["step-0000002", "step-0000003"]
    assert "rate limit for repository commits" in str(caught.value) and "again" in str(caught.value)
    monkeypatch.setattr(Api, "create_commit", real)

    result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    assert result.copied == ["step-0000002", "step-0000003"] and result.unchanged == ["step-0000001"]
    copies = _copies(dst_hub, repo)
    assert len(copies) == len(set(copies)) == 3 + _main_commits(api, repo)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)


def test_a_deadline_that_passes_stops_the_mirror_with_what_is_left(local_hub, dst_hub, tmp_path):
    repo = f"alice/deadline-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    out = run_cli("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url, "--deadline", "0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "deadline" in out.stderr and "not mirrored: step-0000001, step-0000002" in out.stderr
    assert "again" in out.stderr
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert not [b for b in _refs(dst, repo)[0] if b.startswith(STAGING_PREFIX)]  # stopped before a step began


def test_a_pruned_revision_s_commit_is_copied_without_its_branch(local_hub, dst_hub, api, tmp_path):
    repo = f"alice/pruned-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    api.delete_branch(repo, branch="step-0000001")  # as retention does: its commit stays in step 2's history
    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert "step-0000001" not in _refs(dst, repo)[0]
    src_history = api.list_repo_commits(repo, revision="step-0000002")
    dst_history = dst.list_repo_commits(repo, revision="step-0000002")
    assert [c.title for c in dst_history] == [c.title for c in src_history] and len(dst_history) == 3
    assert _files(dst, repo, dst_history[1].commit_id).keys() == _files(api, repo, src_history[1].commit_id).keys()


def test_a_revision_pruned_at_the_source_after_a_run_loses_its_branch_on_the_target_too(
    local_hub, dst_hub, api, tmp_path
):
    """The target's branch set stays the source's: retention deleted a branch there, the next run deletes its
    copy (and only that: a branch of the target's own is kept)."""
    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing.maintenance import prune
    from hubckpt.publishing.policies import Retention

    repo = f"alice/later-pruned-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2, 3])
    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    dst.create_branch(repo, branch="mine", revision=_refs(dst, repo)[0]["step-0000001"])  # the target's own
    assert prune(HubTarget(resolve_hub(local_hub.url), repo), Retention(keep_last=1)).pruned == ["step-0000001"]

    result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    assert result.pruned == ["step-0000001"] and result.commits >= 1
    dst.delete_branch(repo, branch="mine")
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)


def test_a_tag_removed_at_the_source_after_a_run_is_removed_on_the_target_too(local_hub, dst_hub, api, tmp_path):
    """`hubckpt tag --delete` at the source: the next run deletes the copy of that tag (the target's tag set stays
    the source's); a tag made on the target itself is kept."""
    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing.maintenance import tag

    repo = f"alice/untagged-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    src = HubTarget(resolve_hub(local_hub.url), repo)
    tag(src, "step-0000001", "pick")
    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    dst.create_tag(repo, tag="mine", revision=_refs(dst, repo)[0]["step-0000001"])  # the target's own
    tag(src, "step-0000001", "pick", delete=True)

    result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    assert "pick" not in _refs(dst, repo)[1] and result.tags_deleted == ["pick"]
    dst.delete_tag(repo, tag="mine")
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)


def test_a_source_checkpoint_json_that_lies_about_a_file_s_hash_is_not_believed(local_hub, dst_hub, api, tmp_path):
    """The source's checkpoint.json is untrusted: the mirror uploads what it verified against the listing."""
    from huggingface_hub import CommitOperationAdd

    repo = f"alice/liar-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo)
    api.create_branch(repo, branch="step-0000001")
    weights = b"\x00" * 512 + uuid.uuid4().bytes * 64  # binary: stored with LFS
    manifest = {"step": 1, "files": [{"path": "model.safetensors", "sha256": "ab" * 32, "size": len(weights)}]}
    api.create_commit(
        repo,
        [
            CommitOperationAdd("model.safetensors", weights),
            CommitOperationAdd("checkpoint.json", json.dumps(manifest).encode()),
        ],
        commit_message="a checkpoint whose manifest lies",
        revision="step-0000001",
    )
    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert _files(dst, repo, "step-0000001") == _files(api, repo, "step-0000001")
    copy = dst.hf_hub_download(repo, "model.safetensors", revision="step-0000001", cache_dir=tmp_path / "dl")
    assert Path(copy).read_bytes() == weights


class _ShortCommitIds:
    """ASGI middleware: a hub whose commit listings give short ids (which it still resolves)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or "/commits/" not in scope["path"]:
            return await self.app(scope, receive, send)
        start: dict = {}
        body = bytearray()

        async def sending(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            content = bytes(body)
            if start["status"] == 200:
                content = json.dumps([{**c, "id": c["id"][:12]} for c in json.loads(content)]).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(content)).encode())]})
            await send({"type": "http.response.body", "body": content})

        return await self.app(scope, receive, sending)


def test_a_source_whose_commit_ids_are_not_full_ids_is_refused_before_anything_is_copied(dst_hub, tmp_path):
    """Commit ids from the source are untrusted: a short one (which its hub resolves) made every copy
    unrecognisable as such, so each run copied the whole history again."""
    from hubckpt.errors import HubContentError
    from hubckpt.server import LocalHubServer

    repo = f"alice/short-ids-{uuid.uuid4().hex[:6]}"
    src_hub = LocalHubServer(tmp_path / "src", port=free_port())
    src_hub._server.config.app = _ShortCommitIds(src_hub._server.config.app)
    with src_hub:
        _publish(repo, src_hub.url, tmp_path / "spool", [1])
        with pytest.raises(HubContentError, match="not a 40-hex commit id"):
            hubckpt.mirror(repo, src_hub=src_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    assert _refs(dst, repo)[0].keys() == {"main"} and _copies(dst_hub, repo) == []


class _TamperedRegularFile:
    """ASGI middleware: a hub that serves other bytes for one regular file than its listing names."""

    def __init__(self, app, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].endswith(f"/{self.path}"):
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.body" and message.get("body"):
                body = message["body"]
                message = {**message, "body": body[:-1] + (b"X" if body[-1:] != b"X" else b"Y")}  # same length
            await send(message)

        return await self.app(scope, receive, sending)


def test_a_regular_file_whose_bytes_differ_from_the_source_listing_is_not_copied(dst_hub, tmp_path):
    """Regular files (checkpoint.json, cards, the index) are checked against the listing's git blob id, as LFS
    files are against its sha256: the target's copy was silently another file than the one listed."""
    from hubckpt.server import LocalHubServer

    repo = f"alice/tampered-{uuid.uuid4().hex[:6]}"
    src_hub = LocalHubServer(tmp_path / "src", port=free_port())
    src_hub._server.config.app = _TamperedRegularFile(src_hub._server.config.app, "checkpoint.json")
    with src_hub:
        _publish(repo, src_hub.url, tmp_path / "spool", [1])
        with pytest.raises(MirrorIncompleteError, match="git blob id of the source's listing"):
            hubckpt.mirror(repo, src_hub=src_hub.url, dst_hub=dst_hub.url)
    assert _copies(dst_hub, repo) == []  # nothing committed


def test_a_main_commit_a_revision_was_started_from_is_copied_once_and_shared(local_hub, dst_hub, api, tmp_path):
    repo = f"alice/shared-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"# my run\n", path_in_repo="NOTES.md", repo_id=repo)  # main, before any revision
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])  # step 1 starts from main's head
    src_chain = [c.commit_id for c in reversed(api.list_repo_commits(repo, revision="step-0000001"))]
    assert src_chain[1] == [c.commit_id for c in reversed(api.list_repo_commits(repo))][1]
    hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url)
    dst = HfApi(endpoint=dst_hub.url, token="unused")
    _assert_same_run(api, dst, repo, repo, local_hub.url, dst_hub.url, tmp_path)
    dst_chain = [c.commit_id for c in reversed(dst.list_repo_commits(repo, revision="step-0000001"))]
    assert dst_chain[1] == [c.commit_id for c in reversed(dst.list_repo_commits(repo))][1]  # one copy, shared
    copies = _copies(dst_hub, repo)
    assert len(copies) == len(set(copies)) == 2 + _main_commits(api, repo)
