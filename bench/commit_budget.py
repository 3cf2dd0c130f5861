"""Publishing under a hub's commit budget (issue 22 part 2): commits per revision, save() stall, time to visible.

Publishes SAVES small revisions, one every INTERVAL seconds (0: as fast as possible), to a fresh local hub
with `--commit-rate RATE`, and the same to one without a budget (the same-run floor), and prints:
commit POSTs the hub accepted (and refused with 429), commits per revision, the total and largest time
`publish()` blocked the loop, and the time from the first save until every revision is listed on `main`.

    python bench/commit_budget.py --rate 6/min --saves 12 --interval 12   # the issue's case, ~2.5 min
    python bench/commit_budget.py --rate 6/6s --saves 12 --interval 1.5    # the same, 10x faster
    python bench/commit_budget.py --rate 128/h --saves 50 --interval 0     # huggingface.co's budget, flat out
    python bench/commit_budget.py --rate 6/6s --saves 12 --interval 1.5 --keep-last 3   # with retention
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run(root: Path, rate: str | None, saves: int, interval_s: float, size: int, keep_last: int | None) -> dict:
    import torch
    from huggingface_hub import HfApi

    from hubckpt import Publisher
    from hubckpt.server import LocalHubServer
    from hubckpt.server.rate import CommitBudget, CommitRate

    accepted, refused = [0], [0]
    with LocalHubServer(root / "hub") as hub:
        # No budget = a budget nobody reaches, so the commits are counted the same way.
        budget = CommitBudget(CommitRate.parse(rate or "1000000/h"), hub.ctx.store)
        take = budget.take

        def counting(repo):  # type: ignore[no-untyped-def]
            try:
                limits = take(repo)
            except Exception:
                refused[0] += 1
                raise
            accepted[0] += 1
            return limits

        budget.take = counting  # type: ignore[method-assign]
        hub.ctx.commit_budget = budget
        weights = {"w": torch.zeros(size, size)}
        blocked: list[float] = []
        with Publisher("local/budget", hub=hub.url, spool_dir=root / "spool", keep_last=keep_last) as pub:
            start = time.monotonic()
            for n in range(saves):
                time.sleep(max(0.0, start + n * interval_s - time.monotonic()))
                weights["w"].fill_(n)
                t0 = time.monotonic()
                pub.publish(state_dict=weights, step=(n + 1) * 100, metrics={"loss": 10.0 - n})
                blocked.append(time.monotonic() - t0)
            pub.wait()
            visible = time.monotonic() - start
        api = HfApi(endpoint=hub.url)
        index = json.loads(
            Path(api.hf_hub_download("local/budget", "revisions.json", cache_dir=root / "c")).read_text()
        )
        main_titles = [c.title for c in api.list_repo_commits("local/budget")]
        branches = {b.name for b in api.list_repo_refs("local/budget").branches}
    listed = [r["name"] for r in index["revisions"]]
    assert len(listed) == len(set(listed)) == saves, listed
    live = {r["name"] for r in index["revisions"] if not r.get("pruned")}
    assert branches == live | {"main"}, (branches, live)  # pruned revisions' branches are gone
    return {
        "rate": rate or "none",
        "keep_last": keep_last,
        "pruned": saves - len(live),
        "prune_commits": sum(t.startswith("Prune") for t in main_titles),
        "commits": accepted[0],
        "refused_429": refused[0],
        "commits_per_revision": round(accepted[0] / saves, 2),
        "save_blocked_total_s": round(sum(blocked), 3),
        "save_blocked_max_s": round(max(blocked), 3),
        "all_visible_after_s": round(visible, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="6/6s", help="the hub's commit budget, N/PERIOD")
    parser.add_argument("--saves", type=int, default=12)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between saves (0: flat out)")
    parser.add_argument("--size", type=int, default=256, help="the tensor is SIZE x SIZE float32")
    parser.add_argument("--keep-last", type=int, default=None, help="retention: keep the last K revisions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (None, args.rate):
            root = Path(tmp) / (rate or "none").replace("/", "-")
            print(json.dumps(run(root, rate, args.saves, args.interval, args.size, args.keep_last)), flush=True)


if __name__ == "__main__":
    main()
