"""`hubckpt mirror` under the target's commit budget (issue 22 part 3): it learns the budget (from the headers
of accepted commits, else from the first 429), spaces its commits instead of being refused, and says how long
the rest will take. Against a real local hub started with `commit_rate=`; the pacer's arithmetic with a clock."""

from __future__ import annotations

import uuid

import pytest

import hubckpt
from hubckpt.errors import MirrorIncompleteError
from hubckpt.hub.budget import CommitPacer, refusal_reading
from hubckpt.server import LocalHubServer

from .conftest import free_port
from .helpers import run_cli
from .test_mirror import _main_commits, _publish

pytestmark = pytest.mark.timeout(120)


def _counting(hub: LocalHubServer) -> dict[str, int]:
    """The commit POSTs the hub's budget accepted and refused (429)."""
    counts = {"accepted": 0, "refused": 0}
    budget = hub.ctx.commit_budget
    take = budget.take

    def counting(key):
        try:
            headers = take(key)
        except Exception:
            counts["refused"] += 1
            raise
        counts["accepted"] += 1
        return headers

    budget.take = counting  # type: ignore[method-assign]
    return counts


class _NoHeadersOnAcceptedCommits:
    """ASGI middleware: a hub that says its budget only when it refuses (a 429), not on accepted commits."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        async def sending(message):
            if message["type"] == "http.response.start" and message["status"] == 200:
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if b"ratelimit" not in k.lower()]
            await send(message)

        return await self.app(scope, receive, sending)


def test_a_mirror_learns_the_budget_from_one_429_and_is_not_refused_again(local_hub, api, tmp_path):
    repo = f"alice/paced-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    commits = 2 + _main_commits(api, repo)
    assert commits > 2  # more commits than the budget allows at once: it must wait
    dst_hub = LocalHubServer(tmp_path / "dst", port=free_port(), commit_rate="1/1s")
    dst_hub._server.config.app = _NoHeadersOnAcceptedCommits(dst_hub._server.config.app)
    with dst_hub:
        counts = _counting(dst_hub)
        events: list[hubckpt.MirrorProgress] = []
        result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url, progress=events.append)
    assert result.commits == counts["accepted"] == commits
    # One 429 teaches it the budget; then it spaces them.
    assert result.refused == counts["refused"] == 1
    waits = [e for e in events if e.waiting_s > 0]
    assert waits and result.waited_s > 0
    assert all(" left, about " in e.pace and e.pace.endswith(" s at 1/s") for e in waits)
    assert events[-1].commits_done == events[-1].commits_total == commits


def test_with_the_budget_on_accepted_commits_the_mirror_is_never_refused_and_says_how_long(local_hub, tmp_path):
    repo = f"alice/headers-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    with LocalHubServer(tmp_path / "dst", port=free_port(), commit_rate="2/2s") as dst_hub:
        counts = _counting(dst_hub)
        out = run_cli("mirror", repo, "--from", local_hub.url, "--to", dst_hub.url)
    assert out.returncode == 0, out.stderr
    assert counts["refused"] == 0 and counts["accepted"] >= 3  # the hub says its budget on accepted commits
    assert "for the target's commit budget:" in out.stderr and "commits left, about" in out.stderr
    assert "at 2/2s" in out.stderr and "2 revisions mirrored" in out.stdout


def test_a_budget_wait_past_the_deadline_stops_the_run_at_once_with_what_is_left(local_hub, tmp_path):
    repo = f"alice/hourly-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1, 2])
    with LocalHubServer(tmp_path / "dst", port=free_port(), commit_rate="1/h") as dst_hub:
        counts = _counting(dst_hub)
        with pytest.raises(MirrorIncompleteError) as caught:
            hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url, deadline=60)
    assert counts == {"accepted": 1, "refused": 0}  # it knew the next commit had to wait an hour: not sent
    assert "commit budget (1/h) would pass the mirror's deadline" in str(caught.value)
    assert caught.value.mirrored == ["step-0000001"] and caught.value.pending == ["step-0000002"]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refusal(headers: dict[str, str], message: str = "429 Too Many Requests"):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(
        429, headers=headers, request=httpx2.Request("POST", "http://hub/api/models/a/b/commit/x")
    )
    return HfHubHTTPError(message, response=response)


def test_a_429_without_ratelimit_headers_teaches_the_budget_by_its_message_and_retry_after():
    error = _refusal(
        {
            "Retry-After": "7",
            "X-Error-Message": "You have exceeded our rate limit for repository commits (6 per minute)",
        }
    )
    reading = refusal_reading(error)
    assert reading is not None and (reading.remaining, reading.reset_s) == (0, 7.0)
    assert (reading.limit, reading.window_s) == (6, 60.0)
    assert (
        refusal_reading(_refusal({"Retry-After": "3"}, "429 rate limit for repository commits (128 per hour)")).limit
        == 128
    )


def test_the_pacer_spaces_commits_under_a_learned_budget_and_estimates_the_rest():
    clock = _Clock()
    pacer = CommitPacer(clock=clock)
    assert pacer.delay() == 0 and pacer.describe(12) == "12 commits left"  # nothing known: go
    for _ in range(6):  # six accepted, one a second
        pacer.accepted_commit([])
        clock.now += 1
    # The 7th is refused: 6/min, the oldest of ours leaves the window 54 s from now.
    pacer.refused(
        _refusal({"RateLimit": '"commits";r=0;t=54', "RateLimit-Policy": '"sliding window";"commits";q=6;w=60'})
    )
    assert (pacer.limit, pacer.window_s, pacer.rate()) == (6, 60.0, "6/min")
    assert pacer.delay() == pytest.approx(54.0)  # the retry waits that out, then:
    clock.now += 54
    pacer.accepted_commit([])
    assert pacer.delay() == pytest.approx(1.0)  # the next slot: our 2nd commit leaving the window
    assert pacer.describe(12) == "12 commits left, about 2 min at 6/min"
    # Others' commits in the window (a refusal with fewer of ours in it) leave it at the latest a window on.
    other = CommitPacer(clock=clock)
    other.refused(_refusal({"Retry-After": "10"}, "429 rate limit for repository commits (2 per minute)"))
    assert other.delay() == pytest.approx(10.0)
    clock.now += 10
    other.accepted_commit([])
    assert other.delay() == pytest.approx(50.0)


def test_a_first_commit_refused_by_a_window_others_filled_is_said_and_counted_as_a_wait(local_hub, tmp_path):
    """The retry's wait after a 429 is a wait for the budget like the pacer's: the CLI says it (it printed
    nothing for up to a minute), and it is not taken for the commits' own work (which inflated the time left)."""
    from huggingface_hub import HfApi

    repo = f"alice/full-window-{uuid.uuid4().hex[:6]}"
    _publish(repo, local_hub.url, tmp_path / "spool", [1])
    with LocalHubServer(tmp_path / "dst", port=free_port(), commit_rate="2/10s") as dst_hub:
        dst = HfApi(endpoint=dst_hub.url, token="unused")
        dst.create_repo(repo)
        dst.create_branch(repo, branch="other")  # a branch of the target's own: not in the mirror's way
        for i in range(2):  # the repo's window is full when the mirror starts
            dst.upload_file(path_or_fileobj=b"x%d" % i, path_in_repo="x.txt", repo_id=repo, revision="other")
        counts = _counting(dst_hub)
        events: list[hubckpt.MirrorProgress] = []
        result = hubckpt.mirror(repo, src_hub=local_hub.url, dst_hub=dst_hub.url, progress=events.append)
    assert counts["refused"] == result.refused == 1 and result.copied == ["step-0000001"]
    said = [e for e in events if e.waiting_s > 0 and e.commits_done == 0]
    assert said and " left, about " in said[0].pace and said[0].pace.endswith(" at 2/10s")
    assert result.waited_s >= said[0].waiting_s >= 1
