"""HubckptCallback under a 2-process Trainer (DDP, gloo, CPU): each checkpoint published once, whole.

The run that publishes is started with `accelerate launch`, the resumed one with `torchrun`.

The Trainer writes `checkpoint-N/` from every process: the model, optimizer and `trainer_state.json` from
process zero, `rng_state_<rank>.pth` from each rank, with no barrier before `on_save`. A rank that is
slow to write its RNG state (delayed here, as a loaded machine does) must still be in the revision, or a
resumed run is not the run that was saved. Resuming from the pulled revision with 2 processes must end
bit-identical to an uninterrupted 2-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
from .conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "alice/trainer-two-processes"
STOP_AT, MAX_STEPS = 2, 4

RANKS_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
import torch
import transformers
from huggingface_hub import HfApi
from transformers import GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from tests.factories import tiny_gpt2_config
from hubckpt.integrations.transformers import HubckptCallback

mode, work, hub, REPO_ID = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
MAX_STEPS, STOP_AT = int(sys.argv[5]), int(sys.argv[6])
rank = int(os.environ["RANK"])
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)

def trainer(out, init_seed, callbacks=(), save=False):
    torch.manual_seed(init_seed)
    model = GPT2LMHeadModel(tiny_gpt2_config())  # dropout on: each rank's RNG matters
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 32, (8,), generator=gen), "labels": torch.randint(0, 32, (8,), generator=gen)}
        for _ in range(16)
    ]
    args = TrainingArguments(output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=2,
        save_strategy="steps" if save else "no", save_steps=STOP_AT, report_to=[], use_cpu=True, logging_steps=1,
        disable_tqdm=True, seed=0, learning_rate=1e-2, ddp_backend="gloo")
    return Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))

class StopAt(TrainerCallback):  # an interruption, not a smaller max_steps (which changes the LR schedule)
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == STOP_AT:
            control.should_training_stop = True
        return control

if mode == "publish":
    straight = trainer(work / "straight", init_seed=0)
    straight.train()
    if rank == 0:
        torch.save(straight.model.state_dict(), work / "straight.pt")
    if rank == 1:  # the fault: rank 1 writes its share of checkpoint-N/ late
        save_rng = Trainer._save_rng_state
        def late(self, output_dir):
            time.sleep(2)
            return save_rng(self, output_dir)
        Trainer._save_rng_state = late
    callback = HubckptCallback(REPO_ID, hub=hub)  # HUBCKPT_SPOOL: one value for both processes
    trainer(work / "interrupted", init_seed=0, callbacks=[callback, StopAt()], save=True).train()
    refs = HfApi(endpoint=hub, token="unused").list_repo_refs(REPO_ID)
    (work / f"rank{rank}.json").write_text(json.dumps(sorted(b.name for b in refs.branches)))
else:  # resume from the pulled revision with another init
    resumed = trainer(work / "resumed", init_seed=1)
    resumed.train(resume_from_checkpoint=str(work / "pulled"))
    if rank == 0:
        torch.save(resumed.model.state_dict(), work / "resumed.pt")
torch.distributed.barrier()
torch.distributed.destroy_process_group()
os._exit(0)  # torch 2.13's gloo may abort at interpreter exit
"""


def _launch(launcher: str, work: Path, mode: str, hub: str) -> None:
    """2 processes on this machine through `torchrun` or `accelerate launch` (DDP on gloo, CPU)."""
    script = work / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HUBCKPT_SPOOL": str(work / "spool")}
    if launcher == "torchrun":
        command = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    else:  # accelerate's multi-process launcher; the Trainer itself runs on the CPU (use_cpu, gloo)
        port = str(free_port())
        command = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
        command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
    proc = subprocess.run(
        [sys.executable, "-m", *command, str(script), mode, str(work), hub, REPO_ID, str(MAX_STEPS), str(STOP_AT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_process_trainer_publishes_each_checkpoint_once_and_resumes_bit_exact(local_hub, api, tmp_path):
    from hubckpt.integrations.trainer_resume import pull_trainer_checkpoint

    _launch("accelerate", tmp_path, "publish", local_hub.url)
    revision = f"step-{STOP_AT:07d}"
    # Process 1 returned from train() only once process zero's revision was published.
    assert json.loads((tmp_path / "rank1.json").read_text()) == ["main", revision]
    assert json.loads((tmp_path / "rank0.json").read_text()) == ["main", revision]
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["alice--trainer-two-processes"]  # one spool

    rng = json.loads(open(api.hf_hub_download(REPO_ID, "training_state/rng.json", revision=revision)).read())
    assert sorted(rng["state"]) == ["rng_state_0", "rng_state_1"]  # the slow rank's share is in the revision

    pulled = pull_trainer_checkpoint(REPO_ID, revision, tmp_path / "pulled", hub=local_hub.url)
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "trainer_state.json"} <= {
        p.name for p in pulled.iterdir()
    }
    _launch("torchrun", tmp_path, "resume", local_hub.url)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k
