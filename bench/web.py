"""Web page figures: the model page of a repo with 1,000 revisions — server-side render time and page weight.

The repo is what the publisher leaves after 1,000 checkpoints: `revisions.json` (1,000 entries, four
metrics each), the repo card with its 1,000-row table and `metrics.svg` on `main`, and one branch per
revision (all pointing at one small commit: the page reads refs, never the revisions' files). Written
through the store and `HfApi` directly, to save an hour of publishing.

Measured in the same run:
- floor: reading `revisions.json` from the store and parsing it (what any page listing revisions must do);
- the model page (`GET /{repo}`) through the ASGI app in-process (server-side: routing, storage reads,
  card rendering + sanitising, charts, template), and over loopback HTTP from a real server;
- for reference, the API's model info (`GET /api/models/{repo}`) and one revision's page.

Usage:  .venv/bin/python bench/web.py [--revisions 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median s, best s, last result) of `repeat` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), result


def build_repo(hub, repo_id: str, count: int) -> None:
    import math

    from huggingface_hub import CommitOperationAdd, HfApi

    from hubckpt.cards import CardOptions, metrics_chart_svg, render_repo_card
    from hubckpt.formats.index import RevisionIndex, RevisionInfo

    api = HfApi(endpoint=hub.url, token="unused")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="checkpoint.json", repo_id=repo_id)
    store = hub.ctx.store
    repo = store.get_repo(*repo_id.split("/"))
    head = store.resolve(repo, "main")
    index = RevisionIndex(monitor="eval_loss", mode="min")
    for i in range(1, count + 1):
        step = i * 100
        loss = 2.0 + 3.0 * math.exp(-i / 150) + 0.02 * math.sin(i)
        index.upsert(
            RevisionInfo(
                name=f"step-{step:07d}",
                step=step,
                commit=head,
                tokens=step * 4_000_000,
                metrics={"loss": loss, "eval_loss": loss + 0.1, "accuracy": 1 / loss, "lr": 3e-4 * (1 - i / count)},
                size=497_000_000,
                date="2026-12-01T00:00:00.000000Z",
                source_format="trainer",
            )
        )
        store.create_ref(repo, "branch", f"step-{step:07d}", head)
    index.best = min(index.live(), key=lambda r: r.metrics["eval_loss"]).name
    index.final = index.revisions[-1].name
    index.revisions[-1].final = True
    store.create_ref(repo, "tag", "best", head)
    store.create_ref(repo, "tag", "final", head)
    card = render_repo_card(
        repo_id=repo_id,
        repo_url=f"{hub.url}/{repo_id}",
        index=index,
        options=CardOptions(),
        chart="metrics.svg",
        has_config=False,
    )
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd("revisions.json", index.to_json()),
            CommitOperationAdd("README.md", card.encode()),
            CommitOperationAdd("metrics.svg", metrics_chart_svg(index).encode()),
        ],
        commit_message="index",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    import httpx2
    from starlette.testclient import TestClient

    from hubckpt.formats.index import RevisionIndex
    from hubckpt.server import LocalHubServer, create_app

    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-web-"))
    repo_id = "local/thousand"
    try:
        with LocalHubServer(work / "hub") as hub:
            t = time.perf_counter()
            build_repo(hub, repo_id, args.revisions)
            print(f"built a repo with {args.revisions} revisions in {time.perf_counter() - t:.1f} s")
            ctx = hub.ctx
            repo = ctx.store.get_repo(*repo_id.split("/"))

            def floor():
                entry = ctx.store.files(repo, ctx.store.resolve(repo, "main"))["revisions.json"]
                return RevisionIndex.from_json(ctx.blobs.path(entry.sha256).read_bytes())

            floor_med, floor_best, index = _timed(floor, args.repeat)
            assert len(index.revisions) == args.revisions
            with TestClient(create_app(ctx)) as client:
                from hubckpt.server.web import pages

                def cold():
                    pages._CARDS.clear()  # the card as on its first view (rendered cards are kept per object)
                    return client.get(f"/{repo_id}")

                cold_med, cold_best, _ = _timed(cold, args.repeat)
                page_med, page_best, page = _timed(lambda: client.get(f"/{repo_id}"), args.repeat)
                plain = client.get(f"/{repo_id}", headers={"accept-encoding": "identity"})
                api_med, _, _ = _timed(lambda: client.get(f"/api/models/{repo_id}"), args.repeat)
                tree_med, _, _ = _timed(lambda: client.get(f"/{repo_id}/tree/step-0050000"), args.repeat)
                css = client.get("/front/hubckpt/style.css").content
                icon = client.get("/front/hubckpt/favicon.svg").content
                svg = client.get(f"/{repo_id}/raw/main/metrics.svg").content
            assert page.status_code == 200 and page.text.count("<tr class=") == args.revisions
            with httpx2.Client() as http:
                http_med, _, _ = _timed(lambda: http.get(f"{hub.url}/{repo_id}"), args.repeat)
            html = plain.content
            sent = int(page.headers["content-length"])
            assert page.headers.get("content-encoding") == "gzip" and page.content == html
            total = sent + len(css) + len(icon) + len(svg)

            print(f"\nmodel page of a repo with {args.revisions} revisions (median of {args.repeat}, best in brackets)")
            print(f"  floor: read + parse revisions.json   {floor_med * 1000:7.1f} ms  [{floor_best * 1000:.1f}]")
            print(
                f"  model page, server-side (ASGI), first view  {cold_med * 1000:7.1f} ms  [{cold_best * 1000:.1f}]"
                f"   = {cold_med / floor_med:.1f}x the floor   (aim < 300 ms)"
            )
            print(
                f"  model page, server-side, card already rendered  {page_med * 1000:7.1f} ms  [{page_best * 1000:.1f}]"
                f"   = {page_med / floor_med:.1f}x the floor"
            )
            print(f"  model page over loopback HTTP       {http_med * 1000:7.1f} ms")
            print(f"  reference: API model info           {api_med * 1000:7.1f} ms")
            print(f"  reference: one revision's page      {tree_med * 1000:7.1f} ms")
            print(
                f"\npage weight: HTML {len(html) / 1000:.0f} kB, sent gzipped as {sent / 1000:.0f} kB; CSS "
                f"{len(css) / 1000:.1f} kB, favicon {len(icon) / 1000:.1f} kB, card image metrics.svg "
                f"{len(svg) / 1000:.1f} kB; total sent {total / 1000:.0f} kB in 4 requests, no JavaScript"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
