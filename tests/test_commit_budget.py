"""The commit budget (issue 22 part 2): the local hub's 429 per repo, and a publisher that stays within it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubckpt.errors import HubConfigError
from hubckpt.server import LocalHubServer
from hubckpt.server.rate import CommitRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def budget_hub(tmp_path):
    with LocalHubServer(tmp_path / "hub", commit_rate="3/min") as hub:
        clock = Clock()
        hub.ctx.commit_budget.clock = clock
        yield hub, HfApi(endpoint=hub.url), clock


def _commit(api: HfApi, repo: str, n: int, revision: str = "main") -> str:
    return api.create_commit(
        repo, [CommitOperationAdd(f"f{n}.txt", str(n).encode())], commit_message=f"c{n}", revision=revision
    ).oid


def test_rate_parser_accepts_the_hub_forms_and_refuses_others():
    assert CommitRate.parse("128/h") == CommitRate(128, 3600)
    assert CommitRate.parse("6/min") == CommitRate(6, 60)
    assert CommitRate.parse("6/10s") == CommitRate(6, 10)
    assert str(CommitRate.parse("128/h")) == "128 per hour"
    for bad in ("", "128", "0/h", "6/0s", "6/fortnight", "x/h"):
        with pytest.raises(HubConfigError, match="N/PERIOD|at least 1"):
            CommitRate.parse(bad)


def test_the_n_plus_first_commit_in_the_window_is_refused_with_the_hubs_429(budget_hub):
    hub, api, clock = budget_hub
    repo = api.create_repo("local/budget").repo_id  # its initial commit does not count
    api.create_branch(repo, branch="b1")  # branch and tag operations do not count
    api.create_tag(repo, tag="t1")
    api.delete_tag(repo, tag="t1")
    for n in range(2):
        _commit(api, repo, n)
        clock.now += 20
    _commit(api, repo, 2, revision="b1")  # every branch of the repo shares its budget
    head = api.list_repo_refs(repo).branches
    with pytest.raises(HfHubHTTPError) as caught:
        _commit(api, repo, 3)
    response = caught.value.response
    assert response.status_code == 429
    assert "rate limit for repository commits" in response.headers["X-Error-Message"]
    assert "rate limit for repository commits (3 per minute)" in response.json()["error"]
    # The oldest commit leaves the window 60 s after it was made: 20 s from now.
    assert response.headers["Retry-After"] == "20"
    assert response.headers["RateLimit"] == '"commits";r=0;t=20'
    assert "q=3" in response.headers["RateLimit-Policy"] and "w=60" in response.headers["RateLimit-Policy"]
    # Refused: nothing changed, and it did not count (the window frees at the same time as before).
    assert api.list_repo_refs(repo).branches == head
    assert "f3.txt" not in api.list_repo_files(repo)
    api.create_branch(repo, branch="b2")  # branch operations still work
    other = api.create_repo("local/budget-other").repo_id
    _commit(api, other, 0)  # per repo
    clock.now += 20  # the first commit left the window: one more, then refused again
    _commit(api, repo, 3)
    with pytest.raises(HfHubHTTPError) as caught:
        _commit(api, repo, 4)
    assert caught.value.response.status_code == 429
    assert "f3.txt" in api.list_repo_files(repo)


def _post_commit(hub, repo: str, n: int, parent: str | None = None):
    """One raw commit POST (the client hides the answer's headers): the httpx response."""
    import base64

    import httpx2

    header = {"summary": f"c{n}", **({"parentCommit": parent} if parent else {})}
    lines = [
        {"key": "header", "value": header},
        {"key": "file", "value": {"path": f"f{n}.txt", "content": base64.b64encode(b"x").decode()}},
    ]
    body = "\n".join(json.dumps(line) for line in lines)
    return httpx2.post(
        f"{hub.url}/api/models/{repo}/commit/main", content=body, headers={"content-type": "application/x-ndjson"}
    )


def test_every_commit_answer_carries_the_ratelimit_headers(budget_hub):
    hub, api, clock = budget_hub
    repo = api.create_repo("local/headers").repo_id
    policy = '"sliding window";"commits";q=3;w=60'
    first = _post_commit(hub, repo, 0)
    assert first.status_code == 200
    assert first.headers["RateLimit"] == '"commits";r=2;t=60'
    assert first.headers["RateLimit-Policy"] == policy
    from huggingface_hub.utils import parse_ratelimit_headers  # clients read them with huggingface_hub's parser

    info = parse_ratelimit_headers(first.headers)
    assert info is not None and (info.remaining, info.reset_in_seconds, info.limit, info.window_seconds) == (
        2,
        60,
        3,
        60,
    )
    clock.now += 20
    second = _post_commit(hub, repo, 1)
    assert second.headers["RateLimit"] == '"commits";r=1;t=40'  # the first commit leaves the window in 40 s
    clock.now += 5
    stale = _post_commit(hub, repo, 2, parent="0" * 40)  # refused by the hub (412), but a POST: it counts
    assert stale.status_code == 412
    assert stale.headers["RateLimit"] == '"commits";r=0;t=35'
    assert stale.headers["RateLimit-Policy"] == policy
    refused = _post_commit(hub, repo, 3)
    assert refused.status_code == 429
    assert refused.headers["RateLimit"] == '"commits";r=0;t=35'
    assert refused.headers["RateLimit-Policy"] == policy


def test_no_ratelimit_headers_without_a_budget(local_hub, api, repo_id):
    answer = _post_commit(local_hub, repo_id, 0)
    assert answer.status_code == 200
    assert "RateLimit" not in answer.headers and "RateLimit-Policy" not in answer.headers


def test_a_restarted_hub_keeps_counting(tmp_path):
    """The window lives in the hub's database: 3 commits, a restart on the same data folder, the 4th is refused."""
    root = tmp_path / "hub"
    with LocalHubServer(root, commit_rate="3/min") as hub:
        api = HfApi(endpoint=hub.url)
        repo = api.create_repo("local/restarted").repo_id
        for n in range(3):
            _commit(api, repo, n)
    with LocalHubServer(root, commit_rate="3/min") as hub:
        api = HfApi(endpoint=hub.url)
        with pytest.raises(HfHubHTTPError) as caught:
            _commit(api, repo, 3)
        assert caught.value.response.status_code == 429
        assert "f3.txt" not in api.list_repo_files(repo)
        _commit(api, api.create_repo("local/restarted-other").repo_id, 0)  # still per repo
        api.delete_repo(repo)  # a repo created again under the same name starts with an empty window
        _commit(api, api.create_repo(repo).repo_id, 0)


def test_retry_after_is_capped_at_60_seconds_and_the_client_reads_the_wait(tmp_path):
    from hubckpt.hub.retries import retry_after

    with LocalHubServer(tmp_path / "hub", commit_rate="1/h") as hub:
        api = HfApi(endpoint=hub.url)
        repo = api.create_repo("local/slow").repo_id
        _commit(api, repo, 0)
        with pytest.raises(HfHubHTTPError) as caught:
            _commit(api, repo, 1)
    headers = caught.value.response.headers
    assert headers["Retry-After"] == "60"
    assert 3590 <= int(headers["RateLimit"].rsplit("t=", 1)[1]) <= 3600
    assert retry_after(caught.value) == 300.0  # the client's own cap on one wait


def test_no_budget_by_default(api, repo_id):
    for n in range(12):
        _commit(api, repo_id, n)


def _publish_paced(tmp_path, rate: str, saves: int = 12, interval_s: float = 1.5):
    """Publish `saves` revisions, one every `interval_s`, to a fresh hub with commit budget `rate`;
    (seconds each publish() blocked, commit POSTs the hub accepted, 429s it answered, the hub's API, repo)."""
    import time

    import torch

    from hubckpt import Publisher

    accepted: list[str] = []
    refused: list[str] = []
    with LocalHubServer(tmp_path / f"hub-{rate.replace('/', '-')}", commit_rate=rate) as hub:
        budget = hub.ctx.commit_budget
        take = budget.take

        def counting(repo):
            try:
                limits = take(repo)
            except Exception:
                refused.append(repo.repo_id)
                raise
            accepted.append(repo.repo_id)
            return limits

        budget.take = counting
        api = HfApi(endpoint=hub.url)
        blocked: list[float] = []
        weights = {"w": torch.zeros(64, 64)}
        with Publisher("local/paced", hub=hub.url, spool_dir=tmp_path / f"spool-{len(rate)}") as pub:
            start = time.monotonic()
            for n in range(saves):
                time.sleep(max(0.0, start + n * interval_s - time.monotonic()))
                weights["w"].fill_(n)
                t0 = time.monotonic()
                pub.publish(state_dict=weights, step=(n + 1) * 100, metrics={"loss": 10.0 - n})
                blocked.append(time.monotonic() - t0)
            pub.wait()
        refs = api.list_repo_refs("local/paced")
        branches = {b.name: b.target_commit for b in refs.branches}
        index = json.loads(
            Path(api.hf_hub_download("local/paced", "revisions.json", cache_dir=tmp_path / "c")).read_text()
        )
        chain = {
            name: api.list_repo_commits("local/paced", revision=name)[1].commit_id
            for name in branches
            if name != "main"
        }
    return blocked, len(accepted), len(refused), index, branches, chain


@pytest.mark.slow
def test_a_publisher_stays_within_the_budget_without_blocking_the_training_loop(tmp_path):
    """12 revisions against 6 commits per 6 s, one save every 1.2 s: the revisions' own 12 commits fit, two
    commits per revision do not. Main's updates coalesce; every revision lands once, on the previous one."""
    free_blocked, free_commits, _, _, _, _ = _publish_paced(tmp_path, "100000/h")
    blocked, commits, refused, index, branches, chain = _publish_paced(tmp_path, "6/6s")
    names = [r["name"] for r in index["revisions"]]
    assert names == [f"step-{(n + 1) * 100:07d}" for n in range(12)], names
    assert all(branches[r["name"]] == r["commit"] for r in index["revisions"])  # listed at its one commit
    for before, after in zip(index["revisions"], index["revisions"][1:]):
        assert chain[after["name"]] == before["commit"]  # the branch history is the training trajectory
    assert not any(b.startswith("hubckpt-staging-") for b in branches)
    assert commits <= 18, (commits, refused)
    assert sum(blocked) <= sum(free_blocked) + 1.0, (blocked, free_blocked)
    assert max(blocked) <= max(free_blocked) + 0.5, (blocked, free_blocked)


def test_revisions_waiting_for_their_listing_on_main_are_listed_after_a_crash(tmp_path, local_hub, api):
    """A process that dies with revisions committed but not yet listed on `main` (their listing waited for a
    next revision): the next start lists each of them once, at the commit it made, without committing again."""
    import uuid

    import torch

    from hubckpt import Publisher

    repo = f"local/deferred-{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool"
    pub = Publisher(repo, hub=local_hub.url, spool_dir=spool)
    pub._pipeline.more_queued = lambda: True  # every listing waits for a next revision, which never comes
    for n in range(3):
        pub.publish(state_dict={"w": torch.full((8, 8), float(n))}, step=(n + 1) * 100).result()
    pub.abort()  # as if killed: nothing lists them
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo).branches if b.name.startswith("step-")}
    assert sorted(heads) == ["step-0000100", "step-0000200", "step-0000300"]
    assert "revisions.json" not in api.list_repo_files(repo)
    with Publisher(repo, hub=local_hub.url, spool_dir=spool) as again:
        again.wait()
    index = json.loads(Path(api.hf_hub_download(repo, "revisions.json", cache_dir=tmp_path / "c")).read_text())
    assert [(r["name"], r["commit"]) for r in index["revisions"]] == sorted(heads.items())
    after = {b.name: b.target_commit for b in api.list_repo_refs(repo).branches if b.name.startswith("step-")}
    assert after == heads  # nothing committed again
    # Each revision branched from the one before, though none was listed when it was committed.
    assert api.list_repo_commits(repo, revision="step-0000300")[1].commit_id == heads["step-0000200"]
    assert api.list_repo_commits(repo, revision="step-0000200")[1].commit_id == heads["step-0000100"]


def test_serve_with_a_budget_says_so_and_refuses_a_bad_one(tmp_path):
    """What users run: `hubckpt serve` prints the budget (here from HUBCKPT_COMMIT_RATE, as a hub started in
    the background gets it) and enforces it; a malformed rate is one line, no traceback."""
    import signal

    from .conftest import free_port
    from .helpers import run_cli, start_server

    bad = run_cli("serve", "--root", str(tmp_path / "bad"), "--port", "0", "--commit-rate", "6/fortnight")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: Invalid commit rate '6/fortnight'"), bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    proc, url = start_server(tmp_path / "hub", free_port(), extra_env={"HUBCKPT_COMMIT_RATE": "1/h"})
    try:
        api = HfApi(endpoint=url)
        repo = api.create_repo("local/served").repo_id
        _commit(api, repo, 0)
        with pytest.raises(HfHubHTTPError) as caught:
            _commit(api, repo, 1)
        assert caught.value.response.status_code == 429
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert "commit budget: 1 per hour per repo" in out


def test_retention_costs_no_commit_of_its_own(tmp_path, local_hub, api):
    """A retention pass is marked in the update of `main` that lists the new revision, and the pruned branches
    are deleted after it (not commits): keep_last=1 over 3 revisions is 3 + 3 commits, not 3 + 3 + 2 "Prune"."""
    import uuid

    import torch

    from hubckpt import Publisher

    repo = f"local/retained-{uuid.uuid4().hex[:8]}"
    with Publisher(repo, hub=local_hub.url, spool_dir=tmp_path / "spool", keep_last=1) as pub:
        for n in range(3):
            pub.publish(state_dict={"w": torch.full((8, 8), float(n))}, step=(n + 1) * 100).result()
    titles = [c.title for c in api.list_repo_commits(repo)]
    assert titles == [
        "Index step-0000300 (step 300); prune step-0000200",
        "Index step-0000200 (step 200); prune step-0000100",
        "Index step-0000100 (step 100)",
        "initial commit",
    ], titles
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", "step-0000300"}
    index = json.loads(Path(api.hf_hub_download(repo, "revisions.json", cache_dir=tmp_path / "c")).read_text())
    assert [(r["name"], r.get("pruned", False)) for r in index["revisions"]] == [
        ("step-0000100", True),
        ("step-0000200", True),
        ("step-0000300", False),
    ]
