"""Multi-rank publishing (torch.distributed, gloo on CPU): `torchrun --nproc-per-node 2` launched as a subprocess.

One launch runs a tiny GPT-2 (FSDP2-sharded per block, AdamW, dropout on) through several saves, a
mismatched save and close; each rank writes what it saw to JSON and rank 0 the gathered full state
(`get_model_state_dict(full_state_dict=True)`) at each saved step, which the test compares with what a
plain process loads from the hub. This file is also the rank script (`__main__`).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LAUNCH_TIMEOUT = 240


def _model():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16, resid_pdrop=0.1, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def _rank_main(repo: str, hub: str, out: Path, mode: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    import hubckpt

    faulthandler.dump_traceback_later(float(os.environ.get("RANK_DEADLINE", LAUNCH_TIMEOUT - 20)), exit=True)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{os.environ.get('RANK')} %(name)s: %(message)s")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if mode.startswith("reshard"):
        _reshard_main(repo, hub, out, int(mode.partition(":")[2] or 4))
        return
    if mode == "single":
        _single_main(repo, hub, out)
        return
    if mode.startswith("crash"):
        _crash_main(repo, hub, out, mode)
        return
    if mode == "absent":
        _absent_main(repo, hub, out)
        return
    if mode == "faults":
        _faults_main(repo, hub, out)
        return
    model = _model()
    if mode == "fsdp":
        model = _fsdp(model, world)
    else:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seen: dict = {"rank": rank, "errors": {}}
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=30)
    seen["class"] = type(ckpt).__name__
    torch.manual_seed(100 + rank)

    def train(n: int) -> None:
        for _ in range(n):
            ids = torch.randint(0, 64, (2, 16))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

    def expected(step: int | str) -> None:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(model, options=options)
        optim = get_optimizer_state_dict(model, opt, options=options)
        if rank == 0:
            from safetensors.torch import save_file

            full = {k: v.clone() for k, v in full.items()}  # (clones: lm_head.weight is tied to wte)
            save_file(full, str(out / f"expected-{step}.safetensors"))
            flat = {f"{fqn}.{k}": v.clone() for fqn, st in optim["state"].items() for k, v in st.items()}
            save_file(flat, str(out / f"expected-optimizer-{step}.safetensors"))

    train(1)
    ckpt.save(1, metrics={"loss": 1.0})  # before the optimizer... has state: it has after one step
    expected(1)
    train(2)
    future = ckpt.save(3, metrics={"loss": 0.5})
    expected(3)
    try:  # save() raises if the other rank has arrived by the end of its capture; else wait() does
        ckpt.save(10 + rank)
        ckpt.wait()
    except hubckpt.HubckptError as e:
        seen["errors"]["mismatch"] = f"{type(e).__name__}: {e}"
    try:  # rank 1 skips a save (and closes): both raise, naming what each called
        ckpt.save(5) if rank == 0 else ckpt.close()
        ckpt.wait()
    except hubckpt.HubckptError as e:
        seen["errors"]["skipped"] = f"{type(e).__name__}: {e}"
    train(1)
    ckpt.save(4)
    expected(4)
    seen["revision_3"] = future.result(timeout=120).revision
    ckpt.wait()
    seen["resaved_4_skipped"] = ckpt.save(4).result(timeout=60).skipped  # published already, on every rank
    train(2)  # uninterrupted: steps 5 and 6
    expected("6-uninterrupted")
    resumed = ckpt.restore()  # the latest: step 4, this rank's RNG included (same world size)
    seen["resumed"] = [resumed.step, resumed.rng_restored, sorted(resumed.parts)]
    train(2)  # resumed: steps 5 and 6 again
    expected("6-resumed")
    ckpt.close()
    seen["stalls"] = ckpt.stalls
    (out / f"rank-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _fsdp(model, world: int):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _single_main(repo: str, hub: str, out: Path) -> None:
    """One rank, FSDP2 (DTensor parameters: the multi-rank path at world size 1): train, save step 7; write the
    gathered state it saved."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    import hubckpt

    model = _fsdp(_model(), dist.get_world_size())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=30)
    torch.manual_seed(7)
    for _ in range(2):
        ids = torch.randint(0, 64, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    ckpt.save(7)
    ckpt.close()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, opt, options=options)
    save_file({k: v.clone() for k, v in full.items()}, str(out / "expected-7.safetensors"))
    flat = {f"{fqn}.{k}": v.clone() for fqn, st in optim["state"].items() for k, v in st.items()}
    save_file(flat, str(out / "expected-optimizer-7.safetensors"))
    (out / "single-0.json").write_text(json.dumps({"class": type(ckpt).__name__}))
    dist.destroy_process_group()
    os._exit(0)


def _reshard_main(repo: str, hub: str, out: Path, step: int) -> None:
    """On another world size: a model of other shapes is refused on every rank and left unchanged; then the
    revision of `step` (saved on another world size) restores into this world's shards; rank 0 writes the
    gathered state."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    from transformers import GPT2Config, GPT2LMHeadModel

    import hubckpt

    rank, world = dist.get_rank(), dist.get_world_size()
    seen: dict = {"rank": rank}
    other = _fsdp(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=48, n_head=2, vocab_size=64, n_positions=16)), world)
    before = {k: v.full_tensor().clone() for k, v in other.state_dict().items()}
    try:
        hubckpt.restore(repo, step=step, model=other, hub=hub)
    except hubckpt.HubckptError as e:
        seen["mismatch"] = f"{type(e).__name__}: {e}"
    seen["unchanged"] = all(torch.equal(before[k], v.full_tensor()) for k, v in other.state_dict().items())
    model = _fsdp(_model(), world)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=30)
    resumed = ckpt.restore(step=step)
    seen["resumed"] = [resumed.step, resumed.rng_restored]
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, opt, options=options)
    if rank == 0:
        save_file({k: v.clone() for k, v in full.items()}, str(out / "resharded.safetensors"))
        flat = {f"{fqn}.{k}": v.clone() for fqn, st in optim["state"].items() for k, v in st.items()}
        save_file(flat, str(out / "resharded-optimizer.safetensors"))
    ckpt.close()
    (out / f"reshard-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _crash_main(repo: str, hub: str, out: Path, mode: str) -> None:
    """Resume from the latest revision, then save steps up to 4, one save per step from 2 on; with
    mode `crash:<rank>:<point>:<step>` that rank is killed at that crash point of that step's save."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    import hubckpt

    rank, world = dist.get_rank(), dist.get_world_size()
    _, victim, point, when = (mode.split(":") + ["", "", ""])[:4]
    model = _fsdp(_model(), world)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=30)
    torch.manual_seed(100 + rank)
    resumed = ckpt.restore()
    start = resumed.step if resumed else 0
    for step in range(start + 1, 5):
        ids = torch.randint(0, 64, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if step < 2:
            continue
        # The gathered state, written before the save (which changes nothing): the save may be killed.
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            save_file({k: v.clone() for k, v in full.items()}, str(out / f"crash-expected-{step}.safetensors"))
        if victim and int(victim) == rank and int(when) == step:
            os.environ["HUBCKPT_FAULT"] = f"{point}:kill"
        ckpt.save(step)
        ckpt.wait()
    ckpt.close()
    (out / f"crash-{rank}.json").write_text(json.dumps({"resumed_from": start}))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


ABSENT_TIMEOUT = 3.0  # the rank_timeout of the absent-rank launch
LATE = 1.5  # how late rank 1 comes to its first save there
STUCK = 4.0  # how long rank 1's background is stuck there


def _faults_main(repo: str, hub: str, out: Path) -> None:
    """Faults on one rank (or on rank 0's hub reads) during restore and construction: what each rank raised,
    how long it took, and whether its model changed."""
    import datetime as dt
    import time

    import torch
    import torch.distributed as dist
    from huggingface_hub import HfApi

    import hubckpt
    from hubckpt.hub.reader import HubReader
    from hubckpt.load.shards import restore_shards

    rank = dist.get_rank()
    model = _fsdp(_model(), 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {k: v.to_local().clone() for k, v in model.state_dict().items()}
    seen: dict[str, Any] = {"rank": rank}

    def caught(fn: Any) -> dict[str, Any]:
        t = time.monotonic()
        try:
            fn()
            return {"error": None, "s": time.monotonic() - t}
        except Exception as e:  # noqa: BLE001 - what the test checks
            return {"error": type(e).__name__, "message": str(e), "s": time.monotonic() - t}

    # A rank that never comes to restore_shards (a group with a 3 s timeout): rank 0 gets a typed error.
    lonely = dist.new_group(backend="gloo", timeout=dt.timedelta(seconds=3))
    if rank == 0:
        seen["lonely"] = caught(lambda: restore_shards(repo, model=model, optimizer=opt, hub=hub, group=lonely))
    dist.barrier()
    # One rank's reads fail after the names and shapes check: no rank applies anything.
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=20)
    real = HubReader.read_range
    if rank == 1:

        def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise OSError("the disk under rank 1 failed")

        HubReader.read_range = broken  # type: ignore[method-assign]
    seen["one_read_fails"] = caught(ckpt.restore)
    HubReader.read_range = real  # type: ignore[method-assign]
    seen["unchanged"] = not opt.state and all(
        torch.equal(before[k], v.to_local()) for k, v in model.state_dict().items()
    )
    # Rank 0 alone reads the index at the start of restore(): a corrupt one fails every rank at once, alike.
    if rank == 0:
        HfApi(endpoint=hub, token="unused").upload_file(
            path_or_fileobj=b"{not json", path_in_repo="revisions.json", repo_id=repo
        )
    dist.barrier()
    seen["corrupt_index"] = caught(ckpt.restore)
    seen["close"] = caught(ckpt.close)  # (a rank out of step before a fix: the launch still ends)
    # Rank 0 alone reads the hub in the constructor: a hub that is down fails every rank at once, alike.
    seen["hub_down"] = caught(
        lambda: hubckpt.Checkpointer(
            repo, model=model, optimizer=opt, hub="http://127.0.0.1:9", spool_dir=out / "dead", rank_timeout=20
        )
    )
    (out / f"faults-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _no_buffers():
    raise MemoryError("no staging buffers (injected)")


def _absent_main(repo: str, hub: str, out: Path) -> None:
    """A rank that never arrives at save(): first rank 1 skips one (it sleeps, then calls close()), then,
    on a second Checkpointer, it exits without saving (a rank that is gone). Each rank records the error
    it got and how long it waited."""
    import time

    import torch
    import torch.distributed as dist

    import hubckpt

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _fsdp(_model(), world)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seen: dict = {"rank": rank}

    def timed(key: str, call) -> None:
        started = time.monotonic()
        try:
            call()
            seen[key] = "returned"
        except Exception as e:  # noqa: BLE001 - recorded for the test to check
            seen[key] = f"{type(e).__name__}: {e}"
        seen[key + "_s"] = time.monotonic() - started

    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=ABSENT_TIMEOUT)
    if rank == 1:
        time.sleep(LATE)  # a slower rank, within rank_timeout: the faster one's save() does not wait for it
    timed("late", lambda: ckpt.save(1))
    ckpt.wait()
    if rank == 1:  # its capture fails (its staging buffers cannot be had): rank 0 must not wait for its slices
        ckpt._pool.acquire, acquire = _no_buffers, ckpt._pool.acquire
    timed("capture_failed", lambda: (ckpt.save(2), ckpt.wait()))
    if rank == 1:
        ckpt._pool.acquire = acquire
    if rank == 0:  # rank 1 never calls save(3): save() does not wait for it, but its Future and wait() fail
        timed("skipped", lambda: (ckpt.save(3), ckpt.wait()))
        timed("after", lambda: ckpt.save(4))  # the ranks are out of step now: at once, not another wait
    else:
        time.sleep(ABSENT_TIMEOUT + 2)
        timed("skipped", ckpt.close)  # its next call of ours fails too, within the timeout
    ckpt.close()  # finishes this rank's own work; the error was said
    # A background that is stuck (rank 1's, after writing its files of step 6): every rank's save fails within
    # background_timeout (= rank_timeout here) of it, and the next save at once. (Its own spool: the journals
    # keep step 6, for the next Checkpointer there to finish; the test reads them.)
    stuck = hubckpt.Checkpointer(
        repo, model=model, optimizer=opt, hub=hub, rank_timeout=ABSENT_TIMEOUT, spool_dir=str(out / "stuck-spool")
    )
    if rank == 1:
        os.environ["HUBCKPT_FAULT"] = f"ranks.after_write:sleep:{STUCK}"
    timed("stuck", lambda: (stuck.save(6), stuck.wait()))
    if rank == 1:
        del os.environ["HUBCKPT_FAULT"]  # (the fault is set, not read, here: tests/environment.py)
    timed("stuck_after", lambda: stuck.save(7))
    stuck.close()
    again = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=ABSENT_TIMEOUT)
    (out / f"absent-{rank}.json").write_text(json.dumps(seen))
    if rank == 1:
        os._exit(0)  # gone without saving (its loop ended early)
    timed("gone", lambda: (again.save(5), again.wait()))
    again.close()
    (out / f"absent-{rank}.json").write_text(json.dumps(seen))
    os._exit(0)


def _launch(tmp_path: Path, repo: str, hub: str, mode: str, nproc: int = 2) -> list[dict]:
    env = {**os.environ, "HUBCKPT_SPOOL": str(tmp_path / "spool"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--standalone",
        __file__,
        repo,
        hub,
        str(tmp_path),
        mode,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    (tmp_path / f"launch-{mode.replace(':', '_')}.log").write_text(proc.stdout + proc.stderr)  # (to read on failure)
    if mode.startswith("crash:"):
        assert proc.returncode != 0, "the rank was to be killed"
        return []
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    prefix = {"reshard": "reshard", "crash": "crash", "absent": "absent", "single": "single", "faults": "faults"}.get(
        mode.partition(":")[0], "rank"
    )
    return [json.loads((tmp_path / f"{prefix}-{r}.json").read_text()) for r in range(nproc)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_two_ranks_publish_one_revision_per_save(tmp_path, local_hub, api, repo_id, mode):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    import hubckpt

    seen = _launch(tmp_path, repo_id, local_hub.url, mode)
    assert [s["class"] for s in seen] == ["RankedCheckpointer"] * 2
    # Mismatched steps: every rank raised, naming both steps, and nothing of them was published.
    for s in seen:
        message = s["errors"]["mismatch"]
        assert "RankMismatchError" in message and "step 10" in message and "step 11" in message
        message = s["errors"]["skipped"]
        assert "RankMismatchError" in message and "rank 0: save(step 5)" in message and "rank 1: close(" in message
    assert seen[0]["revision_3"] == seen[1]["revision_3"] == "step-0000003"
    assert seen[0]["resaved_4_skipped"] is True and seen[1]["resaved_4_skipped"] is True
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert {"step-0000001", "step-0000003", "step-0000004"} <= branches
    assert not any("0000010" in b or "0000011" in b or "0000005" in b for b in branches)
    for step in (1, 3, 4):
        rev = f"step-{step:07d}"
        want = load_file(str(tmp_path / f"expected-{step}.safetensors"))
        got = hubckpt.load_state_dict(repo_id, revision=rev, hub=local_hub.url)
        assert sorted(got) == sorted(want)
        for k in want:
            assert torch.equal(got[k], want[k]), k
        files = set(api.list_repo_files(repo_id, revision=rev))
        assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= files
        assert {"model.safetensors.index.json", "config.json", "README.md", "checkpoint.json"} <= files
        assert {"training_state/rng-rank-00000.json", "training_state/rng-rank-00001.json"} <= files
        manifest = json.loads(Path(api.hf_hub_download(repo_id, "checkpoint.json", revision=rev)).read_text())
        assert manifest["ranks"]["world_size"] == 2 and manifest["step"] == step
        config = json.loads(Path(api.hf_hub_download(repo_id, "config.json", revision=rev)).read_text())
        assert config["architectures"] == ["GPT2LMHeadModel"]
    # Each rank wrote (and uploaded) a balanced share of the weights.
    sizes = [
        api.get_paths_info(repo_id, [f"model-0000{k}-of-00002.safetensors"], revision="step-0000004")[0].size
        for k in (1, 2)
    ]
    assert max(sizes) / (sum(sizes) / 2) <= 1.2, sizes
    # Resumed on the same world size: training continues exactly as the uninterrupted run.
    assert all(s["resumed"] == [4, True, ["loop", "optimizer", "rng"]] for s in seen)
    for kind in ("", "optimizer-"):
        a = load_file(str(tmp_path / f"expected-{kind}6-uninterrupted.safetensors"))
        b = load_file(str(tmp_path / f"expected-{kind}6-resumed.safetensors"))
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), kind
    _check_plain_process_restore(repo_id, local_hub.url, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(repo_id, revision="step-0000004")
    want = load_file(str(tmp_path / "expected-4.safetensors"))
    assert torch.equal(model.state_dict()["transformer.wte.weight"], want["transformer.wte.weight"])
    index = hubckpt.list_revisions(repo_id, hub=local_hub.url)
    assert [r.step for r in index] == [1, 3, 4]
    if mode == "fsdp":  # 2 → 3 (uneven dim-0 shards), in one more launch
        seen = _launch(tmp_path, repo_id, local_hub.url, "reshard", nproc=3)
        for s in seen:
            assert (
                s["mismatch"].startswith("StateMismatchError") and "(32,) in the revision, (48,) here" in s["mismatch"]
            )
            assert s["unchanged"] and s["resumed"] == [4, False]
        for kind in ("", "optimizer-"):
            a = load_file(str(tmp_path / f"expected-{kind}4.safetensors"))
            b = load_file(str(tmp_path / f"resharded{'-' + kind[:-1] if kind else ''}.safetensors"))
            assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), kind


# Where a rank can be killed during a save, and what the re-run resumes from. Before every rank's files of
# the revision are written and recorded in its journal, the revision is redone by training; once they are
# (every rank has passed the upload exchange), the re-run finishes it from the journals. In between (one rank
# recorded, the other perhaps not) either is right; both never publish a partial revision or one twice.
CRASH_POINTS = {
    "ranks.after_capture": "redone",
    "ranks.after_write": "either",
    "ranks.after_upload": "either",
    "ranks.after_exchange": "finished",
    "ranks.after_commit": "finished",  # (committed, not indexed: the re-run finds it on the hub and indexes it)
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [20, 31, 45])  # after_commit, rank 0; after_capture, rank 1; after_exchange, rank 1
def test_a_rank_killed_during_a_save_leaves_no_partial_revision_and_the_rerun_finishes(
    tmp_path, local_hub, api, repo_id, seed
):
    """A seeded choice of rank, crash point and step; the job dies (torchrun takes it down); the re-run
    finishes the revision in flight from the ranks' journals when every rank had recorded its files, else
    resumes from the latest revision and redoes it; every step is published exactly once, each equal to the
    gathered state."""
    import random

    import torch
    from safetensors.torch import load_file

    import hubckpt

    rng = random.Random(seed)
    point = rng.choice(sorted(CRASH_POINTS))
    victim = 0 if point == "ranks.after_commit" else rng.choice([0, 1])  # (only rank 0 commits)
    when = rng.choice([3, 4])
    _launch(tmp_path, repo_id, local_hub.url, f"crash:{victim}:{point}:{when}")
    refs = api.list_repo_refs(repo_id)
    branches = {b.name for b in refs.branches}
    listed = {r.name for r in hubckpt.list_revisions(repo_id, hub=local_hub.url)}
    assert f"step-{when - 1:07d}" in listed and f"step-{when + 1:07d}" not in branches
    for name in branches - {"main"}:  # whatever is on a branch is whole
        if name.startswith("step-"):
            files = set(api.list_repo_files(repo_id, revision=name))
            assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "checkpoint.json"} <= files
    seen = _launch(tmp_path, repo_id, local_hub.url, "crash")
    resumed = {s["resumed_from"] for s in seen}
    expected = {"redone": {when - 1}, "finished": {when}, "either": {when - 1, when}}[CRASH_POINTS[point]]
    assert len(resumed) == 1 and resumed <= expected, (point, victim, when, resumed)
    assert [r.step for r in hubckpt.list_revisions(repo_id, hub=local_hub.url)] == [2, 3, 4]
    for step in (2, 3, 4):
        name = f"step-{step:07d}"
        want = load_file(str(tmp_path / f"crash-expected-{step}.safetensors"))
        got = hubckpt.load_state_dict(repo_id, revision=name, hub=local_hub.url)
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want), step
        titles = [c.title for c in api.list_repo_commits(repo_id, revision=name)]
        assert sum(t.startswith(f"Checkpoint {name} ") for t in titles) == 1, (name, titles)
    journals = list((tmp_path / "spool").rglob("journal.jsonl"))
    assert len(journals) == 2 and all(j.read_text() == "" for j in journals)  # every job finished, compacted
    assert not [p for p in (tmp_path / "spool").rglob("step-*") if p.is_dir()], "a job's folder was left behind"


@pytest.mark.slow
def test_a_revision_saved_on_one_rank_restores_on_two(tmp_path, local_hub, api, repo_id):
    """1 → 2: FSDP2 on a world of 1 publishes through the multi-rank path; 2 ranks restore exact values
    (weights and optimizer state), each reading its slices; no RNG across world sizes."""
    import torch
    from safetensors.torch import load_file

    assert _launch(tmp_path, repo_id, local_hub.url, "single", nproc=1)[0]["class"] == "RankedCheckpointer"
    manifest = json.loads(Path(api.hf_hub_download(repo_id, "checkpoint.json", revision="step-0000007")).read_text())
    assert manifest["ranks"]["world_size"] == 1
    assert "model-00001-of-00001.safetensors" in api.list_repo_files(repo_id, revision="step-0000007")
    seen = _launch(tmp_path, repo_id, local_hub.url, "reshard:7", nproc=2)
    for s in seen:
        assert s["unchanged"] and s["resumed"] == [7, False], s
        assert s["mismatch"].startswith("StateMismatchError"), s
    for kind in ("", "optimizer-"):
        a = load_file(str(tmp_path / f"expected-{kind}7.safetensors"))
        b = load_file(str(tmp_path / f"resharded{'-' + kind[:-1] if kind else ''}.safetensors"))
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), kind


@pytest.mark.slow
def test_a_rank_that_never_arrives_at_save_fails_every_waiting_rank_within_rank_timeout(
    tmp_path, local_hub, api, repo_id
):
    """A late rank does not stall the others' save(); a rank whose capture fails fails the others' save at
    once; then one rank skips a save, and (on a new Checkpointer) one rank is gone: every waiting rank raises
    a RankMismatchError within rank_timeout (plus slack), never hangs, and nothing of those steps is
    published."""
    seen = _launch(tmp_path, repo_id, local_hub.url, "absent")
    # First, a rank that is late but within rank_timeout: the other rank's save() captured and returned
    # without waiting for it (the ranks' agreement is checked in the background), and the save published.
    assert seen[0]["late"] == "returned" and seen[0]["late_s"] < LATE / 2, seen[0]
    # A rank whose capture fails: it raises that error; the other rank's save fails at once in the
    # background (not after the background group's 30-minute timeout), naming the rank and the error.
    assert seen[1]["capture_failed"].startswith("MemoryError: no staging buffers"), seen[1]
    failed = seen[0]["capture_failed"]
    assert failed.startswith("PublishFailedError") and "rank 1: MemoryError" in failed, seen[0]
    assert seen[0]["capture_failed_s"] < 30, seen[0]
    bound = ABSENT_TIMEOUT + 10
    for s, keys in zip(seen, (["skipped", "after", "gone"], ["skipped"])):
        for key in keys:
            assert "RankMismatchError" in s[key], (key, s)
            assert s[key + "_s"] < bound, (key, s)
    assert "rank_timeout" in seen[0]["skipped"] and "save()" in seen[0]["skipped"]
    assert "out of step" in seen[0]["after"] and seen[0]["after_s"] < 1, seen[0]
    # A stuck background: rank 0's save failed within background_timeout (default: rank_timeout) of it, the
    # stuck rank's once it came back; neither waited the former 30 minutes; the next save failed at once.
    for s, most in zip(seen, (ABSENT_TIMEOUT + 10, STUCK + ABSENT_TIMEOUT + 10)):
        assert s["stuck"].startswith("PublishFailedError") and "RankMismatchError" in s["stuck"], s
        assert s["stuck_s"] < most, s
        assert s["stuck_after"].startswith("RankMismatchError") and s["stuck_after_s"] < 1, s
    assert "background_timeout=3s" in seen[0]["stuck"], seen[0]
    assert seen[0]["stuck_s"] >= ABSENT_TIMEOUT, seen[0]
    for r in range(2):  # the revision stays recorded on every rank, with its files: the next run finishes it
        journal = tmp_path / "stuck-spool" / f"rank-{r:05d}-of-00002" / "journal.jsonl"
        assert [json.loads(line)["event"] for line in journal.read_text().splitlines()] == ["written"], r
        assert (tmp_path / "stuck-spool" / f"rank-{r:05d}-of-00002" / "step-0000006").is_dir()
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert "step-0000001" in branches
    assert not {"step-0000002", "step-0000003", "step-0000004", "step-0000005", "step-0000006"} & branches


def _check_plain_process_restore(repo_id: str, hub: str, tmp_path: Path) -> None:
    """2 → 1: a plain process restores the exact full weights and optimizer state; no RNG."""
    import torch
    from safetensors.torch import load_file

    import hubckpt

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    restored = hubckpt.restore(repo_id, step=4, model=model, optimizer=opt, hub=hub)
    assert restored.step == 4 and restored.rng_restored is False and "optimizer" in restored.parts
    want = load_file(str(tmp_path / "expected-4.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], want[k]) for k in want)
    names = {id(p): n for n, p in model.named_parameters()}
    got = {f"{names[id(p)]}.{k}": v for p, st in opt.state.items() for k, v in st.items()}
    want_opt = load_file(str(tmp_path / "expected-optimizer-4.safetensors"))
    assert sorted(got) == sorted(want_opt)
    for k in want_opt:
        assert torch.equal(got[k], want_opt[k]), k


def _one_rank_revision(repo: str, hub: str, spool: Path, scaler: Any = None, then: Any = None) -> Any:
    """A multi-rank revision saved in this process: FSDP2 on a gloo world of 1 (no torchrun), step 1; then
    `then()` (a scaler) is restored by a new Checkpointer's restore() in that world, and returned."""
    import torch
    import torch.distributed as dist

    import hubckpt

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _fsdp(_model(), 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, scaler=scaler, hub=hub, spool_dir=spool)
        assert type(ckpt).__name__ == "RankedCheckpointer"
        ids = torch.randint(0, 64, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        ckpt.save(1)
        ckpt.close()
        if then is None:
            return None
        again = then()
        ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, scaler=again, hub=hub, spool_dir=spool)
        assert "scaler" in ckpt.restore().parts
        ckpt.close()
        return again
    finally:
        dist.destroy_process_group()


def test_the_grad_scaler_is_restored(tmp_path, local_hub, repo_id):
    """A multi-rank save publishes the scaler's state; both restores put it back (it was dropped, so a resumed
    mixed-precision run started again from the initial loss scale)."""
    import torch

    import hubckpt

    def fresh():
        return torch.amp.GradScaler("cpu", init_scale=2.0)

    saved = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    again = _one_rank_revision(repo_id, local_hub.url, tmp_path / "spool", scaler=saved, then=fresh)
    assert again.get_scale() == 1024.0 and again.get_growth_interval() == 7
    plain = fresh()
    resumed = hubckpt.restore(repo_id, revision="step-0000001", model=_model(), scaler=plain, hub=local_hub.url)
    assert "scaler" in resumed.parts and plain.get_scale() == 1024.0
    # A plain process reads the revision by Range too: its weight and optimizer files were downloaded whole
    # first (unused: then read again by Range), twice the bytes of a resume on one rank.
    from huggingface_hub import try_to_load_from_cache

    for path in ("model-00001-of-00001.safetensors", "training_state/optimizer-00001-of-00001.safetensors"):
        assert not isinstance(try_to_load_from_cache(repo_id, path, revision=resumed.commit), str), path


def test_a_tampered_optimizer_json_is_refused_with_nothing_restored(tmp_path, local_hub, api, repo_id):
    """training_state/optimizer.json of a multi-rank revision is untrusted: one naming a parameter the model
    lacks, not a mapping, or a tensor its file does not hold is refused with `HubContentError` before anything
    changes (it was a KeyError / AttributeError from inside the restore), even with checkpoint.json rewritten
    to match it."""
    import hashlib

    import torch
    from huggingface_hub import CommitOperationAdd

    import hubckpt
    from hubckpt.errors import HubContentError

    _one_rank_revision(repo_id, local_hub.url, tmp_path / "spool")
    rev = "step-0000001"
    doc = json.loads(Path(api.hf_hub_download(repo_id, "training_state/optimizer.json", revision=rev)).read_text())
    manifest = json.loads(Path(api.hf_hub_download(repo_id, "checkpoint.json", revision=rev)).read_text())
    a_file = next(iter(doc["weight_map"].values()))
    lies = {
        "a parameter this model does not have": {**doc, "weight_map": {**doc["weight_map"], "nope.exp_avg": a_file}},
        "weight_map is a list": {**doc, "weight_map": [a_file]},
        "which does not hold it": {
            **doc,
            "weight_map": {**doc["weight_map"], "transformer.wte.weight.exp_avgX": a_file},
        },
    }
    for said, lie in lies.items():
        body = json.dumps(lie).encode()
        for f in manifest["files"]:
            if f["path"] == "training_state/optimizer.json":
                f.update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
        commit = api.create_commit(
            repo_id,
            [
                CommitOperationAdd("training_state/optimizer.json", body),
                CommitOperationAdd("checkpoint.json", json.dumps(manifest).encode()),
            ],
            commit_message="a lying optimizer.json",
            revision=rev,
        ).oid
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(HubContentError, match=said):
            hubckpt.restore(repo_id, revision=commit, model=model, optimizer=opt, hub=local_hub.url)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not opt.state


def test_another_optimizer_type_a_missing_scheduler_or_another_dtype_is_refused_with_nothing_restored(
    tmp_path, local_hub, repo_id
):
    """A multi-rank revision restored into what does not fit raises StateMismatchError before anything changes,
    as for one process: AdamW state into SGD (it was loaded, and SGD's next step failed or did other maths), a
    scheduler the revision has no state for (it was silently left as it was), weights of another dtype (they
    were cast)."""
    import torch

    import hubckpt
    from hubckpt.errors import StateMismatchError

    _one_rank_revision(repo_id, local_hub.url, tmp_path / "spool")
    cases = {
        "optimizer type: revision torch.optim.adamw.AdamW, given torch.optim.sgd.SGD": lambda m: dict(
            optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        ),
        "scheduler: the revision has no scheduler state": lambda m: dict(
            scheduler=torch.optim.lr_scheduler.StepLR(torch.optim.AdamW(m.parameters()), 3)
        ),
    }
    for said, given in cases.items():
        model = _model()
        kwargs = given(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(StateMismatchError, match=said):
            hubckpt.restore(repo_id, revision="step-0000001", model=model, hub=local_hub.url, **kwargs)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert not kwargs.get("optimizer", torch.optim.SGD([torch.zeros(1)])).state
    with pytest.raises(
        StateMismatchError,
        match="dtype of transformer.h.0.attn.c_attn.bias: torch.float32 in the revision, torch.float64 here",
    ):
        hubckpt.restore(repo_id, revision="step-0000001", model=_model().double(), hub=local_hub.url)
    # strict=False (it was ignored: every difference raised): the rest restored, what differs listed
    model = _model()
    model.transformer.ln_f = torch.nn.LayerNorm(16)
    fresh = model.transformer.wte.weight.clone()
    sched = torch.optim.lr_scheduler.StepLR(torch.optim.AdamW(model.parameters()), 3)
    resumed = hubckpt.restore(
        repo_id, revision="step-0000001", model=model, scheduler=sched, hub=local_hub.url, strict=False
    )
    assert "shape of transformer.ln_f.weight: (32,) in the revision, (16,) here" in resumed.mismatches
    assert "scheduler: the revision has no scheduler state" in resumed.mismatches
    assert not torch.equal(model.transformer.wte.weight, fresh)


def test_a_second_job_on_the_same_spool_is_refused_while_the_first_runs(tmp_path, local_hub, repo_id):
    """Each rank holds its spool folder for the job's life: a second job with the same spool and world size (a
    re-run started while ranks of the old one still publish) gets SpoolBusyError at construction, instead of
    finishing, dropping or overwriting the first job's saves from its journal; after close() it may start."""
    import torch
    import torch.distributed as dist

    import hubckpt
    from hubckpt.errors import SpoolBusyError

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _fsdp(_model(), 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        first = hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path)
        with pytest.raises(SpoolBusyError, match=r"rank 0: The spool .*rank-00000-of-00001 is in use by pid"):
            hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path)
        first.close()
        hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path).close()
    finally:
        dist.destroy_process_group()


def test_leaving_the_with_block_on_an_error_frees_the_spool(tmp_path, local_hub, repo_id):
    """`__exit__` with an exception gives the spool lock back: a retry in this process may start at once."""
    import torch
    import torch.distributed as dist

    import hubckpt
    from hubckpt.errors import SpoolBusyError

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _fsdp(_model(), 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        with pytest.raises(ValueError, match="the loop failed"):
            with hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path):
                raise ValueError("the loop failed")
        try:
            again = hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path)
        except SpoolBusyError as e:
            pytest.fail(f"the spool stayed locked after __exit__ with an error: {e}")
        again.close()
    finally:
        dist.destroy_process_group()


def test_journals_of_another_world_size_are_named_in_one_warning_and_kept(tmp_path, local_hub, repo_id, caplog):
    """A spool folder of another world size (`rank-R-of-3` under a job on 1 rank) is never read by this job:
    one warning says what is there and how to remove it; nothing is deleted (another job may own it)."""
    import torch
    import torch.distributed as dist

    import hubckpt

    other = tmp_path / "rank-00001-of-00003"
    (other / "step-0000004").mkdir(parents=True)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _fsdp(_model(), 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(2):
            hubckpt.Checkpointer(repo_id, model=model, optimizer=opt, hub=local_hub.url, spool_dir=tmp_path).close()
    finally:
        dist.destroy_process_group()
    assert (other / "step-0000004").is_dir(), "another job's journal must not be deleted"
    warned = [r.getMessage() for r in caplog.records if "rank-00001-of-00003" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "1 unfinished save folder(s); no process holds it" in warned[0] and "rm -r" in warned[0]


@pytest.mark.slow
def test_a_fault_on_one_rank_or_on_rank_0s_hub_reads_fails_every_rank_alike_and_at_once(tmp_path, local_hub, repo_id):
    """Never a raw gloo error, never a wait of rank_timeout, never one rank restored: a rank that does not come
    to restore; one rank's reads failing after the names/shapes check; a corrupt index read by rank 0 at the
    start of restore(); a hub that is down when rank 0 prepares the repo in the constructor."""
    _one_rank_revision(repo_id, local_hub.url, tmp_path / "one")
    seen = _launch(tmp_path, repo_id, local_hub.url, "faults", nproc=2)
    lonely = seen[0]["lonely"]
    assert lonely["error"] == "RankMismatchError" and "to resolve the revision" in lonely["message"], lonely
    for s in seen:
        failed = s["one_read_fails"]
        assert failed["error"] == "RestoreError" and "rank 1: OSError: the disk under rank 1" in failed["message"], s
        assert s["unchanged"], f"rank {s['rank']} applied a restore another rank could not read"
    for case in ("corrupt_index", "hub_down"):
        assert seen[0][case]["error"] is not None and seen[0][case]["error"] != "RuntimeError", seen[0][case]
        for s in seen:
            assert (s[case]["error"], s[case]["message"]) == (seen[0][case]["error"], seen[0][case]["message"]), case
            assert s[case]["s"] < 10, (case, s[case])  # not rank_timeout=20


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4])
