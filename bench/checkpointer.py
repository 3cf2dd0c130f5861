"""Training-loop stall per save: `hubckpt.Checkpointer` vs the copy floor and the usual ways to checkpoint.

One GPT-2 built from config (fp32, AdamW, linear LR schedule) trains on a tiny batch; every
approach saves the same state (weights + optimizer + scheduler [+ RNG]) five times, a few training
steps apart, and the time the training loop is blocked by each save is printed with its ratio to
the floor measured in the same run:

  (a) floor: `dst.copy_(src)` of every tensor into buffers allocated beforehand (untimed)
  Checkpointer.save: hubckpt (capture into pre-faulted staging buffers; publish in the background)
  (d) torch.distributed.checkpoint.async_save with a reusing DefaultStager (synchronous staging)
  (b) synchronous save_pretrained + torch.save(optimizer, scheduler) + HfApi.upload_folder
  (c) Trainer with push_to_hub=True, hub_strategy="every_save" (stall = on_step_end → on_save)

Also: training steps/s while a Checkpointer publish runs in the background vs with none (same run),
and the time from `save()` until the revision is visible (committed and indexed) on the local hub.
The local hub runs as its own process (as `hub="local"` starts it), on the same two cores.

Usage:  .venv/bin/python bench/checkpointer.py [--n-embd 1024] [--layers 8] [--saves 5] [--skip-trainer]
        [--background process|thread] [--nice idle|N] [--mb-per-s R] [--server-nice 0] [--threads 0] [--only-checkpointer]
        [--first-save N]   (only: a save right after Checkpointer(...), N times)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="hubckpt-bench-ckpt-"))
os.environ.update(
    {
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(WORK / "hf_home"),
        "HUBCKPT_SPOOL": str(WORK / "spool"),
        "DISABLE_SAFETENSORS_CONVERSION": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
)


def fmt(xs: list[float]) -> str:
    return " ".join(f"{x:6.3f}" for x in xs)


class Run:
    def __init__(self, n_embd: int, layers: int) -> None:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

        torch.manual_seed(0)
        self.config = GPT2Config(n_embd=n_embd, n_layer=layers, n_head=16, vocab_size=8192, n_positions=64)
        self.model = GPT2LMHeadModel(self.config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 10, 10_000)
        self.batch = torch.randint(0, 8192, (1, 16))

    def step(self) -> None:
        loss = self.model(input_ids=self.batch, labels=self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=False)

    def tensors(self):
        from hubckpt.publishing.staging import iter_tensors

        yield from (t for _, t in iter_tensors(self.model.state_dict(), "m"))
        yield from (t for _, t in iter_tensors(self.optimizer.state_dict(), "o"))

    def nbytes(self) -> int:
        seen, total = set(), 0
        for t in self.tensors():
            if t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.numel() * t.element_size()
        return total


def steps_per_s(run: Run, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        run.step()
    return n / (time.perf_counter() - t0)


def bench_floor(run: Run, saves: int) -> list[float]:
    buffers = [t.detach().clone() for t in run.tensors()]  # allocated (and faulted in) before timing
    out = []
    for _ in range(saves):
        run.step()
        best = float("inf")
        for _ in range(3):  # best of 3: the floor is what the hardware can do
            t0 = time.perf_counter()
            for buf, t in zip(buffers, run.tensors()):
                buf.copy_(t)
            best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out


def bench_checkpointer(
    run: Run,
    saves: int,
    hub: str,
    nice: int | str | None,
    background: str | None,
    mb_per_s: float | str | None = "auto",
) -> dict[str, list[float]]:
    """Per save: floor copy right before it, the save's stall, time until visible, steps/s during the
    background publish and right after it with nothing in the background."""
    import hubckpt

    buffers = [t.detach().clone() for t in run.tensors()]  # the floor's buffers, allocated before timing
    out: dict[str, list[float]] = {"floor": [], "stall": [], "visible": [], "during": [], "idle": [], "window": []}
    stalls, visible, rates, idle = out["stall"], out["visible"], out["during"], out["idle"]
    with hubckpt.Checkpointer(
        "bench/checkpointer",
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        hub=hub,
        nice=nice,
        background=background,
        publish_mb_per_s=mb_per_s,
    ) as ckpt:
        out["mode"] = [ckpt.background, f"{ckpt.nice} publish_mb_per_s={ckpt.publish_mb_per_s}"]
        ckpt.wait_staged()  # (the run object had stepped already; a fresh loop gets this within its first step)
        for i in range(saves):
            run.step()
            t0 = time.perf_counter()  # the floor, interleaved: same moment, same machine load
            for buf, t in zip(buffers, run.tensors()):
                buf.copy_(t)
            out["floor"].append(time.perf_counter() - t0)
            run.step()
            t0 = time.perf_counter()
            future = ckpt.save(1000 + i, metrics={"loss": 1.0})
            stalls.append(time.perf_counter() - t0)
            n, t1 = 0, time.perf_counter()
            while not future.done():
                run.step()
                n += 1
            end = time.perf_counter()
            future.result()
            visible.append(end - t0)
            rates.append(n / (end - t1) if n else float("nan"))
            out["window"].append(end - t1)
            idle.append(steps_per_s(run, max(n, 2)))  # the same number of steps with nothing in the background
    return out


def bench_first_save(run: Run, hub: str, background: str | None, repeats: int) -> list[tuple[float, float, float]]:
    """A save right after `Checkpointer(...)` (a step-0 checkpoint, as Pythia publishes): per repeat, the
    floor copy just before, the construction's time and the first save's stall."""
    import hubckpt

    buffers = [t.detach().clone() for t in run.tensors()]
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        for buf, t in zip(buffers, run.tensors()):
            buf.copy_(t)
        floor = time.perf_counter() - t0
        t0 = time.perf_counter()
        ckpt = hubckpt.Checkpointer(
            f"bench/first-save-{i}",
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            hub=hub,
            background=background,
        )
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        ckpt.save(0)
        stall = time.perf_counter() - t0
        ckpt.close()
        out.append((floor, built, stall))
    return out


def bench_dcp(run: Run, saves: int) -> list[float]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

    stager = DefaultStager(
        StagingOptions(
            use_pinned_memory=False, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=False
        )
    )
    out = []
    for i in range(saves):
        run.step()
        state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}
        t0 = time.perf_counter()
        result = dcp.async_save(state, checkpoint_id=str(WORK / f"dcp-{i}"), async_stager=stager, no_dist=True)
        out.append(time.perf_counter() - t0)
        (result.upload_completion if hasattr(result, "upload_completion") else result).result()
        shutil.rmtree(WORK / f"dcp-{i}", ignore_errors=True)
    stager.close()
    return out


def bench_sync(run: Run, saves: int, hub: str) -> list[float]:
    import torch

    from hubckpt.hub.select import hub_api

    api = hub_api(hub)
    api.create_repo("bench/sync", exist_ok=True)
    out = []
    for i in range(saves):
        run.step()
        folder = WORK / f"sync-{i}"
        t0 = time.perf_counter()
        run.model.save_pretrained(folder)
        torch.save(run.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), folder / "scheduler.pt")
        api.upload_folder(repo_id="bench/sync", folder_path=folder, commit_message=f"save {i}")
        out.append(time.perf_counter() - t0)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def bench_trainer(run: Run, saves: int, hub: str) -> list[float]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hubckpt.hub.select import point_hf_clients_at

    point_hf_clients_at(hub)
    stalls: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            stalls.append(time.perf_counter() - self.t0)

    data = [{"input_ids": run.batch[0], "labels": run.batch[0]} for _ in range(8)]
    args = TrainingArguments(
        output_dir=str(WORK / "trainer"),
        max_steps=saves * 2,
        save_steps=2,
        per_device_train_batch_size=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="bench/trainer",
        hub_strategy="every_save",
        hub_token="unused",
        save_total_limit=2,
        logging_steps=1000,
    )
    trainer = Trainer(model=run.model, args=args, train_dataset=data, callbacks=[Clock()])
    trainer.train()
    if trainer.push_in_progress is not None:
        trainer.push_in_progress.wait_until_done()
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return stalls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-embd", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument(
        "--background",
        choices=["process", "thread"],
        default=None,
        help="Checkpointer(background=...) (default: the library's, process on Linux)",
    )
    parser.add_argument(
        "--nice",
        type=lambda v: v if v == "idle" else int(v),
        default=None,
        help="Checkpointer(nice=...): idle or 0..19 (default: the library's, idle for a process, 0 for threads)",
    )
    parser.add_argument(
        "--mb-per-s",
        type=lambda v: v if v == "auto" else (float(v) or None),
        default="auto",
        help="Checkpointer(publish_mb_per_s=...): auto (the library's default), a number, 0 for no cap",
    )
    parser.add_argument("--server-nice", type=int, default=0, help="start the local hub at this nice value")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    parser.add_argument("--only-checkpointer", action="store_true", help="skip the (b), (c), (d) comparisons")
    parser.add_argument(
        "--first-save",
        type=int,
        default=0,
        metavar="N",
        help="only measure a save right after Checkpointer(...), N times (construction time and the save's stall)",
    )
    args = parser.parse_args()

    import torch

    from hubckpt.hub.local import ensure_local_hub
    from hubckpt.priority import in_background_priority

    if args.threads:
        torch.set_num_threads(args.threads)
    hub = in_background_priority(lambda: ensure_local_hub(WORK / "hub"), args.server_nice)
    try:
        run = Run(args.n_embd, args.layers)
        # The Checkpointer is created with the model, as a user would: buffers get staged while training starts.
        params = sum(p.numel() for p in run.model.parameters())
        for _ in range(2):
            run.step()
        size = run.nbytes()
        print(
            f"GPT-2 {params / 1e6:.0f}M parameters fp32 + AdamW: {size / 2**30:.2f} GiB of state per save; "
            f"torch threads {torch.get_num_threads()}; hub {hub}"
        )
        if args.first_save:
            for floor, built, stall in bench_first_save(run, hub, args.background, args.first_save):
                print(
                    f"Checkpointer(...) {built:.3f}s, then save(0) right after: stall {stall:.3f}s = "
                    f"{stall / floor:.2f}x the floor copy of that moment ({floor:.3f}s)"
                )
            return
        floor_sep = bench_floor(run, args.saves)
        measured = bench_checkpointer(run, args.saves, hub, args.nice, args.background, args.mb_per_s)
        background, nice = measured["mode"]
        floor, ckpt_stalls, visible = measured["floor"], measured["stall"], measured["visible"]
        rates, idle_rates = measured["during"], measured["idle"]
        skip = args.only_checkpointer
        dcp_stalls = [] if skip else bench_dcp(run, args.saves)
        sync = [] if skip else bench_sync(run, args.saves, hub)
        trainer = [] if args.skip_trainer or skip else bench_trainer(run, args.saves, hub)
        f = statistics.median(floor)

        def row(name: str, xs: list[float]) -> None:
            if xs:
                print(f"{name:<46} {fmt(xs)}   x floor: {' '.join(f'{x / f:5.2f}' for x in xs)}")

        print(
            f"\nstall per save, seconds (saves 1..{args.saves}); floor median {f:.3f}s = {size / f / 1e9:.1f} GB/s "
            f"(interleaved with the Checkpointer's saves; best of 3 in a separate pass: {min(floor_sep):.3f}s)"
        )
        row("(a) floor: copy into preallocated buffers", floor)
        row("hubckpt Checkpointer.save", ckpt_stalls)
        print(
            f"{'   Checkpointer / floor of the same moment':<46} {' ' * 7 * len(floor)}            "
            f"{' '.join(f'{c / x:5.2f}' for c, x in zip(ckpt_stalls, floor))}"
        )
        row("(d) DCP async_save, reusing DefaultStager", dcp_stalls)
        row("(b) save_pretrained + torch.save + upload_folder", sync)
        row("(c) Trainer push_to_hub every_save", trainer)
        if sync:
            print(
                f"\nCheckpointer vs (b) synchronous: {statistics.median(sync) / statistics.median(ckpt_stalls):.0f}x "
                "less stall"
            )
        print(f"first save {ckpt_stalls[0] / f:.2f}x floor, worst {max(ckpt_stalls) / f:.2f}x floor")
        ratios = [r / i for r, i in zip(rates, idle_rates) if r == r]
        print(
            f"training steps/s (Checkpointer background={background} nice={nice}, local hub nice={args.server_nice}) while a publish runs in the background: {fmt(rates)}; "
            f"right after, with none: "
            f"{fmt(idle_rates)}; ratio median {statistics.median(ratios or [float('nan')]):.2f}x "
            f"(per save: {' '.join(f'{x:.2f}' for x in ratios)})"
        )
        # What a user pays per save in training time: the stall, plus the steps the background publish slowed
        # (the window's length minus the time the same steps take with nothing in the background).
        lost = [st + w - w * r / i for st, w, r, i in zip(ckpt_stalls, measured["window"], rates, idle_rates) if r == r]
        print(
            f"training time lost per save (stall + slower steps while publishing): {fmt(lost)} s, "
            f"median {statistics.median(lost or [float('nan')]):.2f} s"
        )
        print(
            f"revision visible on the local hub after: {fmt(visible)} s "
            f"({size / statistics.median(visible) / 1e9:.2f} GB/s of state)"
        )
    finally:
        from hubckpt.hub.local import stop_local_hub

        stop_local_hub(WORK / "hub")
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
