"""Journal figures: replay time with 10,000 finished jobs, and resume time after a kill.

1. Replay (`Journal.replay`) of a journal holding 10,000 finished jobs, as written (captured, converted,
   committed, indexed, published, done: 6 lines per job) and compacted (one snapshot line per job);
   and opening the job store on the uncompacted journal, which compacts it (once). Aim: replay < 0.2 s.
2. Resume after a kill: `hubckpt publish` of a 3-checkpoint run SIGKILLed right after the first
   revision's commit (fault point; the other checkpoints are captured by then), then `hubckpt resume`
   (a new process: start, replay, finish the killed job's index/retention, publish the captured rest).
   Baselines in the same run: `hubckpt publish` of the same run from scratch, and a bare interpreter
   start-up that imports hubckpt's publisher.

Usage:  .venv/bin/python bench/journal.py [--jobs 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _write_journal(path: Path, jobs: int) -> None:
    lines = []
    for i in range(jobs):
        job = f"{i:012d}-step-{i:07d}"
        t = "2026-12-02T00:00:00.000000Z"
        target = "local:/data/hub/me/run"
        lines += [
            {
                "event": "captured",
                "job": job,
                "revision": f"step-{i:07d}",
                "step": i,
                "source": f"/runs/r/ckpt-{i}",
                "final": False,
                "metrics": {"loss": 1.0 / (i + 1)},
                "epoch": None,
                "tokens": None,
                "companions": [],
                "captured_at": t,
                "signature": "0" * 32,
                "targets": [target],
                "time": t,
            },
            {"event": "converted", "job": job, "manifest_sha256": "a" * 64, "time": t},
            {"event": "committed", "job": job, "target": target, "commit": "b" * 40, "time": t},
            {"event": "indexed", "job": job, "target": target, "time": t},
            {"event": "published", "job": job, "target": target, "time": t},
            {"event": "done", "job": job, "time": t},
        ]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))


def _best(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_replay(jobs: int, repeat: int, work: Path) -> None:
    from hubckpt.publishing.jobs import JobStore
    from hubckpt.publishing.journal import Journal

    spool = work / "spool"
    spool.mkdir()
    path = spool / "journal.jsonl"
    _write_journal(path, jobs)
    raw = _best(lambda: Journal(path).replay(), repeat)
    size_raw = path.stat().st_size
    started = time.perf_counter()
    JobStore(spool).release()  # compacts
    open_compacting = time.perf_counter() - started
    compacted = _best(lambda: Journal(path).replay(), repeat)
    reopen = _best(lambda: JobStore(spool).release(), repeat)
    print(f"journal with {jobs} finished jobs:")
    print(f"  replay as written ({6 * jobs} lines, {size_raw / 1e6:.1f} MB): {raw:.3f} s")
    print(f"  open job store, compacting it once:            {open_compacting:.3f} s")
    print(f"  replay compacted ({jobs} lines, {path.stat().st_size / 1e6:.1f} MB):   {compacted:.3f} s (aim < 0.2 s)")
    print(f"  open job store (lock + replay), compacted:     {reopen:.3f} s")


def _cli(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hubckpt", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    return time.perf_counter() - started, proc


def bench_resume(repeat: int, work: Path) -> None:
    import torch

    from hubckpt.server import LocalHubServer

    run = work / "run"
    run.mkdir()
    for step in (1, 2, 3):
        torch.save({"w": torch.randn(256, 256), "b": torch.ones(8) * step}, run / f"ckpt-{step}.pt")
    startup, resume, fresh = [], [], []
    with LocalHubServer(work / "hub") as hub:
        for n in range(repeat):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", "import torch, hubckpt.publishing.publisher, huggingface_hub"], check=True
            )
            startup.append(time.perf_counter() - started)
            spool, repo = work / f"spool-{n}", f"me/resume-{n}"
            _, killed = _cli(
                "publish",
                str(run),
                "--repo",
                repo,
                "--hub",
                hub.url,
                "--spool",
                str(spool),
                env={"HUBCKPT_FAULT": "publish.after_commit:kill"},
            )
            assert killed.returncode == -9, killed.stderr
            t, resumed = _cli("resume", "--repo", repo, "--hub", hub.url, "--spool", str(spool))
            assert resumed.returncode == 0, resumed.stderr
            resume.append(t)
            t, published = _cli(
                "publish",
                str(run),
                "--repo",
                f"me/fresh-{n}",
                "--hub",
                hub.url,
                "--spool",
                str(work / f"fresh-spool-{n}"),
            )
            assert published.returncode == 0, published.stderr
            fresh.append(t)
    print(f"resume after a kill (best of {repeat}):")
    print(f"  interpreter start + imports:            {min(startup):.2f} s")
    print(
        f"  `hubckpt resume` of the killed job:      {min(resume):.2f} s "
        f"({min(resume) / min(fresh):.2f}x of publishing the run from scratch)"
    )
    print(f"  `hubckpt publish` of the run, no kill:   {min(fresh):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("replay", "resume"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubckpt-bench-journal-") as tmp:
        work = Path(tmp)
        if args.only != "resume":
            bench_replay(args.jobs, args.repeat, work)
        if args.only != "replay":
            bench_resume(max(1, args.repeat // 2), work)


if __name__ == "__main__":
    main()
