"""Mirror a run of 20 revisions between two local hubs: `hubckpt.mirror` vs the stock way, then once more.

A run of `--revisions` revisions of a `--size-mib` model (every tensor changes at every save, as in
training) is published to hub A. Then, each into a fresh hub of its own (separate server processes,
as a team's hubs would be):
- baseline: per revision branch, `snapshot_download` from A, `create_branch` + `upload_folder` to B1
  (what one would script with huggingface_hub; it copies no tags, index or history);
- `hubckpt.mirror` A → B2: branches with their histories, tags, the index and `main`, cards rewritten;
- `hubckpt.mirror` A → B2 again: what a run with nothing new costs (bytes read from A, commits made,
  bytes B2 stored).
- with `--rate N/PERIOD`: `hubckpt.mirror` A → B3, a hub started with that commit budget: the commits it
  was refused (429), how long it waited, what it said the rest would take once it knew the budget, and
  its time against the budget's floor (the least time that many commits take under it).
Printed: seconds of each, the ratio (aim: mirror ≥ 2× faster than the baseline; second run 0 bytes).

Usage:  .venv/bin/python bench/mirror.py [--revisions 20] [--size-mib 100] [--rate 10/5s]   (about a minute)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["HF_HUB_DISABLE_XET"] = "1"  # the stock upload_folder against an LFS-only hub (docs/hubs.md)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def paced(repo: str, urls: dict[str, str], rate: str) -> None:
    """The mirror into a hub with a commit budget: refusals, waits, the first ETA it gave, time vs the floor."""
    import hubckpt
    from hubckpt.server.rate import CommitRate

    budget = CommitRate.parse(rate)
    said: list[tuple[float, str]] = []
    t0 = time.perf_counter()

    def progress(p: hubckpt.MirrorProgress) -> None:
        if not said and ", about " in p.pace:
            said.append((time.perf_counter() - t0, p.pace))

    result = hubckpt.mirror(repo, src_hub=urls["a"], dst_hub=urls["b3"], progress=progress)
    took = time.perf_counter() - t0
    floor = (result.commits - 1) // budget.limit * budget.period_s  # a burst, then `limit` per window
    when, text = said[0] if said else (0.0, "(no estimate)")
    print(
        f"hubckpt.mirror under --commit-rate {rate}:                {took:6.1f} s "
        f"({took / floor if floor else float('nan'):.2f}x the budget's floor of {floor} s for {result.commits} "
        f"commits; {result.refused} refused, {result.waited_s:.1f} s waited; at {when:.1f} s it said "
        f"'{text}')"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--rate", default="", help="also mirror into a hub with this commit budget, e.g. 10/5s")
    args = parser.parse_args()

    import torch
    from huggingface_hub import HfApi

    import hubckpt
    from hubckpt.hub.local import ensure_local_hub, stop_local_hub

    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-mirror-"))
    roots = {name: work / name for name in ("a", "b1", "b2")}
    urls = {name: ensure_local_hub(root) for name, root in roots.items()}
    if args.rate:  # a hub started in the background takes its budget from the environment
        roots["b3"] = work / "b3"
        os.environ["HUBCKPT_COMMIT_RATE"] = args.rate
        urls["b3"] = ensure_local_hub(roots["b3"])
        del os.environ["HUBCKPT_COMMIT_RATE"]
    repo = "bench/run"
    try:
        numel = args.size_mib * 2**20 // 4
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        with hubckpt.Publisher(repo, hub=urls["a"], spool_dir=work / "spool", monitor="eval_loss") as pub:
            for i in range(1, args.revisions + 1):
                state = {f"layer{k}.weight": torch.randn(numel // 4, generator=gen) for k in range(4)}
                pub.publish(state_dict=state, step=100 * i, metrics={"eval_loss": 1.0 / i}, final=i == args.revisions)
            pub.wait()
        print(f"published {args.revisions} revisions of {args.size_mib} MiB to A in {time.perf_counter() - t0:.1f} s")

        src, b1 = HfApi(endpoint=urls["a"], token="x"), HfApi(endpoint=urls["b1"], token="x")
        branches = sorted(b.name for b in src.list_repo_refs(repo).branches if b.name != "main")
        t0 = time.perf_counter()
        b1.create_repo(repo, exist_ok=True)
        for name in branches:
            folder = src.snapshot_download(repo, revision=name, cache_dir=work / "cache")
            b1.create_branch(repo, branch=name)
            b1.upload_folder(repo_id=repo, folder_path=folder, revision=name, commit_message=f"copy {name}")
        baseline = time.perf_counter() - t0
        shutil.rmtree(work / "cache", ignore_errors=True)
        print(f"baseline (snapshot_download + upload_folder per branch): {baseline:6.1f} s")

        t0 = time.perf_counter()
        first = hubckpt.mirror(repo, src_hub=urls["a"], dst_hub=urls["b2"])
        mirrored = time.perf_counter() - t0
        print(
            f"hubckpt.mirror:                                          {mirrored:6.1f} s "
            f"({baseline / mirrored:.2f}x faster; {len(first.copied)} revisions, {first.commits} commits, "
            f"{first.bytes_downloaded / 2**20:.0f} MiB read from A)"
        )
        stored = folder_bytes(roots["b2"])
        t0 = time.perf_counter()
        again = hubckpt.mirror(repo, src_hub=urls["a"], dst_hub=urls["b2"])
        second = time.perf_counter() - t0
        grew = folder_bytes(roots["b2"]) - stored
        print(
            f"hubckpt.mirror again:                                    {second:6.1f} s "
            f"({again.bytes_downloaded} bytes read from A, {again.commits} commits, B's data folder grew {grew} bytes)"
        )
        if args.rate:
            paced(repo, urls, args.rate)
    finally:
        for root in roots.values():
            stop_local_hub(root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
